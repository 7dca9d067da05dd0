// The per-node memo: a registered VM's snapshot is the shared snapshot plus
// its own part, remade only when what it is made of changes, and checked.

import test from 'ava';
import { parseMeshConfig } from '../../xds/control-plane/mesh.js';
import { LayeredMap } from '../../xds/control-plane/layered-map.js';
import { NodeSnapshots } from '../../xds/control-plane/node-snapshots.js';
import { makeSnapshot, type Snapshot } from '../../xds/control-plane/snapshot.js';
import { buildSharedResources, toSnapshot, type RegistryView } from '../../xds/control-plane/translate.js';
import { TYPE_URLS, RESOURCE_TYPE_URLS } from '../../xds/envoy/proto.js';
import type { VmRecord } from '../../proxy/resolve/types.js';
import { nodeResources } from '../helpers/xds-resources.js';

const mesh = parseMeshConfig({ services: [{ name: 'web', port: 8080, outbound_port: 18080 }, { name: 'db', port: 5432 }] });
const web1: VmRecord = {
  vmId: 'web-1',
  hypervisorId: 'hv-1',
  vsockCid: 3,
  addresses: ['10.0.0.11'],
  sidecar: { tcpPort: 15006, vsockPort: 15007 },
  services: [{ name: 'web', port: 8080 }],
  labels: {},
  generation: 1,
  leaseExpiresAt: null,
};
const view: RegistryView = { vms: [web1], hypervisors: [{ hypervisorId: 'hv-1', vsockMode: 'direct', relayPort: 0 }] };
const shared = toSnapshot(buildSharedResources(mesh, view));

const versions = (s: Snapshot) => Object.fromEntries(RESOURCE_TYPE_URLS.map((url) => [url, [...s.resources[url].values()].map((r) => `${r.name}:${r.version}`)]));

test("a node's snapshot is the shared one plus its own listeners and clusters, the same as all its resources in one snapshot", (t) => {
  const nodes = new NodeSnapshots();
  const s = nodes.snapshotFor(web1, mesh, shared);
  const whole = toSnapshot(nodeResources(mesh, view, 'web-1'));
  t.deepEqual(s.versions, whole.versions);
  t.deepEqual(versions(s), versions(whole));
  t.true(nodes.madeHere(s));
  t.true(nodes.madeHere(shared), 'the shared snapshot was checked on the way: the cache need not check it again');
  t.false(nodes.madeHere(toSnapshot(buildSharedResources(mesh, view))), 'another snapshot, even of the same content, was not');
});

test('an inconsistent shared snapshot: every node is refused with its problem (found once), though its own part is fine', (t) => {
  const nodes = new NodeSnapshots();
  const routes = makeSnapshot({
    [TYPE_URLS.RouteConfiguration]: [{ name: 'to-nowhere', resource: toSnapshot({ clusters: [], endpoints: [], listeners: [], routes: [{ name: 'to-nowhere', virtual_hosts: [{ name: 'x', domains: ['*'], routes: [{ match: { prefix: '/' }, route: { cluster: 'nowhere' } }] }] }] }).resources[TYPE_URLS.RouteConfiguration].get('to-nowhere')!.resource }],
  });
  const broken: Snapshot = { resources: { ...shared.resources, [TYPE_URLS.RouteConfiguration]: routes.resources[TYPE_URLS.RouteConfiguration] }, versions: { ...shared.versions, [TYPE_URLS.RouteConfiguration]: routes.versions[TYPE_URLS.RouteConfiguration] } };
  const problem = { message: /^inconsistent snapshot: route_configuration "to-nowhere": virtual_hosts\[0\]\.routes\[0\]: cluster "nowhere" is not in the snapshot/ };
  t.throws(() => nodes.snapshotFor(web1, mesh, broken), problem);
  t.throws(() => nodes.snapshotFor({ ...web1, vmId: 'web-2', vsockCid: 4 }, mesh, broken), problem);
  t.false(nodes.madeHere(broken));
  t.notThrows(() => nodes.snapshotFor(web1, mesh, shared));
});

