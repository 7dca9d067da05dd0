// Inbound listener: peers (other sidecars, or any PROXY v2 sender such as
// HAProxy) connect here. Each connection must start with a PROXY v2 header,
// read within a size limit and a deadline; its destination port must be one
// the config declares. Anything else is refused: never an open proxy.
// Under peer TLS (TCP; vsock too under peer_tls.over_vsock) the peer first
// completes a TLS handshake and its identity is admitted before the header is
// read (or, proxy_header: before_tls, TCP only, right after the header and
// before anything else); over vsock its certificate must name the VM its CID
// belongs to, or, through the host relay, the VM the relay's assertion (read
// in the clear before the handshake) names (peer-tls/vsock-peer.ts).
// Once the header is read, the connection's principal (policy/principal.ts)
// and destination port go through the pushed authorization policies before
// any byte is relayed; a policy change may close it later.

import type { InboundListenerConfig, InboundPortConfig } from '../config/types.js';
import { formatAddress } from '../runtime/log.js';
import type { ConnectionStats } from '../metrics.js';
import { ipFamily, native, type SocketHost } from '../native/index.js';
import { inboundClusterName } from '../dynamic/names.js';
import { FIXED_LENGTH, TLV, acceptedEndpoint, acceptedTlvText, decodeProxyHeader, encodeProxyHeader, tlvText, type ProxyHeader } from '../proxy-protocol.js';
import { Listener, WARM_CORE_OPEN, WARM_ENABLED, WARM_LIST_FIELDS, ipBinds, type ListenerContext } from './listener.js';
import type { Resolver } from '../resolve/resolver.js';
import { HOST_CID } from '../upstream/endpoint-facts.js';
import type { VmRecord } from '../resolve/types.js';
import { readPreamble, type HandedOver, type PreambleOptions } from './preamble.js';
import { ProxiedConnection, upstreamConnectFailed, type AccessLogFields } from './proxied-connection.js';
import { warmGeneration, warmInstall } from '../native/warm.js';
import { warmRecords, type WarmRecord } from './warm-records.js';
import { AccessLines, accessMembers, textMember } from './access-lines.js';
import type { PeerFields, PeerTls, SecureOutcome } from '../peer-tls/peer-tls.js';
import { UNAUTHENTICATED, sourceVmProblem } from '../peer-tls/peer-policy.js';
import { InboundPeerModes } from './inbound-peer-modes.js';
import { vmOfIdentity, vsockHandshake, vsockPeerAgreement } from '../peer-tls/vsock-peer.js';
import type { RelayAssertion } from '../relay-assertion.js';
import type * as RelayedPreambleModule from './relayed-preamble.js';
import { inboundPrincipal, type InboundPeer } from '../policy/principal.js';
import type { InboundAuthorization, OpenConnection } from '../policy/inbound-authorization.js';
import { DEFAULT_TRUST_DOMAIN } from '../identity/spiffe.js';

export interface InboundListenerOptions {
  accessLog: boolean;
  /** Needed for peer_authorization: registry. */
  resolver?: Resolver;
  /** The trust domain and roots a host relay's source assertion is checked against (vsock, peer_authorization: registry). */
  relayTrust?: () => { trustDomain: string; bundlePem: string } | null;
  /** Present when the sidecar has a peer identity (vsock listeners use it under peer_tls.over_vsock). */
  peerTls?: PeerTls;
  /** The pushed authorization policies, checked once a connection's principal is known (none: everything allowed). */
  authorization?: InboundAuthorization;
  /** The trust domain of the principal of a registry-verified vsock peer (default vsockmesh.local). */
  trustDomain?: string;
  /**
   * The CID relayed connections come from: the host's (2, the default). A
   * test guest under vsock_loopback has CID 1 only, and sets 1 to have its
   * relay taken for the host's.
   */
  relayCid?: number;
}

export class InboundListener extends Listener {
  private readonly ports: Map<number, InboundPortConfig>;
  private readonly allowedPeerCids: Set<number>;
  private readonly stats = new Map<number, ConnectionStats>();
  /** TCP: each port's peer mode (pushed, else the file's). */
  readonly peerModes: InboundPeerModes;
  /** The relayed preamble's decoding and checks, loaded by start() on a vsock listener (the only kind a relayed connection reaches). */
  private relayedPreamble: typeof RelayedPreambleModule | null = null;
  /** The warm path's listener id and records (null: off, or done). */
  private warm: { id: number; stopRecords: () => void; unfollow?: (() => void) | undefined } | null = null;
  /** The decisions route() installed, by entry id: what each record of theirs is logged and counted with. */
  private readonly warmDecisions = new Map<number, WarmDecision>();
  /** The current batch of records: lines and counts, written and bumped once at its end. */
  private readonly warmBatch = { lines: null as AccessLines | null, finished: 0, unauthenticated: 0, rbacAllowed: 0 };

