// The route timeouts of one HTTP listener's requests (504 route_timeout),
// kept without a Node timer per request: requests of one timeout value
// expire in the order they began, so each value keeps its requests in a
// linked list, in order, and one timer armed for the first. A request that
// ends first leaves the list (O(1)); the timer, when it fires, expires the
// requests due and is armed again for the next. A deadline fires when its
// time has come (the listener's clock), never before.

/** A request's deadline, as started: cancel() when the request ends first (or no longer has one). */
export interface RouteDeadline {
  cancel(): void;
}

/** The clock and the one-shot timer the deadlines run on (tests give their own). */
export interface DeadlineClock {
  now(): number;
  /** Calls `fire` after `ms` (an unref'd timer: a deadline keeps no process alive). */
  arm(ms: number, fire: () => void): void;
}

const NODE_CLOCK: DeadlineClock = {
  now: () => performance.now(),
  arm: (ms, fire) => void setTimeout(fire, ms).unref(),
};

class Entry implements RouteDeadline {
  prev: Entry | null = null;
  next: Entry | null = null;
  constructor(
    readonly list: DeadlineList,
    readonly at: number,
    public expire: (() => void) | null,
  ) {}

  cancel(): void {
    if (this.expire === null) return;
    this.expire = null;
    this.list.remove(this);
  }
}

/** The requests of one timeout value, in the order they began (and so of their deadlines). */
class DeadlineList {
  private head: Entry | null = null;
  private tail: Entry | null = null;
  /** When the armed timer fires (-1: none armed). */
  private armedAt = -1;

  constructor(private readonly clock: DeadlineClock) {}

  add(at: number, expire: () => void): Entry {
    const entry = new Entry(this, at, expire);
    if (this.tail === null) this.head = entry;
    else {
      this.tail.next = entry;
      entry.prev = this.tail;
    }
    this.tail = entry;
    // For the first in the list: a handler that runs in fired() may add while earlier ones wait.
    if (this.armedAt < 0) this.arm(this.head!.at);
    return entry;
  }

  remove(entry: Entry): void {
    if (entry.prev === null) this.head = entry.next;
    else entry.prev.next = entry.next;
    if (entry.next === null) this.tail = entry.prev;
    else entry.next.prev = entry.prev;
    entry.prev = entry.next = null;
  }

  private arm(at: number): void {
    this.armedAt = at;
    this.clock.arm(Math.max(1, Math.ceil(at - this.clock.now())), () => this.fired());
  }

  private fired(): void {
    this.armedAt = -1;
    const now = this.clock.now();
    // Each expired request leaves the list before its handler runs (which may start or end others).
    for (let first = this.head; first !== null && first.at <= now; first = this.head) {
      const expire = first.expire!;
      first.expire = null;
      this.remove(first);
      expire();
    }
    if (this.head !== null && this.armedAt < 0) this.arm(this.head.at);
  }
}

/** One listener's route deadlines, a list per timeout value. */
export class RouteDeadlines {
  private readonly lists = new Map<number, DeadlineList>();

  constructor(private readonly clock: DeadlineClock = NODE_CLOCK) {}

  /** `expire` runs `timeoutMs` after `startedAt` (the clock's time the request began) unless cancelled first. */
  start(startedAt: number, timeoutMs: number, expire: () => void): RouteDeadline {
    let list = this.lists.get(timeoutMs);
    if (list === undefined) {
      list = new DeadlineList(this.clock);
      this.lists.set(timeoutMs, list);
    }
    return list.add(startedAt + timeoutMs, expire);
  }
}

/** What a request without a route timeout holds: nothing to cancel. */
export const NO_DEADLINE: RouteDeadline = { cancel() {} };
