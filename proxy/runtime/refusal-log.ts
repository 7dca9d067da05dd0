// Sampled refusal lines. A flood of refused connections (junk from the network,
// a peer retrying in a loop) would otherwise write one line each and crowd out
// everything else in the log. Per key (listener, reason): the first refusal is
// written at once; the ones that follow within `intervalMs` are held back and
// counted; when that interval ends, the last one held back is written with
// `suppressed`: how many of the key's refusals went unwritten since its
// previous line. So a key writes at most about one line per interval, every
// refusal is either written or counted in a line's `suppressed`, and the
// metrics count every refusal regardless.

import type { Logger } from './log.js';
import { systemClock, type CancelTimer, type Clock } from './clock.js';

export const REFUSAL_LOG_INTERVAL_MS = 1_000;

export interface Sample<T> {
  event: T;
  /** Events of the same key neither written nor counted in an earlier line. */
  suppressed: number;
}

interface KeyState<T> {
  /** Events arriving before this are held back. */
  until: number;
  held: number;
  last: T | undefined;
}

/** The decision, without I/O: which events to write and when. */
export class RefusalSampler<T> {
  private readonly keys = new Map<string, KeyState<T>>();

  constructor(private readonly intervalMs: number) {}

  /** The event to write now (with what was held back before it), or null: held back. */
  offer(key: string, event: T, now: number): Sample<T> | null {
    const state = this.keys.get(key);
    if (state !== undefined && now < state.until) {
      state.held++;
      state.last = event;
      return null;
    }
    this.keys.set(key, { until: now + this.intervalMs, held: 0, last: undefined });
    return { event, suppressed: state?.held ?? 0 };
  }

  /** Lines due: for each key whose interval has ended with events held back, its last one. */
  due(now: number): Array<Sample<T>> {
    const out: Array<Sample<T>> = [];
    for (const [key, state] of this.keys) {
      if (now < state.until) continue;
      if (state.last === undefined) {
        this.keys.delete(key);
        continue;
      }
      out.push({ event: state.last, suppressed: state.held - 1 });
      this.keys.set(key, { until: now + this.intervalMs, held: 0, last: undefined });
    }
    return out;
  }

  /** When due() next has something to give; undefined: nothing is held back. */
  nextDue(): number | undefined {
    let next: number | undefined;
    for (const state of this.keys.values()) {
      if (state.last !== undefined && (next === undefined || state.until < next)) next = state.until;
    }
    return next;
  }

  /** Everything held back, now (on stop). */
  drain(): Array<Sample<T>> {
    const out: Array<Sample<T>> = [];
    for (const state of this.keys.values()) if (state.last !== undefined) out.push({ event: state.last, suppressed: state.held - 1 });
    this.keys.clear();
    return out;
  }
}

export interface RefusalFields {
  listener: string;
  /** snake_case, the same as the refusal counter's label. */
  reason: string;
  [field: string]: unknown;
}

interface Refusal {
  fields: RefusalFields;
  message: string;
}

/** Refusal `warn` lines of one server, sampled per (listener, reason). */
export class RefusalLog {
  private readonly sampler: RefusalSampler<Refusal>;
  private cancelTimer: CancelTimer | undefined;
  private timerAt = Infinity;

  constructor(
    private readonly logger: Logger,
    private readonly clock: Clock = systemClock,
    intervalMs = REFUSAL_LOG_INTERVAL_MS,
  ) {
    this.sampler = new RefusalSampler(intervalMs);
  }

  warn(fields: RefusalFields, message: string): void {
    const sample = this.sampler.offer(`${fields.listener}\0${fields.reason}`, { fields, message }, this.clock.now());
    if (sample) this.write(sample);
    else this.schedule();
  }

  /** Writes what is held back and cancels the timer (stop). */
  flush(): void {
    this.cancelTimer?.();
    this.cancelTimer = undefined;
    this.timerAt = Infinity;
    for (const sample of this.sampler.drain()) this.write(sample);
  }

  private write({ event, suppressed }: Sample<Refusal>): void {
    this.logger.warn(suppressed > 0 ? { ...event.fields, suppressed } : event.fields, event.message);
  }

  private schedule(): void {
    const at = this.sampler.nextDue();
    if (at === undefined || at >= this.timerAt) return;
    this.cancelTimer?.();
    this.timerAt = at;
    this.cancelTimer = this.clock.setTimer(() => {
      this.cancelTimer = undefined;
      this.timerAt = Infinity;
      for (const sample of this.sampler.due(this.clock.now())) this.write(sample);
      this.schedule();
    }, Math.max(0, at - this.clock.now()));
  }
}