  constructor(
    readonly config: InboundListenerConfig,
    context: ListenerContext,
    private readonly options: InboundListenerOptions,
  ) {
    super(config.name, config.transport === 'vsock' ? [{ family: 'vsock', host: config.vsockCid }] : ipBinds(config.addresses), config.port, context, config.maxConnections);
    this.ports = new Map(config.ports.map((p) => [p.port, p]));
    this.allowedPeerCids = new Set(config.allowedPeerCids);
    this.peerModes = new InboundPeerModes(config.name, config.ports, options.peerTls?.settings.mode ?? 'disable', options.peerTls !== undefined, context.logger);
    if (config.transport === 'vsock' && options.peerTls?.settings.overVsock && config.peerAuthorization !== 'registry') {
      context.logger.warn(
        { listener: config.name, reason: 'over_vsock_without_registry' },
        'peer_tls.over_vsock on a vsock listener without peer_authorization: registry: the certificate and the CID are each checked, but not against each other (no VM manager to say which VM a CID is)',
      );
    }
    for (const p of config.ports) {
      this.stats.set(p.port, context.metrics.connectionStats({ listener: config.name, direction: 'inbound', cluster: inboundClusterName(p.port), transport: config.transport }));
    }
  }

  /**
   * Relayed connections come from the host over vsock only: a vsock listener
   * loads their preamble's checks (the relay's signed assertion: node:crypto,
   * the X.509 parser) before it listens, a TCP listener never (~1 MiB of an
   * idle sidecar's RSS).
   */
  override async start(): Promise<void> {
    if (this.config.transport === 'vsock') this.relayedPreamble = await import('./relayed-preamble.js');
    await super.start();
    if (this.config.transport === 'tcp' && this.config.warmPath) this.startWarm();
  }

  /**
   * The warm path (README, "The inbound warm path"): the core takes this
   * listener's accepts, replays the decisions route() installs, and hands
   * back what it does not take. On only while the listener reads headers in
   * the clear (no port's mode needs a TLS handshake).
   */
  private startWarm(): void {
    const records = warmRecords({ record: (record) => this.warmFinished(record), end: () => this.warmBatchEnd() });
    this.warm = { id: records.id, stopRecords: records.stop };
    const handOver = (fd: number, host: SocketHost, port: number, bytes: Buffer, elapsedMs: number): void => this.handedOver(fd, host, port, bytes, elapsedMs);
    for (const fd of this.listening()) native.warmListen(fd, records.id, this.config.maxHeaderBytes, this.config.headerTimeoutMs, this.counters, this.context.admission.counters, handOver);
    const follow = (): void => {
      this.counters[WARM_ENABLED] = this.peerModes.handshake().kind === 'plain' ? 1 : 0;
    };
    this.peerModes.changed = follow;
    follow();
    this.warm.unfollow = this.options.authorization?.follow(() => this.warmOpen());
  }

  /** The core's relaying warm connections as the policies see them (relayAbort closes one; its record says aborted). */
  private warmOpen(): OpenConnection[] {
    if (this.warm === null) return [];
    const listed = native.warmList(this.warm.id);
    const open: OpenConnection[] = [];
    for (let i = 0; i < listed.length; i += WARM_LIST_FIELDS) {
      const [relayId, port, label, header, peerHost, peerPort] = listed.slice(i, i + WARM_LIST_FIELDS) as [number, number, number, Buffer, string, number];
      const decoded = decodeProxyHeader(header, { maxLength: this.config.maxHeaderBytes, streamOnly: true });
      if (decoded.kind !== 'header') continue;
      const fields = originFields(decoded.header, formatAddress(peerHost, peerPort), { hop: 'tcp', tlsIdentity: null }, label === 1 ? { peer_identity: UNAUTHENTICATED } : null);
      open.push({ listener: this.name, port, principal: fields.principal, fields, close: () => native.relayAbort(relayId) });
    }
    return open;
  }

  /** Once drained or stopped and the core holds none of its connections: no more records, no entries. */
  private warmDone(): void {
    if (this.warm === null || !this.draining || this.counters[WARM_CORE_OPEN] !== 0) return;
    this.warm.stopRecords();
    this.warm.unfollow?.();
    native.warmForget(this.warm.id);
    this.warm = null;
  }

