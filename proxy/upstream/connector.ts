// How a listener reaches one endpoint of a cluster once the transport
// decision (select.ts) chose its hops: the attempts in order, each with its
// preamble (relay header, PROXY v2 header naming source and destination), its
// peer TLS when peer-modes.ts says to originate it (on vsock hops: under
// peer_tls.over_vsock), and what a vsock fallback
// does (breaker, metric, log). Shared by the L4 outbound listener and the HTTP
// listener, so a request and a connection to the same endpoint go the same way.

import type { SocketAddress, VsockSettings } from '../config/types.js';
import { formatAddress, type Logger } from '../runtime/log.js';
import type { ProxyMetrics } from '../metrics.js';
import { ipFamily } from '../native/index.js';
import { ProxyHeaderTemplate, TLV, textTlv, type Tlv } from '../proxy-protocol.js';
import { encodeRelayHeader } from '../relay-header.js';
import type { PeerTls } from '../peer-tls/peer-tls.js';
import type { PeerTlsMode } from '../peer-tls/peer-policy.js';
import { originatesTls } from '../peer-tls/peer-modes.js';
import type { VsockBreakerKey, VsockBreakers } from './breakers.js';
import type { Cluster, ClusterSettings } from './cluster.js';
import type { UpstreamAttempt, UpstreamTarget } from './dial.js';
import type { Hop, SelectionReason, VsockHealth } from './select.js';

/** How one connection goes: the decision and what the PROXY v2 header names. */
export interface UpstreamPlan {
  hops: Hop[];
  reason: SelectionReason;
  /** The breaker a failed vsock connect opens; null: no vsock address. */
  breaker: VsockBreakerKey | null;
  /** The destination app, named in the PROXY v2 header. */
  dst: SocketAddress;
  /** Sent in the destination-VM TLV; null: no VM is known. */
  vmId: string | null;
  /** The destination port's peer mode, when the control plane said it. */
  peerMode: PeerTlsMode | undefined;
}

export interface ConnectorOptions {
  vsock: VsockSettings;
  /** Shared by the sidecar's listeners: an endpoint's vsock health is not per listener. */
  breakers: VsockBreakers;
  /** Present when the sidecar has a peer identity. */
  peerTls?: PeerTls;
}

/**
 * What a kept decision's connections share (select.ts decisions are kept per
 * endpoint, so their hops array is the same object each time): the PROXY v2
 * header but its source, and each IP hop's target and label. Made for the
 * first connection; valid while the cluster's settings and the plan's
 * destination and VM are the ones it was made for.
 */
interface PlanParts {
  settings: ClusterSettings;
  dst: SocketAddress;
  vmId: string | null;
  header: ProxyHeaderTemplate | null;
  /** Per hop; null for vsock hops (built per connection). */
  ipHops: Array<{ target: UpstreamTarget; label: string } | null>;
}

export class UpstreamConnector {
  private readonly plans = new WeakMap<Hop[], PlanParts>();

  constructor(
    private readonly listener: string,
    private readonly cluster: Cluster,
    private readonly context: { metrics: ProxyMetrics; logger: Logger; nodeId: string },
    private readonly options: ConnectorOptions,
  ) {}

  /** The attempts for a plan's hops, in order; `src` is the app's address the PROXY v2 header names. */
  attempts(plan: UpstreamPlan, src: SocketAddress): UpstreamAttempt[] {
    const parts = this.parts(plan);
    const header = parts.header?.forSource(src) ?? null;
    const attempts: UpstreamAttempt[] = [];
    for (let i = 0; i < plan.hops.length; i++) attempts.push(this.attempt(plan.hops[i]!, parts.ipHops[i] ?? null, header, plan.breaker, plan.vmId, plan.peerMode));
    return attempts;
  }

