// What many ADS streams hold alike, held once. Every sidecar of a mesh
// subscribes to much the same resource names, yet each stream kept its own
// copy of the name set decoded from its requests (50 EDS names: ~2 KB with
// their strings). A stream never changes a set it stored (ads-stream.ts makes
// new ones), so streams can share equal ones: a name set equal to one kept
// here is replaced by it. Equality is by content, never by a hash. (The
// versions a synced stream ACKed are shared as a view of the resource map
// instead: acked-versions.ts.) No I/O.

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
