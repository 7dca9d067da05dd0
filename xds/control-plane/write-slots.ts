// How many xDS responses the control plane has handed to its streams and not
// yet seen written, over all streams at once. A change or the first sync owes
// every stream a response of up to megabytes; written all at once they sit in
// the HTTP/2 buffers together (1,000 × 213 KiB after one change), and the heap
// they grew stays with the process. With slots, streams write in batches: a
// stream takes a slot per response and gives it back once the response is
// written (or after `holdMs`, so that a client that does not read cannot stall
// the others: its response then waits on its own stream's backpressure);
// streams that found no slot wait in arrival order. Slots are bounded in bytes
// too: a count alone lets 64 responses of 2.5 MiB each (10,000 endpoints) be
// in flight at once, each copied twice on its way out (the encoded response,
// then grpc-js's framed copy), and the process keeps the resident memory that
// burst took long after it was freed.

export interface WriteSlotsOptions {
  /** Responses in flight at once. */
  limit: number;
  /**
   * Bytes in flight at once (default: no bound but `limit`). A response that
   * alone is larger still goes, once nothing else is in flight.
   */
  bytes?: number;
  /** The longest one response keeps its slot. */
  holdMs: number;
}

export class WriteSlots {
  private used = 0;
  private usedBytes = 0;
  /** Waiters in arrival order from `head` on (a forgotten one stays until it is reached). */
  private queue: Array<() => void> = [];
  private head = 0;
  private readonly waiting = new Set<() => void>();
  /** The waiter being woken: refused again, it goes back to the head of the queue. */
  private waking: (() => void) | undefined;

  constructor(private readonly options: WriteSlotsOptions) {}

  get inFlight(): number {
    return this.used;
  }

  /** Bytes of the responses in flight. */
  get bytesInFlight(): number {
    return this.usedBytes;
  }

  get queued(): number {
    return this.waiting.size;
  }

  /**
   * A slot for a response of `bytes`, or null when all are taken or the
   * bytes would go beyond the budget: then `wake` runs once one is free (a
   * waiter already queued keeps its place). The returned release is idempotent.
   */
  take(wake: () => void, bytes = 0): (() => void) | null {
    // Behind a waiter (one too big for what is left, say) a newcomer waits too: none is overtaken for ever.
    const behind = this.waiting.size > 0 && wake !== this.waking;
    if (behind || this.used >= this.options.limit || (this.usedBytes > 0 && this.usedBytes + bytes > (this.options.bytes ?? Infinity))) {
      this.enqueue(wake);
      return null;
    }
    this.used++;
    this.usedBytes += bytes;
    let released = false;
    const timer = setTimeout(() => release(), this.options.holdMs);
    timer.unref();
    const release = (): void => {
      if (released) return;
      released = true;
      clearTimeout(timer);
      this.used--;
      this.usedBytes -= bytes;
      this.wakeNext();
    };
    return release;
  }

  /** A waiter that no longer needs a slot (its stream ended). */
  forget(wake: () => void): void {
    this.waiting.delete(wake);
  }

  private enqueue(wake: () => void): void {
    if (this.waiting.has(wake)) return;
    this.waiting.add(wake);
    if (wake === this.waking) {
      // Woken and still too big: it keeps the head (later, smaller ones do not overtake it for ever).
      if (this.head > 0) this.queue[--this.head] = wake;
      else this.queue.unshift(wake);
      this.waking = undefined;
      return;
    }
    // The woken are dropped from the front now and then, not on every wake.
    if (this.head > 1_024 && this.head * 2 > this.queue.length) {
      this.queue = this.queue.slice(this.head);
      this.head = 0;
    }
    this.queue.push(wake);
  }

  /** Wakes waiters in order while slots are free, until one is refused again (a waiter with nothing left to write takes none). */
  private wakeNext(): void {
    while (this.used < this.options.limit && this.head < this.queue.length && this.waking === undefined) {
      const next = this.queue[this.head++]!;
      if (!this.waiting.delete(next)) continue;
      this.waking = next;
      next();
      if (this.waking === undefined) return; // refused: back at the head, wait for the next release
      this.waking = undefined;
    }
  }
}
