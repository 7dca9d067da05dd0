// Our sidecar under our control plane, over real gRPC (ADS, state of the
// world): listeners appear and go, endpoints follow the VM registry, a bad
// resource is NACKed with its reason (visible through `ctl status`) while
// traffic keeps flowing, and a restarted control plane gets the same versions
// ACKed again.

import test from 'ava';
import { createLogger } from '../../proxy/runtime/log.js';
import { ControlPlane } from '../../xds/control-plane/control-plane.js';
import { MeshStore } from '../../xds/control-plane/mesh-store.js';
import { toSnapshot } from '../../xds/control-plane/translate.js';
import { nodeResources } from '../helpers/xds-resources.js';
import { TYPE_URLS, packAny, unpackAny } from '../../xds/envoy/proto.js';
import { Registry } from '../../xds/vm-manager/registry.js';
import { echoTransfer, startEchoServer, waitFor, type TestServer } from '../helpers/apps.js';
import { runCli } from '../helpers/cli.js';
import { freePort } from '../helpers/haproxy.js';
import { LogCapture, metricValue, startSidecar, type TestSidecar } from '../helpers/sidecars.js';
import { startVmManager, vm } from '../helpers/vm-manager.js';

interface World {
  plane: ControlPlane;
  registry: Registry;
  mesh: MeshStore;
  address: string;
  a: TestSidecar;
  b: TestSidecar;
  appB: TestServer;
  outboundPort: number;
  planeLogs: LogCapture;
}

/** vm-a runs the sidecar under test (xDS only); vm-b (other hypervisor) serves "echo" behind a static sidecar on 127.0.0.3. */
async function world(t: import('ava').ExecutionContext): Promise<World> {
  const appB = await startEchoServer('127.0.0.3');
  const b = await startSidecar({
    node: { id: 'vm-b' },
    vsock: { enabled: false },
    listeners: [{ kind: 'inbound', name: 'inbound', addresses: ['127.0.0.3'], port: 0, ports: [{ port: appB.port, target: { address: '127.0.0.3', port: appB.port } }] }],
  });
  const registry = new Registry();
  registry.registerHypervisor({ hypervisorId: 'hv-1', vsockMode: 'host-relay', relayPort: 15100 });
  registry.registerHypervisor({ hypervisorId: 'hv-2', vsockMode: 'host-relay', relayPort: 15100 });
  registry.registerVm(vm({ vmId: 'vm-a', hypervisorId: 'hv-1', vsockCid: 3, addresses: ['127.0.0.2'], sidecar: { tcpPort: 0, vsockPort: 0 } }));
  registry.registerVm(
    vm({ vmId: 'vm-b', hypervisorId: 'hv-2', vsockCid: 3, addresses: ['127.0.0.3'], sidecar: { tcpPort: b.sidecar.listenerAddress('inbound').port, vsockPort: 0 }, services: [{ name: 'echo', port: appB.port }] }),
  );
  const outboundPort = await freePort();
  const mesh = MeshStore.fromConfig({ services: [{ name: 'echo', port: appB.port, outbound_port: outboundPort }] });
  const planeLogs = new LogCapture();
  const plane = new ControlPlane({ mesh, logger: createLogger({ level: 'debug', destination: planeLogs }), vms: { registry }, transport: { insecure: true }, debounce: { quietMs: 20, maxMs: 200 } });
  const port = await plane.start('127.0.0.1:0');
  const address = `127.0.0.1:${port}`;
  const a = await startSidecar({ node: { id: 'vm-a' }, vsock: { enabled: false }, xds: { address }, insecure: true });
  t.teardown(async () => {
    await a.sidecar.stop();
    await plane.stop();
    await b.sidecar.stop();
    await appB.close();
  });
  return { plane, registry, mesh, address, a, b, appB, outboundPort, planeLogs };
}

const listening = (w: World, name: string): boolean => (w.a.sidecar.configDump() as { xds: { applied: { listeners: Array<{ name: string }> } } }).xds.applied.listeners.some((l) => l.name === name);

