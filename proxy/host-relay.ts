// `vsockmesh host-relay`: runs on the hypervisor. On mainstream KVM/QEMU a
// guest's vsock reaches only its host (CID 2), so guest-to-guest vsock goes
// through this relay, which checks the kernel-given source CID against its policy.

import type { HostRelayConfig } from './config/relay.js';
import { AttestationEndpoint, type ForwardAttested } from './identity/attestation-endpoint.js';
import { AttestationListener } from './listeners/attestation.js';
import { RelayListener } from './listeners/relay.js';
import { RelayAuthorizer } from './resolve/relay-authorizer.js';
import { ProxyServer, type ServerOptions } from './server.js';
import type { OwnedClient } from './sidecar.js';
import type { VmManagerApi } from './resolve/types.js';
import type { CertificateSource } from './identity/certificate-source.js';

export interface HostRelayOptions extends ServerOptions {
  /** Required when the config has a vm_manager section (proxy/cmd makes it from xds/; tests may pass their own). */
  vmManager?: OwnedClient<VmManagerApi>;
  /** The relay's hv/ SVID: with it, a connection the VM manager allowed starts with the signed source assertion (relay-assertion.ts). */
  assertionIdentity?: CertificateSource;
  /** Required when the config has an attestation section: Identity.CertifyAttested under this host agent's identity. */
  attestation?: { forward: ForwardAttested; close(): void };
}

export class HostRelay extends ProxyServer {
  constructor(
    readonly config: HostRelayConfig,
    options: HostRelayOptions = {},
  ) {
    super({ nodeId: config.node.id, admin: config.admin, logLevel: config.log.level, drainTimeoutMs: config.drainTimeoutMs, overload: config.overload }, options);
    const settings = config.vmManager;
    if (settings) {
      if (options.vmManager === undefined) throw new Error('the config has a vm_manager section but the host relay was given no VM manager client');
      this.vmManager = options.vmManager;
      this.authorizer = new RelayAuthorizer({ api: this.vmManager.client, hypervisorId: settings.hypervisorId, queryTimeoutMs: settings.queryTimeoutMs, cacheTtlMs: settings.cacheTtlMs });
      this.metrics.addRelayAuthorizer(this.authorizer);
      this.metrics.addVmManagerReplica(this.vmManager.client);
    }
    this.listeners.push(new RelayListener(config, this.context, this.authorizer, settings?.assertSource === false ? undefined : options.assertionIdentity));
    const attestation = config.attestation;
    if (attestation) {
      if (options.attestation === undefined || this.vmManager === undefined || settings === null) throw new Error('the config has an attestation section but the host relay was given no VM manager client or CertifyAttested client');
      this.attestationClient = options.attestation;
      const vmManager = this.vmManager.client;
      const endpoint = new AttestationEndpoint({
        hypervisorId: settings.hypervisorId,
        vmsOnHypervisor: async () => (await vmManager.listVms()).vms.filter((vm) => vm.hypervisorId === settings.hypervisorId),
        forward: options.attestation.forward,
        requestTimeoutMs: attestation.requestTimeoutMs,
        logger: this.context.logger,
        refusals: this.context.refusals,
        metrics: this.metrics.registry,
        name: 'attestation',
      });
      this.listeners.push(new AttestationListener({ cid: config.listen.cid, port: attestation.port, maxConnections: attestation.maxConnections }, this.context, endpoint));
    }
  }

  readonly authorizer: RelayAuthorizer | undefined;
  private readonly vmManager: OwnedClient<VmManagerApi> | undefined;
  private readonly attestationClient: { close(): void } | undefined;

  override async stop(): Promise<void> {
    await super.stop();
    if (this.vmManager?.closeOnStop) this.vmManager.client.close();
    this.attestationClient?.close();
  }

  configDump(): unknown {
    return {
      state: this.state,
      node: this.config.node,
      identity: this.identityDump(),
      listen: { ...this.config.listen, bound: this.boundListeners()[0]?.bound ?? [] },
      headerTimeoutMs: this.config.headerTimeoutMs,
      connectTimeoutMs: this.config.connectTimeoutMs,
      idleTimeoutMs: this.config.idleTimeoutMs,
      policy: this.config.policy,
      vmManager: this.config.vmManager,
      attestation: this.config.attestation,
      admin: this.adminAddress() ?? null,
      log: this.config.log,
      drainTimeoutMs: this.config.drainTimeoutMs,
      overload: { ...this.config.overload, state: this.overload.state },
    };
  }
}
