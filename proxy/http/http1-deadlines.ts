// The 408 deadlines of an HTTP/1.1 listener's client connections (a head
// whole within 60 s, a request within 300 s: Node's http server's defaults),
// kept by one checker per listener, as Node's server checks all its
// connections from one interval: a request stamps the checker's tick when it
// begins and when its head is whole (a number, no clock read), where a
// timer per request was set and cleared twice. A deadline is kept to within
// one interval, never early.

/** How long a request's head and whole request may take, and how often that is checked. */
export interface Http1Timeouts {
  headersTimeoutMs: number;
  requestTimeoutMs: number;
  checkIntervalMs: number;
}

export const DEFAULT_HTTP1_TIMEOUTS: Readonly<Http1Timeouts> = { headersTimeoutMs: 60_000, requestTimeoutMs: 300_000, checkIntervalMs: 1_000 };

/** Where a connection is in reading its request: between requests, in its head, in its body. */
export type ReadPhase = 'idle' | 'head' | 'body';

/** A connection the checker watches: its phase, the tick it began, and what is done when it is overdue. */
export interface DeadlineWatched {
  readonly readPhase: ReadPhase;
  readonly readSince: number;
  overdue(): void;
}

/**
 * Whether a phase begun at tick `since` is overdue at tick `now`: begun
 * somewhere within tick `since`, at least `now - since - 1` whole intervals
 * have passed, and only those are counted (late by at most two intervals, never early).
 */
export function overdue(phase: ReadPhase, since: number, now: number, timeouts: Readonly<Http1Timeouts>): boolean {
  if (phase === 'idle') return false;
  const limit = phase === 'head' ? timeouts.headersTimeoutMs : timeouts.requestTimeoutMs;
  return (now - since - 1) * timeouts.checkIntervalMs >= limit;
}

/** One listener's checker: an unref'd interval while it watches a connection, none while it watches none. */
export class Http1Deadlines {
  private tick = 0;
  private readonly watched = new Set<DeadlineWatched>();
  private timer: NodeJS.Timeout | undefined;

  constructor(readonly timeouts: Readonly<Http1Timeouts> = DEFAULT_HTTP1_TIMEOUTS) {}

  /** The tick now: what a phase that begins now is stamped with. */
  get now(): number {
    return this.tick;
  }

  watch(connection: DeadlineWatched): void {
    this.watched.add(connection);
    if (this.timer !== undefined) return;
    this.timer = setInterval(() => this.check(), this.timeouts.checkIntervalMs);
    this.timer.unref();
  }

  unwatch(connection: DeadlineWatched): void {
    this.watched.delete(connection);
    if (this.watched.size > 0 || this.timer === undefined) return;
    clearInterval(this.timer);
    this.timer = undefined;
  }

  private check(): void {
    const now = ++this.tick;
    for (const connection of this.watched) if (overdue(connection.readPhase, connection.readSince, now, this.timeouts)) connection.overdue();
  }
}

/** The checker of connections made without their listener's (tests of the server side alone). */
export const sharedHttp1Deadlines = new Http1Deadlines();
