// The maximum age of a peer-hop TLS connection (peer_tls.max_connection_age):
// a connection that outlives it is cut, so that long-lived connections
// handshake again and a rotated certificate or trust bundle reaches them.
// The age is jittered (±10 %) so connections opened together do not end
// together; past it, the cut waits for a quiet moment (no byte either way
// for QUIET_MS), at most the grace, so request/response traffic is cut
// between exchanges rather than in one.

/** How long a connection past its age must move no byte to count as quiet. */
export const QUIET_MS = 1_000;

/** The jitter of the age, as a fraction of it either way. */
export const AGE_JITTER = 0.1;

export interface ConnectionAgeSettings {
  maxAgeMs: number;
  /** How long past the age a busy connection may go on before it is cut anyway (0: cut at the age). */
  graceMs: number;
}

/** One connection's age deadline in ms from its start; `random` in [0, 1) places it within ±AGE_JITTER of the age. */
export function ageDeadlineMs(maxAgeMs: number, random: number): number {
  return Math.round(maxAgeMs * (1 - AGE_JITTER + 2 * AGE_JITTER * random));
}

export type AgeStep = { kind: 'cut' } | { kind: 'look_again'; inMs: number };

/**
 * What to do with a connection `pastMs` past its deadline. `moved`: whether
 * it moved a byte since the last look (null: the first look, at the
 * deadline, knows nothing yet).
 */
export function ageStep(pastMs: number, graceMs: number, moved: boolean | null): AgeStep {
  if (pastMs >= graceMs || moved === false) return { kind: 'cut' };
  return { kind: 'look_again', inMs: Math.min(QUIET_MS, graceMs - pastMs) };
}

/** A relaying connection as the age limit sees it. */
export interface AgedConnection {
  readonly bytesToUpstream: number;
  readonly bytesToDownstream: number;
  cut(reason: 'max_connection_age'): void;
}

export class ConnectionAgeLimit {
  constructor(
    readonly settings: ConnectionAgeSettings,
    private readonly random: () => number = Math.random,
  ) {}

  /** Follows a connection from now (its relay's start); call the returned function when it closes. */
  watch(connection: AgedConnection): () => void {
    const deadline = performance.now() + ageDeadlineMs(this.settings.maxAgeMs, this.random());
    let timer: NodeJS.Timeout | undefined;
    let lastBytes = -1;
    const look = (): void => {
      const bytes = connection.bytesToUpstream + connection.bytesToDownstream;
      const step = ageStep(performance.now() - deadline, this.settings.graceMs, lastBytes < 0 ? null : bytes !== lastBytes);
      lastBytes = bytes;
      if (step.kind === 'cut') connection.cut('max_connection_age');
      else timer = setTimeout(look, step.inMs).unref();
    };
    timer = setTimeout(look, deadline - performance.now()).unref();
    return () => clearTimeout(timer);
  }

  /**
   * Calls `aged` once at a new connection's deadline, for connections that
   * can be retired without a cut (a pooled HTTP connection: it takes no new
   * request and closes once idle); call the returned function when it closes.
   */
  retire(aged: () => void): () => void {
    const timer = setTimeout(aged, ageDeadlineMs(this.settings.maxAgeMs, this.random())).unref();
    return () => clearTimeout(timer);
  }
}
