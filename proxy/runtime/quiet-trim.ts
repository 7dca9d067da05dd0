// When a server role whose work comes in bursts settles its memory: the
// control plane and the VM manager (a sidecar settles on its own triggers,
// MemorySettler, with the native core's settleMemory; the data plane's core
// trims after TLS work: native/trim.c). These roles never load the native
// core (role-modules test), so their settle is serverSettle, from a tiny
// addon of their own (V8's memory-reducing GCs and malloc_trim), logged by the
// same settleNow. A control plane's initial sync encodes and writes megabytes
// per stream: V8 keeps the dead objects until its next major collection and
// its young generation at the sync's size, glibc the holes its frame buffers
// left (README, "Running at scale", "Where a replica's memory goes"). So: the event
// loop is sampled once a second; after a busy second, once it has been quiet
// for `quietSamples` in a row, a settle. A collection pauses the loop (tens to
// a few hundred ms with a large registry), so never while it is busy, and
// settles pause it at most `maxPauseShare` of the time (after a 300 ms settle
// the next waits 6 s), `minSpacingMs` apart at least.

import { performance, type EventLoopUtilization } from 'node:perf_hooks';
import type { Logger } from './log.js';
import { settleNow, type SettleResult } from './settle-memory.js';
import { loadTrimAddon } from './trim-addon.js';
import { withHeapHeadroom } from './settle-headroom.js';

export interface QuietTrimPolicy {
  /** A sample at or above this event-loop utilization is a burst worth a settle once it is over. */
  busyUtilization: number;
  /** A sample at or below this is quiet. */
  quietUtilization: number;
  /** Quiet samples in a row after a burst before the settle. */
  quietSamples: number;
  /** At least this long from one settle to the next. */
  minSpacingMs: number;
  /** The share of the time settles may pause the loop: after a pause of p ms, the next settle waits p / maxPauseShare. */
  maxPauseShare: number;
}

export const QUIET_TRIM_POLICY: QuietTrimPolicy = { busyUtilization: 0.25, quietUtilization: 0.05, quietSamples: 2, minSpacingMs: 2_000, maxPauseShare: 0.05 };

/** How often the event loop is sampled. */
export const QUIET_TRIM_SAMPLE_MS = 1_000;

export interface QuietTrimState {
  /** A busy sample since the last settle. */
  burst: boolean;
  /** Quiet samples in a row since the last busy or middling one. */
  quiet: number;
  /** No settle before this (ms, any monotonic clock); undefined: none yet. */
  notBeforeMs: number | undefined;
}

/** Starting up (reading or seeding a registry, building the first snapshots) is the first burst. */
export const QUIET_TRIM_START: QuietTrimState = { burst: true, quiet: 0, notBeforeMs: undefined };

/** The state after one sample (the event loop's utilization over the last interval) and whether to settle now. */
export function quietTrimStep(state: QuietTrimState, utilization: number, nowMs: number, policy: QuietTrimPolicy = QUIET_TRIM_POLICY): { state: QuietTrimState; trim: boolean } {
  if (utilization >= policy.busyUtilization) return { state: { ...state, burst: true, quiet: 0 }, trim: false };
  if (utilization > policy.quietUtilization) return { state: { ...state, quiet: 0 }, trim: false };
  const quiet = state.quiet + 1;
  const spaced = state.notBeforeMs === undefined || nowMs >= state.notBeforeMs;
  if (state.burst && quiet >= policy.quietSamples && spaced) return { state: { burst: false, quiet: 0, notBeforeMs: nowMs + policy.minSpacingMs }, trim: true };
  return { state: { ...state, quiet }, trim: false };
}

/** The state after a settle that ended at `endMs` and paused the loop `pauseMs`: the next one waits so that settles pause it at most maxPauseShare of the time. */
export function afterSettle(state: QuietTrimState, endMs: number, pauseMs: number, policy: QuietTrimPolicy = QUIET_TRIM_POLICY): QuietTrimState {
  return { ...state, notBeforeMs: Math.max(state.notBeforeMs ?? endMs, endMs + pauseMs / policy.maxPauseShare) };
}

/**
 * A server role's settle (trim-addon.ts): V8's memory-reducing GCs (they
 * compact and shrink the young generation back to its minimum, which a major
 * collection does not), then malloc_trim for the holes the sync's frame
 * buffers left in glibc's heap; logged with whether glibc gave memory back.
 * Measured on one etcd replica after the 1,000-stream sync, paired with the
 * major collection alone (README, "Running at scale"): 245 -> 142 MiB.
 */
export function serverSettle(): () => SettleResult | void {
  const addon = loadTrimAddon();
  // The settle leaves V8 room for the next burst (settle-headroom.ts).
  return withHeapHeadroom(() => {
    addon.reduceMemory();
    return { trimmed: addon.trim() };
  });
}

/**
 * Samples the event loop and, after each burst once quiet, settles the
 * process's memory (`settle`: serverSettle; logged by settleNow); stop()
 * ends it (the timer never keeps the process alive).
 */
export function startQuietTrim(logger: Logger, settle: () => SettleResult | void, policy: QuietTrimPolicy = QUIET_TRIM_POLICY): { stop(): void } {
  let state = QUIET_TRIM_START;
  let last: EventLoopUtilization = performance.eventLoopUtilization();
  const sampler = setInterval(() => {
    const now = performance.eventLoopUtilization();
    const step = quietTrimStep(state, performance.eventLoopUtilization(now, last).utilization, performance.now(), policy);
    state = step.state;
    if (step.trim) {
      const started = performance.now();
      settleNow(logger, settle, 'burst_over');
      const ended = performance.now();
      state = afterSettle(state, ended, ended - started, policy);
    }
    // The settle's own work is not a burst.
    last = step.trim ? performance.eventLoopUtilization() : now;
  }, QUIET_TRIM_SAMPLE_MS);
  sampler.unref();
  return { stop: () => clearInterval(sampler) };
}
