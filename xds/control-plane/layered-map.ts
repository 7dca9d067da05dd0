// A read-only map of `top` laid over `base` without copying either: what a
// node's snapshot serves per type is the shared snapshot's map with the
// node's own resources over it, and with thousands of nodes a copy of the
// shared entries per node is most of what a node costs. Reads and iteration
// give exactly what `new Map([...base, ...top])` would, in the same order.

export class LayeredMap<K, V> implements ReadonlyMap<K, V> {
  readonly size: number;

  constructor(
    private readonly base: ReadonlyMap<K, V>,
    private readonly top: ReadonlyMap<K, V>,
  ) {
    let added = 0;
    for (const key of top.keys()) if (!base.has(key)) added++;
    this.size = base.size + added;
  }

  get(key: K): V | undefined {
    return this.top.has(key) ? this.top.get(key) : this.base.get(key);
  }

  has(key: K): boolean {
    return this.top.has(key) || this.base.has(key);
  }

  *entries(): MapIterator<[K, V]> {
    for (const [key, value] of this.base) yield [key, this.top.has(key) ? this.top.get(key)! : value];
    for (const entry of this.top) if (!this.base.has(entry[0])) yield entry;
  }

  *keys(): MapIterator<K> {
    for (const [key] of this.entries()) yield key;
  }

  *values(): MapIterator<V> {
    for (const [, value] of this.entries()) yield value;
  }

  [Symbol.iterator](): MapIterator<[K, V]> {
    return this.entries();
  }

  forEach(callback: (value: V, key: K, map: ReadonlyMap<K, V>) => void, thisArg?: unknown): void {
    for (const [key, value] of this.entries()) callback.call(thisArg, value, key, this);
  }
}
