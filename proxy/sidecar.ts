// The sidecar: outbound listeners for local apps, inbound listeners (TCP and
// vsock) for peer sidecars, on the shared server lifecycle.

import type { SidecarConfig } from './config/types.js';
import { InboundListener } from './listeners/inbound.js';
import { OutboundListener } from './listeners/outbound.js';
import { ProxyServer, type ServerOptions } from './server.js';
import { Cluster } from './upstream/cluster.js';
import { VsockBreakers } from './upstream/transport.js';

export type { DrainResult, ServerState as SidecarState } from './server.js';
export type SidecarOptions = ServerOptions;

export class Sidecar extends ProxyServer {
  constructor(
    readonly config: SidecarConfig,
    options: SidecarOptions = {},
  ) {
    super({ nodeId: config.node.id, admin: config.admin, logLevel: config.log.level, drainTimeoutMs: config.drainTimeoutMs }, options);
    const clusters = new Map(config.clusters.map((c) => [c.name, new Cluster(c)]));
    const listenerOptions = { accessLog: config.log.accessLog };
    const outboundOptions = { ...listenerOptions, vsock: config.vsock, breakers: new VsockBreakers(config.vsock.breakerWindowMs) };
    // Inbound first: a sidecar should accept from peers before it sends to them.
    for (const l of config.listeners) if (l.kind === 'inbound') this.listeners.push(new InboundListener(l, this.context, listenerOptions));
    for (const l of config.listeners) {
      if (l.kind !== 'outbound') continue;
      const cluster = clusters.get(l.cluster);
      if (cluster === undefined) throw new Error(`listener "${l.name}": unknown cluster "${l.cluster}"`);
      this.listeners.push(new OutboundListener(l, cluster, this.context, outboundOptions));
    }
  }

  configDump(): unknown {
    const bound = new Map(this.boundListeners().map((l) => [l.name, l.bound]));
    return {
      state: this.state,
      node: this.config.node,
      vsock: this.config.vsock,
      listeners: this.config.listeners.map((l) => ({ ...l, bound: bound.get(l.name) ?? [] })),
      clusters: this.config.clusters,
      admin: this.adminAddress() ?? null,
      log: this.config.log,
      drainTimeoutMs: this.config.drainTimeoutMs,
    };
  }
}
