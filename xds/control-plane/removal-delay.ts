// Make before break for clusters: a cluster that leaves the shared snapshot
// is still served for a while after the listeners and routes that named it
// are gone, so no client is told a route's cluster no longer exists while the
// route is still in effect. Pure: the caller keeps the result, passes it back
// with the next snapshot, and rebuilds again at `wakeAt`.

import { TYPE_URLS } from '../envoy/proto.js';
import { withResources, type Snapshot, type VersionedResource } from './snapshot.js';

/** A cluster (and its assignment) that left the snapshot, served until `until`. */
export interface KeptCluster {
  cluster: VersionedResource;
  assignment: VersionedResource | undefined;
  until: number;
}

export interface DelayedRemoval {
  /** What to serve: the new snapshot plus the clusters still kept. */
  snapshot: Snapshot;
  /** The clusters kept, by name (pass the whole result back next time). */
  kept: ReadonlyMap<string, KeptCluster>;
  /** When the first kept cluster is due to go (rebuild then); null: none is kept. */
  wakeAt: number | null;
}

/**
 * `next` with every cluster that `previous` served and `next` lacks kept for
 * `delayMs` from the first time it was missing (a kept cluster goes once its
 * time is up, or as soon as `next` has it again). `now` and `delayMs` in the
 * same clock's milliseconds; a delay of 0 keeps nothing.
 */
export function delayClusterRemoval(previous: DelayedRemoval | undefined, next: Snapshot, now: number, delayMs: number): DelayedRemoval {
  const nextClusters = next.resources[TYPE_URLS.Cluster];
  const kept = new Map(previous?.kept);
  if (previous !== undefined && delayMs > 0) {
    const served = previous.snapshot.resources;
    for (const [name, cluster] of served[TYPE_URLS.Cluster]) {
      if (!nextClusters.has(name) && !kept.has(name)) kept.set(name, { cluster, assignment: served[TYPE_URLS.ClusterLoadAssignment].get(name), until: now + delayMs });
    }
  }
  for (const [name, k] of kept) if (k.until <= now || nextClusters.has(name)) kept.delete(name);
  if (kept.size === 0) return { snapshot: next, kept, wakeAt: null };
  const clusters = new Map<string, VersionedResource>();
  const assignments = new Map<string, VersionedResource>();
  let wakeAt = Infinity;
  for (const [name, k] of kept) {
    clusters.set(name, k.cluster);
    if (k.assignment) assignments.set(name, k.assignment);
    wakeAt = Math.min(wakeAt, k.until);
  }
  return { snapshot: withResources(next, { [TYPE_URLS.Cluster]: clusters, [TYPE_URLS.ClusterLoadAssignment]: assignments }), kept, wakeAt };
}
