// Running the VM manager as a process (proxy/runtime/role.ts): registry from
// the state files (if they exist) or the inventory, gRPC API, admin endpoint.

import { readFile } from 'node:fs/promises';
import type { LogLevel } from '../../proxy/config/types.js';
import { createLogger, type Logger } from '../../proxy/runtime/log.js';
import { runRole } from '../../proxy/runtime/role.js';
import { addLogDropped } from '../../proxy/metrics.js';
import { loadInventory, parseInventory } from './inventory.js';
import { Registry } from './registry.js';
import { VmManagerServer } from './server.js';
import { loadState } from './state-load.js';
import { processIdentity, type IdentityFlags } from '../security/process-identity.js';

export interface VmManagerRunOptions {
  listen: string;
  inventoryPath?: string;
  statePath?: string;
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
    const inventory = parseInventory(await readFile(options.inventoryPath, 'utf8'), options.inventoryPath);
    try {
      loadInventory(registry, inventory);
    } catch (err) {
      throw new Error(`${options.inventoryPath}: ${(err as Error).message}`, { cause: err });
    }
  }
  return registry;
}

export function runVmManager(options: VmManagerRunOptions): Promise<void> {
  return runRole({
    name: 'vm-manager',
    prepare: async () => {
      const logger = createLogger({ level: options.logLevel });
      const registry = await initialRegistry(options, logger);
      const identity = await processIdentity(options.controlIdentity, logger, 'vm-manager');
      const server = new VmManagerServer({ registry, logger, transport: identity.transport, ...(options.statePath !== undefined && { statePath: options.statePath }), processMetrics: true });
      addLogDropped(server.metrics);
      return {
        logger,
        server: {
          start: () => server.start(options.listen),
          drain: () => server.drain(),
          stop: async () => {
            await server.stop();
            identity.close();
          },
        },
        admin: {
          address: '127.0.0.1',
          port: options.adminPort,
          target: {
            renderStats: () => server.metrics.metrics(),
            statsContentType: server.metrics.contentType,
            configDump: () => ({ state: server.state, listen: options.listen, port: server.port, state_file: options.statePath ?? null, resolve_ttl_ms: options.resolveTtlMs, ...registry.list() }),
          },
        },
      };
    },
  });
}
