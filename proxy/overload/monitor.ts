// Reads the process's resources (free descriptors, resident memory, accepts
// that failed for lack of either) on a timer and keeps the overload state:
// while overloaded, new connections are shed and /ready fails. Entering and
// leaving are warn lines.

import { readFileSync, readdirSync } from 'node:fs';
import type { Logger } from '../runtime/log.js';
import { native } from '../native/index.js';
import { describeOverload, overloadState, parseFdLimit, type OverloadReadings, type OverloadState, type OverloadThresholds } from './overload.js';

export interface OverloadMonitorOptions {
  thresholds: OverloadThresholds;
  intervalMs: number;
  logger: Logger;
}

/**
 * Listing /proc/self/fd costs about 1.2 µs per open descriptor (18 ms at
 * 15,000 here), so the descriptors outside the core are recounted at most this
 * share of the time; the core's own sockets are counted live.
 */
const RECOUNT_SHARE = 0.005;

export class OverloadMonitor {
  private timer: NodeJS.Timeout | undefined;
  private current: OverloadState = [];
  private since = 0;
  private shed = 0;
  private readings: OverloadReadings = { fdLimit: Number.POSITIVE_INFINITY, fdsOpen: 0, rssBytes: 0, acceptFailures: {} };
  private acceptFailureTotals: Record<string, number> = native.acceptFailures();
  /** Descriptors the core does not hold (Node's own, the admin endpoint, gRPC, files), from the last recount. */
  private otherFds = 0;
  private recountedAt = Number.NEGATIVE_INFINITY;
  private recountCostMs = 0;
  /** Where admissions keep the core's sockets from which shedding() may say yes (follow). */
  private followers: Array<{ counters: Int32Array; index: number }> = [];

  constructor(private readonly options: OverloadMonitorOptions) {}

  /** Reads now, then every intervalMs; the timer does not keep the process alive. */
  start(): void {
    if (this.timer) return;
    this.check();
    this.timer = setInterval(() => this.check(), this.options.intervalMs);
    this.timer.unref();
  }

  stop(): void {
    clearInterval(this.timer);
    this.timer = undefined;
  }

  /** Why the process is overloaded; empty when it is not. */
  get state(): OverloadState {
    return this.current;
  }

  get overloaded(): boolean {
    return this.current.length > 0;
  }

  describe(): string {
    return describeOverload(this.current);
  }

  /** Failed accepts since the process started, by errno name (process-wide). */
  acceptFailures(): Readonly<Record<string, number>> {
    return this.acceptFailureTotals;
  }

  /** Keeps counters[index] at the core's open sockets from which shedding() may say yes (0 while overloaded), from each reading on. */
  follow(counters: Int32Array, index: number): void {
    this.followers.push({ counters, index });
    this.publish();
  }

  /**
   * shedding() looks further only while fdLimit - (openCount + otherFds) <
   * minFreeFds, i.e. from openCount > fdLimit - otherFds - minFreeFds on; the
   * core hands over from that count (one early: JavaScript decides).
   */
  private publish(): void {
    const headroom = this.readings.fdLimit - this.otherFds - this.options.thresholds.minFreeFds;
    const shedAt = this.current.length > 0 ? 0 : Math.max(0, Math.min(0x7fffffff, headroom));
    for (const { counters, index } of this.followers) counters[index] = shedAt;
  }

  /**
   * Whether to shed a new connection now: overloaded at the last check, or
   * the sockets opened since then have eaten the descriptor headroom (a burst
   * between two checks).
   */
  shedding(): boolean {
    if (this.current.length === 0) {
      const fdsOpen = native.openCount() + this.otherFds;
      if (this.readings.fdLimit - fdsOpen >= this.options.thresholds.minFreeFds) return false;
      this.update(overloadState({ ...this.readings, fdsOpen, acceptFailures: {} }, this.options.thresholds));
      if (this.current.length === 0) return false;
    }
    this.shed++;
    return true;
  }

  /** One reading of every resource, and the state it gives. */
  check(): void {
    const now = performance.now();
    const totals = native.acceptFailures();
    const acceptFailures: Record<string, number> = {};
    let failed = false;
    for (const [code, n] of Object.entries(totals)) {
      acceptFailures[code] = n - (this.acceptFailureTotals[code] ?? 0);
      if (acceptFailures[code]! > 0) failed = true;
    }
    this.acceptFailureTotals = totals;
    if (failed || now - this.recountedAt >= Math.max(this.options.intervalMs, this.recountCostMs / RECOUNT_SHARE)) this.recountFds(now);
    this.readings = {
      fdLimit: readFdLimit() ?? this.readings.fdLimit,
      fdsOpen: native.openCount() + this.otherFds,
      rssBytes: readRss() ?? this.readings.rssBytes,
      acceptFailures,
    };
    this.update(overloadState(this.readings, this.options.thresholds));
  }

  private recountFds(now: number): void {
    let listed: number;
    try {
      listed = readdirSync('/proc/self/fd').length;
    } catch {
      // Out of descriptors itself (EMFILE): the failed accepts say so; keep the last count.
      return;
    }
    // The listing includes the descriptor it was read through.
    this.otherFds = Math.max(0, listed - 1 - native.openCount());
    this.recountCostMs = performance.now() - now;
    this.recountedAt = now;
  }

  private update(next: OverloadState): void {
    const was = this.current;
    this.current = next;
    this.publish();
    const key = (s: OverloadState): string => s.map((c) => c.resource).join(',');
    if (key(was) === key(next)) return;
    const { logger } = this.options;
    if (was.length === 0) {
      this.since = performance.now();
      this.shed = 0;
      logger.warn({ reason: 'overloaded', resources: next.map((c) => c.resource), overload: describeOverload(next) }, `overloaded: shedding new connections (${describeOverload(next)})`);
    } else if (next.length === 0) {
      const durationMs = Math.round(performance.now() - this.since);
      logger.warn({ reason: 'overload_ended', duration_ms: durationMs, shed: this.shed }, `overload ended after ${durationMs}ms: accepting new connections again (${this.shed} shed)`);
    } else {
      logger.warn({ reason: 'overloaded', resources: next.map((c) => c.resource), overload: describeOverload(next) }, `still overloaded: ${describeOverload(next)}`);
    }
  }
}

function readFdLimit(): number | undefined {
  try {
    return parseFdLimit(readFileSync('/proc/self/limits', 'utf8'));
  } catch {
    return undefined;
  }
}

function readRss(): number | undefined {
  try {
    return process.memoryUsage.rss();
  } catch {
    return undefined;
  }
}
