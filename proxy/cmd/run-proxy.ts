// Running a sidecar or a host relay as a process (runtime/role.ts): config
// file in, overrides from the command line; the server has its own admin
// endpoint, whose POST /drain ends the process. The process's memory is
// settled once quiet after it is ready, after each control-plane change it
// applies and after traffic (runtime/settle-memory.ts).

import { loadHostRelayConfig, loadSidecarConfig } from '../config/load.js';
import type { HostRelayConfig } from '../config/relay.js';
import type { LogLevel, SidecarConfig } from '../config/types.js';
import { createAccessLogger, createLogger } from '../runtime/log.js';
import { runRole } from '../runtime/role.js';
import { MemorySettler, TrafficWatch, settleNow } from '../runtime/settle-memory.js';
import { native } from '../native/index.js';
import type { ProxyServer } from '../server.js';
import { createHostRelay, createSidecar } from './proxies.js';

export interface RunServerOptions {
  configPath: string;
  /** A sidecar's config already read from configPath (the CLI's `--heap-profile auto` read it to choose): not read again. */
  sidecarConfig?: SidecarConfig;
  logLevel?: LogLevel;
  adminPort?: number;
  drainTimeoutMs?: number;
}

export type ServerRole = 'sidecar' | 'host-relay';

type Loaded = { role: 'sidecar'; config: SidecarConfig } | { role: 'host-relay'; config: HostRelayConfig };

async function load(role: ServerRole, options: RunServerOptions): Promise<Loaded> {
  const loaded: Loaded = role === 'sidecar' ? { role, config: options.sidecarConfig ?? (await loadSidecarConfig(options.configPath)) } : { role, config: await loadHostRelayConfig(options.configPath) };
  const { config } = loaded;
  if (options.logLevel) config.log.level = options.logLevel;
  if (options.adminPort !== undefined) config.admin = { address: config.admin?.address ?? '127.0.0.1', port: options.adminPort };
  if (options.drainTimeoutMs !== undefined) config.drainTimeoutMs = options.drainTimeoutMs;
  return loaded;
}

export function runServer(role: ServerRole, options: RunServerOptions): Promise<void> {
  return runRole({
    name: role,
    prepare: async (control) => {
      const loaded = await load(role, options);
      const { config } = loaded;
      const logger = createLogger({ level: config.log.level });
      // Settling waits until the server, once made, has no connection open, or only relayed ones that moved nothing since the last look.
      let made: ProxyServer | undefined = undefined;
      const relayActivity = (): number | null => made?.relayActivity() ?? null;
      const settler = new MemorySettler(
        () => settleNow(logger, native.settleMemory, 'quiet'),
        () => made !== undefined && (made.activeConnections === 0 || traffic.still()),
      );
      const traffic = new TrafficWatch(relayActivity, () => settler.note());
      const serverOptions = { logger, accessLogger: createAccessLogger({ level: config.log.level }), processMetrics: true, onAdminDrain: () => control.drainThenExit(), onConfigApplied: () => settler.note() };
      const server = loaded.role === 'sidecar' ? await createSidecar(loaded.config, serverOptions) : await createHostRelay(loaded.config, serverOptions);
      made = server;
      return {
        logger,
        server,
        ready: () => {
          settler.note();
          traffic.start();
          return { node: config.node.id, admin: server.adminAddress() ?? null };
        },
      };
    },
  });
}