  override async drain(): Promise<void> {
    this.counters[WARM_ENABLED] = 0;
    const drained = super.drain();
    this.warmDone();
    await drained;
  }

  protected override warmId(): number | null {
    return this.warm?.id ?? null;
  }

  override abortConnections(): void {
    super.abortConnections();
    if (this.warm === null) return;
    this.abortWarm();
    // One reading its header leaves no record (no batch end): a drain may be over all the same.
    this.warmClosed();
    this.warmDone();
  }

  override async stop(): Promise<void> {
    this.counters[WARM_ENABLED] = 0;
    await super.stop();
    this.warmDone();
  }

  protected onConnection(fd: number, peerHost: SocketHost, peerPort: number, handedOver?: HandedOver): void {
    if (handedOver !== undefined) {
      // The core read (part of) a plain-text header: the handshake was plain when it accepted.
      this.readHeader(fd, this.sourceOf(peerHost, peerPort), false, (header, early) => this.admitted(fd, this.sourceOf(peerHost, peerPort), undefined, null, header, early), handedOver);
      return;
    }
    const vsock = this.config.transport === 'vsock';
    const src = vsock ? `vsock:${String(peerHost)}:${peerPort}` : formatAddress(String(peerHost), peerPort);
    const peerCid = vsock ? Number(peerHost) : undefined;
    if (vsock && this.config.peerAuthorization === 'allow-list' && !this.allowedPeerCids.has(Number(peerHost))) {
      // The CID comes from the kernel: a guest cannot claim another's.
      this.context.metrics.refused.inc({ listener: this.name, reason: 'peer_cid_not_allowed' });
      this.context.refusals.warn({ listener: this.name, src, peer_cid: peerHost, reason: 'peer_cid_not_allowed' }, `refused: vsock peer CID ${String(peerHost)} is not in allowed_peer_cids`);
      native.close(fd);
      return;
    }
    const peerTls = this.options.peerTls;
    const relayed = peerCid === (this.options.relayCid ?? HOST_CID);
    const handshake = vsock ? vsockHandshake(peerTls?.settings.overVsock ?? false, relayed, this.config.peerAuthorization === 'registry') : this.peerModes.handshake();
    if (handshake.kind === 'refuse') {
      this.peerRefused(fd, src, handshake.reason, handshake.detail);
    } else if (relayed && handshake.kind === 'tls' && peerTls !== undefined) {
      // The relay's assertion in the clear, then TLS end to end with the source sidecar, then the PROXY header inside it.
      const { ASSERTION_PREFIX_LENGTH, decodeRelayAssertionAlone } = this.relayedPreamble!;
      this.readFirst(fd, src, ASSERTION_PREFIX_LENGTH, 'relay assertion', decodeRelayAssertionAlone, (assertion) =>
        this.secure(peerTls, false, fd, src, (peer) => this.readHeader(fd, src, false, (header, early) => this.admitted(fd, src, peerCid, peer, header, early, assertion))),
      );
    } else if (relayed) {
      // From the host relay: its signed assertion of the source VM may come first (checked under peer_authorization: registry).
      const { maxHeaderBytes } = this.config;
      const { decodeRelayedPreamble, maxRelayedPreambleBytes } = this.relayedPreamble!;
      this.readFirst(fd, src, maxRelayedPreambleBytes(maxHeaderBytes), 'relay assertion and PROXY v2 header', (bytes) => decodeRelayedPreamble(bytes, maxHeaderBytes), (relayed, early) =>
        this.admitted(fd, src, peerCid, null, relayed.header, early, relayed.assertion),
      );
    } else if (handshake.kind === 'plain' || peerTls === undefined) {
      this.readHeader(fd, src, false, (header, early) => this.admitted(fd, src, peerCid, null, header, early));
    } else if (peerTls.settings.proxyHeader === 'before_tls' && !vsock) {
      // HAProxy's form: the header in the clear, read exactly, then the handshake.
      this.readHeader(fd, src, true, (header) => this.secure(peerTls, handshake.plain, fd, src, (peer) => this.admitted(fd, src, undefined, peer, header, null)));
    } else {
      this.secure(peerTls, handshake.plain, fd, src, (peer) => this.readHeader(fd, src, false, (header, early) => this.admitted(fd, src, peerCid, peer, header, early)));
    }
  }

