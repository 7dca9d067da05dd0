// Running a sidecar as a process: config file in, signals handled
// (first SIGTERM/SIGINT drains, a second one stops at once).

import { ConfigError, loadSidecarConfig } from './config/load.js';
import type { LogLevel, SidecarConfig } from './config/types.js';
import { createAccessLogger, createLogger, type Logger } from './log.js';
import { Sidecar } from './sidecar.js';

export interface RunSidecarOptions {
  configPath: string;
  logLevel?: LogLevel;
  adminPort?: number;
  drainTimeoutMs?: number;
}

export async function runSidecar(options: RunSidecarOptions): Promise<void> {
  let config: SidecarConfig;
  try {
    config = await loadSidecarConfig(options.configPath);
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`vsockmesh sidecar: invalid config, not starting\n${err.message}\n`);
      process.exit(2);
    }
    throw err;
  }
  if (options.logLevel) config.log.level = options.logLevel;
  if (options.adminPort !== undefined) config.admin = { address: config.admin?.address ?? '127.0.0.1', port: options.adminPort };
  if (options.drainTimeoutMs !== undefined) config.drainTimeoutMs = options.drainTimeoutMs;

  const logger = createLogger({ level: config.log.level });
  const sidecar = new Sidecar(config, { logger, accessLogger: createAccessLogger({ level: config.log.level }), processMetrics: true });
  try {
    await sidecar.start();
  } catch (err) {
    logger.fatal({ err }, `sidecar failed to start: ${(err as Error).message}`);
    await exitAfterFlush(logger, 1);
    return;
  }
  logger.info(
    { node: config.node.id, admin: sidecar.adminAddress() ?? null, pid: process.pid },
    'sidecar serving',
  );

  let signals = 0;
  const onSignal = (signal: NodeJS.Signals): void => {
    signals++;
    if (signals > 1) {
      logger.warn({ signal }, 'second signal: stopping now');
      void sidecar.stop().finally(() => exitAfterFlush(logger, 1));
      return;
    }
    logger.info({ signal }, 'signal received: draining');
    void sidecar.drain().then(async () => {
      // A second signal took over: its exit code stands.
      if (signals > 1) return;
      await sidecar.stop();
      await exitAfterFlush(logger, 0);
    });
  };
  process.on('SIGTERM', onSignal);
  process.on('SIGINT', onSignal);
}

export function exitAfterFlush(logger: Logger, code: number): Promise<void> {
  return new Promise(() => {
    logger.flush((err) => {
      if (err) process.stderr.write(`log flush failed: ${err.message}\n`);
      process.exit(code);
    });
  });
}
