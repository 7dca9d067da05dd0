// Running the VM manager as a process: registry from the state files (if
// they exist) or the inventory, gRPC API, admin endpoint, signals (the first
// SIGTERM/SIGINT drains, a second one stops at once).

import { readFile } from 'node:fs/promises';
import type { LogLevel } from '../../proxy/config/types.js';
import { AdminServer } from '../../proxy/runtime/admin.js';
import { createLogger, type Logger } from '../../proxy/runtime/log.js';
import { exitAfterFlush, processDrain } from '../../proxy/runtime/process-drain.js';
import { addLogDropped } from '../../proxy/metrics.js';
import { loadInventory, parseInventory } from './inventory.js';
import { Registry } from './registry.js';
import { VmManagerServer } from './server.js';
import { loadState } from './state-load.js';

export interface VmManagerRunOptions {
  listen: string;
  inventoryPath?: string;
  statePath?: string;
  resolveTtlMs: number;
  adminPort: number | null;
  logLevel: LogLevel;
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

export async function runVmManager(options: VmManagerRunOptions): Promise<void> {
  const logger = createLogger({ level: options.logLevel });
  let registry: Registry;
  try {
    registry = await initialRegistry(options, logger);
  } catch (err) {
    process.stderr.write(`vsockmesh vm-manager: not starting: ${(err as Error).message}\n`);
    process.exit(2);
  }
  const server = new VmManagerServer({ registry, logger, ...(options.statePath !== undefined && { statePath: options.statePath }), processMetrics: true });
  const ending = processDrain(
    {
      drain: () => server.drain(),
      stop: async () => {
        await server.stop();
        await admin.stop();
      },
    },
    logger,
  );
  addLogDropped(server.metrics);
  const admin = new AdminServer(
    {
      isReady: () => server.state === 'serving',
      state: () => server.state,
      renderStats: () => server.metrics.metrics(),
      statsContentType: server.metrics.contentType,
      configDump: () => ({ state: server.state, listen: options.listen, port: server.port, state_file: options.statePath ?? null, resolve_ttl_ms: options.resolveTtlMs, ...registry.list() }),
      drain: () => ending.drainThenExit(),
    },
    logger,
  );
  try {
    await server.start(options.listen);
    if (options.adminPort !== null) await admin.start('127.0.0.1', options.adminPort);
  } catch (err) {
    logger.fatal({ err }, `vm-manager failed to start: ${(err as Error).message}`);
    await server.stop();
    await exitAfterFlush(logger, 1);
    return;
  }
  logger.info({ role: 'vm-manager', admin: admin.address() ?? null, pid: process.pid }, 'vm-manager ready');
  ending.handleSignals();
}
