// Retries of an HTTP route, as Envoy's retry_policy describes them: which
// failures a route retries (connect failure, reset, configured status codes),
// when a request may be sent again at all, and a per-cluster budget so that
// retries cannot multiply the load on a cluster that is already failing.
// Pure: the listener reports the facts, these functions decide.

/** What went wrong with one attempt. */
export type RetryCause = { kind: 'connect_failure' } | { kind: 'refused_stream' } | { kind: 'reset' } | { kind: 'per_try_timeout' } | { kind: 'status'; status: number };

export interface RetryPolicy {
  /** Attempts in all, the first included (1: no retry). */
  attempts: number;
  connectFailure: boolean;
  reset: boolean;
  /** Response status codes retried (a 503 or 502 the upstream sent). */
  statuses: number[];
  /** How long one attempt may wait for its response head (then it is abandoned, and retried as a reset); absent: no limit of its own. */
  perTryTimeoutMs?: number;
}

export const MIN_ATTEMPTS = 1;
export const MAX_ATTEMPTS = 5;
/** The largest request body the listener holds to send it again; a larger one is streamed and never retried (HTTP/2: one that grows past it). */
export const MAX_REPLAY_BODY_BYTES = 64 * 1024;
/** Methods that mean the same when sent twice (RFC 9110 9.2.2, minus TRACE). */
const IDEMPOTENT = new Set(['GET', 'HEAD', 'OPTIONS', 'PUT', 'DELETE']);

/** The label of a cause in `vsockmesh_http_retries_total{reason}`: `connect_failure`, `refused_stream`, `reset`, `per_try_timeout` or the status code. */
export function causeLabel(cause: RetryCause): string {
  return cause.kind === 'status' ? String(cause.status) : cause.kind;
}

/** The facts of one failed attempt. */
export interface AttemptFacts {
  /** Attempts made so far (1 after the first). */
  attempt: number;
  method: string;
  /** The whole request body is held by the listener (or there is none), so it can be sent again. */
  replayable: boolean;
  /** Some of the response was already written to the client. */
  responseStarted: boolean;
  cause: RetryCause;
}

/**
 * Whether the policy allows another attempt. A connect failure sent nothing,
 * so any method may go again; after a reset or a status the upstream may
 * have acted on the request, so only an idempotent one does.
 */
export function mayRetry(policy: RetryPolicy | undefined, facts: AttemptFacts): boolean {
  if (policy === undefined || facts.attempt >= policy.attempts) return false;
  if (facts.responseStarted || !facts.replayable) return false;
  const { cause } = facts;
  if (cause.kind === 'connect_failure') return policy.connectFailure;
  // An HTTP/2 stream the upstream refused unprocessed (RST_STREAM REFUSED_STREAM, or a GOAWAY below it) is a reset that, like a connect failure, left nothing done: any method.
  if (cause.kind === 'refused_stream') return policy.reset;
  if (!IDEMPOTENT.has(facts.method.toUpperCase())) return false;
  // An attempt abandoned at its per-try timeout is, to the upstream, a reset.
  return cause.kind === 'status' ? policy.statuses.includes(cause.status) : policy.reset;
}

/** Envoy's retry budget defaults: retries at most 20 % of the active requests, but 3 are always allowed. */
export const RETRY_BUDGET_PERCENT = 20;
export const RETRY_BUDGET_MIN_CONCURRENCY = 3;

/**
 * The retries a cluster may have in flight: a share of its active requests,
 * at least a few. A request counts as active from routing to its end, a retry
 * from the moment it is granted to its request's end.
 */
export class RetryBudget {
  private active = 0;
  private retrying = 0;

  constructor(
    private readonly percent = RETRY_BUDGET_PERCENT,
    private readonly minConcurrency = RETRY_BUDGET_MIN_CONCURRENCY,
  ) {}

  requestStarted(): void {
    this.active++;
  }

  requestEnded(retries: number): void {
    this.active--;
    this.retrying -= retries;
  }

  /** Takes one retry from the budget, or says there is none left. */
  tryRetry(): boolean {
    const allowed = Math.max(this.minConcurrency, Math.floor((this.active * this.percent) / 100));
    if (this.retrying >= allowed) return false;
    this.retrying++;
    return true;
  }
}