test('remade only when the VM record, the mesh or the shared snapshot changes', (t) => {
  const nodes = new NodeSnapshots();
  const s1 = nodes.snapshotFor(web1, mesh, shared);
  t.is(nodes.snapshotFor({ ...web1 }, mesh, shared), s1, 'the same record again: the same snapshot');
  t.is(nodes.snapshotFor({ ...web1, labels: { team: 'a' }, generation: 2 }, mesh, shared), s1, 'labels and generation are not served');
  const moved = nodes.snapshotFor({ ...web1, sidecar: { tcpPort: 15106, vsockPort: 15007 } }, mesh, shared);
  t.not(moved, s1);
  t.not(moved.versions[TYPE_URLS.Listener], s1.versions[TYPE_URLS.Listener]);
  const sharedAgain = toSnapshot(buildSharedResources(mesh, view));
  const remerged = nodes.snapshotFor({ ...web1, sidecar: { tcpPort: 15106, vsockPort: 15007 } }, mesh, sharedAgain);
  t.not(remerged, moved, 'a new shared snapshot: merged again');
  t.deepEqual(remerged.versions, moved.versions, 'with the same content');
  const otherMesh = parseMeshConfig({ services: [{ name: 'web', port: 8080, outbound_port: 18080 }, { name: 'db', port: 5432 }] });
  t.not(nodes.snapshotFor(web1, otherMesh, sharedAgain), nodes.snapshotFor(web1, mesh, sharedAgain), 'another mesh: remade');
  const before = nodes.snapshotFor(web1, mesh, sharedAgain);
  t.is(nodes.snapshotFor(web1, mesh, sharedAgain), before);
  nodes.forget('web-1');
  const fresh = nodes.snapshotFor(web1, mesh, sharedAgain);
  t.not(fresh, before, 'forgotten: made again');
  t.deepEqual(fresh.versions, s1.versions);
});

test('an inconsistent node snapshot throws, naming the problem, and is checked again next time', (t) => {
  const nodes = new NodeSnapshots();
  const clusters = [...shared.resources[TYPE_URLS.Cluster].values()].filter((r) => r.name !== 'db');
  const broken = makeSnapshot({
    [TYPE_URLS.Cluster]: clusters,
    [TYPE_URLS.ClusterLoadAssignment]: [...shared.resources[TYPE_URLS.ClusterLoadAssignment].values()],
    [TYPE_URLS.Listener]: [],
    [TYPE_URLS.RouteConfiguration]: [],
  });
  const problem = { message: /^inconsistent snapshot: listener "outbound\|db": filter_chains\[0\]\.filters\[0\]: tcp_proxy cluster "db" is not in the snapshot/ };
  t.throws(() => nodes.snapshotFor(web1, mesh, broken), problem);
  t.throws(() => nodes.snapshotFor(web1, mesh, broken), problem, 'not taken as checked');
  t.notThrows(() => nodes.snapshotFor(web1, mesh, shared));
});

test("two nodes share the shared snapshot's resource objects, and lay their own over its maps instead of copying them", (t) => {
  const web2: VmRecord = { ...web1, vmId: 'web-2', vsockCid: 4, addresses: ['10.0.0.12'] };
  const nodes = new NodeSnapshots();
  const s1 = nodes.snapshotFor(web1, mesh, shared);
  const s2 = nodes.snapshotFor(web2, mesh, shared);
  for (const url of RESOURCE_TYPE_URLS) {
    for (const [name, r] of shared.resources[url]) {
      t.is(s1.resources[url].get(name), r, `${url} ${name}: the shared object itself`);
      t.is(s2.resources[url].get(name), r, `${url} ${name}: the shared object itself`);
    }
  }
  // The types a node adds to (its listeners, its inbound cluster) are a layer, not a copy of the shared entries.
  for (const url of [TYPE_URLS.Listener, TYPE_URLS.Cluster]) {
    t.true(s1.resources[url] instanceof LayeredMap, url);
    t.true(s2.resources[url] instanceof LayeredMap, url);
  }
  t.is(s1.resources[TYPE_URLS.ClusterLoadAssignment], shared.resources[TYPE_URLS.ClusterLoadAssignment], 'a type the node adds nothing to: the shared map itself');
  t.not(s1.resources[TYPE_URLS.Listener].get('outbound|db'), s2.resources[TYPE_URLS.Listener].get('outbound|db'), 'the outbound listeners name their own VM');
});

