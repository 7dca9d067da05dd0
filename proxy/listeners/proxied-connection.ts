// One downstream connection on its way to an upstream: connect, optional
// preamble (the PROXY v2 header), relay, then one access-log line.

import type { Logger } from '../log.js';
import type { ConnectionStats, LiveBytes, ProxyMetrics } from '../metrics.js';
import { Relay, resetStream, type RelayResult, type RelayStream } from '../relay.js';
import type { ConnectCallback, PendingConnect } from '../upstream/connect.js';
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
  downstream: RelayStream;
  stats: ConnectionStats;
  metrics: ProxyMetrics;
  logger: Logger;
  accessLog: boolean;
  idleTimeoutMs: number;
  fields: AccessLogFields;
  onClosed: (connection: ProxiedConnection) => void;
}

export class ProxiedConnection implements TrackedConnection, LiveBytes {
  private readonly startedAt = performance.now();
  private pending: PendingConnect | undefined;
  private relay: Relay | undefined;
  private done = false;

  constructor(private readonly options: ProxiedConnectionOptions) {
    options.stats.opened(this);
  }

  get bytesToUpstream(): number {
    return this.relay?.bytesToUpstream ?? 0;
  }

  get bytesToDownstream(): number {
    return this.relay?.bytesToDownstream ?? 0;
  }

  /**
   * Opens the upstream with `connect` and, once connected, writes `preamble`
   * (if any) ahead of the relayed bytes.
   */
  connect(connect: (done: ConnectCallback) => PendingConnect, preamble?: Buffer): void {
    const { downstream } = this.options;
    const onEarlyClose = (): void => {
      // The downstream gave up while we were connecting.
      this.pending?.cancel();
      this.finish({ outcome: 'downstream_error', bytesToUpstream: 0, bytesToDownstream: 0, errorCode: 'EDOWNSTREAM_CLOSED' });
    };
    downstream.once('close', onEarlyClose);
    downstream.on('error', noop);
    this.pending = connect((err, upstream) => {
      this.pending = undefined;
      downstream.off('close', onEarlyClose);
      downstream.off('error', noop);
      if (err || !upstream) {
        const { fields, metrics } = this.options;
        metrics.connectErrors.inc({ listener: fields.listener, cluster: fields.cluster, transport: fields.transport, code: err?.code ?? 'EUNKNOWN' });
        this.options.logger.warn({ ...fields, reason: 'upstream_connect_failed', code: err?.code, error: err?.message }, 'upstream connect failed; resetting downstream');
        resetStream(downstream);
        this.finish({ outcome: 'upstream_error', bytesToUpstream: 0, bytesToDownstream: 0, errorCode: err?.code ?? 'EUNKNOWN' });
        return;
      }
      if (preamble) upstream.write(preamble);
      const relay = new Relay(downstream, upstream, this.options.idleTimeoutMs, (result) => this.finish(result));
      this.relay = relay;
      relay.start();
    });
  }

  abort(): void {
    if (this.relay) this.relay.abort();
    else {
      this.pending?.cancel();
      this.options.downstream.destroy();
    }
  }

  private finish(result: RelayResult): void {
    if (this.done) return;
    this.done = true;
    const { stats, logger, accessLog, fields } = this.options;
    stats.closed(this);
    if (accessLog) {
      logger.info(
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

function noop(): void {}
