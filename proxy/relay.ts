// Byte relay between a downstream (the side that connected to us) and an
// upstream stream: backpressure both ways, half-close (FIN) carried each way,
// resets carried each way, idle timeout, per-direction byte counts.

import type { Duplex } from 'node:stream';

/** A connected stream: a net.Socket, or a vsock stream that behaves like one. */
export interface RelayStream extends Duplex {
  setTimeout(ms: number, callback?: () => void): this;
  resetAndDestroy?(): this;
}

export type RelayOutcome =
  /** Both sides closed after carrying FIN each way. */
  | 'closed'
  | 'downstream_error'
  | 'upstream_error'
  | 'idle_timeout'
  /** Closed by us: drain timeout or stop. */
  | 'aborted';

export interface RelayResult {
  outcome: RelayOutcome;
  bytesToUpstream: number;
  bytesToDownstream: number;
  /** Error code (ECONNRESET, EPIPE, ...) when the outcome is an error. */
  errorCode?: string;
}

/** Sends RST where the transport can, so the far side sees a reset rather than a clean FIN. */
export function resetStream(stream: RelayStream): void {
  if (stream.destroyed) return;
  if (typeof stream.resetAndDestroy === 'function' && !(stream as { connecting?: boolean }).connecting) {
    try {
      stream.resetAndDestroy();
      return;
    } catch {
      // not a TCP handle (pipe, vsock stream): a plain close below
    }
  }
  stream.destroy();
}

export class Relay {
  bytesToUpstream = 0;
  bytesToDownstream = 0;
  private openStreams = 2;
  private outcome: RelayOutcome | undefined;
  private errorCode: string | undefined;

  constructor(
    readonly downstream: RelayStream,
    readonly upstream: RelayStream,
    private readonly idleTimeoutMs: number,
    private readonly onDone: (result: RelayResult) => void,
  ) {}

  /** Starts moving bytes. Both streams must be connected; data already buffered in them flows first. */
  start(): void {
    const { downstream, upstream } = this;
    downstream.on('data', (chunk: Buffer) => {
      this.bytesToUpstream += chunk.length;
      if (!upstream.write(chunk)) downstream.pause();
    });
    upstream.on('data', (chunk: Buffer) => {
      this.bytesToDownstream += chunk.length;
      if (!downstream.write(chunk)) upstream.pause();
    });
    upstream.on('drain', () => downstream.resume());
    downstream.on('drain', () => upstream.resume());
    downstream.on('end', () => upstream.end());
    upstream.on('end', () => downstream.end());
    downstream.on('error', (err: NodeJS.ErrnoException) => this.fail('downstream_error', err, upstream));
    upstream.on('error', (err: NodeJS.ErrnoException) => this.fail('upstream_error', err, downstream));
    const onClose = (): void => {
      if (--this.openStreams === 0) this.finish();
    };
    downstream.on('close', onClose);
    upstream.on('close', onClose);
    if (this.idleTimeoutMs > 0) {
      const onIdle = (): void => this.close('idle_timeout');
      downstream.setTimeout(this.idleTimeoutMs, onIdle);
      upstream.setTimeout(this.idleTimeoutMs, onIdle);
    }
    // A paused, empty stream still emits 'end' when its FIN arrives (net's
    // onStreamRead calls read(0)); one that ended before we listened is ended now.
    if (downstream.readableEnded) upstream.end();
    if (upstream.readableEnded) downstream.end();
    downstream.resume();
    upstream.resume();
  }

  /** Closes both sides now (drain timeout, stop). */
  abort(): void {
    this.close('aborted');
  }

  private close(outcome: RelayOutcome): void {
    this.outcome ??= outcome;
    this.downstream.destroy();
    this.upstream.destroy();
  }

  private fail(outcome: RelayOutcome, err: NodeJS.ErrnoException, other: RelayStream): void {
    if (this.outcome === undefined) {
      this.outcome = outcome;
      this.errorCode = err.code ?? err.message;
    }
    resetStream(other);
  }

  private finish(): void {
    const result: RelayResult = {
      outcome: this.outcome ?? 'closed',
      bytesToUpstream: this.bytesToUpstream,
      bytesToDownstream: this.bytesToDownstream,
    };
    if (this.errorCode !== undefined) result.errorCode = this.errorCode;
    this.onDone(result);
  }
}
