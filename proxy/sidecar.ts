// The sidecar: outbound listeners for local apps, inbound listeners (TCP and
// vsock) for peer sidecars, on the shared server lifecycle.

import type { SidecarConfig } from './config/types.js';
import { Resolver } from './resolve/resolver.js';
import type { VmManagerApi } from '../xds/vm-manager/types.js';
import { InboundListener } from './listeners/inbound.js';
import { OutboundListener } from './listeners/outbound.js';
import { ProxyServer, type ServerOptions } from './server.js';
import { Cluster } from './upstream/cluster.js';
import { VsockBreakers } from './upstream/transport.js';
import { LazyVmManagerClient } from './resolve/lazy-client.js';

export type { DrainResult, ServerState as SidecarState } from './server.js';
export interface SidecarOptions extends ServerOptions {
  /** The VM manager to use instead of a gRPC client to vm_manager.address (the demo runs one in process). */
  vmManager?: VmManagerApi;
}

export class Sidecar extends ProxyServer {
  /** The daemon agent: present when the config has a vm_manager section. */
  readonly resolver: Resolver | undefined;
  private readonly vmManager: { api: VmManagerApi; owned: boolean } | undefined;

  constructor(
    readonly config: SidecarConfig,
    options: SidecarOptions = {},
  ) {
    super({ nodeId: config.node.id, admin: config.admin, logLevel: config.log.level, drainTimeoutMs: config.drainTimeoutMs }, options);
    const settings = config.vmManager;
    if (settings) {
      this.vmManager = options.vmManager ? { api: options.vmManager, owned: false } : { api: new LazyVmManagerClient(settings.address), owned: true };
      this.resolver = new Resolver({
        api: this.vmManager.api,
        localVmId: config.node.id,
        queryTimeoutMs: settings.queryTimeoutMs,
        negativeTtlMs: settings.negativeTtlMs,
        logger: this.logger,
      });
      this.metrics.addResolver(this.resolver.counters);
    }
    const resolver = this.resolver && settings ? { resolver: this.resolver, settings } : undefined;
    const clusters = new Map(config.clusters.map((c) => [c.name, new Cluster(c)]));
    const listenerOptions = { accessLog: config.log.accessLog, ...(this.resolver && { resolver: this.resolver }) };
    const outboundOptions = { accessLog: config.log.accessLog, vsock: config.vsock, breakers: new VsockBreakers(config.vsock.breakerWindowMs), ...(resolver && { resolver }) };
    // Inbound first: a sidecar should accept from peers before it sends to them.
    for (const l of config.listeners) if (l.kind === 'inbound') this.listeners.push(new InboundListener(l, this.context, listenerOptions));
    for (const l of config.listeners) {
      if (l.kind !== 'outbound') continue;
      const cluster = clusters.get(l.cluster);
      if (cluster === undefined) throw new Error(`listener "${l.name}": unknown cluster "${l.cluster}"`);
      this.listeners.push(new OutboundListener(l, cluster, this.context, outboundOptions));
    }
  }

  override async start(): Promise<void> {
    this.resolver?.start();
    await super.start();
  }

  override async stop(): Promise<void> {
    await super.stop();
    this.resolver?.stop();
    if (this.vmManager?.owned) this.vmManager.api.close();
  }

  configDump(): unknown {
    const bound = new Map(this.boundListeners().map((l) => [l.name, l.bound]));
    return {
      state: this.state,
      node: this.config.node,
      vsock: this.config.vsock,
      vmManager: this.config.vmManager && { ...this.config.vmManager, reachable: this.resolver ? !this.resolver.vmManagerDown : null, local: this.resolver?.local() ?? null },
      listeners: this.config.listeners.map((l) => ({ ...l, bound: bound.get(l.name) ?? [] })),
      clusters: this.config.clusters,
      admin: this.adminAddress() ?? null,
      log: this.config.log,
      drainTimeoutMs: this.config.drainTimeoutMs,
    };
  }
}
