// How many xDS responses the control plane has handed to its streams and not
// yet seen written, over all streams at once. A change or the first sync owes
// every stream a response of up to megabytes; written all at once they sit in
// the HTTP/2 buffers together (1,000 × 213 KiB after one change), and the heap
// they grew stays with the process. With slots, streams write in batches: a
// stream takes a slot per response and gives it back once the response is
// written (or after `holdMs`, so that a client that does not read cannot stall
// the others: its response then waits on its own stream's backpressure);
// streams that found no slot wait in arrival order.

export interface WriteSlotsOptions {
  /** Responses in flight at once. */
  limit: number;
  /** The longest one response keeps its slot. */
  holdMs: number;
}

export class WriteSlots {
  private used = 0;
  private readonly waiting = new Set<() => void>();

  constructor(private readonly options: WriteSlotsOptions) {}

  get inFlight(): number {
    return this.used;
  }

  get queued(): number {
    return this.waiting.size;
  }

  /**
   * A slot, or null when all are taken: then `wake` runs once one is free (a
   * waiter already queued keeps its place). The returned release is idempotent.
   */
  take(wake: () => void): (() => void) | null {
    if (this.used >= this.options.limit) {
      this.waiting.add(wake);
      return null;
    }
    this.used++;
    let released = false;
    const timer = setTimeout(() => release(), this.options.holdMs);
    timer.unref();
    const release = (): void => {
      if (released) return;
      released = true;
      clearTimeout(timer);
      this.used--;
      this.wakeNext();
    };
    return release;
  }

  /** A waiter that no longer needs a slot (its stream ended). */
  forget(wake: () => void): void {
    this.waiting.delete(wake);
  }

  /** Wakes waiters while slots are free (a waiter with nothing left to write takes none). */
  private wakeNext(): void {
    while (this.used < this.options.limit) {
      const next = this.waiting.values().next();
      if (next.done === true) return;
      this.waiting.delete(next.value);
      next.value();
    }
  }
}
