// The shared snapshot made again per change: the same snapshot as all the
// shared resources translated anew, with only the assignments whose VMs,
// hypervisors or peer authentication changed packed again.

import test from 'ava';
import { parseMeshConfig } from '../../xds/control-plane/mesh.js';
import { SharedSnapshots } from '../../xds/control-plane/shared-snapshot.js';
import type { Snapshot } from '../../xds/control-plane/snapshot.js';
import { buildSharedResources, MAX_REGROUPED_VMS, toSnapshot, vmsByService, vmsByServiceSince, type RegistryView } from '../../xds/control-plane/translate.js';
import { RESOURCE_TYPE_URLS, TYPE_URLS } from '../../xds/envoy/proto.js';
import type { HypervisorRecord, VmRecord } from '../../proxy/resolve/types.js';

const SERVICES = ['api', 'db', 'web'];
const mesh = parseMeshConfig({ services: SERVICES.map((name, i) => ({ name, port: 8080, outbound_port: 18080 + i })) });

const vm = (i: number, hypervisorId: string): VmRecord => ({
  vmId: `vm-${i}`,
  hypervisorId,
  vsockCid: 3 + i,
  addresses: [`10.0.0.${i + 1}`],
  sidecar: { tcpPort: 15006, vsockPort: 15007 },
  services: [{ name: SERVICES[i % SERVICES.length]!, port: 8080 }],
  labels: {},
  generation: 1,
  leaseExpiresAt: null,
});
const hypervisors: HypervisorRecord[] = [
  { hypervisorId: 'hv-1', vsockMode: 'host-relay', relayPort: 15100 },
  { hypervisorId: 'hv-2', vsockMode: 'direct', relayPort: 0 },
];
// Not in VM id order: the assignments list their endpoints by VM id all the same.
const vms = [5, 0, 3, 1, 4, 2].map((i) => vm(i, i < 3 ? 'hv-1' : 'hv-2'));
const view: RegistryView = { vms, hypervisors };

/** Every resource's bytes and every version: equal means the same snapshot on the wire. */
const wire = (s: Snapshot) => ({
  versions: s.versions,
  resources: RESOURCE_TYPE_URLS.map((url) => [...s.resources[url].values()].map((r) => [r.name, r.version, Buffer.from(r.resource.value).toString('base64')])),
});

test('the shared snapshot is the one all the shared resources translated anew give', (t) => {
  const shared = new SharedSnapshots();
  t.deepEqual(wire(shared.snapshot(mesh, view)), wire(toSnapshot(buildSharedResources(mesh, view))));
  t.is(shared.packed, SERVICES.length);
});

test("a VM moving packs again only its service's assignment; the snapshot is still the one translated anew", (t) => {
  const shared = new SharedSnapshots();
  shared.snapshot(mesh, view);
  const moved: RegistryView = { vms: vms.map((v) => (v.vmId === 'vm-4' ? { ...v, hypervisorId: 'hv-1' } : { ...v })), hypervisors };
  const before = shared.packed;
  const s = shared.snapshot(mesh, moved);
  t.is(shared.packed - before, 1);
  t.deepEqual(wire(s), wire(toSnapshot(buildSharedResources(mesh, moved))));
  t.notDeepEqual(wire(s).versions, wire(toSnapshot(buildSharedResources(mesh, view))).versions);
});

test('nothing changed: no assignment is packed again', (t) => {
  const shared = new SharedSnapshots();
  shared.snapshot(mesh, view);
  const before = shared.packed;
  t.deepEqual(wire(shared.snapshot(mesh, { vms: vms.map((v) => ({ ...v })), hypervisors: hypervisors.map((h) => ({ ...h })) })), wire(shared.snapshot(mesh, view)));
  t.is(shared.packed, before);
});

test("a hypervisor's relay port changing packs again the assignments of the services with a VM on it", (t) => {
  const shared = new SharedSnapshots();
  shared.snapshot(mesh, view);
  // hv-2 holds vm-3 (api), vm-4 (db), vm-5 (web); hv-1's change touches vm-0..2: every service.
  const onlyHv2: RegistryView = { vms: vms.filter((v) => v.hypervisorId === 'hv-2' || v.vmId === 'vm-0'), hypervisors };
  shared.snapshot(mesh, onlyHv2);
  const before = shared.packed;
  const changed: RegistryView = { vms: onlyHv2.vms, hypervisors: [hypervisors[0]!, { ...hypervisors[1]!, vsockMode: 'host-relay', relayPort: 15200 }] };
  const s = shared.snapshot(mesh, changed);
  t.is(shared.packed - before, 3);
  t.deepEqual(wire(s), wire(toSnapshot(buildSharedResources(mesh, changed))));
});

test('the peer authentication changing packs every assignment again (the endpoints carry their peer mode)', (t) => {
  const shared = new SharedSnapshots();
  shared.snapshot(mesh, view);
  const strict = parseMeshConfig({ services: SERVICES.map((name, i) => ({ name, port: 8080, outbound_port: 18080 + i })), peer_authentication: [{ name: 'default', mode: 'strict' }] });
  const before = shared.packed;
  const s = shared.snapshot(strict, view);
  t.is(shared.packed - before, SERVICES.length);
  t.deepEqual(wire(s), wire(toSnapshot(buildSharedResources(strict, view))));
});