test('a listener pushed by the control plane starts accepting; its cluster\'s endpoints carry the VM facts; traffic arrives intact', async (t) => {
  const w = await world(t);
  await waitFor(() => listening(w, 'outbound|echo'), 'outbound|echo from the control plane');
  const r = await echoTransfer(w.outboundPort, 100_000);
  t.is(r.receivedSha256, r.sentSha256);
  await waitFor(() => w.a.logs.access().length === 1, 'an access line');
  const inbound = { address: '127.0.0.3', port: w.b.sidecar.listenerAddress('inbound').port };
  // Decided per connection from the endpoint's facts and vm-a's placement (hv-1; vm-b is on hv-2).
  t.like(w.a.logs.access()[0], { listener: 'outbound|echo', cluster: 'echo', transport: 'tcp', transport_reason: 'other_hypervisor', dst_vm: 'vm-b', upstream: `127.0.0.3:${inbound.port}` });
  t.is(await metricValue(w.a.sidecar, 'vsockmesh_transport_decisions_total', { cluster: 'echo', reason: 'other_hypervisor' }), 1, 'xDS decisions are counted too');
  t.is(w.b.logs.access().length, 1, 'through vm-b\'s sidecar');
  t.deepEqual(w.a.sidecar.xds!.placement, { vmId: 'vm-a', hypervisorId: 'hv-1' });
  t.deepEqual(w.a.sidecar.xds!.clusters.get('echo')!.endpoints, [
    { app: { address: '127.0.0.3', port: w.appB.port }, vm: { vmId: 'vm-b', hypervisorId: 'hv-2', sidecar: { tcp: inbound, vsock: null }, vsockReach: { mode: 'host-relay', relay: { cid: 2, port: 15100 } }, peerMode: 'strict' } },
  ]);
  // Every type ACKed at the version the control plane serves.
  await waitFor(() => w.plane.ads.syncStatus().filter((s) => s.nodeId === 'vm-a' && s.lastAckVersion !== null && s.lastAckVersion === s.lastSentVersion).length === 4, 'CDS, EDS, LDS and RDS ACKed');
});

test('an endpoint update redirects new connections; a VM registered or moved shows up in the pushed endpoints with its facts', async (t) => {
  const w = await world(t);
  await waitFor(() => listening(w, 'outbound|echo'), 'outbound|echo');
  const appC = await startEchoServer('127.0.0.4');
  t.teardown(() => appC.close());
  // vm-c, no sidecar, now serves echo; vm-b stops serving it.
  w.registry.registerVm(vm({ vmId: 'vm-c', hypervisorId: 'hv-1', vsockCid: 4, addresses: ['127.0.0.4'], services: [{ name: 'echo', port: appC.port }] }));
  w.registry.registerVm(vm({ vmId: 'vm-b', hypervisorId: 'hv-2', vsockCid: 3, addresses: ['127.0.0.3'], sidecar: { tcpPort: w.b.sidecar.listenerAddress('inbound').port, vsockPort: 0 } }));
  await waitFor(() => w.a.sidecar.xds!.clusters.get('echo')!.endpoints.map((e) => e.vm?.vmId).join() === 'vm-c', 'the new endpoints');
  const r = await echoTransfer(w.outboundPort, 50_000);
  t.is(r.receivedSha256, r.sentSha256);
  t.is(appC.accepted, 1, 'the new connection went to vm-c');
  t.is(w.b.logs.access().length, 0);
  // Moving vm-c to another hypervisor: its endpoint now says so (vm-c has no sidecar: still direct).
  w.registry.moveVm('vm-c', 'hv-2', 9);
  await w.plane.flush();
  await waitFor(() => w.plane.ads.syncStatus().some((s) => s.nodeId === 'vm-a' && s.typeUrl === TYPE_URLS.ClusterLoadAssignment && s.lastAckVersion === w.plane.cache.get('vm-a')!.versions[TYPE_URLS.ClusterLoadAssignment]), 'the moved endpoint ACKed');
  t.deepEqual(w.a.sidecar.xds!.clusters.get('echo')!.endpoints, [
    { app: { address: '127.0.0.4', port: appC.port }, vm: { vmId: 'vm-c', hypervisorId: 'hv-2', sidecar: null, vsockReach: { mode: 'host-relay', relay: { cid: 2, port: 15100 } }, peerMode: 'strict' } },
  ]);
  const r2 = await echoTransfer(w.outboundPort, 20_000);
  t.is(r2.receivedSha256, r2.sentSha256);
  await waitFor(() => w.a.logs.access().length === 2, 'the access lines');
  for (const line of w.a.logs.access()) t.like(line, { dst_vm: 'vm-c', transport_reason: 'no_sidecar', upstream: `127.0.0.4:${appC.port}` });
});

