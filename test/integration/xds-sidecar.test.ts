// Our sidecar under our control plane, over real gRPC (ADS, state of the
// world): listeners appear and go, endpoints follow the VM registry, a bad
// resource is NACKed with its reason (visible through `ctl status`) while
// traffic keeps flowing, and a restarted control plane gets the same versions
// ACKed again.

import test from 'ava';
import { createLogger } from '../../proxy/log.js';
import { ControlPlane } from '../../xds/control-plane/control-plane.js';
import { MeshStore } from '../../xds/control-plane/mesh-store.js';
import { buildResources, toSnapshot } from '../../xds/control-plane/snapshot.js';
import { TYPE_URLS, packAny, unpackAny } from '../../xds/envoy/proto.js';
import { Registry } from '../../xds/vm-manager/registry.js';
import { echoTransfer, startEchoServer, waitFor, type TestServer } from '../helpers/apps.js';
import { runCli } from '../helpers/cli.js';
import { freePort } from '../helpers/haproxy.js';
import { LogCapture, startSidecar, type TestSidecar } from '../helpers/sidecars.js';
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
  const plane = new ControlPlane({ mesh, logger: createLogger({ level: 'debug', destination: planeLogs }), vms: { registry }, debounce: { quietMs: 20, maxMs: 200 } });
  const port = await plane.start('127.0.0.1:0');
  const address = `127.0.0.1:${port}`;
  const a = await startSidecar({ node: { id: 'vm-a' }, vsock: { enabled: false }, xds: { address } });
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
  t.like(w.a.logs.access()[0], { listener: 'outbound|echo', cluster: 'echo', transport: 'tcp', dst_vm: 'vm-b', upstream: `127.0.0.3:${w.b.sidecar.listenerAddress('inbound').port}` });
  t.is(w.b.logs.access().length, 1, 'through vm-b\'s sidecar');
  const cluster = w.a.sidecar.xds!.clusters.get('echo')!.config;
  t.deepEqual(cluster.endpoints, [{ address: '127.0.0.3', port: w.appB.port, vmId: 'vm-b', peer: { address: '127.0.0.3', port: w.b.sidecar.listenerAddress('inbound').port } }]);
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
  await waitFor(() => w.a.sidecar.xds!.clusters.get('echo')!.config.endpoints.map((e) => e.vmId).join() === 'vm-c', 'the new endpoints');
  const r = await echoTransfer(w.outboundPort, 50_000);
  t.is(r.receivedSha256, r.sentSha256);
  t.is(appC.accepted, 1, 'the new connection went to vm-c');
  t.is(w.b.logs.access().length, 0);
  // Moving vm-c onto vm-a's hypervisor: its endpoint now says so (vsock is off here, and vm-c has no sidecar: still direct).
  w.registry.moveVm('vm-c', 'hv-2', 9);
  await w.plane.flush();
  await waitFor(() => w.plane.ads.syncStatus().some((s) => s.nodeId === 'vm-a' && s.typeUrl === TYPE_URLS.ClusterLoadAssignment && s.lastAckVersion === w.plane.cache.get('vm-a')!.versions[TYPE_URLS.ClusterLoadAssignment]), 'the moved endpoint ACKed');
  t.deepEqual(w.a.sidecar.xds!.clusters.get('echo')!.config.endpoints, [{ address: '127.0.0.4', port: appC.port, vmId: 'vm-c' }]);
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
  const good = buildResources(w.mesh.config, { vms: w.registry.list().vms, hypervisors: w.registry.list().hypervisors }, 'vm-a');
  const broken = { ...good, listeners: [...good.listeners, { name: 'outbound|broken', address: { socket_address: { address: '127.0.0.1', port_value: 0 } }, filter_chains: [{ filters: [{ name: 'envoy.filters.network.tcp_proxy', typed_config: packAny(TYPE_URLS.TcpProxy, { stat_prefix: 'x', cluster: 'echo' }) }] }] }] };
  w.plane.cache.setSnapshot('vm-a', toSnapshot(broken));
  await waitFor(() => w.plane.ads.syncStatus().some((s) => s.nodeId === 'vm-a' && s.lastNack !== null), 'a NACK');
  const nack = w.plane.ads.syncStatus().find((s) => s.nodeId === 'vm-a' && s.lastNack !== null)!;
  t.is(nack.typeUrl, TYPE_URLS.Listener);
  t.regex(nack.lastNack!.error, /listener "outbound\|broken": address\.socket_address\.port_value: /);
  t.true(w.a.logs.lines.some((l) => l.reason === 'xds_nack'), 'the sidecar logged the NACK with a reason');
  const status = await runCli(['ctl', '--control-plane', w.address, 'status', '--node', 'vm-a']);
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
  const again = new ControlPlane({ mesh: w.mesh, logger: createLogger({ level: 'silent' }), vms: { registry: w.registry } });
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
  const plane = new ControlPlane({ mesh, logger: createLogger({ level: 'silent' }), vms: { remote: vmm.address }, debounce: { quietMs: 10, maxMs: 100 } });
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
  const plane = new ControlPlane({ mesh, logger: createLogger({ level: 'silent' }), vms: { registry: new Registry() }, debounce: { quietMs: 5, maxMs: 50 }, clusterRemovalDelayMs: 300 });
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

test('a pushed listener whose port is taken NACKs the whole listener update; the listeners before it keep working', async (t) => {
  const w = await world(t);
  await waitFor(() => listening(w, 'outbound|echo'), 'outbound|echo');
  const squatter = await startEchoServer('127.0.0.1');
  t.teardown(() => squatter.close());
  await w.mesh.put('services', { name: 'blocked', port: 7000, outbound_port: squatter.port });
  await waitFor(() => w.plane.ads.syncStatus().some((s) => s.nodeId === 'vm-a' && s.typeUrl === TYPE_URLS.Listener && s.lastNack !== null), 'the LDS NACK');
  const nack = w.plane.ads.syncStatus().find((s) => s.nodeId === 'vm-a' && s.typeUrl === TYPE_URLS.Listener)!.lastNack!;
  t.regex(nack.error, /outbound\|blocked.*EADDRINUSE|EADDRINUSE.*outbound\|blocked/);
  t.false(listening(w, 'outbound|blocked'));
  const r = await echoTransfer(w.outboundPort, 10_000);
  t.is(r.receivedSha256, r.sentSha256, 'outbound|echo still serves');
});
