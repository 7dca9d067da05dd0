// Running a sidecar or a host relay as a process: config file in, signals
// and admin drains handled (runtime/process-drain.ts).

import { loadHostRelayConfig, loadSidecarConfig } from '../config/load.js';
import { ConfigError } from '../runtime/config-file.js';
import type { HostRelayConfig } from '../config/relay.js';
import type { LogLevel, SidecarConfig } from '../config/types.js';
import { createAccessLogger, createLogger } from '../runtime/log.js';
import { exitAfterFlush, processDrain } from '../runtime/process-drain.js';
import type { ProxyServer } from '../server.js';
import { createHostRelay, createSidecar } from './proxies.js';

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
  const failed = async (err: unknown): Promise<void> => {
    logger.fatal({ err }, `${role} failed to start: ${(err as Error).message}`);
    await exitAfterFlush(logger, 1);
  };
  // The drain callbacks run only once the server has started (signals are handled from then on).
  let server: ProxyServer;
  const ending = processDrain({ drain: () => server.drain(), stop: () => server.stop() }, logger);
  const serverOptions = { logger, accessLogger: createAccessLogger({ level: config.log.level }), processMetrics: true, onAdminDrain: () => ending.drainThenExit() };
  try {
    server = loaded.role === 'sidecar' ? await createSidecar(loaded.config, serverOptions) : await createHostRelay(loaded.config, serverOptions);
    await server.start();
  } catch (err) {
    await failed(err);
    return;
  }
  logger.info({ role, node: config.node.id, admin: server.adminAddress() ?? null, pid: process.pid }, `${role} serving`);
  ending.handleSignals();
}