  /** A peer its port's mode (TCP) or over_vsock (vsock) does not let in: counted with the handshake failures (same reasons), logged, closed. */
  private peerRefused(fd: number, src: string, reason: string, detail: string): void {
    this.context.metrics.peerTlsFailures.inc({ listener: this.name, direction: 'inbound', reason });
    this.context.refusals.warn({ listener: this.name, src, reason }, `refused: ${detail}`);
    native.close(fd);
  }

  /** The peer TLS handshake and admission; `then` runs only for an admitted peer, else the connection is refused (counted by PeerTls). */
  private secure(peerTls: PeerTls, acceptPlain: boolean, fd: number, src: string, then: (peer: PeerFields) => void): void {
    const handshake = new Promise<SecureOutcome>((resolve) => peerTls.terminate(fd, this.name, this.config.allowedPeerIds, acceptPlain, resolve));
    this.whilePending(fd, handshake, (outcome) => {
      if (outcome.ok) {
        then(outcome.fields);
        return;
      }
      const detail = this.config.transport === 'vsock' && outcome.reason === 'plain_text' ? 'a plain-text peer is refused: peer_tls.over_vsock requires TLS on the vsock hop' : outcome.detail;
      this.context.refusals.warn({ listener: this.name, src, reason: outcome.reason, detail }, `refused: peer TLS: ${detail}`);
      native.close(fd);
    });
  }

  private sourceOf(peerHost: SocketHost, peerPort: number): string {
    return this.config.transport === 'vsock' ? `vsock:${String(peerHost)}:${peerPort}` : formatAddress(String(peerHost), peerPort);
  }

  /** Reads the PROXY v2 header (exact: no byte past it, as TLS follows). Refusals are handled here; `then` gets a valid header. */
  private readHeader(fd: number, src: string, exact: boolean, then: (header: ProxyHeader, early: Buffer | null) => void, handedOver?: HandedOver): void {
    const { maxHeaderBytes } = this.config;
    this.readFirst(
      fd,
      src,
      exact ? FIXED_LENGTH : maxHeaderBytes,
      'PROXY v2 header',
      (bytes) => {
        const r = decodeProxyHeader(bytes, { maxLength: maxHeaderBytes, streamOnly: true });
        return r.kind === 'header' ? { kind: 'done', value: r.header, length: r.length } : r;
      },
      then,
      handedOver,
    );
  }

  /** Reads what a peer sends first, within max_header_bytes-like bounds and header_timeout. Refusals are handled here; `then` gets a valid value. */
  private readFirst<T>(fd: number, src: string, maxBytes: number, what: string, decode: PreambleOptions<T>['decode'], then: (value: T, early: Buffer | null) => void, handedOver?: HandedOver): void {
    readPreamble(
      fd,
      {
        maxBytes,
        timeoutMs: this.config.headerTimeoutMs,
        what,
        decode,
        track: (c) => this.track(c),
        untrack: (c) => this.untrack(c),
        ...(handedOver && { handedOver }),
      },
      (result) => {
        if (result.ok) {
          then(result.value, result.early);
          return;
        }
        native.close(fd);
        if (result.code === 'peer_error' || result.code === 'aborted') {
          this.context.logger.debug({ listener: this.name, src, code: result.code }, result.detail);
          return;
        }
        const reason = result.code === 'timeout' || result.code === 'truncated' ? `header_${result.code}` : result.code;
        this.context.metrics.headerErrors.inc({ listener: this.name, reason });
        this.context.refusals.warn({ listener: this.name, src, reason, detail: result.detail }, `refused: ${result.detail}`);
      },
    );
  }

  /** A header read from an admitted peer: its source-VM claim checked against the certificate, then authorized and routed. */
  private admitted(fd: number, src: string, peerCid: number | undefined, tlsPeer: PeerFields | null, header: ProxyHeader, early: Buffer | null, assertion: RelayAssertion | null = null): void {
    const peer = peerCid === undefined ? this.portAdmitted(fd, src, tlsPeer, header) : tlsPeer;
    if (peer === false) return;
    const claimed = tlvText(header, TLV.VSOCKMESH_SOURCE_VM);
    const problem = peer && this.options.peerTls ? sourceVmProblem(peer.peer_identity, claimed, this.options.peerTls.settings.trustDomain) : undefined;
    if (problem !== undefined) {
      this.context.metrics.refused.inc({ listener: this.name, reason: 'source_vm_mismatch' });
      this.context.refusals.warn({ listener: this.name, src, source_vm: claimed ?? null, peer_identity: peer!.peer_identity, reason: 'source_vm_mismatch' }, `refused: ${problem}`);
      native.close(fd);
      return;
    }
    if (peerCid !== undefined && this.config.peerAuthorization === 'registry') this.authorize(fd, src, peerCid, header, early, assertion, peer);
    else if (peerCid !== undefined && peer !== null) this.route(fd, src, header, early, { hop: 'vsock-tls', tlsIdentity: peer.peer_identity }, peer);
    else if (peerCid !== undefined) this.route(fd, src, header, early, { hop: 'vsock', registryVerifiedVm: null });
    else this.route(fd, src, header, early, { hop: 'tcp', tlsIdentity: peer && peer.peer_identity !== UNAUTHENTICATED ? peer.peer_identity : null }, peer);
  }

