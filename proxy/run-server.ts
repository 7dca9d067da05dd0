// Running a sidecar or a host relay as a process: config file in, signals
// handled (first SIGTERM/SIGINT drains, a second one stops at once).

import { ConfigError, loadHostRelayConfig, loadSidecarConfig } from './config/load.js';
import type { HostRelayConfig } from './config/relay.js';
import type { LogLevel, SidecarConfig } from './config/types.js';
import { HostRelay } from './host-relay.js';
import { createAccessLogger, createLogger, type Logger } from './log.js';
import type { ProxyServer } from './server.js';
import { Sidecar } from './sidecar.js';

export interface RunServerOptions {
  configPath: string;
  logLevel?: LogLevel;
  adminPort?: number;
  drainTimeoutMs?: number;
}

export type ServerRole = 'sidecar' | 'host-relay';

type Loaded = { role: 'sidecar'; config: SidecarConfig } | { role: 'host-relay'; config: HostRelayConfig };

async function load(role: ServerRole, path: string): Promise<Loaded> {
  return role === 'sidecar' ? { role, config: await loadSidecarConfig(path) } : { role, config: await loadHostRelayConfig(path) };
}

export async function runServer(role: ServerRole, options: RunServerOptions): Promise<void> {
  let loaded: Loaded;
  try {
    loaded = await load(role, options.configPath);
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`vsockmesh ${role}: invalid config, not starting\n${err.message}\n`);
      process.exit(2);
    }
    throw err;
  }
  const { config } = loaded;
  if (options.logLevel) config.log.level = options.logLevel;
  if (options.adminPort !== undefined) config.admin = { address: config.admin?.address ?? '127.0.0.1', port: options.adminPort };
  if (options.drainTimeoutMs !== undefined) config.drainTimeoutMs = options.drainTimeoutMs;

  const logger = createLogger({ level: config.log.level });
  const serverOptions = { logger, accessLogger: createAccessLogger({ level: config.log.level }), processMetrics: true };
  const server: ProxyServer = loaded.role === 'sidecar' ? new Sidecar(loaded.config, serverOptions) : new HostRelay(loaded.config, serverOptions);
  try {
    await server.start();
  } catch (err) {
    logger.fatal({ err }, `${role} failed to start: ${(err as Error).message}`);
    await exitAfterFlush(logger, 1);
    return;
  }
  logger.info({ role, node: config.node.id, admin: server.adminAddress() ?? null, pid: process.pid }, `${role} serving`);

  drainOnSignals(server, logger);
}

/** The first SIGTERM/SIGINT drains then stops (exit 0); a second one stops at once (exit 1). */
export function drainOnSignals(server: { drain(): Promise<unknown>; stop(): Promise<void> }, logger: Logger): void {
  let signals = 0;
  const onSignal = (signal: NodeJS.Signals): void => {
    signals++;
    if (signals > 1) {
      logger.warn({ signal }, 'second signal: stopping now');
      void server.stop().finally(() => exitAfterFlush(logger, 1));
      return;
    }
    logger.info({ signal }, 'signal received: draining');
    void server.drain().then(async () => {
      // A second signal took over: its exit code stands.
      if (signals > 1) return;
      await server.stop();
      await exitAfterFlush(logger, 0);
    });
  };
  process.on('SIGTERM', onSignal);
  process.on('SIGINT', onSignal);
}

/** How long an exit waits for buffered log lines to be written (a stalled stdout reader must not hold the exit). */
export const EXIT_LOG_FLUSH_MS = 2_000;

/** Exits once the log lines buffered so far are written, or after EXIT_LOG_FLUSH_MS without them. */
export function exitAfterFlush(logger: Logger, code: number): Promise<void> {
  return new Promise(() => {
    const timer = setTimeout(() => {
      process.stderr.write(`vsockmesh: log lines not written within ${EXIT_LOG_FLUSH_MS} ms (stdout not read); exiting without them\n`);
      process.exit(code);
    }, EXIT_LOG_FLUSH_MS);
    logger.flush((err) => {
      clearTimeout(timer);
      if (err) process.stderr.write(`log flush failed: ${err.message}\n`);
      process.exit(code);
    });
  });
}
