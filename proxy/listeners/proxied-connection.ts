// One downstream connection on its way to an upstream: connect, relay (in the
// native core, preamble such as the PROXY v2 header first), then one
// access-log line.

import { logInfoLine, type Logger } from '../runtime/log.js';
import type { RefusalLog } from '../runtime/refusal-log.js';
import type { ConnectionStats, LiveBytes, ProxyMetrics } from '../metrics.js';
import { native, type RelayOutcomeName } from '../native/index.js';
import type { TransportName } from '../metrics.js';
import type { TrackedConnection } from './listener.js';
import { dial, type Dial, type UpstreamAttempt, type UpstreamTarget } from '../upstream/dial.js';
import type { AgedConnection, ConnectionAgeLimit } from '../peer-tls/connection-age.js';

/** Why the sidecar cut a relaying connection on its own (the access line's outcome then). */
export type CutReason = Parameters<AgedConnection['cut']>[0];

export interface AccessLogFields {
  listener: string;
  direction: 'inbound' | 'outbound' | 'relay';
  src: string;
  dst: string;
  cluster: string;
  transport: string;
  upstream: string;
  [extra: string]: string | number | boolean | undefined;
}

export interface ProxiedConnectionOptions {
  downstreamFd: number;
  /** Stats of the transport the connection ends up on (known once an attempt connects). */
  statsFor: (transport: TransportName) => ConnectionStats;
  metrics: ProxyMetrics;
  /** For upstream_connect_failed lines: one per connection in an outage, so sampled like refusals. */
  refusals: RefusalLog;
  /** Logger for the access line; null: no access log. */
  accessLogger: Logger | null;
  idleTimeoutMs: number;
  fields: AccessLogFields;
  onClosed: (connection: ProxiedConnection) => void;
  /** peer_tls.max_connection_age: followed once the relay starts, if the peer hop is TLS. */
  ageLimit?: ConnectionAgeLimit | null;
  /** Written to the downstream once the upstream is up, ahead of the upstream's bytes (a forward proxy's 200). */
  greeting?: Buffer;
  /** Ends the downstream when no upstream could be reached (a forward proxy's 502); absent: a reset. */
  failDownstream?: (fd: number, code: string) => void;
}

export type { UpstreamAttempt, UpstreamTarget };

export interface ConnectionResult {
  outcome: RelayOutcomeName | CutReason;
  bytesToUpstream: number;
  bytesToDownstream: number;
  errorCode?: string;
}

export class ProxiedConnection implements TrackedConnection, LiveBytes, AgedConnection {
  private readonly startedAt = performance.now();
  private dialing: Dial | undefined;
  private relayId = -1;
  private done = false;
  /** Downstream bytes read before the relay started (after the inbound header); relayed as preamble. */
  private earlyBytes = 0;
  private early: Buffer | null = null;
  private stats: ConnectionStats | undefined;
  private fallback: string | undefined;
  private cutReason: CutReason | undefined;
  private stopAgeing: (() => void) | undefined;

  constructor(private readonly options: ProxiedConnectionOptions) {}

  /** The sidecar-to-sidecar hop's transport (final once the relay started). */
  get transport(): string {
    return this.options.fields.transport;
  }

  get closed(): boolean {
    return this.done;
  }

  get bytesToUpstream(): number {
    return this.earlyBytes + (this.relayId < 0 ? 0 : (native.relayBytes(this.relayId)?.[0] ?? 0));
  }

  get bytesToDownstream(): number {
    return this.relayId < 0 ? 0 : (native.relayBytes(this.relayId)?.[1] ?? 0);
  }

  /**
   * Opens the upstream (trying the attempts in order) and relays. `early`:
   * downstream bytes already read (after an inbound header), counted as relayed.
   */
  connect(attempts: UpstreamAttempt[], early: Buffer | null = null): void {
    this.early = early;
    this.earlyBytes = early?.length ?? 0;
    this.dialing = dial(attempts, {
      onFallback: (from, next) => {
        this.fallback = `${from.transport}->${next.transport}`;
      },
      done: (outcome) => {
        this.dialing = undefined;
        if (outcome.kind === 'connected') {
          if (outcome.peer) Object.assign(this.options.fields, outcome.peer);
          this.startRelay(outcome.attempt, outcome.fd);
        } else if (outcome.kind === 'connect_failed') this.connectFailed(outcome.attempt, outcome.code);
        else this.secureFailed(outcome.attempt, outcome.reason, outcome.detail);
      },
    });
  }

  abort(): void {
    if (this.relayId >= 0) {
      native.relayAbort(this.relayId);
      return;
    }
    this.dialing?.abort();
    this.dialing = undefined;
    native.close(this.options.downstreamFd);
    this.finish({ outcome: 'aborted', bytesToUpstream: 0, bytesToDownstream: 0 });
  }

