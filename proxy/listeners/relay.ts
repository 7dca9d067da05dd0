// The host relay's listener (on the hypervisor, vsock): a guest connects, its
// CID comes from the kernel, it names a destination guest in a 16-byte relay
// header, the policy decides, and the bytes after the header go to the
// destination's CID and port, after the signed assertion of the source VM
// when the VM manager named it (relay-assertion.ts).

import type { HostRelayConfig, RelayDecision } from '../config/relay.js';
import { relayDecision } from '../config/relay.js';
import type { RelayAuthorizer } from '../resolve/relay-authorizer.js';
import type { ConnectionStats } from '../metrics.js';
import { native, type SocketHost } from '../native/index.js';
import { RELAY_HEADER_LENGTH, decodeRelayHeader, type RelayDestination } from '../relay-header.js';
import { Listener, type ListenerContext } from './listener.js';
import { readPreamble } from './preamble.js';
import { ProxiedConnection } from './proxied-connection.js';
import type { CertificateSource } from '../identity/certificate-source.js';
import { encodeRelayAssertion } from '../relay-assertion.js';

export class RelayListener extends Listener {
  private readonly stats = new Map<number, ConnectionStats>();

  constructor(
    private readonly config: HostRelayConfig,
    context: ListenerContext,
    /** Present when the VM manager decides instead of the static policy. */
    private readonly authorizer?: RelayAuthorizer,
    /** The relay's own SVID, to sign source assertions with. */
    private readonly signer?: CertificateSource,
  ) {
    super('relay', [{ family: 'vsock', host: config.listen.cid }], config.listen.port, context, config.listen.maxConnections);
  }

  /** Per destination CID: bounded by the number of guests. */
  private statsFor(cid: number): ConnectionStats {
    let s = this.stats.get(cid);
    if (!s) {
      s = this.context.metrics.connectionStats({ listener: this.name, direction: 'relay', cluster: `cid:${cid}`, transport: 'vsock' });
      this.stats.set(cid, s);
    }
    return s;
  }

  protected onConnection(fd: number, peerHost: SocketHost, peerPort: number): void {
    const sourceCid = Number(peerHost);
    const src = `vsock:${sourceCid}:${peerPort}`;
    const { metrics, refusals } = this.context;
    readPreamble<RelayDestination>(
      fd,
      {
        maxBytes: RELAY_HEADER_LENGTH,
        timeoutMs: this.config.headerTimeoutMs,
        what: 'relay header',
        decode: (bytes) => {
          const r = decodeRelayHeader(bytes);
          if (r.kind === 'incomplete') return { kind: 'incomplete', needed: RELAY_HEADER_LENGTH };
          return r.kind === 'header' ? { kind: 'done', value: r.destination, length: RELAY_HEADER_LENGTH } : r;
        },
        track: (c) => this.track(c),
        untrack: (c) => this.untrack(c),
      },
      (result) => {
        if (!result.ok) {
          native.close(fd);
          if (result.code === 'aborted' || result.code === 'peer_error') return;
          const reason = result.code === 'timeout' || result.code === 'truncated' ? `header_${result.code}` : result.code;
          metrics.headerErrors.inc({ listener: this.name, reason });
          refusals.warn({ listener: this.name, src, source_cid: sourceCid, reason, detail: result.detail }, `refused: ${result.detail}`);
          return;
        }
        const destination = result.value;
        const decided = (decision: RelayDecision): void => this.relay(fd, src, sourceCid, destination, decision, result.early);
        if (!this.authorizer) {
          decided(relayDecision(this.config.policy ?? [], sourceCid, destination));
          return;
        }
        const cached = this.authorizer.cached(sourceCid, destination);
        if (cached) {
          decided(cached);
          return;
        }
        this.whilePending(fd, this.authorizer.authorize(sourceCid, destination), decided);
      },
    );
  }

  private relay(fd: number, src: string, sourceCid: number, destination: RelayDestination, decision: RelayDecision, early: Buffer | null): void {
    const { metrics, refusals } = this.context;
    const dst = `vsock:${destination.cid}:${destination.port}`;
    if (!decision.allowed) {
      native.close(fd);
      metrics.refused.inc({ listener: this.name, reason: decision.reason });
      refusals.warn({ listener: this.name, src, dst, source_cid: sourceCid, reason: decision.reason }, `refused: ${decision.detail}`);
      return;
    }
    const connection = new ProxiedConnection({
      downstreamFd: fd,
      statsFor: () => this.statsFor(destination.cid),
      metrics,
      refusals,
      accessLogger: this.config.log.accessLog ? this.context.accessLogger : null,
      idleTimeoutMs: this.config.idleTimeoutMs,
      fields: { listener: this.name, direction: 'relay', src, dst, cluster: `cid:${destination.cid}`, transport: 'vsock', upstream: dst, source_cid: sourceCid },
      onClosed: (c) => this.untrack(c),
    });
    this.track(connection);
    const preamble = relayPreamble(this.signer?.current() ?? null, decision.sourceVmId, sourceCid, destination, Date.now());
    connection.connect([{ transport: 'vsock', target: { family: 'vsock', host: destination.cid, port: destination.port, connectTimeoutMs: this.config.connectTimeoutMs }, label: dst, preamble }], early);
  }
}

/**
 * What the relay writes to the destination before the guest's bytes: the
 * signed assertion of the source VM when the VM manager named it and the
 * relay has an identity to sign with; else nothing (a static policy knows
 * CIDs, not VMs), and the destination sees an unasserted relayed connection.
 */
export function relayPreamble(
  identity: { keyPem: string; chainPem: string } | null,
  sourceVmId: string | undefined,
  sourceCid: number,
  destination: RelayDestination,
  nowMs: number,
): Buffer | null {
  if (identity === null || sourceVmId === undefined) return null;
  return encodeRelayAssertion({ sourceCid, sourceVmId, destination, issuedAtMs: nowMs }, identity);
}
