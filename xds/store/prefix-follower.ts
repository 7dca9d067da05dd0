// Following one prefix of a store from a revision, for a view kept in memory
// (the control plane's mesh, the VM manager's registry): the watch, and what
// happens when it ends. Compacted past the view: the prefix is read again at
// once. Any other end (etcd cancelled it, the store is gone): not ready, saying
// why, and read again after a backoff. A read that fails is retried with the
// same backoff (not ready meanwhile); a read that answers is handed over, and
// the prefix followed again from its revision. The store's availability while
// the watch reconnects by itself drives readiness too. The view owner supplies
// the events, the listed records, readiness and the log lines.

import { Backoff } from '../../proxy/runtime/backoff.js';
import type { VsockmeshError } from '../../proxy/runtime/errors.js';
import type { Store, StoreEvent, StoreRecord, StoreWatch } from './store.js';

export interface PrefixFollowerHooks {
  /** The view's revision: where a new watch starts. */
  revision(): number;
  /** Changes the watch brought, in order. */
  onEvents(events: StoreEvent[]): void;
  /** The prefix as read again after a watch ended; followed from `revision()` once this returns. */
  onListed(records: StoreRecord[], revision: number): void;
  /** Readiness changed: the store went out of reach (why) or is back (null). */
  onReadinessChange(unavailable: string | null): void;
  /** The watch ended (compacted: read again at once, else after a backoff). */
  onWatchEnded(err: VsockmeshError, compacted: boolean): void;
  /** Reading the prefix again failed; retried in `delayMs`. */
  onListFailed(err: Error, delayMs: number): void;
  /** Why the store counts as out of reach after a watch that ended (default: the error's message). */
  endedReason?(err: VsockmeshError): string;
}

export class PrefixFollower {
  /** Why the store is out of reach (null: it answers); readiness follows it. */
  unavailable: string | null = null;
  private readonly backoff = new Backoff({ initialMs: 250, maxMs: 5_000 });
  private watch: StoreWatch | undefined;
  private timer: NodeJS.Timeout | undefined;
  private ended = false;

  constructor(
    private readonly store: Store,
    private readonly prefix: string,
    private readonly hooks: PrefixFollowerHooks,
  ) {}

  get closed(): boolean {
    return this.ended;
  }

  /** Watches the prefix from the view's revision. */
  follow(): void {
    if (this.ended) return;
    this.watch = this.store.watch(this.prefix, this.hooks.revision(), {
      onEvents: (events) => this.hooks.onEvents(events),
      onAvailability: (unavailable) => this.setAvailability(unavailable),
      onError: (err) => {
        if (this.ended) return;
        this.watch = undefined;
        const compacted = err.code === 'OUT_OF_RANGE';
        if (!compacted) this.setAvailability(this.hooks.endedReason?.(err) ?? err.message);
        this.hooks.onWatchEnded(err, compacted);
        this.later(compacted ? 0 : this.backoff.next(), () => void this.resync());
      },
    });
  }

  /** The store answered: the backoff starts over, and the store counts as reachable. */
  answered(): void {
    this.backoff.reset();
    this.setAvailability(null);
  }

  /** Records why the store is out of reach (null: it answers); a change of readiness is told to the owner. */
  setAvailability(unavailable: string | null): void {
    const changed = (unavailable === null) !== (this.unavailable === null);
    this.unavailable = unavailable;
    if (changed) this.hooks.onReadinessChange(unavailable);
  }

  /** The next retry delay (growing until answered()). */
  nextDelay(): number {
    return this.backoff.next();
  }

  /** Runs `fn` after `delayMs` unless closed by then (one retry pending at a time). */
  later(delayMs: number, fn: () => void): void {
    this.timer = setTimeout(() => {
      if (!this.ended) fn();
    }, delayMs);
    this.timer.unref();
  }

  /** Stops following: the watch cancelled, a pending retry dropped. */
  close(): void {
    this.ended = true;
    clearTimeout(this.timer);
    this.watch?.cancel();
    this.watch = undefined;
  }

  /** After a watch that ended: the prefix read again until the store answers, then followed from there. */
  private async resync(): Promise<void> {
    if (this.ended) return;
    let listed: { records: StoreRecord[]; revision: number };
    try {
      listed = await this.store.list(this.prefix);
    } catch (err) {
      if (this.ended) return;
      const delay = this.backoff.next();
      this.hooks.onListFailed(err as Error, delay);
      this.setAvailability((err as Error).message);
      this.later(delay, () => void this.resync());
      return;
    }
    if (this.ended) return;
    this.hooks.onListed(listed.records, listed.revision);
    this.follow();
  }
}
