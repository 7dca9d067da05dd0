// Running the control plane as a process (proxy/runtime/role.ts): mesh and
// registry from their files, or both in etcd (--store, shared with other
// replicas), one gRPC port, admin endpoint.

import type { LogLevel } from '../../proxy/config/types.js';
import { createLogger, type Logger } from '../../proxy/runtime/log.js';
import { runRole } from '../../proxy/runtime/role.js';
import { serverSettle } from '../../proxy/runtime/quiet-trim.js';
import { addLogDropped } from '../../proxy/metrics.js';
import { initialRegistry, openRegistryStore } from '../vm-manager/run.js';
import type { RegistryStore } from '../vm-manager/registry-store.js';
import { DEFAULT_STATUS_PAGE_SIZE } from './bounds.js';
import { openIdentity } from '../identity/open-identity.js';
import { ControlPlane } from './control-plane.js';
import { MeshStore } from './mesh-store.js';
import { openStore, StoreFlagsError, type StoreFlags } from '../store/store-flags.js';
import { StoreUnavailableError, type Store } from '../store/store.js';
import { Backoff } from '../../proxy/runtime/backoff.js';
import { processIdentity, type IdentityFlags } from '../security/process-identity.js';

export interface ControlPlaneRunOptions {
  listen: string;
  meshPath?: string;
  meshStatePath?: string;
  /** The mesh in etcd (--store), shared by replicas, instead of memory or the mesh state file. */
  store?: StoreFlags;
  vmManager?: string;
  inventoryPath?: string;
  statePath?: string;
  resolveTtlMs: number;
  debounceMs: number;
  statusRetentionMs?: number;
  adminPort: number | null;
  logLevel: LogLevel;
  /** Where the control APIs' identity comes from; a CA (--ca-cert/--ca-key or --identity-dir) also serves Certify and JoinTokens. */
  controlIdentity: IdentityFlags;
}

export function runControlPlane(options: ControlPlaneRunOptions): Promise<void> {
  return runRole({
    name: 'control-plane',
    prepare: async () => {
      const logger = createLogger({ level: options.logLevel });
      if (options.store?.store !== undefined && options.controlIdentity.identityDir !== undefined && options.controlIdentity.caCert === undefined) {
        throw new StoreFlagsError('--store with an embedded root (--identity-dir without --ca-cert/--ca-key): every replica would make its own root; give each replica the same CA files (--ca-cert/--ca-key, e.g. a mounted Secret)');
      }
      const store = await openStore(options.store ?? {});
      if (store !== undefined && options.meshStatePath !== undefined) {
        await store.close();
        throw new StoreFlagsError('--mesh-state-file and --store: give one (with --store the mesh lives in etcd)');
      }
      if (store !== undefined && options.vmManager === undefined && options.statePath !== undefined) {
        await store.close();
        throw new StoreFlagsError('--state-file and --store: give one (with --store the in-process VM manager keeps the registry in etcd)');
      }
      // The in-process VM manager's registry in the same store: replicas on one etcd serve one registry, as vm-manager --store replicas do.
      let registryStore: RegistryStore | undefined;
      try {
        registryStore = store !== undefined && options.vmManager === undefined ? await registryWhenReachable(store, options, logger) : undefined;
      } catch (err) {
        await store?.close();
        throw err;
      }
      const mesh = await MeshStore.open({
        logger,
        ...(options.meshPath !== undefined && { meshPath: options.meshPath }),
        ...(options.meshStatePath !== undefined && { statePath: options.meshStatePath }),
        ...(store !== undefined && { store }),
      });
      const vms =
        options.vmManager !== undefined
          ? { remote: options.vmManager }
          : registryStore !== undefined
            ? { registry: registryStore.registry, registryStore }
            : { registry: await initialRegistry(options, logger), ...(options.statePath !== undefined && { statePath: options.statePath }) };
      const identity = await processIdentity(options.controlIdentity, logger, 'control-plane');
      const identityApi = identity.ca === undefined ? undefined : await openIdentity(identity.ca, identity.dir, logger, store);
      const plane = new ControlPlane({ mesh, logger, vms, transport: identity.transport, ...(identityApi !== undefined && { identity: identityApi }), debounce: { quietMs: options.debounceMs, maxMs: options.debounceMs * 10 }, ...(options.statusRetentionMs !== undefined && { statusRetentionMs: options.statusRetentionMs }) });
      addLogDropped(plane.ads.metrics);
      return {
        logger,
        settleWhenQuiet: serverSettle(),
        notReady: () => plane.notReady(),
        server: {
          start: () => plane.start(options.listen),
          drain: () => plane.drain(),
          stop: async () => {
            await plane.stop();
            await registryStore?.close();
            await mesh.close();
            identity.close();
          },
        },
        admin: {
          address: '127.0.0.1',
          port: options.adminPort,
          target: {
            renderStats: async () => `${await plane.ads.metrics.metrics()}${plane.vmManager ? await plane.vmManager.metrics.metrics() : ''}${identityApi ? await identityApi.metrics.metrics() : ''}`,
            statsContentType: plane.ads.metrics.contentType,
            configDump: () => {
              // Bounded like one GetSyncStatus page: the first nodes by id; `vsockmesh ctl status` pages through all.
              const page = plane.ads.syncStatusPage({ limit: DEFAULT_STATUS_PAGE_SIZE });
              const sync = {
                connected_nodes: plane.ads.nodes.connected,
                disconnected_nodes: plane.ads.nodes.disconnected,
                statuses: page.statuses,
                ...(page.next !== undefined && { truncated: `the first ${DEFAULT_STATUS_PAGE_SIZE} nodes only: vsockmesh ctl status lists every node` }),
              };
              return { listen: options.listen, port: plane.port, rebuilds: plane.rebuilds, registry: plane.registrySummary(), sync, identity: identityApi?.describe() ?? null };
            },
          },
        },
      };
    },
  });
}

/**
 * The in-process VM manager's registry in `store`, seeded from the inventory
 * when the store holds none. Without the registry there is nothing to serve
 * (an empty one would answer every Resolve "not found"): while etcd does not
 * answer, read again after 250 ms doubling to 5 s, before listening.
 */
async function registryWhenReachable(store: Store, options: ControlPlaneRunOptions, logger: Logger): Promise<RegistryStore> {
  const backoff = new Backoff({ initialMs: 250, maxMs: 5_000 });
  for (;;) {
    try {
      return await openRegistryStore(store, options, logger);
    } catch (err) {
      if (!(err instanceof StoreUnavailableError)) throw err;
      const delay = backoff.next();
      logger.warn({ reason: 'registry_store_unavailable', error: err.message, retry_ms: delay }, `cannot read the VM registry from the store (${err.message}): not serving yet, retrying in ${delay} ms`);
      await new Promise((resolve) => setTimeout(resolve, delay));
    }
  }
}
