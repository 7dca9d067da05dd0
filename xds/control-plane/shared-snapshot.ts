// The snapshot every node shares, made again on every change of the mesh or
// the registry. A change is mostly one VM, so of the services' assignments
// (10,000 endpoints over 50 services) one changed; translating and packing
// every one again was most of a rebuild and of the garbage it left. Here each
// service's packed ClusterLoadAssignment is kept with a hash of what it is made
// of (the VMs serving it, their hypervisors, the mesh's peer authentication)
// and made again only when that changed: the snapshot is the one
// buildSharedResources would give, byte for byte. No I/O.

import { TYPE_URLS } from '../envoy/proto.js';
import { makeSnapshot, shortHash, type NamedResource, type Snapshot } from './snapshot.js';
import { buildMeshResources, hypervisorsById, packAssignment, packResources, serviceAssignment, servicesOf, vmsByService, type RegistryView } from './translate.js';
import type { MeshConfig } from './types.js';

export class SharedSnapshots {
  /** Per service of the last snapshot, its packed assignment and the hash of its inputs (only the mesh's services: bounded as they are). */
  private assignments = new Map<string, { inputs: string; resource: NamedResource }>();
  /** Assignments translated and packed (not reused), for the tests. */
  packed = 0;

  snapshot(mesh: MeshConfig, view: RegistryView): Snapshot {
    const resources = packResources(buildMeshResources(mesh));
    const byService = vmsByService(view);
    const hypervisors = hypervisorsById(view);
    const kept = new Map<string, { inputs: string; resource: NamedResource }>();
    for (const { name } of servicesOf(mesh)) {
      const vms = byService.get(name) ?? [];
      const inputs = shortHash(JSON.stringify([mesh.peerAuthentication, vms, vms.map((vm) => hypervisors.get(vm.hypervisorId) ?? null)]));
      let entry = this.assignments.get(name);
      if (entry?.inputs !== inputs) {
        entry = { inputs, resource: packAssignment(serviceAssignment(name, vms, hypervisors, mesh.peerAuthentication)) };
        this.packed++;
      }
      kept.set(name, entry);
    }
    this.assignments = kept;
    resources[TYPE_URLS.ClusterLoadAssignment] = [...kept.values()].map((e) => e.resource);
    return makeSnapshot(resources);
  }
}