test('a listener removed by the control plane drains and stops accepting', async (t) => {
  const w = await world(t);
  await waitFor(() => listening(w, 'outbound|echo'), 'outbound|echo');
  await w.mesh.delete('services', 'echo');
  await waitFor(() => !listening(w, 'outbound|echo'), 'the listener removed');
  await waitFor(() => w.a.logs.lines.some((l) => l.msg === 'listener removed' && l.listener === 'outbound|echo'), 'removal logged');
  const refused = await echoTransfer(w.outboundPort, 10).then(
    () => false,
    (err: NodeJS.ErrnoException) => err.code === 'ECONNREFUSED',
  );
  t.true(refused, 'the port no longer accepts');
});

test('an invalid resource is NACKed with its field path (ctl status shows it), and traffic keeps flowing on the previous config', async (t) => {
  const w = await world(t);
  await waitFor(() => listening(w, 'outbound|echo'), 'outbound|echo');
  // What a broken control plane might send: the good resources plus a listener on port 0.
  const good = nodeResources(w.mesh.config, { vms: w.registry.list().vms, hypervisors: w.registry.list().hypervisors }, 'vm-a');
  const broken = { ...good, listeners: [...good.listeners, { name: 'outbound|broken', address: { socket_address: { address: '127.0.0.1', port_value: 0 } }, filter_chains: [{ filters: [{ name: 'envoy.filters.network.tcp_proxy', typed_config: packAny(TYPE_URLS.TcpProxy, { stat_prefix: 'x', cluster: 'echo' }) }] }] }] };
  w.plane.cache.setSnapshot('vm-a', toSnapshot(broken));
  await waitFor(() => w.plane.ads.syncStatus().some((s) => s.nodeId === 'vm-a' && s.lastNack !== null), 'a NACK');
  const nack = w.plane.ads.syncStatus().find((s) => s.nodeId === 'vm-a' && s.lastNack !== null)!;
  t.is(nack.typeUrl, TYPE_URLS.Listener);
  t.regex(nack.lastNack!.error, /listener "outbound\|broken": address\.socket_address\.port_value: /);
  t.true(w.a.logs.lines.some((l) => l.reason === 'xds_nack'), 'the sidecar logged the NACK with a reason');
  const status = await runCli(['ctl', '--insecure', '--control-plane', w.address, 'status', '--node', 'vm-a']);
  t.is(status.code, 0, status.stderr);
  t.regex(status.stdout, /vm-a\tListener\t.*NACK [0-9a-f]+: listener "outbound\|broken": address\.socket_address\.port_value/);
  const r = await echoTransfer(w.outboundPort, 20_000);
  t.is(r.receivedSha256, r.sentSha256, 'the previous listeners still work');
  t.false(listening(w, 'outbound|broken'));
});

