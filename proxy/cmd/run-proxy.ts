// Running a sidecar or a host relay as a process: config file in, signals
// and admin drains handled (runtime/process-drain.ts).

import { ConfigError, loadHostRelayConfig, loadSidecarConfig } from './config/load.js';
import type { HostRelayConfig } from './config/relay.js';
import type { LogLevel, SidecarConfig } from './config/types.js';
import { HostRelay } from './host-relay.js';
import { createAccessLogger, createLogger } from './log.js';
import { exitAfterFlush, processDrain } from './runtime/process-drain.js';
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
  const ending = processDrain({ drain: () => server.drain(), stop: () => server.stop() }, logger);
  const serverOptions = { logger, accessLogger: createAccessLogger({ level: config.log.level }), processMetrics: true, onAdminDrain: () => ending.drainThenExit() };
  const server: ProxyServer = loaded.role === 'sidecar' ? new Sidecar(loaded.config, serverOptions) : new HostRelay(loaded.config, serverOptions);
  try {
    await server.start();
  } catch (err) {
    logger.fatal({ err }, `${role} failed to start: ${(err as Error).message}`);
    await exitAfterFlush(logger, 1);
    return;
  }
  logger.info({ role, node: config.node.id, admin: server.adminAddress() ?? null, pid: process.pid }, `${role} serving`);
  ending.handleSignals();
}
