// A cache of answers that expire, with one query in flight per key: what the
// resolver keeps of the VM manager's answers and what the host relay keeps of
// its authorizations. Expired entries are dropped when read and swept when the
// cache reaches `sweepAt` entries, so it never grows without bound for keys
// that are asked once. The clock is injected.

export interface TtlCacheOptions<V> {
  now?: () => number;
  /** When a new key would make the cache this large, expired entries are dropped first (default 10,000). */
  sweepAt?: number;
  /** Told of every entry that leaves the cache (expired, swept, deleted, cleared), for callers that index entries. */
  onEvict?: (key: string, value: V) => void;
}

interface Entry<V> {
  value: V;
  expiresAt: number;
}

export class TtlCache<V> {
  private readonly entries = new Map<string, Entry<V>>();
  private readonly inflight = new Map<string, Promise<unknown>>();
  private readonly now: () => number;
  private readonly sweepAt: number;

  constructor(private readonly options: TtlCacheOptions<V> = {}) {
    this.now = options.now ?? Date.now;
    this.sweepAt = options.sweepAt ?? 10_000;
  }

  /** Entries held, fresh or not yet swept. */
  get size(): number {
    return this.entries.size;
  }

  /** The fresh value of `key`, or undefined (an expired one is dropped). */
  get(key: string): V | undefined {
    const entry = this.entries.get(key);
    if (entry === undefined) return undefined;
    if (entry.expiresAt > this.now()) return entry.value;
    this.evict(key, entry);
    return undefined;
  }

  set(key: string, value: V, ttlMs: number): void {
    if (this.entries.size >= this.sweepAt && !this.entries.has(key)) this.sweep();
    const previous = this.entries.get(key);
    if (previous !== undefined) this.options.onEvict?.(key, previous.value);
    this.entries.set(key, { value, expiresAt: this.now() + ttlMs });
  }

  /** Changes a held value and keeps its expiry (an answer made current by a change event); false if `key` is not held. */
  replace(key: string, value: V): boolean {
    const entry = this.entries.get(key);
    if (entry === undefined) return false;
    entry.value = value;
    return true;
  }

  delete(key: string): boolean {
    const entry = this.entries.get(key);
    if (entry === undefined) return false;
    this.evict(key, entry);
    return true;
  }

  /** Every held key and value, fresh or not (for updating them in place). */
  *held(): IterableIterator<[string, V]> {
    for (const [key, entry] of this.entries) yield [key, entry.value];
  }

  /** Drops every expired entry. */
  sweep(): void {
    const now = this.now();
    for (const [key, entry] of this.entries) if (entry.expiresAt <= now) this.evict(key, entry);
  }

  clear(): void {
    for (const [key, entry] of [...this.entries]) this.evict(key, entry);
  }

  /** Runs `query` for `key` unless one is already running, whose promise is then shared. */
  once<T>(key: string, query: () => Promise<T>): Promise<T> {
    const pending = this.inflight.get(key) as Promise<T> | undefined;
    if (pending !== undefined) return pending;
    const started = query().finally(() => this.inflight.delete(key));
    this.inflight.set(key, started);
    return started;
  }

  private evict(key: string, entry: Entry<V>): void {
    this.entries.delete(key);
    this.options.onEvict?.(key, entry.value);
  }
}