  /**
   * A TCP peer against the mode of the port its header names: false when
   * refused (closed here), else what the access log says of the peer (a
   * plain-text peer is `unauthenticated` under PERMISSIVE, counted; nothing
   * under DISABLE). LOCAL headers and undeclared ports are route()'s.
   */
  private portAdmitted(fd: number, src: string, peer: PeerFields | null, header: ProxyHeader): PeerFields | null | false {
    if (header.command === 'local' || header.addresses.family === 'unspec' || header.addresses.family === 'unix') return peer;
    const tls = peer !== null && peer.peer_identity !== UNAUTHENTICATED;
    const admission = this.peerModes.admit(header.addresses.destination.port, tls);
    if (admission === undefined) return peer;
    if (!admission.ok) {
      this.peerRefused(fd, src, admission.reason, admission.detail);
      return false;
    }
    if (!admission.unauthenticated) return tls ? peer : null;
    this.context.metrics.unauthenticated.inc({ listener: this.name });
    return { peer_identity: UNAUTHENTICATED };
  }

  /**
   * peer_authorization: registry. The kernel-given CID must belong, in the VM
   * manager's records, to the VM the header names, on our hypervisor. A
   * connection from the host (CID 2) on a host-relay hypervisor was checked by
   * the relay. A TLS peer (over_vsock) claims the VM of its certificate,
   * which must be at its CID (cid_identity_mismatch). Fails closed: no answer
   * from the VM manager, no connection.
   */
  private authorize(fd: number, src: string, peerCid: number, header: ProxyHeader, early: Buffer | null, assertion: RelayAssertion | null, tlsPeer: PeerFields | null): void {
    const resolver = this.options.resolver!;
    const claimed = tlsPeer ? vmOfIdentity(tlsPeer.peer_identity) : tlvText(header, TLV.VSOCKMESH_SOURCE_VM);
    const refuse = (reason: string, detail: string): void => {
      this.context.metrics.refused.inc({ listener: this.name, reason });
      this.context.refusals.warn({ listener: this.name, src, peer_cid: peerCid, source_vm: claimed ?? null, reason }, `refused: ${detail}`);
      native.close(fd);
    };
    const local = resolver.local();
    if (local === null) {
      // Not told yet (the Watch snapshot may still be on its way): ask once for ourselves.
      this.whenLocalKnown(fd, () => {
        if (resolver.local() === null) refuse('local_vm_unknown', 'this VM is not known to the VM manager (or it cannot be reached), so no vsock peer can be checked');
        else this.authorize(fd, src, peerCid, header, early, assertion, tlsPeer);
      });
      return;
    }
    if (peerCid === (this.options.relayCid ?? HOST_CID) && resolver.hypervisor(local.hypervisorId)?.vsockMode === 'host-relay') {
      // Checked by the relay, which may assert the source VM (relayed-preamble.ts): the asserted VM is the principal; a TLS peer's certificate must name it.
      const claim = tlsPeer ? ({ kind: 'certificate', identity: tlsPeer.peer_identity } as const) : ({ kind: 'header', vmId: claimed } as const);
      const admission = this.relayedPreamble!.admitRelayed(assertion, this.options.relayTrust?.() ?? null, { hypervisorId: local.hypervisorId, destination: { cid: local.vsockCid, port: this.boundVsockPort() }, now: new Date() }, claim);
      if (admission.kind === 'refused') refuse(admission.reason, admission.detail);
      else if (admission.kind === 'asserted') this.route(fd, src, header, early, admission.peer, { ...tlsPeer, peer_identity: admission.principal, relay: admission.relay });
      else this.route(fd, src, header, early, { hop: 'vsock-relayed', verdict: null, trustDomain: this.options.trustDomain ?? DEFAULT_TRUST_DOMAIN });
      return;
    }
    if (claimed === undefined) {
      if (tlsPeer) refuse('cid_identity_mismatch', `vsock peer CID ${peerCid} presented ${tlsPeer.peer_identity}, which is not a VM's identity`);
      else refuse('peer_identity_unknown', `vsock peer CID ${peerCid} sent no source-VM TLV`);
      return;
    }
    const trustDomain = this.options.trustDomain ?? DEFAULT_TRUST_DOMAIN;
    const check = (vm: VmRecord | undefined): void => {
      if (tlsPeer) {
        const agreement = vsockPeerAgreement(tlsPeer.peer_identity, { kind: 'cid', peerCid, localHypervisor: local.hypervisorId, placed: vm });
        if (agreement.ok) this.route(fd, src, header, early, { hop: 'vsock', registryVerifiedVm: agreement.vmId, trustDomain }, tlsPeer);
        else refuse(agreement.reason, agreement.detail);
      } else if (vm === undefined) refuse('peer_identity_mismatch', `vsock peer CID ${peerCid} claims VM ${claimed}, which the VM manager does not know`);
      else if (vm.vsockCid !== peerCid || vm.hypervisorId !== local.hypervisorId) {
        refuse('peer_identity_mismatch', `vsock peer CID ${peerCid} claims VM ${claimed}, which is CID ${vm.vsockCid} on ${vm.hypervisorId} (we are on ${local.hypervisorId})`);
      } else this.route(fd, src, header, early, { hop: 'vsock', registryVerifiedVm: claimed, trustDomain });
    };
    const destination = { kind: 'vm', vmId: claimed } as const;
    const cached = resolver.lookup(destination);
    if (cached) {
      check(cached.found ? cached.vm : undefined);
      return;
    }
    this.whilePending(fd, resolver.resolve(destination), (outcome) => {
      if (outcome.kind === 'unavailable') refuse('vm_manager_unavailable', `cannot check vsock peer CID ${peerCid} (claims ${claimed}): VM manager unavailable (${outcome.code})`);
      else check(outcome.resolution.found ? outcome.resolution.vm : undefined);
    });
  }

