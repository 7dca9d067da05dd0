// One downstream connection on its way to an upstream: connect, relay (in the
// native core, preamble such as the PROXY v2 header first), then one
// access-log line.

import type { Logger } from '../log.js';
import type { ConnectionStats, LiveBytes, ProxyMetrics } from '../metrics.js';
import { native, type RelayOutcomeName, type SocketFamily, type SocketHost } from '../native/index.js';
import type { TrackedConnection } from './listener.js';

export interface AccessLogFields {
  listener: string;
  direction: 'inbound' | 'outbound';
  src: string;
  dst: string;
  cluster: string;
  transport: string;
  upstream: string;
  [extra: string]: string | number | undefined;
}

export interface ProxiedConnectionOptions {
  downstreamFd: number;
  stats: ConnectionStats;
  metrics: ProxyMetrics;
  logger: Logger;
  /** Logger for the access line; null: no access log. */
  accessLogger: Logger | null;
  idleTimeoutMs: number;
  fields: AccessLogFields;
  onClosed: (connection: ProxiedConnection) => void;
}

export interface UpstreamTarget {
  family: SocketFamily;
  host: SocketHost;
  port: number;
  connectTimeoutMs: number;
}

export interface ConnectionResult {
  outcome: RelayOutcomeName;
  bytesToUpstream: number;
  bytesToDownstream: number;
  errorCode?: string;
}

export class ProxiedConnection implements TrackedConnection, LiveBytes {
  private readonly startedAt = performance.now();
  private connectingFd = -1;
  private relayId = -1;
  private done = false;
  /** Downstream bytes read before the relay started (after the inbound header); relayed as preamble. */
  private earlyBytes = 0;

  constructor(private readonly options: ProxiedConnectionOptions) {
    options.stats.opened(this);
  }

  get bytesToUpstream(): number {
    return this.earlyBytes + (this.relayId < 0 ? 0 : (native.relayBytes(this.relayId)?.[0] ?? 0));
  }

  get bytesToDownstream(): number {
    return this.relayId < 0 ? 0 : (native.relayBytes(this.relayId)?.[1] ?? 0);
  }

  /**
   * Opens the upstream and relays. Written ahead of the relayed bytes: `header`
   * (ours, e.g. PROXY v2) and `early` (downstream bytes already read, counted as relayed).
   */
  connect(target: UpstreamTarget, preamble: { header?: Buffer | null; early?: Buffer | null } = {}): void {
    const { header, early } = preamble;
    this.earlyBytes = early?.length ?? 0;
    const toUpstream = header && early ? Buffer.concat([header, early]) : (header ?? early ?? null);
    try {
      this.connectingFd = native.connect(target.family, target.host, target.port, target.connectTimeoutMs, (error, fd) => {
        this.connectingFd = -1;
        if (error !== null) this.connectFailed(error);
        else this.startRelay(fd, toUpstream);
      });
    } catch (err) {
      this.connectFailed((err as NodeJS.ErrnoException).code ?? 'EINVAL');
    }
  }

  abort(): void {
    if (this.relayId >= 0) {
      native.relayAbort(this.relayId);
      return;
    }
    if (this.connectingFd >= 0) native.close(this.connectingFd);
    this.connectingFd = -1;
    native.close(this.options.downstreamFd);
    this.finish({ outcome: 'aborted', bytesToUpstream: 0, bytesToDownstream: 0 });
  }

  private connectFailed(code: string): void {
    const { fields, metrics, logger } = this.options;
    metrics.connectErrors.inc({ listener: fields.listener, cluster: fields.cluster, transport: fields.transport, code });
    logger.warn({ ...fields, reason: 'upstream_connect_failed', code }, `upstream connect to ${fields.upstream} failed (${code}); resetting downstream`);
    native.reset(this.options.downstreamFd);
    this.finish({ outcome: 'upstream_error', bytesToUpstream: 0, bytesToDownstream: 0, errorCode: code });
  }

  private startRelay(upstreamFd: number, toUpstream: Buffer | null): void {
    this.relayId = native.relay(this.options.downstreamFd, upstreamFd, toUpstream, null, this.options.idleTimeoutMs, (outcome, up, down, error) => {
      const result: ConnectionResult = { outcome: native.RELAY_OUTCOMES[outcome]!, bytesToUpstream: this.earlyBytes + up, bytesToDownstream: down };
      if (error !== null) result.errorCode = error;
      this.relayId = -1;
      this.finish(result);
    });
  }

  private finish(result: ConnectionResult): void {
    if (this.done) return;
    this.done = true;
    const { stats, accessLogger, fields } = this.options;
    stats.closed(this, result);
    if (accessLogger) {
      accessLogger.info(
        {
          log: 'access',
          ...fields,
          bytes_to_upstream: result.bytesToUpstream,
          bytes_to_downstream: result.bytesToDownstream,
          duration_ms: Math.round(performance.now() - this.startedAt),
          outcome: result.outcome,
          ...(result.errorCode !== undefined && { error_code: result.errorCode }),
        },
        'connection closed',
      );
    }
    this.options.onClosed(this);
  }
}
