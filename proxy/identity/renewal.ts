// When a workload renews its certificate: somewhere between 50 % and 70 % of
// the certificate's lifetime, chosen at random, so that a fleet of sidecars
// started together does not come back to the CA together, and a renewal that
// fails still leaves 30 % of the lifetime for retries. Pure: the time and the
// randomness are arguments.

export const RENEW_FROM = 0.5;
export const RENEW_TO = 0.7;

export interface Validity {
  /** Milliseconds since the epoch. */
  notBefore: number;
  notAfter: number;
}

/**
 * The time (ms since the epoch) to renew a certificate valid over `validity`:
 * notBefore + lifetime × (50 % + 20 % × `random`), `random` in [0, 1) like
 * Math.random() (values outside are clamped).
 */
export function renewalTime(validity: Validity, random: number): number {
  const lifetime = Math.max(0, validity.notAfter - validity.notBefore);
  const r = Number.isFinite(random) ? Math.min(Math.max(random, 0), 1) : 0;
  return validity.notBefore + Math.round(lifetime * (RENEW_FROM + (RENEW_TO - RENEW_FROM) * r));
}

/** Milliseconds from `now` until renewal: 0 when it is due (or the certificate has expired). */
export function renewalDelay(validity: Validity, now: number, random: () => number): number {
  return Math.max(0, renewalTime(validity, random()) - now);
}

/** The shortest wait between two failed renewals near the expiry. */
export const MIN_RETRY_MS = 250;

/**
 * How long to wait after a failed renewal: the backoff's delay, but while the
 * certificate is still valid never past halfway to its expiry (and not under
 * MIN_RETRY_MS), so a control plane that comes back before the expiry is always
 * tried in time: a backoff grown during an outage must not let the certificate
 * lapse (an expired one can no longer renew itself).
 */
export function retryDelay(backoffMs: number, notAfter: number, now: number): number {
  const left = notAfter - now;
  if (left <= 0) return backoffMs;
  return Math.min(backoffMs, Math.max(MIN_RETRY_MS, Math.floor(left / 2)));
}