  /** The vsock port this listener bound (a relay assertion names it). */
  private boundVsockPort(): number {
    return this.addresses()[0]?.port ?? this.config.port;
  }

  /** Runs `then` once a query for our own record has answered (or failed); the connection is tracked meanwhile. */
  private whenLocalKnown(fd: number, then: () => void): void {
    this.whilePending(fd, this.options.resolver!.resolve({ kind: 'vm', vmId: this.context.nodeId }), then);
  }

  /** A connection's access-line fields (ProxiedConnection's, and the warm path's records'). */
  private accessFields(dstPort: number, declared: InboundPortConfig, origin: AccessOrigin): AccessLogFields {
    return { ...this.accessHead(dstPort, declared), ...origin };
  }

  /** The access fields that come before a connection's origin: the same for every connection to the port. */
  private accessHead(dstPort: number, declared: InboundPortConfig): AccessHead {
    const { target } = declared;
    return {
      listener: this.name,
      direction: 'inbound',
      cluster: inboundClusterName(dstPort),
      transport: this.config.transport,
      upstream: formatAddress(target.address, target.port),
    };
  }

  /**
   * A connection the warm path finished: logged and counted exactly as
   * route() and ProxiedConnection would have (the header's addresses and
   * TLVs read in place from the record's bytes; the decision was route()'s,
   * installed then).
   * The line is added to the batch's, the counters gathered for its end.
   */
  private warmFinished(record: WarmRecord): void {
    const decision = this.warmDecisions.get(record.entryId);
    if (decision === undefined) throw new Error('unreachable: a warm record of no installed decision');
    // The core's parser took the header as decodeProxyHeader does (streamOnly, a PROXY command over TCP/IPv4 or IPv6): read in place.
    const header = record.header();
    const batch = this.warmBatch;
    if (decision.unauthenticated) batch.unauthenticated++;
    if (decision.rbacAllowed) batch.rbacAllowed++;
    batch.finished++;
    const source = acceptedEndpoint(header, 'source');
    const destination = acceptedEndpoint(header, 'destination');
    const src = formatAddress(source.address, source.port);
    const dst = formatAddress(destination.address, destination.port);
    const peer = formatAddress(record.peerHost(), record.peerPort);
    const sourceVm = acceptedTlvText(header, TLV.VSOCKMESH_SOURCE_VM);
    const authority = acceptedTlvText(header, TLV.AUTHORITY);
    let { outcome, bytesToUpstream, bytesToDownstream } = record as { outcome: string; bytesToUpstream: number; bytesToDownstream: number };
    let errorCode = record.errorCode();
    if (outcome === 'connect_aborted') {
      // A stop or a drain's deadline while connecting to the app: as ProxiedConnection.abort, no bytes, no connection of the port's counts.
      outcome = 'aborted';
    } else if (outcome === 'connect_failed') {
      errorCode ??= 'ECONNREFUSED';
      const fields = { ...decision.fields, src, dst, peer, ...(sourceVm !== undefined && { source_vm: sourceVm }), ...(authority !== undefined && { authority }), ...decision.peer, principal: decision.principal };
      upstreamConnectFailed(this.context.metrics, this.context.refusals, fields, 'tcp', fields.upstream, errorCode);
      outcome = 'upstream_error';
      bytesToUpstream = 0;
      bytesToDownstream = 0;
    } else decision.stats.finished(bytesToUpstream, bytesToDownstream);
    if (!this.options.accessLog) return;
    batch.lines ??= new AccessLines(this.context.accessLogger);
    const members = `${decision.head}${textMember('src', src)}${textMember('dst', dst)}${textMember('peer', peer)}${textMember('source_vm', sourceVm)}${textMember('authority', authority)}${decision.tail}`;
    batch.lines.add(members, bytesToUpstream, bytesToDownstream, record.durationMs, outcome, errorCode);
  }

