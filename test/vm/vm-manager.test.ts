// The same-hypervisor decision over real vsock, inside the guest: a VM
// manager (real gRPC) says where vm-b lives; sidecar A picks vsock or TCP by
// it; a move mid-traffic sends new connections by the new placement and
// drains the old vsock ones; identity and the relay's policy come from the
// registry. Under vsock_loopback every sidecar is at CID 1, so the hypervisors
// that carry vsock here use the `loopback` mode (VMs told apart by port).

import test, { type ExecutionContext } from 'ava';
import { parseHostRelayConfig } from '../../proxy/config/load.js';
import { createHostRelay } from '../../proxy/cmd/proxies.js';
import { createLogger } from '../../proxy/runtime/log.js';
import type { HypervisorRecord } from '../../proxy/resolve/types.js';
import { collect, connect, echoTransfer, randomPayload, sha256, startEchoServer, waitFor } from '../helpers/apps.js';
import { runCli } from '../helpers/cli.js';
import { LogCapture, metricValue, startSidecar, type TestSidecar } from '../helpers/sidecars.js';
import { startVmManager, vm, type TestVmManager } from '../helpers/vm-manager.js';
import { MiB, assertInGuest, freeVsockPort, sized } from './guest-env.js';

assertInGuest();
const size = sized(32 * MiB, 4 * MiB);
const LOOP1: HypervisorRecord = { hypervisorId: 'hv-1', vsockMode: 'loopback', relayPort: 0 };
const LOOP2: HypervisorRecord = { hypervisorId: 'hv-2', vsockMode: 'loopback', relayPort: 0 };
const DIRECT: HypervisorRecord = { hypervisorId: 'hv-d', vsockMode: 'direct', relayPort: 0 };

interface ResolvedMesh {
  vmm: TestVmManager;
  a: TestSidecar;
  b: TestSidecar;
  port: number;
  vsockPort: number;
  tcpPort: number;
  appPort: number;
}

/** vm-b (app + sidecar on 127.0.0.3, vsock inbound checking peers against the registry) placed on `bHypervisor`; vm-a on hv-1 resolving vm-b. */
async function resolvedMesh(t: ExecutionContext, bHypervisor: string, options: { grace?: string; vsockPort?: number } = {}): Promise<ResolvedMesh> {
  const vmm = await startVmManager({ hypervisors: [LOOP1, LOOP2], vms: [vm({ vmId: 'vm-a', hypervisorId: 'hv-1', vsockCid: 1, addresses: ['127.0.0.2'], sidecar: { tcpPort: 0, vsockPort: 1 } })] });
  const app = await startEchoServer('127.0.0.3');
  const b = await startSidecar({
    node: { id: 'vm-b' },
    vm_manager: { address: vmm.address, query_timeout: '5s' }, insecure: true,
    listeners: [
      { kind: 'inbound', name: 'in-tcp', addresses: ['127.0.0.3'], port: 0, ports: [{ port: app.port, target: { address: '127.0.0.3', port: app.port } }] },
      { kind: 'inbound', name: 'in-vsock', transport: 'vsock', port: 0, peer_authorization: 'registry', ports: [{ port: app.port, target: { address: '127.0.0.3', port: app.port } }] },
    ],
  });
  const tcpPort = b.sidecar.listenerAddress('in-tcp').port;
  const vsockPort = options.vsockPort ?? b.sidecar.listenerAddress('in-vsock').port;
  await vmm.client.registerVm(vm({ vmId: 'vm-b', hypervisorId: bHypervisor, vsockCid: 1, addresses: ['127.0.0.3'], sidecar: { tcpPort, vsockPort } }));
  const a = await startSidecar({
    node: { id: 'vm-a' },
    vsock: { connect_timeout: '10s', breaker_window: '10m' },
    vm_manager: { address: vmm.address, query_timeout: '5s', migration_grace: options.grace ?? '1s' }, insecure: true,
    listeners: [{ kind: 'outbound', name: 'out', port: 0, cluster: 'b' }],
    clusters: [{ name: 'b', authority: 'b.mesh', resolve: { vm: 'vm-b', port: app.port } }],
  });
  t.teardown(async () => {
    await a.sidecar.stop();
    await b.sidecar.stop();
    await app.close();
    await vmm.stop();
  });
  return { vmm, a, b, port: a.sidecar.listenerAddress('out').port, vsockPort, tcpPort, appPort: app.port };
}

