// Coalescing bursts of input changes (mesh edits, registry events) into one
// snapshot rebuild. The clock is injected: unit tests drive time by hand.

import { systemClock, type CancelTimer, type Clock } from '../../proxy/runtime/clock.js';

export interface DebouncerOptions {
  /** Run once no trigger came for this long (default 100 ms). */
  quietMs?: number;
  /** ... but no later than this after the first trigger of a burst (default 1000 ms). */
  maxMs?: number;
  clock?: Clock;
  /** Where errors of `fn` go; default: rethrown asynchronously (an uncaught exception). */
  onError?: (err: unknown) => void;
}

/**
 * Coalesces bursts of triggers into one call of `fn`: `fn` runs `quietMs`
 * after the last trigger, or `maxMs` after the first one of the burst,
 * whichever comes first. Runs never overlap: triggers during an (async) run
 * start a new burst, run after it ends.
 */
export class Debouncer {
  private readonly quietMs: number;
  private readonly maxMs: number;
  private readonly clock: Clock;
  private readonly onError: (err: unknown) => void;
  private cancelTimer: CancelTimer | undefined;
  private burstStart: number | null = null;
  private running: Promise<void> | null = null;
  private closed = false;
  /** Runs of `fn` so far. */
  runs = 0;

  constructor(
    private readonly fn: () => void | Promise<void>,
    options: DebouncerOptions = {},
  ) {
    this.quietMs = options.quietMs ?? 100;
    this.maxMs = Math.max(options.maxMs ?? 1000, this.quietMs);
    this.clock = options.clock ?? systemClock;
    this.onError =
      options.onError ??
      ((err) => {
        queueMicrotask(() => {
          throw err;
        });
      });
  }

  /** A change happened: `fn` will run (once) after the burst settles. */
  trigger(): void {
    if (this.closed) return;
    const now = this.clock.now();
    this.burstStart ??= now;
    if (this.running) return; // re-armed when the run ends
    this.arm(now);
  }

  /** Whether a run is due (a burst is under way). */
  get pending(): boolean {
    return this.burstStart !== null;
  }

  /** Runs `fn` now if a burst is pending (and waits for it); resolves when no run is in progress. */
  async flush(): Promise<void> {
    if (this.running) await this.running;
    if (this.burstStart !== null && !this.closed) await this.run();
  }

  /** Drops any pending run; later triggers are ignored. */
  close(): void {
    this.closed = true;
    this.burstStart = null;
    this.disarm();
  }

  private disarm(): void {
    this.cancelTimer?.();
    this.cancelTimer = undefined;
  }

  private arm(now: number): void {
    this.disarm();
    const at = Math.min(now + this.quietMs, this.burstStart! + this.maxMs);
    this.cancelTimer = this.clock.setTimer(
      () => {
        this.cancelTimer = undefined;
        void this.run();
      },
      Math.max(0, at - now),
    );
  }

  private run(): Promise<void> {
    this.disarm();
    this.burstStart = null;
    this.runs++;
    const p = (async () => {
      try {
        await this.fn();
      } catch (err) {
        this.onError(err);
      }
    })().finally(() => {
      this.running = null;
      if (this.burstStart !== null && !this.closed) this.arm(this.clock.now());
    });
    this.running = p;
    return p;
  }
}