  /** The batch's records were all given: its lines written with one write, its counters bumped once. */
  private warmBatchEnd(): void {
    const batch = this.warmBatch;
    const { metrics } = this.context;
    batch.lines?.end();
    if (batch.unauthenticated > 0) metrics.unauthenticated.inc({ listener: this.name }, batch.unauthenticated);
    if (batch.rbacAllowed > 0) metrics.rbacAllowed.inc({ listener: this.name }, batch.rbacAllowed);
    this.warmFinishedCount += batch.finished;
    batch.finished = batch.unauthenticated = batch.rbacAllowed = 0;
    if (this.counters[WARM_CORE_OPEN] === 0 && this.warmDecisions.size > WARM_DECISIONS_KEPT) {
      // The core holds none of this listener's connections: no record can name a dead entry any more.
      const live = warmGeneration();
      for (const [id, decision] of this.warmDecisions) if (decision.generation !== live) this.warmDecisions.delete(id);
    }
    this.warmClosed();
    this.warmDone();
  }

  /** What the records of a decision route() installed are logged and counted with: the access line's pieces that do not vary per connection. */
  private warmDecision(dstPort: number, declared: InboundPortConfig, generation: number, peer: PeerFields | null, principal: string, rbacAllowed: boolean): WarmDecision {
    const fields = this.accessHead(dstPort, declared);
    return {
      generation,
      stats: this.stats.get(dstPort)!,
      fields,
      peer,
      principal,
      head: accessMembers({ log: 'access', ...fields }),
      tail: accessMembers({ ...peer, principal }),
      unauthenticated: peer !== null,
      rbacAllowed,
    };
  }