test.serial(`same hypervisor: vsock to vm-b's sidecar, seen on its vsock listener from CID 1 as vm-a (${size / MiB} MiB)`, async (t) => {
  const m = await resolvedMesh(t, 'hv-1');
  const r = await echoTransfer(m.port, size);
  t.is(r.received, size);
  t.is(r.receivedSha256, r.sentSha256);
  await waitFor(() => m.a.logs.access().length === 1 && m.b.logs.access().length === 1, 'access logs');
  t.like(m.a.logs.access()[0], { transport: 'vsock', transport_reason: 'same_hypervisor', upstream: `vsock:1:${m.vsockPort}`, dst_vm: 'vm-b' });
  const inbound = m.b.logs.access()[0]!;
  t.like(inbound, { listener: 'in-vsock', transport: 'vsock', source_vm: 'vm-a' });
  t.regex(String(inbound.peer), /^vsock:1:\d+$/, 'the inbound side saw the kernel-given peer CID 1');
  t.is(await metricValue(m.a.sidecar, 'vsockmesh_transport_decisions_total', { reason: 'same_hypervisor' }), 1);
});

test.serial('regression: with its vsock breaker open and no TCP inbound, a resolved peer is still tried over vsock, as a static one is (it used to go straight to the app)', async (t) => {
  // vm-b as the VM manager first tells it: its vsock inbound on a port nobody listens on, so the first connection falls back to TCP and opens the breaker.
  const dead = freeVsockPort();
  const m = await resolvedMesh(t, 'hv-1', { vsockPort: dead });
  const first = await echoTransfer(m.port, 64 * 1024);
  t.is(first.receivedSha256, first.sentSha256);
  await waitFor(() => m.a.logs.access().length === 1, 'the first access line');
  t.like(m.a.logs.access()[0], { transport: 'tcp', fallback: 'vsock->tcp', transport_reason: 'same_hypervisor' });
  t.is(await metricValue(m.a.sidecar, 'vsockmesh_transport_fallbacks_total'), 1, 'the breaker of 1:<port> is open');
  // Now vm-b has a vsock inbound only, on that port (a breaker is per CID and port), and a sidecar listens there.
  const app = m.b.sidecar.config.listeners.find((l) => l.kind === 'inbound' && l.name === 'in-tcp')!;
  const b2 = await startSidecar({
    node: { id: 'vm-b' },
    listeners: [{ kind: 'inbound', name: 'in-vsock', transport: 'vsock', port: dead, allowed_peer_cids: [1], ports: app.kind === 'inbound' ? app.ports.map((p) => ({ port: p.port, target: p.target })) : [] }],
  });
  t.teardown(() => b2.sidecar.stop());
  await m.vmm.client.registerVm(vm({ vmId: 'vm-b', hypervisorId: 'hv-1', vsockCid: 1, addresses: ['127.0.0.3'], sidecar: { tcpPort: 0, vsockPort: dead } }));
  await waitFor(() => m.a.sidecar.resolver!.lookup({ kind: 'vm', vmId: 'vm-b' })?.vm?.sidecar?.tcpPort === 0, 'vm-a\'s cached answer without the TCP inbound', 30_000);
  const second = await echoTransfer(m.port, 64 * 1024);
  t.is(second.receivedSha256, second.sentSha256);
  await waitFor(() => m.a.logs.access().length === 2, 'the second access line');
  t.like(m.a.logs.access()[1], { transport: 'vsock', transport_reason: 'same_hypervisor', upstream: `vsock:1:${dead}`, dst_vm: 'vm-b' });
  t.is(m.a.logs.access()[1]!.fallback, undefined);
  await waitFor(() => b2.logs.access().length === 1, 'vm-b\'s vsock inbound saw it');
});

test.serial('different hypervisor: TCP to vm-b\'s sidecar, never vsock', async (t) => {
  const m = await resolvedMesh(t, 'hv-2');
  const r = await echoTransfer(m.port, 1 * MiB);
  t.is(r.receivedSha256, r.sentSha256);
  await waitFor(() => m.a.logs.access().length === 1 && m.b.logs.access().length === 1, 'access logs');
  t.like(m.a.logs.access()[0], { transport: 'tcp', transport_reason: 'other_hypervisor', upstream: `127.0.0.3:${m.tcpPort}` });
  t.like(m.b.logs.access()[0], { listener: 'in-tcp', transport: 'tcp', source_vm: 'vm-a' });
  t.is(await metricValue(m.a.sidecar, 'vsockmesh_connections_total', { transport: 'vsock' }), 0);
});

