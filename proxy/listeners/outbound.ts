// Outbound listener: a local app connects to 127.0.0.1:PORT (or [::1]); the
// connection goes to an endpoint of the listener's cluster: over vsock to the
// peer's sidecar when the endpoint has a vsock address (directly or through
// the host relay), over TCP to the peer's sidecar otherwise or as the
// fallback, or straight to the app when it has no sidecar.

import type { EndpointConfig, OutboundListenerConfig, VsockSettings } from '../config/types.js';
import { formatAddress } from '../log.js';
import type { ConnectionStats, TransportName } from '../metrics.js';
import { ipFamily, native, type SocketHost } from '../native/index.js';
import { TLV, encodeProxyHeader, tcpAddresses, textTlv, type Tlv } from '../proxy-protocol.js';
import { encodeRelayHeader } from '../relay-header.js';
import type { Cluster } from '../upstream/cluster.js';
import { VsockBreakers, planHops, type Hop } from '../upstream/transport.js';
import { Listener, ipBinds, type ListenerContext } from './listener.js';
import { ProxiedConnection, type UpstreamAttempt } from './proxied-connection.js';

export interface OutboundListenerOptions {
  accessLog: boolean;
  vsock: VsockSettings;
  /** Shared by the sidecar's listeners: an endpoint's vsock health is not per listener. */
  breakers: VsockBreakers;
}

export class OutboundListener extends Listener {
  private readonly stats: Record<TransportName, ConnectionStats>;

  constructor(
    readonly config: OutboundListenerConfig,
    private readonly cluster: Cluster,
    context: ListenerContext,
    private readonly options: OutboundListenerOptions,
  ) {
    super(config.name, ipBinds(config.addresses), config.port, context);
    const labels = { listener: config.name, direction: 'outbound', cluster: cluster.name } as const;
    this.stats = {
      tcp: context.metrics.connectionStats({ ...labels, transport: 'tcp' }),
      vsock: context.metrics.connectionStats({ ...labels, transport: 'vsock' }),
    };
  }

  protected onConnection(fd: number, peerHost: SocketHost, peerPort: number): void {
    const { logger, metrics } = this.context;
    const endpoint = this.cluster.pick();
    const srcAddress = String(peerHost);
    const src = formatAddress(srcAddress, peerPort);
    if (endpoint === undefined) {
      metrics.refused.inc({ listener: this.name, reason: 'no_endpoint' });
      logger.warn({ listener: this.name, src, cluster: this.cluster.name, reason: 'no_endpoint' }, 'refused: cluster has no endpoint');
      native.close(fd);
      return;
    }
    const { vsock, breakers } = this.options;
    const breakerKey = endpoint.vsock ? VsockBreakers.key(endpoint.vsock.cid, endpoint.vsock.port) : '';
    const plan = planHops(endpoint, { vsockEnabled: vsock.enabled, vsockBreakerOpen: endpoint.vsock !== undefined && breakers.isOpen(breakerKey, Date.now()) });
    const proxyHeader = plan.hops.some((h) => h.transport === 'vsock' || h.peer) ? this.peerHeader(srcAddress, peerPort, endpoint) : null;
    const attempts = plan.hops.map((hop) => this.attempt(hop, proxyHeader, breakerKey));
    const connection = new ProxiedConnection({
      downstreamFd: fd,
      statsFor: (transport) => this.stats[transport],
      metrics,
      logger,
      accessLogger: this.options.accessLog ? this.context.accessLogger : null,
      idleTimeoutMs: this.config.idleTimeoutMs,
      fields: {
        listener: this.name,
        direction: 'outbound',
        src,
        dst: formatAddress(endpoint.address, endpoint.port),
        cluster: this.cluster.name,
        transport: attempts[0]!.transport,
        upstream: attempts[0]!.label,
        route: plan.reason,
      },
      onClosed: (c) => this.untrack(c),
    });
    this.track(connection);
    connection.connect(attempts);
  }

  private attempt(hop: Hop, proxyHeader: Buffer | null, breakerKey: string): UpstreamAttempt {
    if (hop.transport === 'tcp') {
      const target = { family: ipFamily(hop.address), host: hop.address, port: hop.port, connectTimeoutMs: this.cluster.config.connectTimeoutMs };
      return { transport: 'tcp', target, label: formatAddress(hop.address, hop.port), preamble: hop.peer ? proxyHeader : null };
    }
    const { connectTimeoutMs } = this.options.vsock;
    const onFallback = (code: string, next: UpstreamAttempt): void => {
      this.options.breakers.open(breakerKey, Date.now());
      this.context.metrics.fallbacks.inc({ listener: this.name, cluster: this.cluster.name, from: 'vsock', to: next.transport, code });
      this.context.logger.warn(
        { listener: this.name, cluster: this.cluster.name, reason: 'vsock_fallback', code, vsock: breakerKey, fallback: next.label, breaker_ms: this.options.vsock.breakerWindowMs },
        `vsock connect to ${breakerKey} failed (${code}); falling back to ${next.transport} ${next.label}, vsock skipped for ${this.options.vsock.breakerWindowMs}ms`,
      );
    };
    if (hop.relay) {
      const preamble = proxyHeader ? Buffer.concat([encodeRelayHeader({ cid: hop.cid, port: hop.port }), proxyHeader]) : encodeRelayHeader({ cid: hop.cid, port: hop.port });
      return {
        transport: 'vsock',
        target: { family: 'vsock', host: hop.relay.cid, port: hop.relay.port, connectTimeoutMs },
        label: `vsock:${hop.relay.cid}:${hop.relay.port}>${hop.cid}:${hop.port}`,
        preamble,
        onFallback,
      };
    }
    return { transport: 'vsock', target: { family: 'vsock', host: hop.cid, port: hop.port, connectTimeoutMs }, label: `vsock:${hop.cid}:${hop.port}`, preamble: proxyHeader, onFallback };
  }

  private peerHeader(srcAddress: string, srcPort: number, endpoint: EndpointConfig): Buffer {
    const tlvs: Tlv[] = [];
    if (this.cluster.config.authority !== undefined) tlvs.push(textTlv(TLV.AUTHORITY, this.cluster.config.authority));
    tlvs.push(textTlv(TLV.VSOCKMESH_SOURCE_VM, this.context.nodeId));
    if (endpoint.vmId !== undefined) tlvs.push(textTlv(TLV.VSOCKMESH_DESTINATION_VM, endpoint.vmId));
    return encodeProxyHeader({
      command: 'proxy',
      addresses: tcpAddresses({ address: srcAddress, port: srcPort }, { address: endpoint.address, port: endpoint.port }),
      tlvs,
    });
  }
}
