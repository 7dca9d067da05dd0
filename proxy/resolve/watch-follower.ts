// Following the VM manager's Watch stream, for every holder of a copy of the
// registry (the sidecar's resolver, the control plane's registry mirror):
// resume from the last revision seen, within the registry's epoch; start over
// from the whole registry when the VM manager no longer has the events after
// that revision (OUT_OF_RANGE) or names another epoch (it restarted without
// its state); reconnect with backoff after anything else.

import { Backoff, type BackoffOptions } from '../runtime/backoff.js';
import { errorCode } from '../runtime/errors.js';
import type { Logger } from '../runtime/log.js';
import type { VmEvent, VmManagerApi } from './types.js';

export interface WatchFollowerOptions {
  api: Pick<VmManagerApi, 'watch'>;
  /** Every event, in order; `revision` has already moved past it. */
  onEvent(event: VmEvent): void;
  /** What was learned before belongs to another history: the whole registry follows as events. */
  onReset(): void;
  /** A stream ended; the next one opens in `retryMs` (for a holder that says so louder than the debug line logged here). */
  onEnded?(err: Error, retryMs: number): void;
  logger: Logger;
  /** For log lines: who follows (e.g. "resolver", "registry mirror"). */
  name: string;
  /** Reconnect delays (default 250 ms doubling to 5 s, ±20 %). */
  backoff?: BackoffOptions;
}

export class WatchFollower {
  private revisionSeen = 0;
  private epochSeen = '';
  private watch: { cancel(): void } | undefined;
  private retryTimer: NodeJS.Timeout | undefined;
  private readonly backoff: Backoff;
  private running = false;

  constructor(private readonly options: WatchFollowerOptions) {
    this.backoff = new Backoff(options.backoff ?? { initialMs: 250, maxMs: 5_000 });
  }

  /** The revision of the last event applied (0: none yet, or starting over). */
  get revision(): number {
    return this.revisionSeen;
  }

  /** The registry history `revision` counts in ('' until the first stream opens). */
  get epoch(): string {
    return this.epochSeen;
  }

  start(): void {
    if (this.running) return;
    this.running = true;
    this.open();
  }

  stop(): void {
    this.running = false;
    clearTimeout(this.retryTimer);
    this.retryTimer = undefined;
    this.watch?.cancel();
    this.watch = undefined;
  }

  private open(): void {
    if (!this.running) return;
    this.watch = this.options.api.watch(
      this.revisionSeen,
      {
        onOpen: (epoch) => {
          this.backoff.reset();
          if (this.epochSeen !== '' && epoch !== this.epochSeen) this.startOver();
          this.epochSeen = epoch;
        },
        onEvent: (event) => {
          this.revisionSeen = Math.max(this.revisionSeen, event.revision);
          this.options.onEvent(event);
        },
        onError: (err) => {
          if (!this.running) return;
          this.watch = undefined;
          const outOfRange = errorCode(err) === 'OUT_OF_RANGE';
          // The events after our revision are gone: start over from the whole registry, at once.
          if (outOfRange) this.startOver();
          const delay = outOfRange ? 0 : this.backoff.next();
          this.options.logger.debug({ reason: 'vm_manager_watch_ended', follower: this.options.name, error: err.message, retry_ms: delay }, `VM manager watch ended (${this.options.name}); reconnecting`);
          this.options.onEnded?.(err, delay);
          this.retryTimer = setTimeout(() => this.open(), delay);
          this.retryTimer.unref();
        },
      },
      this.epochSeen,
    );
  }

  private startOver(): void {
    this.revisionSeen = 0;
    this.options.onReset();
  }
}