test.serial('`ctl vms move` mid-traffic: new connections take TCP, old vsock connections finish within the grace or are drained after it; completed transfers intact', async (t) => {
  const m = await resolvedMesh(t, 'hv-1', { grace: '2s' });
  // Before the move: one transfer completes over vsock, one connection stays open.
  const before = await echoTransfer(m.port, 1 * MiB);
  t.is(before.receivedSha256, before.sentSha256);
  const idle = await connect(m.port);
  const idleSeen = collect(idle);
  const finishing = await connect(m.port);
  const finishingSeen = collect(finishing);
  await waitFor(async () => (await metricValue(m.b.sidecar, 'vsockmesh_connections_active', { listener: 'in-vsock' })) === 2, 'both connections open over vsock');

  const moved = await runCli(['ctl', '--insecure', '--vm-manager', m.vmm.address, 'vms', 'move', 'vm-b', '--hypervisor', 'hv-2']);
  t.is(moved.code, 0, moved.stderr);
  t.regex(moved.stdout, /moved vm-b\thypervisor=hv-2/);
  await waitFor(() => m.a.sidecar.resolver!.local() !== null && m.a.logs.lines.some((l) => l.reason === 'migration'), 'the move to reach sidecar A');

  // Within the grace, the old vsock connection still carries a whole exchange.
  const payload = randomPayload(256 * 1024);
  finishing.end(payload);
  const finished = await finishingSeen;
  t.is(sha256(finished.data), sha256(payload), 'a transfer completed during the grace is intact');

  // New connections go by the new placement.
  const after = await echoTransfer(m.port, 1 * MiB);
  t.is(after.receivedSha256, after.sentSha256);
  await waitFor(async () => (await metricValue(m.a.sidecar, 'vsockmesh_migration_drained_connections_total')) === 1, 'the idle vsock connection drained after the grace', 30_000);
  const idleResult = await idleSeen;
  t.is(idleResult.data.length, 0, 'nothing was half-delivered on the drained connection');
  await waitFor(() => m.a.logs.access().length === 4, 'four access lines');
  const reasons = m.a.logs.access().map((l) => `${String(l.transport)}/${String(l.transport_reason)}`);
  t.deepEqual(reasons.filter((r) => r === 'tcp/other_hypervisor').length, 1, `exactly the post-move connection took TCP: ${reasons.join(', ')}`);
  t.deepEqual(reasons.filter((r) => r === 'vsock/same_hypervisor').length, 3);
  t.true(idle.destroyed);
});

test.serial('a vsock peer whose kernel CID does not match the VM its header claims is refused and counted', async (t) => {
  // Real placement facts that the guest's CIDs contradict: vm-a is CID 3 on hv-d, but its connections arrive from CID 1.
  const vmm = await startVmManager({
    hypervisors: [DIRECT],
    vms: [
      vm({ vmId: 'vm-a', hypervisorId: 'hv-d', vsockCid: 3, addresses: ['127.0.0.2'], sidecar: { tcpPort: 0, vsockPort: 1 } }),
      vm({ vmId: 'vm-b', hypervisorId: 'hv-d', vsockCid: 4, addresses: ['127.0.0.3'], sidecar: { tcpPort: 0, vsockPort: 1 } }),
    ],
  });
  const app = await startEchoServer();
  const b = await startSidecar({
    node: { id: 'vm-b' },
    vm_manager: { address: vmm.address, query_timeout: '5s' }, insecure: true,
    listeners: [{ kind: 'inbound', name: 'in-vsock', transport: 'vsock', port: 0, peer_authorization: 'registry', ports: [app.port] }],
  });
  const a = await startSidecar({
    node: { id: 'vm-a' },
    vsock: { connect_timeout: '10s' },
    listeners: [{ kind: 'outbound', name: 'out', port: 0, cluster: 'b' }],
    clusters: [{ name: 'b', endpoints: [{ address: '127.0.0.1', port: app.port, vm_id: 'vm-b', vsock: { cid: 1, port: b.sidecar.listenerAddress('in-vsock').port } }] }],
  });
  t.teardown(async () => {
    await a.sidecar.stop();
    await b.sidecar.stop();
    await app.close();
    await vmm.stop();
  });
  const client = await connect(a.sidecar.listenerAddress('out').port);
  const seen = collect(client);
  client.end('hello');
  t.is((await seen).data.length, 0);
  await waitFor(async () => (await metricValue(b.sidecar, 'vsockmesh_connections_refused_total', { reason: 'peer_identity_mismatch' })) === 1, 'the refusal counted');
  const line = b.logs.withReason('peer_identity_mismatch')[0]!;
  t.like(line, { peer_cid: 1, source_vm: 'vm-a' });
  t.regex(line.msg, /claims VM vm-a, which is CID 3 on hv-d/);
  t.is(app.accepted, 0, 'nothing reached the app');
});

