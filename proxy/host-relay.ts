// `vsockmesh host-relay`: runs on the hypervisor. On mainstream KVM/QEMU a
// guest's vsock reaches only its host (CID 2), so guest-to-guest vsock goes
// through this relay, which checks the kernel-given source CID against its policy.

import type { HostRelayConfig } from './config/relay.js';
import { RelayListener } from './listeners/relay.js';
import { LazyVmManagerClient } from './resolve/lazy-client.js';
import { RelayAuthorizer } from './resolve/relay-authorizer.js';
import { ProxyServer, type ServerOptions } from './server.js';
import type { VmManagerApi } from '../xds/vm-manager/types.js';

export interface HostRelayOptions extends ServerOptions {
  /** The VM manager to ask instead of a gRPC client to vm_manager.address (tests). */
  vmManager?: VmManagerApi;
}

export class HostRelay extends ProxyServer {
  constructor(
    readonly config: HostRelayConfig,
    options: HostRelayOptions = {},
  ) {
    super({ nodeId: config.node.id, admin: config.admin, logLevel: config.log.level, drainTimeoutMs: config.drainTimeoutMs, overload: config.overload }, options);
    const settings = config.vmManager;
    if (settings) {
      this.vmManager = options.vmManager ? { api: options.vmManager, owned: false } : { api: new LazyVmManagerClient(settings.address), owned: true };
      this.authorizer = new RelayAuthorizer({ api: this.vmManager.api, hypervisorId: settings.hypervisorId, queryTimeoutMs: settings.queryTimeoutMs, cacheTtlMs: settings.cacheTtlMs });
    }
    this.listeners.push(new RelayListener(config, this.context, this.authorizer));
  }

  readonly authorizer: RelayAuthorizer | undefined;
  private readonly vmManager: { api: VmManagerApi; owned: boolean } | undefined;

  override async stop(): Promise<void> {
    await super.stop();
    if (this.vmManager?.owned) this.vmManager.api.close();
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
      vmManager: this.config.vmManager,
      admin: this.adminAddress() ?? null,
      log: this.config.log,
      drainTimeoutMs: this.config.drainTimeoutMs,
      overload: { ...this.config.overload, state: this.overload.state },
    };
  }
}