test('control plane restarts: the sidecar keeps serving, reconnects, resyncs and ACKs the same versions', async (t) => {
  const w = await world(t);
  await waitFor(() => w.plane.ads.syncStatus().filter((s) => s.nodeId === 'vm-a' && s.lastAckVersion !== null).length === 4, 'all four types ACKed');
  const before = Object.fromEntries(w.plane.ads.syncStatus().filter((s) => s.nodeId === 'vm-a').map((s) => [s.typeUrl, s.lastAckVersion]));
  const port = Number(w.address.split(':')[1]);
  await w.plane.stop();
  const during = await echoTransfer(w.outboundPort, 20_000);
  t.is(during.receivedSha256, during.sentSha256, 'served while the control plane is away');
  const again = new ControlPlane({ mesh: w.mesh, logger: createLogger({ level: 'silent' }), vms: { registry: w.registry }, transport: { insecure: true } });
  await again.start(`127.0.0.1:${port}`);
  t.teardown(() => again.stop());
  await waitFor(() => again.ads.syncStatus().filter((s) => s.nodeId === 'vm-a' && s.lastAckVersion !== null).length === 4, 'all four types ACKed again', 20_000);
  const after = Object.fromEntries(again.ads.syncStatus().filter((s) => s.nodeId === 'vm-a').map((s) => [s.typeUrl, s.lastAckVersion]));
  t.deepEqual(after, before, 'the same versions');
  t.true(w.a.logs.lines.some((l) => l.reason === 'xds_stream_ended'), 'the outage was logged');
});

test('a control plane following a separate VM manager (--vm-manager) pushes what that VM manager registers', async (t) => {
  const vmm = await startVmManager({ hypervisors: [{ hypervisorId: 'hv-1', vsockMode: 'direct', relayPort: 0 }] });
  const mesh = MeshStore.fromConfig({ services: [{ name: 'db', port: 5432 }] });
  const plane = new ControlPlane({ mesh, logger: createLogger({ level: 'silent' }), vms: { remote: vmm.address }, transport: { insecure: true }, debounce: { quietMs: 10, maxMs: 100 } });
  await plane.start('127.0.0.1:0');
  t.teardown(async () => {
    await plane.stop();
    await vmm.stop();
  });
  t.is(plane.vmManager, undefined, 'no VM manager API served here');
  const endpointsOfDb = (): string[] => {
    const cla = plane.cache.default?.resources[TYPE_URLS.ClusterLoadAssignment].get('db');
    if (!cla) return [];
    const decoded = unpackAny(cla.resource, TYPE_URLS.ClusterLoadAssignment);
    return decoded.endpoints.flatMap((l) => l.lb_endpoints.map((e) => `${e.endpoint?.address?.socket_address?.address}:${e.endpoint?.address?.socket_address?.port_value}`));
  };
  await vmm.client.registerVm(vm({ vmId: 'db-1', hypervisorId: 'hv-1', vsockCid: 3, addresses: ['10.0.0.5'], services: [{ name: 'db', port: 5432 }] }));
  await waitFor(() => endpointsOfDb().join() === '10.0.0.5:5432', 'db-1 in the served assignment');
  await vmm.client.deregisterVm('db-1');
  await waitFor(() => endpointsOfDb().length === 0, 'db-1 gone from the served assignment');
});

test('make before break: a removed service\'s listener and routes go first, its cluster only after the removal delay', async (t) => {
  const mesh = MeshStore.fromConfig({ services: [{ name: 'db', port: 5432 }, { name: 'web', port: 8080 }] });
  const plane = new ControlPlane({ mesh, logger: createLogger({ level: 'silent' }), vms: { registry: new Registry() }, transport: { insecure: true }, debounce: { quietMs: 5, maxMs: 50 }, clusterRemovalDelayMs: 300 });
  await plane.start('127.0.0.1:0');
  t.teardown(() => plane.stop());
  const names = (type: typeof TYPE_URLS.Cluster | typeof TYPE_URLS.Listener | typeof TYPE_URLS.RouteConfiguration) => [...(plane.cache.default?.resources[type].keys() ?? [])].sort();
  t.deepEqual(names(TYPE_URLS.Cluster), ['db', 'web']);
  await mesh.delete('services', 'db');
  await plane.flush();
  t.deepEqual(names(TYPE_URLS.Listener), ['web'], 'the listener is gone at once');
  t.deepEqual(names(TYPE_URLS.RouteConfiguration), ['web'], 'so is the route');
  t.deepEqual(names(TYPE_URLS.Cluster), ['db', 'web'], 'the cluster is still served');
  await waitFor(() => names(TYPE_URLS.Cluster).join() === 'web', 'the cluster removed after the delay');
  t.false(plane.cache.default!.resources[TYPE_URLS.ClusterLoadAssignment].has('db'));
});

