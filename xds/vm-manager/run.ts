// Running the VM manager as a process (proxy/runtime/role.ts): registry from
// the state files (if they exist) or the inventory, or kept in etcd
// (--store, shared with other replicas), gRPC API, admin endpoint.

import { readFile } from 'node:fs/promises';
import type { LogLevel } from '../../proxy/config/types.js';
import { createLogger, type Logger } from '../../proxy/runtime/log.js';
import { runRole } from '../../proxy/runtime/role.js';
import { serverSettle } from '../../proxy/runtime/quiet-trim.js';
import { addLogDropped } from '../../proxy/metrics.js';
import { loadInventory, parseInventory, type Inventory } from './inventory.js';
import { Registry } from './registry.js';
import { VmManagerServer } from './server.js';
import { loadState } from './state-load.js';
import { RegistryStore } from './registry-store.js';
import { openStore, StoreFlagsError, type StoreFlags } from '../store/store-flags.js';
import type { Store } from '../store/store.js';
import { processIdentity, type IdentityFlags } from '../security/process-identity.js';

export interface VmManagerRunOptions {
  listen: string;
  inventoryPath?: string;
  statePath?: string;
  /** --store and its TLS flags: the registry lives in etcd. */
  store?: StoreFlags;
  resolveTtlMs: number;
  adminPort: number | null;
  logLevel: LogLevel;
  controlIdentity: IdentityFlags;
}

/**
 * The registry a VM manager starts with: the state files win (they hold every
 * API change since); else the inventory; else empty.
 */
export async function initialRegistry(options: { inventoryPath?: string; statePath?: string; resolveTtlMs: number }, logger: Logger): Promise<Registry> {
  const registryOptions = { resolveTtlMs: options.resolveTtlMs };
  if (options.statePath !== undefined) {
    const loaded = await loadState(options.statePath, registryOptions);
    if (loaded) {
      for (const notice of loaded.notices) logger.warn({ reason: notice.reason, state_file: options.statePath }, notice.message);
      if (options.inventoryPath !== undefined) {
        logger.info({ state_file: options.statePath, inventory: options.inventoryPath }, 'state file present: the inventory is not applied again (the state file already holds it and every change since)');
      }
      return loaded.registry;
    }
  }
  const registry = new Registry(registryOptions);
  if (options.inventoryPath !== undefined) {
    const inventory = await readInventory(options.inventoryPath);
    seedInventory(registry, inventory, options.inventoryPath);
  }
  return registry;
}

async function readInventory(path: string): Promise<Inventory> {
  return parseInventory(await readFile(path, 'utf8'), path);
}

/** Registers the inventory's hypervisors and VMs in `registry`; errors name the file and entry. */
function seedInventory(registry: Registry, inventory: Inventory, path: string): void {
  try {
    loadInventory(registry, inventory);
  } catch (err) {
    throw new Error(`${path}: ${(err as Error).message}`, { cause: err });
  }
}

/**
 * The registry in the store --store names, whole: the inventory is written
 * only when the store holds no registry yet (the first replica to start
 * claims the seed and writes it in chunks; the others wait until it is done).
 */
async function storedRegistry(options: VmManagerRunOptions, logger: Logger): Promise<{ registryStore: RegistryStore; store: Store } | undefined> {
  const store = await openStore(options.store ?? {});
  if (store === undefined) return undefined;
  try {
    if (options.statePath !== undefined) throw new StoreFlagsError('--state-file and --store: give one (with --store the registry lives in etcd)');
    return { registryStore: await openRegistryStore(store, options, logger), store };
  } catch (err) {
    await store.close();
    throw err;
  }
}

/**
 * The registry kept in `store` (the VM manager's --store, or the control
 * plane's in-process VM manager on its --store), made whole before it is
 * served: seeded from the inventory when the store holds no registry yet.
 */
export async function openRegistryStore(store: Store, options: { inventoryPath?: string; resolveTtlMs: number }, logger: Logger): Promise<RegistryStore> {
  const registryStore = await RegistryStore.open({ store, logger, resolveTtlMs: options.resolveTtlMs });
  const inventoryPath = options.inventoryPath;
  try {
    const inventory = inventoryPath === undefined ? undefined : { path: inventoryPath, content: await readInventory(inventoryPath) };
    const outcome = await registryStore.seed(inventory && ((r) => seedInventory(r, inventory.content, inventory.path)));
    if (inventory !== undefined) {
      logger.info({ inventory: inventory.path }, outcome === 'seeded' ? 'the store held no registry: the inventory was written to it' : 'the store holds a registry: the inventory is not applied again');
    }
  } catch (err) {
    await registryStore.close();
    throw err;
  }
  return registryStore;
}

export function runVmManager(options: VmManagerRunOptions): Promise<void> {
  return runRole({
    name: 'vm-manager',
    prepare: async () => {
      const logger = createLogger({ level: options.logLevel });
      const stored = await storedRegistry(options, logger);
      const registryStore = stored?.registryStore;
      const registry = registryStore?.registry ?? (await initialRegistry(options, logger));
      const identity = await processIdentity(options.controlIdentity, logger, 'vm-manager');
      const server = new VmManagerServer({
        registry,
        logger,
        transport: identity.transport,
        ...(options.statePath !== undefined && { statePath: options.statePath }),
        ...(registryStore !== undefined && { registryStore }),
        processMetrics: true,
      });
      addLogDropped(server.metrics);
      return {
        logger,
        settleWhenQuiet: serverSettle(),
        ...(registryStore !== undefined && { notReady: () => registryStore.notReady() }),
        server: {
          start: () => server.start(options.listen),
          drain: () => server.drain(),
          stop: async () => {
            await server.stop();
            await registryStore?.close();
            await stored?.store.close();
            identity.close();
          },
        },
        admin: {
          address: '127.0.0.1',
          port: options.adminPort,
          target: {
            renderStats: () => server.metrics.metrics(),
            statsContentType: server.metrics.contentType,
            configDump: () => ({ state: server.state, listen: options.listen, port: server.port, state_file: options.statePath ?? null, store: registryStore === undefined ? null : 'etcd', resolve_ttl_ms: options.resolveTtlMs, ...registry.list() }),
          },
        },
      };
    },
  });
}
