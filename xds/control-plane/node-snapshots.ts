// Each registered VM's node snapshot: the shared snapshot plus the node's own
// part (its listeners and inbound clusters), remembered per node so that a
// change costs only what it touches. The own part is rebuilt only when the
// VM's record or the mesh changes; the merge is redone only when the shared
// snapshot changes, and then only for the types whose shared map changed
// (mostly none the node adds to: the assignments); the consistency check
// runs again only when the names the node's listeners may refer to change,
// and looks at the shared snapshot once (per shared snapshot) and at each
// node's own resources, not at every node's copy of the shared ones. A VM
// moving then costs one node's part, not every node's. No I/O.

import type { VmRecord } from '../../proxy/resolve/types.js';
import { RESOURCE_TYPE_URLS, TYPE_URLS } from '../envoy/proto.js';
import { assertConsistent, mergeSnapshots, type Snapshot } from './snapshot.js';
import { buildNodeResources, toSnapshot } from './translate.js';
import type { MeshConfig } from './types.js';

interface NodePart {
  /** The VM record the own part was made from (the same object: the same part, without making its key). */
  vm: VmRecord;
  /** The VM record fields the own part is made of. */
  key: string;
  mesh: MeshConfig;
  own: Snapshot;
  shared?: Snapshot;
  merged?: Snapshot;
  /** The shared names `merged` was checked against. */
  checkedAgainst?: string;
}

/** Whether `b` has `a`'s very maps of every type but the assignments, and assignments of the same names. */
function sameButAssignments(a: Snapshot, b: Snapshot): boolean {
  for (const typeUrl of RESOURCE_TYPE_URLS) if (typeUrl !== TYPE_URLS.ClusterLoadAssignment && a.resources[typeUrl] !== b.resources[typeUrl]) return false;
  const before = a.resources[TYPE_URLS.ClusterLoadAssignment];
  const after = b.resources[TYPE_URLS.ClusterLoadAssignment];
  if (before.size !== after.size) return false;
  for (const name of before.keys()) if (!after.has(name)) return false;
  return true;
}

export class NodeSnapshots {
  private readonly parts = new Map<string, NodePart>();
  /** The names a node's own listeners may refer to, for the shared snapshot they were read from. */
  private sharedNames: { shared: Snapshot; names: string } | undefined;
  /** Snapshots this made (or was given as shared) and found consistent. */
  private readonly consistent = new WeakSet<Snapshot>();
  /** The last shared snapshot found consistent. */
  private lastConsistent: WeakRef<Snapshot> | undefined;
  /** The last shared snapshot found inconsistent, and why. */
  private sharedProblems: { shared: Snapshot; error: Error } | undefined;

  /** The snapshot of the node of `vm`: `shared` and its own part, checked. Throws `inconsistent snapshot: ...` (checked again on the next call). */
  snapshotFor(vm: VmRecord, mesh: MeshConfig, shared: Snapshot): Snapshot {
    let part = this.parts.get(vm.vmId);
    if (!part || part.mesh !== mesh || part.vm !== vm) {
      const key = JSON.stringify([vm.hypervisorId, vm.vsockCid, vm.addresses, vm.sidecar, vm.services]);
      if (!part || part.key !== key || part.mesh !== mesh) part = { vm, key, mesh, own: toSnapshot(buildNodeResources(mesh, vm)) };
      else part = { ...part, vm };
      this.parts.set(vm.vmId, part);
    }
    if (part.shared !== shared || part.merged === undefined) {
      // The same own part over the previous shared snapshot: the types whose shared map did not change keep their layer and version.
      part.merged = mergeSnapshots(shared, part.own, part.shared && part.merged && { base: part.shared, merged: part.merged });
      part.shared = shared;
    }
    const names = this.namesOf(shared);
    if (part.checkedAgainst !== names) {
      // The shared part is checked once per shared snapshot, not once per node: then the node's own resources are all there is to check.
      this.checkShared(shared);
      assertConsistent(part.merged, part.own.resources);
      part.checkedAgainst = names;
    }
    this.consistent.add(part.merged);
    return part.merged;
  }

  /**
   * Throws as assertConsistent would for `shared` (checked once per snapshot;
   * found consistent, it counts as checked: madeHere). A snapshot whose
   * clusters, listeners and routes are the very maps of the last one found
   * consistent, with assignments of the same names, is consistent without
   * decoding anything: an assignment's content is not what consistency is
   * about, only its name (a change of endpoints is most changes).
   */
  checkShared(shared: Snapshot): void {
    if (this.consistent.has(shared)) return;
    if (this.sharedProblems?.shared === shared) throw this.sharedProblems.error;
    const last = this.lastConsistent?.deref();
    if (last === undefined || !sameButAssignments(last, shared)) {
      try {
        assertConsistent(shared);
      } catch (err) {
        this.sharedProblems = { shared, error: err as Error };
        throw err;
      }
    }
    this.consistent.add(shared);
    this.lastConsistent = new WeakRef(shared);
  }

  /** Whether `snapshot` is one this made or checked (hence checked already). */
  madeHere(snapshot: Snapshot): boolean {
    return this.consistent.has(snapshot);
  }

  /** Drops what is kept for `nodeId` (its VM left, or the node was forgotten). */
  forget(nodeId: string): void {
    this.parts.delete(nodeId);
  }

  private namesOf(shared: Snapshot): string {
    if (this.sharedNames?.shared !== shared) {
      const names = (type: typeof TYPE_URLS.Cluster | typeof TYPE_URLS.RouteConfiguration): string => [...shared.resources[type].keys()].join('\0');
      this.sharedNames = { shared, names: `${names(TYPE_URLS.Cluster)}|${names(TYPE_URLS.RouteConfiguration)}` };
    }
    return this.sharedNames.names;
  }
}
