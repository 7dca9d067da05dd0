// Reconnect delays: exponential with a cap and jitter, reset once a connection
// holds (grpc-js backoff-timeout.ts has the same shape). One of these serves
// every stream that reconnects: the resolver's and the control plane's Watch
// followers and the ADS client. Pure apart from the injected random source.

export interface BackoffOptions {
  /** The first delay (before jitter). */
  initialMs: number;
  /** Delays never grow beyond this (before jitter). */
  maxMs: number;
  /** Growth per failure (default 2). */
  multiplier?: number;
  /** Each delay is spread by ±jitter of itself (default 0.2): clients that lost one server do not return in step. */
  jitter?: number;
  random?: () => number;
}

export class Backoff {
  private current: number;
  private readonly multiplier: number;
  private readonly jitter: number;
  private readonly random: () => number;

  constructor(private readonly options: BackoffOptions) {
    if (!(options.initialMs > 0) || !(options.maxMs >= options.initialMs)) {
      throw new RangeError(`backoff: need 0 < initialMs <= maxMs (got ${options.initialMs}, ${options.maxMs})`);
    }
    this.current = options.initialMs;
    this.multiplier = options.multiplier ?? 2;
    this.jitter = options.jitter ?? 0.2;
    this.random = options.random ?? Math.random;
  }

  /** The delay to wait before the next attempt; the one after it is longer, up to the cap. */
  next(): number {
    const base = this.current;
    this.current = Math.min(this.current * this.multiplier, this.options.maxMs);
    return Math.round(base * (1 - this.jitter + 2 * this.jitter * this.random()));
  }

  /** A connection held: the next failure waits the initial delay again. */
  reset(): void {
    this.current = this.options.initialMs;
  }
}