  /** `identity`: what the connection proved of its peer (its principal); `peer`: the TLS facts for the access line. */
  private route(fd: number, src: string, header: ProxyHeader, early: Buffer | null, identity: InboundPeer, peer: PeerFields | null = null): void {
    const { logger, refusals, metrics } = this.context;
    if (header.command === 'local') {
      // A health check from the sending proxy itself: nothing to relay.
      logger.debug({ listener: this.name, src }, 'PROXY LOCAL (health check); closing');
      native.close(fd);
      return;
    }
    const { addresses } = header;
    // The decoder (streamOnly) refused every PROXY header that is not TCP over IP.
    if (addresses.family !== 'inet' && addresses.family !== 'inet6') throw new Error(`unreachable: a ${addresses.family} PROXY header passed the stream-only decoder`);
    const dstPort = addresses.destination.port;
    const declared = this.ports.get(dstPort);
    const origin = originFields(header, src, identity, peer);
    if (declared === undefined) {
      metrics.refused.inc({ listener: this.name, reason: 'undeclared_port' });
      refusals.warn({ listener: this.name, ...origin, reason: 'undeclared_port' }, `refused: destination port ${dstPort} is not declared on this listener`);
      native.close(fd);
      return;
    }
    const request = { listener: this.name, port: dstPort, principal: origin.principal, fields: origin };
    const authorization = this.options.authorization;
    const admitted = authorization ? authorization.admit(request) : 'unselected';
    if (admitted === false) {
      native.close(fd);
      return;
    }
    const { target } = declared;
    if (this.warm !== null && identity.hop === 'tcp' && identity.tlsIdentity === null && (admitted === 'unselected' || admitted === 'allowed')) {
      // Read nothing but (listener, port, peer label), a policy's answer included (the principal is the label's): the core may replay it
      // (a change since the header was read bumped the generation); a shadow filter is evaluated per connection, so not replayed.
      const unauthenticated = peer?.peer_identity === UNAUTHENTICATED;
      const generation = warmGeneration();
      const id = warmInstall(this.warm.id, dstPort, unauthenticated ? 'unauthenticated' : 'none', generation, {
        target: { family: ipFamily(target.address), host: target.address, port: target.port },
        proxyProtocol: declared.proxyProtocol === true,
        connectTimeoutMs: this.config.connectTimeoutMs,
        idleTimeoutMs: this.config.idleTimeoutMs,
      });
      if (id !== 0) this.warmDecisions.set(id, this.warmDecision(dstPort, declared, generation, unauthenticated ? { peer_identity: UNAUTHENTICATED } : null, origin.principal, admitted === 'allowed'));
    }
    const connection = new ProxiedConnection({
      downstreamFd: fd,
      statsFor: () => this.stats.get(dstPort)!,
      metrics,
      refusals,
      accessLogger: this.options.accessLog ? this.context.accessLogger : null,
      idleTimeoutMs: this.config.idleTimeoutMs,
      ageLimit: this.options.peerTls?.ageLimit ?? null,
      fields: this.accessFields(dstPort, declared, origin),
      onClosed: (c) => {
        unwatch?.();
        this.untrack(c);
      },
    });
    const unwatch = authorization?.watch(request, () => connection.abort());
    this.track(connection);
    connection.connect(
      [
        {
          transport: 'tcp',
          target: { family: ipFamily(target.address), host: target.address, port: target.port, connectTimeoutMs: this.config.connectTimeoutMs },
          label: formatAddress(target.address, target.port),
          // The app learns the original client from the header, as it would behind HAProxy; the peer's TLVs stay with the mesh.
          preamble: declared.proxyProtocol ? encodeProxyHeader({ command: 'proxy', addresses, tlvs: [] }) : null,
        },
      ],
      early,
    );
  }
}

/** What the access and refusal lines say of a connection's origin: its header's addresses and TLVs, the peer, its principal. */
function originFields(header: ProxyHeader, src: string, identity: InboundPeer, peer: PeerFields | null): AccessOrigin {
  const { addresses } = header;
  if (addresses.family !== 'inet' && addresses.family !== 'inet6') throw new Error(`unreachable: a ${addresses.family} PROXY header passed the stream-only decoder`);
  return {
    src: formatAddress(addresses.source.address, addresses.source.port),
    dst: formatAddress(addresses.destination.address, addresses.destination.port),
    peer: src,
    ...optional('source_vm', tlvText(header, TLV.VSOCKMESH_SOURCE_VM)),
    ...optional('authority', tlvText(header, TLV.AUTHORITY)),
    ...peer,
    principal: inboundPrincipal(identity),
  };
}

/** Decisions kept past this many only while the core still holds connections that may name them. */
const WARM_DECISIONS_KEPT = 64;

interface WarmDecision {
  generation: number;
  stats: ConnectionStats;
  /** The access fields before the origin's (listener to upstream). */
  fields: AccessHead;
  peer: PeerFields | null;
  principal: string;
  /** The line's members before the header's and the peer's (`"log":"access"` to upstream), and after them (the peer's TLS facts, the principal). */
  head: string;
  tail: string;
  /** Counted in vsockmesh_unauthenticated_total per connection, as portAdmitted() does. */
  unauthenticated: boolean;
  /** A policy selects the port and allowed the principal: counted in rbac_allowed_total per connection, as admit() does. */
  rbacAllowed: boolean;
}

type AccessHead = Pick<AccessLogFields, 'listener' | 'direction' | 'cluster' | 'transport' | 'upstream'>;

type AccessOrigin = { src: string; dst: string; peer: string; principal: string } & Record<string, string | boolean | number | undefined>;

function optional(key: string, value: string | undefined): Record<string, string> {
  return value === undefined ? {} : { [key]: value };
}
