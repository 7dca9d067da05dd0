// Time for process-wide machinery (the log sink, sampled logs): the current
// time and one-shot timers that never keep the process alive. Injected, so
// unit tests drive time by hand.

/** Cancels a timer; harmless once it has fired. */
export type CancelTimer = () => void;

export interface Clock {
  /** Milliseconds, monotonic. */
  now(): number;
  setTimer(fn: () => void, ms: number): CancelTimer;
}

export const systemClock: Clock = {
  now: () => performance.now(),
  setTimer(fn, ms) {
    const timer = setTimeout(fn, ms);
    timer.unref();
    return () => clearTimeout(timer);
  },
};
