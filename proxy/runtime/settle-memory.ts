// Settling a serving process's memory once it goes quiet. A sidecar's start-up
// (modules, config parsing and validation) and each control-plane state it
// applies leave garbage in V8's heap and freed blocks in malloc's, and an idle
// process never gives them back: it runs no GC, and glibc returns only the top
// of its heap. Once such work has ended and nothing else was noted for
// QUIET_MS, the native core's settleMemory() runs V8's memory-reducing GCs and
// malloc_trim (proxy/native/settle.cc; measured on an idle sidecar: -2.5 MiB
// RSS with a static config, -6.8 MiB with an xDS state applied). It blocks the
// loop for those GCs (80-300 ms measured at load average 20), which is why it
// runs only after start-up and config changes, never per connection, and only
// while the data path is idle (no connection open): until then it looks again
// every QUIET_MS.

import { performance } from 'node:perf_hooks';
import type { Logger } from './log.js';

export const QUIET_MS = 2_000;

/**
 * Settles now and logs what it took and gave back (debug, 'memory settled'):
 * behind both triggers, a MemorySettler's (sidecar, host relay; `settle`: the
 * native core's settleMemory) and a burst's end (quiet-trim.ts: the control
 * plane, the VM manager; `settle`: a major collection).
 */
export interface SettleResult {
  /** Whether malloc_trim gave memory back to the system. */
  trimmed?: boolean;
}

export function settleNow(logger: Logger, settle: () => SettleResult | void, trigger: 'quiet' | 'burst_over'): void {
  const started = performance.now();
  const rssBefore = process.memoryUsage.rss();
  const result = settle();
  logger.debug({ trigger, ms: Math.round(performance.now() - started), rss_before: rssBefore, rss_after: process.memoryUsage.rss(), ...result }, 'memory settled');
}

export interface SettleTimers {
  set(fn: () => void, ms: number): unknown;
  clear(handle: unknown): void;
}

const NODE_TIMERS: SettleTimers = {
  set: (fn, ms) => setTimeout(fn, ms).unref(),
  clear: (handle) => clearTimeout(handle as NodeJS.Timeout),
};

export class MemorySettler {
  private pending: unknown;

  /** `idle`: whether settling now would stall nobody (the server has no connection open). */
  constructor(
    private readonly settle: () => void,
    private readonly idle: () => boolean,
    private readonly timers: SettleTimers = NODE_TIMERS,
    private readonly quietMs = QUIET_MS,
  ) {}

  /** Work that leaves garbage has just ended: settles once nothing else is noted for quietMs and the data path is idle (a burst of notes settles once). */
  note(): void {
    if (this.pending !== undefined) this.timers.clear(this.pending);
    this.pending = this.timers.set(() => {
      this.pending = undefined;
      if (this.idle()) this.settle();
      else this.note();
    }, this.quietMs);
  }
}