const admin = async (w: World, path: string): Promise<string> => {
  const res = await fetch(`http://127.0.0.1:${w.a.sidecar.adminAddress()!.port}${path}`);
  return res.text();
};
const ldsStatus = (w: World) => w.plane.ads.syncStatus().find((s) => s.nodeId === 'vm-a' && s.typeUrl === TYPE_URLS.Listener);
interface TypeDump {
  acceptedVersion: string | null;
  appliedVersion: string | null;
  refused: Array<{ name: string | null; error: string; version: string }>;
}
const typeDump = (w: World, typeUrl: string): TypeDump => (w.a.sidecar.configDump() as { xds: { types: Record<string, TypeDump> } }).xds.types[typeUrl]!;

test('one listener whose port is taken is NACKed by name while the other listener of the same response is applied; its previous version keeps serving', async (t) => {
  const w = await world(t);
  await waitFor(() => listening(w, 'outbound|echo') && ldsStatus(w)?.lastAckVersion === ldsStatus(w)?.lastSentVersion, 'outbound|echo ACKed');
  const accepted = ldsStatus(w)!.lastAckVersion;
  const squatter = await startEchoServer('127.0.0.1');
  t.teardown(() => squatter.close());
  // One LDS response: outbound|echo moves to the squatter's port, and a new service "two" (also served by vm-b) comes.
  const twoPort = await freePort();
  const mesh = MeshStore.fromConfig({
    services: [
      { name: 'echo', port: w.appB.port, outbound_port: squatter.port },
      { name: 'two', port: w.appB.port, outbound_port: twoPort },
    ],
  });
  const { vms, hypervisors } = w.registry.list();
  const view = { vms: vms.map((v) => (v.vmId === 'vm-b' ? { ...v, services: [...v.services, { name: 'two', port: w.appB.port }] } : v)), hypervisors };
  w.plane.cache.setSnapshot('vm-a', toSnapshot(nodeResources(mesh.config, view, 'vm-a')));
  await waitFor(() => ldsStatus(w)?.lastNack != null, 'the LDS NACK', 15_000);
  const nack = ldsStatus(w)!.lastNack!;
  t.regex(nack.error, /^listener "outbound\|echo": cannot listen on 127\.0\.0\.1 port \d+: EADDRINUSE/);
  t.notRegex(nack.error, /outbound\|two/, 'only the refused listener is named');
  t.is(ldsStatus(w)!.lastAckVersion, accepted, 'no ACK for the partly applied version');
  // The other listener of the response serves.
  t.true(listening(w, 'outbound|two'));
  await waitFor(() => (w.a.sidecar.xds!.clusters.get('two')?.endpoints.length ?? 0) > 0, 'the endpoints of "two" (EDS follows its CDS)', 15_000);
  const two = await echoTransfer(twoPort, 30_000);
  t.is(two.receivedSha256, two.sentSha256, 'outbound|two serves');
  // outbound|echo's previous version keeps serving on its old port.
  const echo = await echoTransfer(w.outboundPort, 30_000);
  t.is(echo.receivedSha256, echo.sentSha256, 'outbound|echo still serves on its previous port');
  // The sidecar shows what it applied and what it refused, and counts the refusal.
  const lds = typeDump(w, TYPE_URLS.Listener);
  t.is(lds.acceptedVersion, accepted, 'the last version accepted in full');
  t.is(lds.appliedVersion, nack.version);
  t.deepEqual(
    lds.refused.map((r) => r.name),
    ['outbound|echo'],
  );
  const dump = JSON.parse(await admin(w, '/config_dump')) as { xds: { applied: { listeners: Array<{ name: string; port: number }> } } };
  t.deepEqual(dump.xds.applied.listeners.find((l) => l.name === 'outbound|echo')?.port, w.outboundPort);
  t.regex(await admin(w, '/stats'), /vsockmesh_xds_resources_refused_total\{type="lds"\} [1-9]/);
  t.deepEqual(w.a.logs.withReason('xds_nack').at(-1)?.refused, ['outbound|echo']);
});

