// What a state-of-the-world client holds of a type whose responses carry
// only what it may not have (EDS, RDS: ads-stream.ts, owedNames), once it
// ACKed a response built from a snapshot's resource map: that map's version
// of every name it was subscribed to. Kept as a read-only view of the map
// itself (one per map, shared by every stream that ACKed a response built
// from it), not as a map of versions copied per stream on every ACK; and the
// names whose version differs between two resource maps are found once per
// pair of maps, then only looked up in each stream's subscription (issue 15:
// with 1,000 streams synced to the same snapshot, one comparison per change,
// not 1,000). No I/O.

import type { VersionedResource } from './snapshot.js';

type Resources = ReadonlyMap<string, VersionedResource>;

/** The versions of a resource map's resources, by name (a view: nothing copied). */
export class VersionsOf implements ReadonlyMap<string, string> {
  constructor(readonly resources: Resources) {}

  get size(): number {
    return this.resources.size;
  }

  get(name: string): string | undefined {
    return this.resources.get(name)?.version;
  }

  has(name: string): boolean {
    return this.resources.has(name);
  }

  *entries(): MapIterator<[string, string]> {
    for (const [name, r] of this.resources) yield [name, r.version];
  }

  keys(): MapIterator<string> {
    return this.resources.keys();
  }

  *values(): MapIterator<string> {
    for (const r of this.resources.values()) yield r.version;
  }

  [Symbol.iterator](): MapIterator<[string, string]> {
    return this.entries();
  }

  forEach(callback: (value: string, key: string, map: ReadonlyMap<string, string>) => void, thisArg?: unknown): void {
    for (const [name, version] of this.entries()) callback.call(thisArg, version, name, this);
  }
}

const views = new WeakMap<Resources, VersionsOf>();

/** The one view of `resources`' versions (every stream that ACKed a response built from it shares it). */
export function versionsOf(resources: Resources): VersionsOf {
  let view = views.get(resources);
  if (view === undefined) views.set(resources, (view = new VersionsOf(resources)));
  return view;
}

/** Between two resource maps: the names of the second whose version is not the first's (new or changed), in its order, and the names of the first gone from it. */
export interface VersionChanges {
  changed: readonly string[];
  removed: readonly string[];
}

/** Pairs compared per earlier map, at most (streams mostly go from the same map to the same next one). */
export const CHANGES_KEPT_PER_MAP = 4;

const compared = new WeakMap<Resources, Map<Resources, VersionChanges>>();

/** What changed from `from` to `to`; each pair is compared once (the last CHANGES_KEPT_PER_MAP pairs per `from` are kept). */
export function versionChanges(from: Resources, to: Resources): VersionChanges {
  let byTo = compared.get(from);
  const hit = byTo?.get(to);
  if (hit !== undefined) return hit;
  const changed: string[] = [];
  for (const [name, r] of to) if (from.get(name)?.version !== r.version) changed.push(name);
  const removed: string[] = [];
  for (const name of from.keys()) if (!to.has(name)) removed.push(name);
  const changes = { changed, removed };
  if (byTo === undefined) compared.set(from, (byTo = new Map()));
  if (byTo.size >= CHANGES_KEPT_PER_MAP) byTo.delete(byTo.keys().next().value!);
  byTo.set(to, changes);
  return changes;
}

/** `known` as a plain map of the versions of `names` only (a view covers every name of its map; the client holds only those it was subscribed to). */
export function ackedOf(known: ReadonlyMap<string, string>, names: Iterable<string>): ReadonlyMap<string, string> {
  if (!(known instanceof VersionsOf)) return known;
  const out = new Map<string, string>();
  for (const name of names) {
    const version = known.get(name);
    if (version !== undefined) out.set(name, version);
  }
  return out;
}
