// `vsockmesh host-relay`: runs on the hypervisor. On mainstream KVM/QEMU a
// guest's vsock reaches only its host (CID 2), so guest-to-guest vsock goes
// through this relay, which checks the kernel-given source CID against its policy.

import type { HostRelayConfig } from './config/relay.js';
import { RelayListener } from './listeners/relay.js';
import { ProxyServer, type ServerOptions } from './server.js';

export class HostRelay extends ProxyServer {
  constructor(
    readonly config: HostRelayConfig,
    options: ServerOptions = {},
  ) {
    super({ nodeId: config.node.id, admin: config.admin, logLevel: config.log.level, drainTimeoutMs: config.drainTimeoutMs }, options);
    this.listeners.push(new RelayListener(config, this.context));
  }

  configDump(): unknown {
    return {
      state: this.state,
      node: this.config.node,
      listen: { ...this.config.listen, bound: this.boundListeners()[0]?.bound ?? [] },
      headerTimeoutMs: this.config.headerTimeoutMs,
      connectTimeoutMs: this.config.connectTimeoutMs,
      idleTimeoutMs: this.config.idleTimeoutMs,
      policy: this.config.policy,
      admin: this.adminAddress() ?? null,
      log: this.config.log,
      drainTimeoutMs: this.config.drainTimeoutMs,
    };
  }
}