test('a node the control plane no longer knows keeps serving its listeners, says so (log, gauge, NACK in ctl status) and recovers when registered again', async (t) => {
  const w = await world(t);
  await waitFor(() => listening(w, 'outbound|echo') && ldsStatus(w)?.lastAckVersion === ldsStatus(w)?.lastSentVersion, 'outbound|echo ACKed');
  t.regex(await admin(w, '/stats'), /vsockmesh_xds_node_known 1/);
  const record = w.registry.getVm('vm-a')!;
  w.registry.deregisterVm('vm-a');
  await w.plane.flush();
  await waitFor(() => /node_unknown/.test(ldsStatus(w)?.lastNack?.error ?? ''), 'the node_unknown NACK', 15_000);
  t.regex(ldsStatus(w)!.lastNack!.error, /^node_unknown: .*node "vm-a".*keep serving \(outbound\|echo\)/);
  t.true(listening(w, 'outbound|echo'), 'the listener is kept');
  const during = await echoTransfer(w.outboundPort, 30_000);
  t.is(during.receivedSha256, during.sentSha256, 'and serves');
  const warned = w.a.logs.withReason('node_unknown');
  t.true(warned.length >= 1);
  t.is(new Set(warned.map((l) => l.version)).size, warned.length, 'one warning per version');
  t.like(warned[0], { level: 'warn', kept: ['outbound|echo'] });
  t.regex(await admin(w, '/stats'), /vsockmesh_xds_node_known 0/);
  const status = await runCli(['ctl', '--insecure', '--control-plane', w.address, 'status', '--node', 'vm-a']);
  t.is(status.code, 0, status.stderr);
  t.regex(status.stdout, /vm-a\tListener\t.*NACK [0-9a-f]+: node_unknown: /);
  // Registered again: its listeners come back in the state, which is applied and ACKed in full.
  w.registry.registerVm(record);
  await w.plane.flush();
  await waitFor(() => {
    const s = ldsStatus(w);
    return s !== undefined && s.lastSentVersion === s.lastAckVersion && s.lastAckAt! > s.lastNack!.at;
  }, 'LDS ACKed again', 15_000);
  t.regex(await admin(w, '/stats'), /vsockmesh_xds_node_known 1/);
  t.true(w.a.logs.lines.some((l) => /knows node vm-a again/.test(l.msg)));
  const after = await echoTransfer(w.outboundPort, 30_000);
  t.is(after.receivedSha256, after.sentSha256);
});

test('a cluster removed from CDS is freed once no listener names it: gone from the sidecar and its /config_dump', async (t) => {
  const w = await world(t);
  await waitFor(() => listening(w, 'outbound|echo'), 'outbound|echo');
  const gonePort = await freePort();
  await w.mesh.put('services', { name: 'gone', port: 7000, outbound_port: gonePort });
  const inDump = async (): Promise<boolean> => (JSON.parse(await admin(w, '/config_dump')) as { xds: { applied: { clusters: Array<{ name: string }> } } }).xds.applied.clusters.some((c) => c.name === 'gone');
  await waitFor(() => listening(w, 'outbound|gone') && w.a.sidecar.xds!.clusters.has('gone'), 'service "gone" applied', 15_000);
  t.true(await inDump());
  await w.mesh.delete('services', 'gone');
  // The listener goes first, the cluster after the control plane's removal delay; then the sidecar frees it.
  await waitFor(() => !listening(w, 'outbound|gone') && !w.a.sidecar.xds!.clusters.has('gone'), 'cluster "gone" freed', 15_000);
  t.false(await inDump());
  t.true(w.a.sidecar.xds!.clusters.has('echo'), 'the others stay');
  const r = await echoTransfer(w.outboundPort, 10_000);
  t.is(r.receivedSha256, r.sentSha256);
});