test.serial('the host relay asks the VM manager: a registered sidecar port is relayed, any other destination refused and counted', async (t) => {
  const vmm = await startVmManager({ hypervisors: [LOOP1], vms: [vm({ vmId: 'vm-a', hypervisorId: 'hv-1', vsockCid: 1, addresses: ['127.0.0.2'], sidecar: { tcpPort: 0, vsockPort: 1 } })] });
  const app = await startEchoServer();
  const b = await startSidecar({
    node: { id: 'vm-b' },
    vm_manager: { address: vmm.address, query_timeout: '5s' }, insecure: true,
    listeners: [
      { kind: 'inbound', name: 'in-vsock', transport: 'vsock', port: 0, peer_authorization: 'registry', ports: [app.port] },
      // Not registered: the relay must not reach it.
      { kind: 'inbound', name: 'hidden', transport: 'vsock', port: 0, allowed_peer_cids: [1], ports: [app.port] },
    ],
  });
  const registered = b.sidecar.listenerAddress('in-vsock').port;
  const hidden = b.sidecar.listenerAddress('hidden').port;
  await vmm.client.registerVm(vm({ vmId: 'vm-b', hypervisorId: 'hv-1', vsockCid: 1, addresses: ['127.0.0.3'], sidecar: { tcpPort: 0, vsockPort: registered } }));
  const logs = new LogCapture();
  const relay = await createHostRelay(parseHostRelayConfig({ node: { id: 'hv-1' }, admin: { port: 0 }, listen: { port: 0 }, header_timeout: '5s', vm_manager: { address: vmm.address, hypervisor_id: 'hv-1', query_timeout: '5s' }, insecure: true }), {
    logger: createLogger({ level: 'debug', destination: logs }),
  });
  await relay.start();
  const relayPort = relay.listenerAddress('relay').port;
  const viaRelay = (port: number) => ({ address: '127.0.0.1', port: app.port, vm_id: 'vm-b', vsock: { mode: 'host-relay', cid: 1, port, relay: { cid: 1, port: relayPort } } });
  const a = await startSidecar({
    node: { id: 'vm-a' },
    vsock: { connect_timeout: '10s' },
    listeners: [
      { kind: 'outbound', name: 'ok', port: 0, cluster: 'ok' },
      { kind: 'outbound', name: 'bad', port: 0, cluster: 'bad' },
    ],
    clusters: [
      { name: 'ok', endpoints: [viaRelay(registered)] },
      { name: 'bad', endpoints: [viaRelay(hidden)] },
    ],
  });
  t.teardown(async () => {
    await a.sidecar.stop();
    await relay.stop();
    await b.sidecar.stop();
    await app.close();
    await vmm.stop();
  });
  const r = await echoTransfer(a.sidecar.listenerAddress('ok').port, 1 * MiB);
  t.is(r.receivedSha256, r.sentSha256);
  const client = await connect(a.sidecar.listenerAddress('bad').port);
  const seen = collect(client);
  client.end('x');
  t.is((await seen).data.length, 0);
  await waitFor(async () => (await metricValue(relay, 'vsockmesh_connections_refused_total', { reason: 'destination_not_allowed' })) === 1, 'the refusal counted');
  t.regex(logs.withReason('destination_not_allowed')[0]!.msg, new RegExp(`VM manager: .*${hidden}`));
  await waitFor(() => b.logs.access().length === 1, 'one access line at vm-b');
  t.like(b.logs.access()[0], { listener: 'in-vsock', source_vm: 'vm-a' });
});
