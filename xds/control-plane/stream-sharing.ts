// What many ADS streams hold alike, held once. Every sidecar of a mesh
// subscribes to much the same resource names and ACKs the same versions, yet
// each stream kept its own copy: the name set decoded from its requests (50
// EDS names: ~2 KB with their strings) and the map of versions it ACKed,
// made anew by every ACK (~3 KB). Both are immutable once made (ads-stream.ts
// never changes a set or map it stored; it makes new ones), so streams can
// share equal ones: a name set equal to one kept here is replaced by it, and
// the ACKed versions made from the same map and the same versions sent are
// the same map. Equality is by content, never by a hash. No I/O.

/** Name sets kept for sharing at most (the least recently used goes first) and names in them at most. */
export const SHARED_NAME_SETS = 256;
export const SHARED_NAMES = 65_536;

const nameSets = new Map<string, ReadonlySet<string>>();
let namesKept = 0;

/** `names`, or an equal set (same names in the same order) a stream made before. */
export function sharedNameSet(names: ReadonlySet<string>): ReadonlySet<string> {
  if (names.size === 0 || names.size > SHARED_NAMES) return names;
  const key = JSON.stringify([...names]);
  const kept = nameSets.get(key);
  if (kept !== undefined) {
    // Most recently used last.
    nameSets.delete(key);
    nameSets.set(key, kept);
    return kept;
  }
  nameSets.set(key, names);
  namesKept += names.size;
  for (const [oldest, set] of nameSets) {
    if (nameSets.size <= SHARED_NAME_SETS && namesKept <= SHARED_NAMES) break;
    nameSets.delete(oldest);
    namesKept -= set.size;
  }
  return names;
}

/** Name sets kept for sharing now, for the tests. */
export function sharedNameSetCount(): number {
  return nameSets.size;
}

function sameEntries(a: ReadonlyMap<string, string>, b: ReadonlyMap<string, string>): boolean {
  if (a === b) return true;
  if (a.size !== b.size) return false;
  for (const [k, v] of a) if (b.get(k) !== v) return false;
  return true;
}

/** Merges kept per map (the streams' types and subscriptions differ: their merges over the empty map alternate). */
export const MERGES_PER_MAP = 8;

/**
 * Per map, the last merges over it: what was set over it and the result. The
 * result is held weakly: only the streams keep it (a strong one would keep a
 * chain of every map since the first, one per change, each the key of the
 * next).
 */
const merges = new WeakMap<ReadonlyMap<string, string>, Array<{ over: ReadonlyMap<string, string>; merged: WeakRef<ReadonlyMap<string, string>> }>>();

/**
 * `a` with the entries of `b` set over it (a new map, or `a` when `b` is
 * empty); when one of the last merges over the same `a` set equal entries,
 * its result: the streams that had ACKed the same versions and ACK the same
 * response share one map.
 */
export function sharedMerge(a: ReadonlyMap<string, string>, b: ReadonlyMap<string, string>): ReadonlyMap<string, string> {
  if (b.size === 0) return a;
  let last = merges.get(a);
  if (last === undefined) merges.set(a, (last = []));
  for (let i = last.length - 1; i >= 0; i--) {
    const m = last[i]!;
    if (!sameEntries(m.over, b)) continue;
    const kept = m.merged.deref();
    if (kept !== undefined) return kept;
    last.splice(i, 1);
  }
  const merged = new Map(a);
  for (const [k, v] of b) merged.set(k, v);
  last.push({ over: b, merged: new WeakRef(merged) });
  if (last.length > MERGES_PER_MAP) last.shift();
  return merged;
}