  /**
   * Cuts a relaying connection now, both sides with a reset (relayReset):
   * each end must learn that its stream was cut, not finished. Counted.
   */
  cut(reason: CutReason): void {
    if (this.relayId < 0) return;
    const { fields, metrics } = this.options;
    this.cutReason = reason;
    metrics.connectionsCut.inc({ listener: fields.listener, direction: fields.direction, reason });
    native.relayReset(this.relayId);
  }

  private connectFailed(attempt: UpstreamAttempt, code: string): void {
    const { fields, metrics, refusals } = this.options;
    if (fields.direction === 'outbound') fields.transport = attempt.transport;
    fields.upstream = attempt.label;
    upstreamConnectFailed(metrics, refusals, fields, attempt.transport, attempt.label, code);
    this.failDownstream(code);
    this.finish({ outcome: 'upstream_error', bytesToUpstream: 0, bytesToDownstream: 0, errorCode: code });
  }

  private failDownstream(code: string): void {
    const { failDownstream, downstreamFd } = this.options;
    if (failDownstream) failDownstream(downstreamFd, code);
    else native.reset(downstreamFd);
  }

  private secureFailed(attempt: UpstreamAttempt, reason: string, detail: string): void {
    const { fields, refusals } = this.options;
    if (fields.direction === 'outbound') fields.transport = attempt.transport;
    fields.upstream = attempt.label;
    refusals.warn({ ...fields, reason, detail }, `peer TLS with ${attempt.label} refused (${reason}): ${detail}; ending downstream`);
    this.failDownstream(reason);
    this.finish({ outcome: 'upstream_error', bytesToUpstream: 0, bytesToDownstream: 0, errorCode: reason });
  }

  private startRelay(attempt: UpstreamAttempt, upstreamFd: number): void {
    const { preamble } = attempt;
    const { early } = this;
    const toUpstream = preamble && early ? Buffer.concat([preamble, early]) : (preamble ?? early);
    // `transport` names the sidecar-to-sidecar hop: the upstream for outbound
    // connections, the listener's own for inbound and relayed ones.
    if (this.options.fields.direction === 'outbound') this.options.fields.transport = attempt.transport;
    this.options.fields.upstream = attempt.label;
    this.stats = this.options.statsFor(attempt.transport);
    this.stats.opened(this);
    this.relayId = native.relay(this.options.downstreamFd, upstreamFd, toUpstream, this.options.greeting ?? null, this.options.idleTimeoutMs, (outcome, up, down, error) => {
      const result: ConnectionResult = { outcome: this.cutReason ?? native.RELAY_OUTCOMES[outcome]!, bytesToUpstream: this.earlyBytes + up, bytesToDownstream: down };
      if (error !== null) result.errorCode = error;
      this.relayId = -1;
      this.finish(result);
    });
    if (this.options.fields.tls_version !== undefined) this.stopAgeing = this.options.ageLimit?.watch(this);
  }

  private finish(result: ConnectionResult): void {
    if (this.done) return;
    this.done = true;
    this.stopAgeing?.();
    const { accessLogger, fields } = this.options;
    this.stats?.closed(this, result);
    if (accessLogger) logAccess(accessLogger, fields, result, performance.now() - this.startedAt, this.fallback);
    this.options.onClosed(this);
  }
}

/** The access line of a finished connection: the one place it is built (ProxiedConnection, and the warm path's records). */
export function logAccess(accessLogger: Logger, fields: AccessLogFields, result: ConnectionResult, durationMs: number, fallback?: string): void {
  logInfoLine(
    accessLogger,
    {
      log: 'access',
      ...fields,
      bytes_to_upstream: result.bytesToUpstream,
      bytes_to_downstream: result.bytesToDownstream,
      duration_ms: Math.round(durationMs),
      outcome: result.outcome,
      ...(result.errorCode !== undefined && { error_code: result.errorCode }),
      ...(fallback !== undefined && { fallback }),
    },
    ACCESS_LINE_MESSAGE,
  );
}

/** The message of every access line (a connection's). */
export const ACCESS_LINE_MESSAGE = 'connection closed';

/** An upstream that could not be reached: counted, logged as a refusal (sampled). The caller ends the downstream and writes the access line. */
export function upstreamConnectFailed(metrics: ProxyMetrics, refusals: RefusalLog, fields: AccessLogFields, transport: string, label: string, code: string): void {
  metrics.connectErrors.inc({ listener: fields.listener, cluster: fields.cluster, transport, code });
  refusals.warn({ ...fields, reason: 'upstream_connect_failed', code }, `upstream connect to ${label} failed (${code}); ending downstream`);
}
