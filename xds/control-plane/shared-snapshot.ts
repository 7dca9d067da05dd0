// The snapshot every node shares, made again on every change of the mesh or
// the registry. A change is mostly one VM, so of the services' assignments
// (10,000 endpoints over 50 services) one changed; translating and packing
// every one again was most of a rebuild and of the garbage it left. Here each
// service's packed ClusterLoadAssignment is kept with what it is made of (the
// VMs serving it, their hypervisors, the mesh's peer authentication) and made
// again only when that changed: the same record objects (the registry's
// records are immutable, a change is a new one) are taken as unchanged without
// looking further, other ones are compared by a hash of their content. The
// resources the registry has no part in (clusters, listeners, routes) are
// packed once per mesh and their maps kept: a node's snapshot merged over them
// keeps its own layers (node-snapshots.ts). The snapshot is the one
// buildSharedResources would give, byte for byte. No I/O.

import type { HypervisorRecord, VmRecord } from '../../proxy/resolve/types.js';
import { TYPE_URLS } from '../envoy/proto.js';
import { makeSnapshot, resourceVersion, shortHash, typeVersion, type Snapshot, type VersionedResource } from './snapshot.js';
import { buildMeshResources, hypervisorsById, packAssignment, packResources, serviceAssignment, servicesOf, vmsByService, vmsByServiceSince, type RegistryView } from './translate.js';
import type { MeshConfig, PeerAuthentication } from './types.js';

interface Assignment {
  /** What it was made of: the records themselves (compared by identity first) and the hash of their content. */
  vms: readonly VmRecord[];
  hypervisors: ReadonlyArray<HypervisorRecord | null>;
  peerAuthentication: readonly PeerAuthentication[];
  inputs: string;
  resource: VersionedResource;
}

/** Whether `vms` on `hypervisors` under `peer` are the very objects `a` was made of. */
function sameObjects(a: Assignment, vms: readonly VmRecord[], hypervisors: ReadonlyMap<string, HypervisorRecord>, peer: readonly PeerAuthentication[]): boolean {
  if (a.peerAuthentication !== peer || a.vms.length !== vms.length) return false;
  for (let i = 0; i < vms.length; i++) {
    const vm = vms[i]!;
    if (a.vms[i] !== vm || a.hypervisors[i] !== (hypervisors.get(vm.hypervisorId) ?? null)) return false;
  }
  return true;
}

/** Whether two lists hold the very same records in the same order. */
function sameRecords<T>(a: readonly T[], b: readonly T[]): boolean {
  if (a === b) return true;
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

export class SharedSnapshots {
  /** Per service of the last snapshot, its packed assignment and what it was made of (only the mesh's services: bounded as they are). */
  private assignments = new Map<string, Assignment>();
  /** The mesh the last snapshot was made from, with its packed clusters, listeners and routes (no assignments). */
  private meshPart: { mesh: MeshConfig; snapshot: Snapshot } | undefined;
  private last: Snapshot | undefined;
  /** The registry the last snapshot was made from, its VMs grouped by service. */
  private grouped: { vms: readonly VmRecord[]; hypervisors: readonly HypervisorRecord[]; byService: Map<string, VmRecord[]> } | undefined;
  /** Assignments translated and packed (not reused), for the tests. */
  packed = 0;
  /** Assignments whose inputs were hashed (their objects were not the same as last time), for the tests. */
  hashed = 0;

  snapshot(mesh: MeshConfig, view: RegistryView): Snapshot {
    const meshChanged = this.meshPart?.mesh !== mesh;
    if (meshChanged) this.meshPart = { mesh, snapshot: makeSnapshot(packResources(buildMeshResources(mesh))) };
    // Mostly one VM's record changed: only its services are grouped again, the other lists are the same arrays as last time.
    const before = this.grouped;
    const byService = (before && vmsByServiceSince(before, view.vms)) ?? vmsByService(view);
    const hypervisors = hypervisorsById(view);
    // The same hypervisor records as last time: an assignment made of the same VM list (the same array) is made of the same objects.
    const sameHypervisors = before !== undefined && sameRecords(before.hypervisors, view.hypervisors);
    this.grouped = { vms: view.vms, hypervisors: view.hypervisors, byService };
    const kept = new Map<string, Assignment>();
    let changed = meshChanged || this.last === undefined;
    for (const { name } of servicesOf(mesh)) {
      const vms = byService.get(name) ?? [];
      let entry = this.assignments.get(name);
      const sameList = entry !== undefined && sameHypervisors && entry.vms === vms && entry.peerAuthentication === mesh.peerAuthentication;
      if (entry === undefined || (!sameList && !sameObjects(entry, vms, hypervisors, mesh.peerAuthentication))) {
        const onHypervisors = vms.map((vm) => hypervisors.get(vm.hypervisorId) ?? null);
        const inputs = shortHash(JSON.stringify([mesh.peerAuthentication, vms, onHypervisors]));
        this.hashed++;
        if (entry?.inputs !== inputs) {
          const packed = packAssignment(serviceAssignment(name, vms, hypervisors, mesh.peerAuthentication));
          entry = { vms, hypervisors: onHypervisors, peerAuthentication: mesh.peerAuthentication, inputs, resource: { ...packed, version: resourceVersion(packed.resource) } };
          this.packed++;
          changed = true;
        } else entry = { ...entry, vms, hypervisors: onHypervisors, peerAuthentication: mesh.peerAuthentication };
      }
      kept.set(name, entry);
    }
    if (kept.size !== this.assignments.size) changed = true;
    this.assignments = kept;
    // Nothing changed: the same snapshot (nodes merged over it are not merged again, streams owe nothing).
    if (!changed) return this.last!;
    const base = this.meshPart!.snapshot;
    const assignments = new Map([...kept.values()].map((e) => [e.resource.name, e.resource]));
    this.last = {
      resources: { ...base.resources, [TYPE_URLS.ClusterLoadAssignment]: assignments },
      versions: { ...base.versions, [TYPE_URLS.ClusterLoadAssignment]: typeVersion(assignments) },
    };
    return this.last;
  }
}