test('a new shared snapshot that changed only the assignments: the node keeps its listener and cluster layers and their versions', (t) => {
  const nodes = new NodeSnapshots();
  const s1 = nodes.snapshotFor(web1, mesh, shared);
  const otherEndpoints = toSnapshot(buildSharedResources(mesh, { ...view, vms: [{ ...web1, addresses: ['10.0.0.99'] }] }));
  const next: Snapshot = {
    resources: { ...shared.resources, [TYPE_URLS.ClusterLoadAssignment]: otherEndpoints.resources[TYPE_URLS.ClusterLoadAssignment] },
    versions: { ...shared.versions, [TYPE_URLS.ClusterLoadAssignment]: otherEndpoints.versions[TYPE_URLS.ClusterLoadAssignment] },
  };
  const s2 = nodes.snapshotFor(web1, mesh, next);
  t.not(s2, s1);
  for (const url of [TYPE_URLS.Listener, TYPE_URLS.Cluster]) {
    t.is(s2.resources[url], s1.resources[url], `${url}: the same layer`);
    t.is(s2.versions[url], s1.versions[url]);
  }
  t.is(s2.resources[TYPE_URLS.ClusterLoadAssignment], next.resources[TYPE_URLS.ClusterLoadAssignment]);
  t.not(s2.versions[TYPE_URLS.ClusterLoadAssignment], s1.versions[TYPE_URLS.ClusterLoadAssignment]);
  // The same as merging from scratch.
  t.deepEqual(versions(s2), versions(new NodeSnapshots().snapshotFor(web1, mesh, next)));
  t.deepEqual(s2.versions, new NodeSnapshots().snapshotFor(web1, mesh, next).versions);
  // A shared map the node lays its own over is another object (the same content made anew): that layer is made again.
  const remade = makeSnapshot({ ...Object.fromEntries(RESOURCE_TYPE_URLS.map((url) => [url, [...next.resources[url].values()]])) });
  const s3 = nodes.snapshotFor(web1, mesh, remade);
  t.not(s3.resources[TYPE_URLS.Cluster], s2.resources[TYPE_URLS.Cluster]);
  t.deepEqual(s3.versions, s2.versions);
});

test('a shared snapshot with the clusters, listeners and routes of the last consistent one and assignments of the same names passes the check; one missing an assignment does not', (t) => {
  const nodes = new NodeSnapshots();
  nodes.checkShared(shared);
  const eds = shared.resources[TYPE_URLS.ClusterLoadAssignment];
  const moved = toSnapshot(buildSharedResources(mesh, { ...view, vms: [{ ...web1, addresses: ['10.0.0.99'] }] })).resources[TYPE_URLS.ClusterLoadAssignment];
  t.notDeepEqual([...moved.values()].map((r) => r.version), [...eds.values()].map((r) => r.version));
  const next: Snapshot = { resources: { ...shared.resources, [TYPE_URLS.ClusterLoadAssignment]: moved }, versions: shared.versions };
  t.notThrows(() => nodes.checkShared(next));
  t.true(nodes.madeHere(next));
  const fewer = new Map([...moved].filter(([name]) => name !== 'web'));
  const missing: Snapshot = { resources: { ...next.resources, [TYPE_URLS.ClusterLoadAssignment]: fewer }, versions: shared.versions };
  t.throws(() => nodes.checkShared(missing), { message: /EDS cluster has no ClusterLoadAssignment "web"/ });
  t.false(nodes.madeHere(missing));
});