  private parts(plan: UpstreamPlan): PlanParts {
    const { hops, dst, vmId } = plan;
    const { settings } = this.cluster;
    const kept = this.plans.get(hops);
    if (kept !== undefined && kept.settings === settings && kept.vmId === vmId && kept.dst.address === dst.address && kept.dst.port === dst.port) return kept;
    const parts: PlanParts = {
      settings,
      dst: { address: dst.address, port: dst.port },
      vmId,
      header: hops.some((h) => h.kind !== 'direct') ? new ProxyHeaderTemplate(dst, this.peerTlvs(settings, vmId)) : null,
      ipHops: hops.map((hop) =>
        hop.kind === 'vsock' ? null : { target: { family: ipFamily(hop.address), host: hop.address, port: hop.port, connectTimeoutMs: settings.connectTimeoutMs }, label: formatAddress(hop.address, hop.port) },
      ),
    };
    this.plans.set(hops, parts);
    return parts;
  }

  private attempt(
    hop: Hop,
    ip: PlanParts['ipHops'][number],
    proxyHeader: Buffer | null,
    breaker: VsockBreakerKey | null,
    vmId: string | null,
    peerMode: PeerTlsMode | undefined,
  ): UpstreamAttempt {
    if (hop.kind !== 'vsock') {
      const { target, label } = ip!;
      const own = this.options.peerTls;
      const peerTls = hop.kind === 'tcp' && originatesTls(own !== undefined, own?.originating ?? false, peerMode) ? own : undefined;
      if (!peerTls) return { transport: 'tcp', target, label, preamble: hop.kind === 'tcp' ? proxyHeader : null };
      const before = peerTls.settings.proxyHeader === 'before_tls';
      return {
        transport: 'tcp',
        target,
        label,
        preamble: before ? null : proxyHeader,
        secure: (fd, done) => peerTls.originate(fd, this.listener, vmId, label, before ? proxyHeader : null, done),
      };
    }
    const { connectTimeoutMs } = this.options.vsock;
    const onFallback = (code: string, next: UpstreamAttempt): void => {
      if (breaker !== null) this.options.breakers.open(breaker, Date.now());
      const vsock = `${hop.cid}:${hop.port}`;
      this.context.metrics.fallbacks.inc({ listener: this.listener, cluster: this.cluster.name, from: 'vsock', to: next.transport, code });
      this.context.logger.warn(
        { listener: this.listener, cluster: this.cluster.name, reason: 'vsock_fallback', code, vsock, fallback: next.label, breaker_ms: this.options.vsock.breakerWindowMs },
        `vsock connect to ${vsock} failed (${code}); falling back to ${next.transport} ${next.label}, vsock skipped for ${this.options.vsock.breakerWindowMs}ms`,
      );
    };
    const relayHeader = hop.relay ? encodeRelayHeader({ cid: hop.cid, port: hop.port }) : null;
    const to = hop.relay ?? hop;
    const label = hop.relay ? `vsock:${hop.relay.cid}:${hop.relay.port}>${hop.cid}:${hop.port}` : `vsock:${hop.cid}:${hop.port}`;
    const target = { family: 'vsock', host: to.cid, port: to.port, connectTimeoutMs } as const;
    const peerTls = this.options.peerTls;
    if (peerTls?.settings.overVsock) {
      // The relay header alone in the clear (the relay reads it); the PROXY header inside TLS.
      return { transport: 'vsock', target, label, preamble: proxyHeader, onFallback, secure: (fd, done) => peerTls.originate(fd, this.listener, vmId, label, relayHeader, done) };
    }
    const preamble = relayHeader && proxyHeader ? Buffer.concat([relayHeader, proxyHeader]) : (relayHeader ?? proxyHeader);
    return { transport: 'vsock', target, label, preamble, onFallback };
  }

  private peerTlvs(settings: ClusterSettings, vmId: string | null): Tlv[] {
    const tlvs: Tlv[] = [];
    if (settings.authority !== undefined) tlvs.push(textTlv(TLV.AUTHORITY, settings.authority));
    tlvs.push(textTlv(TLV.VSOCKMESH_SOURCE_VM, this.context.nodeId));
    if (vmId !== null) tlvs.push(textTlv(TLV.VSOCKMESH_DESTINATION_VM, vmId));
    return tlvs;
  }

  vsockHealth(breaker: VsockBreakerKey | null): VsockHealth {
    if (!this.options.vsock.enabled) return 'disabled';
    return breaker !== null && this.options.breakers.isOpen(breaker, Date.now()) ? 'breaker_open' : 'available';
  }
}