test('a service leaving the mesh is forgotten; coming back, it is packed again', (t) => {
  const shared = new SharedSnapshots();
  shared.snapshot(mesh, view);
  const fewer = parseMeshConfig({ services: [{ name: 'api', port: 8080, outbound_port: 18080 }] });
  t.deepEqual(wire(shared.snapshot(fewer, view)), wire(toSnapshot(buildSharedResources(fewer, view))));
  const before = shared.packed;
  shared.snapshot(mesh, view);
  t.is(shared.packed - before, 2);
});

test('the same record objects again: nothing is hashed or packed, and the snapshot is the same object', (t) => {
  const shared = new SharedSnapshots();
  const first = shared.snapshot(mesh, view);
  const { hashed, packed } = shared;
  t.is(shared.snapshot(mesh, { vms: [...vms], hypervisors: [...hypervisors] }), first);
  t.is(shared.hashed, hashed);
  t.is(shared.packed, packed);
});

test("a VM moving (a new record) hashes its service's inputs only; the clusters, listeners and routes keep their maps", (t) => {
  const shared = new SharedSnapshots();
  const first = shared.snapshot(mesh, view);
  const { hashed } = shared;
  const moved: RegistryView = { vms: vms.map((v) => (v.vmId === 'vm-4' ? { ...v, hypervisorId: 'hv-1' } : v)), hypervisors };
  const s = shared.snapshot(mesh, moved);
  t.is(shared.hashed - hashed, 1);
  t.deepEqual(wire(s), wire(toSnapshot(buildSharedResources(mesh, moved))));
  for (const url of [TYPE_URLS.Cluster, TYPE_URLS.Listener, TYPE_URLS.RouteConfiguration]) t.is(s.resources[url], first.resources[url], url);
  t.not(s.resources[TYPE_URLS.ClusterLoadAssignment], first.resources[TYPE_URLS.ClusterLoadAssignment]);
});

test('a new mesh object with the same content: the same snapshot on the wire, the mesh resources packed anew', (t) => {
  const shared = new SharedSnapshots();
  const first = shared.snapshot(mesh, view);
  const again = parseMeshConfig({ services: SERVICES.map((name, i) => ({ name, port: 8080, outbound_port: 18080 + i })) });
  const s = shared.snapshot(again, view);
  t.not(s, first);
  t.deepEqual(wire(s), wire(first));
});

test('grouping by service again after records were replaced: the lists vmsByService gives, the untouched ones the same arrays; anything else groups anew', (t) => {
  const before = { vms, byService: vmsByService(view) };
  const changedService = (v: VmRecord): VmRecord => ({ ...v, services: [{ name: 'db', port: 8080 }, { name: 'db', port: 9090 }] });
  // vm-0 is an api VM that now serves db; vm-4 (api too) moves.
  const next = vms.map((v) => (v.vmId === 'vm-0' ? changedService(v) : v.vmId === 'vm-4' ? { ...v, hypervisorId: 'hv-1' } : v));
  const regrouped = vmsByServiceSince(before, next)!;
  t.deepEqual([...regrouped].sort(), [...vmsByService({ vms: next, hypervisors })].sort());
  t.is(regrouped.get('web'), before.byService.get('web'), 'a service no replaced record is in: the same array');
  t.not(regrouped.get('api'), before.byService.get('api'));
  const emptied = vmsByServiceSince(before, vms.map((v) => (v.services[0]!.name === 'web' ? changedService(v) : v)))!;
  t.false(emptied.has('web'), 'a service left without VMs has no list, as with vmsByService');
  t.is(vmsByServiceSince(before, vms.slice(1)), null, 'a VM removed');
  t.is(vmsByServiceSince(before, [...vms.slice(1), vms[0]!]), null, 'reordered');
  const many = Array.from({ length: MAX_REGROUPED_VMS + 1 }, (_, i) => vm(i, 'hv-1'));
  t.is(vmsByServiceSince({ vms: many, byService: vmsByService({ vms: many, hypervisors }) }, many.map((v) => ({ ...v }))), null, 'more replaced than MAX_REGROUPED_VMS');
});

test('a VM moving, grouped from the last change: only its service is hashed and packed, and the snapshot is the one translated anew', (t) => {
  const shared = new SharedSnapshots();
  shared.snapshot(mesh, view);
  const moved: RegistryView = { vms: vms.map((v) => (v.vmId === 'vm-4' ? { ...v, hypervisorId: 'hv-1' } : v)), hypervisors };
  const [hashed, packed] = [shared.hashed, shared.packed];
  t.deepEqual(wire(shared.snapshot(mesh, moved)), wire(toSnapshot(buildSharedResources(mesh, moved))));
  t.deepEqual([shared.hashed - hashed, shared.packed - packed], [1, 1]);
  // The hypervisor records replaced (same content): every assignment is looked at again (hashed), none packed.
  const again = shared.snapshot(mesh, { vms: moved.vms, hypervisors: hypervisors.map((h) => ({ ...h })) });
  t.deepEqual([shared.hashed - hashed, shared.packed - packed], [1 + SERVICES.length, 1]);
  t.deepEqual(wire(again), wire(toSnapshot(buildSharedResources(mesh, moved))));
});
