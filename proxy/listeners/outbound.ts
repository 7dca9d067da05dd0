// Outbound listener: a local app connects to 127.0.0.1:PORT (or [::1]); the
// connection goes to an endpoint of the listener's cluster, through the peer's
// sidecar (PROXY v2 header first) or directly to the app when it has none.

import type { EndpointConfig, OutboundListenerConfig } from '../config/types.js';
import { formatAddress } from '../log.js';
import type { ConnectionStats } from '../metrics.js';
import { ipFamily, native, type SocketHost } from '../native/index.js';
import { TLV, encodeProxyHeader, tcpAddresses, textTlv, type Tlv } from '../proxy-protocol.js';
import type { Cluster } from '../upstream/cluster.js';
import { Listener, type ListenerContext } from './listener.js';
import { ProxiedConnection } from './proxied-connection.js';

export interface OutboundListenerOptions {
  accessLog: boolean;
}

export class OutboundListener extends Listener {
  private readonly stats: ConnectionStats;

  constructor(
    readonly config: OutboundListenerConfig,
    private readonly cluster: Cluster,
    context: ListenerContext,
    private readonly options: OutboundListenerOptions,
  ) {
    super(config.name, config.addresses, config.port, context);
    this.stats = context.metrics.connectionStats({ listener: config.name, direction: 'outbound', cluster: cluster.name, transport: 'tcp' });
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
    const hop = endpoint.peer ?? endpoint;
    const connection = new ProxiedConnection({
      downstreamFd: fd,
      stats: this.stats,
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
        transport: 'tcp',
        upstream: formatAddress(hop.address, hop.port),
        ...(endpoint.peer === undefined && { mode: 'direct' }),
      },
      onClosed: (c) => this.untrack(c),
    });
    this.track(connection);
    const header = endpoint.peer === undefined ? null : this.peerHeader(srcAddress, peerPort, endpoint);
    connection.connect({ family: ipFamily(hop.address), host: hop.address, port: hop.port, connectTimeoutMs: this.cluster.config.connectTimeoutMs }, { header });
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
