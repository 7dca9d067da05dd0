// Giving a burst's memory back once a server role goes quiet: the control
// plane and the VM manager (the data plane's core does its own, in C:
// proxy/native/trim.c). A control plane's initial sync encodes and writes
// megabytes per stream; V8 keeps the dead objects until its next major
// collection, and glibc keeps what was freed between live allocations: a
// control plane with 1,000 streams at 10,000 VMs held ~260 MiB after its
// sync, ~58 MiB of it freed memory malloc_trim alone gave back; with a major
// collection first, 161 MiB against 230 MiB without (README, "Running at
// scale"). So: the event loop is sampled once a second; after a busy second,
// once it has been quiet for `quietSamples` in a row, a major collection
// (when the process runs with --expose-gc, as the `server` heap profile
// does) and then malloc_trim, at most once per `spacingMs`. A collection is
// a pause of the event loop (tens to a few hundred ms with a large
// registry), so never while it is busy, and not after every change of a
// busy mesh.

import { performance, type EventLoopUtilization } from 'node:perf_hooks';
import type { Logger } from './log.js';

export interface QuietTrimPolicy {
  /** A sample at or above this event-loop utilization is a burst worth a trim once it is over. */
  busyUtilization: number;
  /** A sample at or below this is quiet. */
  quietUtilization: number;
  /** Quiet samples in a row after a burst before the trim. */
  quietSamples: number;
  /** At most one trim per this long. */
  spacingMs: number;
}

export const QUIET_TRIM_POLICY: QuietTrimPolicy = { busyUtilization: 0.25, quietUtilization: 0.05, quietSamples: 2, spacingMs: 30_000 };

/** How often the event loop is sampled. */
export const QUIET_TRIM_SAMPLE_MS = 1_000;

export interface QuietTrimState {
  /** A busy sample since the last trim. */
  burst: boolean;
  /** Quiet samples in a row since the last busy or middling one. */
  quiet: number;
  /** When the last trim ran (ms, any monotonic clock); undefined: never. */
  lastTrimMs: number | undefined;
}

/** Starting up (reading or seeding a registry, building the first snapshots) is the first burst. */
export const QUIET_TRIM_START: QuietTrimState = { burst: true, quiet: 0, lastTrimMs: undefined };

/** The state after one sample (the event loop's utilization over the last interval) and whether to trim now. */
export function quietTrimStep(state: QuietTrimState, utilization: number, nowMs: number, policy: QuietTrimPolicy = QUIET_TRIM_POLICY): { state: QuietTrimState; trim: boolean } {
  if (utilization >= policy.busyUtilization) return { state: { ...state, burst: true, quiet: 0 }, trim: false };
  if (utilization > policy.quietUtilization) return { state: { ...state, quiet: 0 }, trim: false };
  const quiet = state.quiet + 1;
  const spaced = state.lastTrimMs === undefined || nowMs - state.lastTrimMs >= policy.spacingMs;
  if (state.burst && quiet >= policy.quietSamples && spaced) return { state: { burst: false, quiet: 0, lastTrimMs: nowMs }, trim: true };
  return { state: { ...state, quiet }, trim: false };
}

/** A major collection when the process exposes one (--expose-gc). */
function collector(): (() => void) | undefined {
  const gc = (globalThis as { gc?: (options?: { type: 'major'; execution: 'sync' }) => void }).gc;
  return gc === undefined ? undefined : () => gc({ type: 'major', execution: 'sync' });
}

/** Freed ArrayBuffer memory reaches malloc after the collection, from V8's sweeper thread: the trim waits this long. */
const SWEEP_WAIT_MS = 200;

/**
 * Samples the event loop and, after each burst once quiet, collects and then
 * calls `release` (malloc_trim: the native core's trimNow; true when memory
 * went back); stop() ends it (the timer never keeps the process alive).
 */
export function startQuietTrim(logger: Logger, release: () => boolean, policy: QuietTrimPolicy = QUIET_TRIM_POLICY): { stop(): void } {
  const gc = collector();
  let state = QUIET_TRIM_START;
  let last: EventLoopUtilization = performance.eventLoopUtilization();
  let pending: NodeJS.Timeout | undefined;
  const sampler = setInterval(() => {
    const now = performance.eventLoopUtilization();
    const step = quietTrimStep(state, performance.eventLoopUtilization(now, last).utilization, performance.now(), policy);
    last = now;
    state = step.state;
    if (!step.trim) return;
    const rssBefore = process.memoryUsage.rss();
    const started = performance.now();
    gc?.();
    const gcMs = performance.now() - started;
    pending = setTimeout(() => {
      pending = undefined;
      const released = release();
      logger.debug({ rss_before: rssBefore, rss_after: process.memoryUsage.rss(), gc_ms: Math.round(gcMs), gc: gc !== undefined, released }, 'quiet after a burst: memory returned to the system');
      // The trim's own work is not a burst.
      last = performance.eventLoopUtilization();
    }, SWEEP_WAIT_MS);
    pending.unref();
  }, QUIET_TRIM_SAMPLE_MS);
  sampler.unref();
  return {
    stop: () => {
      clearInterval(sampler);
      if (pending !== undefined) clearTimeout(pending);
    },
  };
}
