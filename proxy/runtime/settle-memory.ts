// Settling a serving process's memory once it goes quiet. A sidecar's start-up
// (modules, config parsing and validation) and each control-plane state it
// applies leave garbage in V8's heap and freed blocks in malloc's, and an idle
// process never gives them back: it runs no GC, and glibc returns only the top
// of its heap. Once such work has ended and nothing else was noted for
// QUIET_MS, the native core's settleMemory() runs V8's memory-reducing GCs and
// malloc_trim (proxy/native/settle.cc; measured on an idle sidecar: -2.5 MiB
// RSS with a static config, -6.8 MiB with an xDS state applied). It blocks the
// loop for those GCs (80-300 ms measured at load average 20), which is why it
// runs only after start-up, config changes and traffic (at most once per
// TRAFFIC_SPACING_MS: TrafficWatch), never per connection, and only while the
// data path is idle (no connection open, or only relayed connections that
// moved nothing since the last look): until then it looks again every QUIET_MS.

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

/** The least time between two looks at the data path that found traffic: a sidecar with a trickle of connections settles at most this often for them. */
export const TRAFFIC_SPACING_MS = 30_000;

/**
 * Traffic leaves garbage too (the connections' objects, the young
 * generation grown under load, malloc's freed buffers; measured: an inbound
 * sidecar holding 1,000 idle connections after 1,000 short ones, 65.4 MiB
 * RSS, 58.7 settled). Looks at the data path every quietMs: `activity()` is
 * a value that changes whenever a connection opens or closes or bytes move,
 * null while an open connection is one it cannot see (an HTTP connection,
 * one still connecting). When it moved, `onMoved` (a MemorySettler's note)
 * and the next look waits spacingMs. `still()` (a look too): whether the
 * data path is where the last look left it, so settling would delay no byte
 * in flight (only an idle connection's next one, by the settle's pause).
 */
export class TrafficWatch {
  private seen: number | null = null;
  private pending: unknown;

  constructor(
    private readonly activity: () => number | null,
    private readonly onMoved: () => void,
    private readonly timers: SettleTimers = NODE_TIMERS,
    private readonly quietMs = QUIET_MS,
    private readonly spacingMs = TRAFFIC_SPACING_MS,
  ) {}

  /** Takes the data path as it is now (what start-up did is the ready note's) and starts looking. */
  start(): void {
    this.seen = this.activity();
    this.schedule(this.quietMs);
  }

  stop(): void {
    if (this.pending !== undefined) this.timers.clear(this.pending);
    this.pending = undefined;
  }

  still(): boolean {
    const now = this.activity();
    const was = this.seen;
    this.seen = now;
    return now !== null && now === was;
  }

  private schedule(ms: number): void {
    this.pending = this.timers.set(() => this.look(), ms);
  }

  private look(): void {
    const now = this.activity();
    if (now === this.seen) return this.schedule(this.quietMs);
    this.seen = now;
    this.onMoved();
    this.schedule(this.spacingMs);
  }
}
