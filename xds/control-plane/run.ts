// Running the control plane as a process: mesh and registry from their files,
// one gRPC port, admin endpoint, signals (first drains, second stops).

import type { LogLevel } from '../../proxy/config/types.js';
import { AdminServer } from '../../proxy/runtime/admin.js';
import { createLogger } from '../../proxy/runtime/log.js';
import { exitAfterFlush, processDrain } from '../../proxy/runtime/process-drain.js';
import { addLogDropped } from '../../proxy/metrics.js';
import { initialRegistry } from '../vm-manager/run.js';
import { DEFAULT_STATUS_PAGE_SIZE } from './bounds.js';
import { ControlPlane } from './control-plane.js';
import { MeshStore } from './mesh-store.js';

export interface ControlPlaneRunOptions {
  listen: string;
  meshPath?: string;
  meshStatePath?: string;
  vmManager?: string;
  inventoryPath?: string;
  statePath?: string;
  resolveTtlMs: number;
  debounceMs: number;
  statusRetentionMs?: number;
  adminPort: number | null;
  logLevel: LogLevel;
}

export async function runControlPlane(options: ControlPlaneRunOptions): Promise<void> {
  const logger = createLogger({ level: options.logLevel });
  let plane: ControlPlane;
  try {
    const mesh = await MeshStore.open({ ...(options.meshPath !== undefined && { meshPath: options.meshPath }), ...(options.meshStatePath !== undefined && { statePath: options.meshStatePath }) });
    const vms =
      options.vmManager !== undefined
        ? { remote: options.vmManager }
        : { registry: await initialRegistry(options, logger), ...(options.statePath !== undefined && { statePath: options.statePath }) };
    plane = new ControlPlane({ mesh, logger, vms, debounce: { quietMs: options.debounceMs, maxMs: options.debounceMs * 10 }, ...(options.statusRetentionMs !== undefined && { statusRetentionMs: options.statusRetentionMs }) });
  } catch (err) {
    process.stderr.write(`vsockmesh control-plane: not starting: ${(err as Error).message}\n`);
    process.exit(2);
  }
  addLogDropped(plane.ads.metrics);
  let serving = false;
  const ending = processDrain(
    {
      drain: async () => {
        serving = false;
        await plane.drain();
      },
      stop: async () => {
        await plane.stop();
        await admin.stop();
      },
    },
    logger,
  );
  const admin = new AdminServer(
    {
      isReady: () => serving,
      state: () => (serving ? 'serving' : 'stopped'),
      renderStats: async () => `${await plane.ads.metrics.metrics()}${plane.vmManager ? await plane.vmManager.metrics.metrics() : ''}`,
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
        return { listen: options.listen, port: plane.port, rebuilds: plane.rebuilds, sync };
      },
      drain: () => ending.drainThenExit(),
    },
    logger,
  );
  try {
    await plane.start(options.listen);
    if (options.adminPort !== null) await admin.start('127.0.0.1', options.adminPort);
    serving = true;
  } catch (err) {
    logger.fatal({ err }, `control-plane failed to start: ${(err as Error).message}`);
    await plane.stop();
    await exitAfterFlush(logger, 1);
    return;
  }
  ending.handleSignals();
}
