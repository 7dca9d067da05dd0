// Peer modes pushed over xDS (peer_authentication in the mesh config): real
// sidecars with real TLS on the peer hop under our control plane. A new mesh
// is STRICT; `ctl peer-auth put` moves a service to PERMISSIVE, DISABLE and
// back without restarting anything, for new connections; a sidecar without
// an identity of its own refuses plain text under STRICT and says why.

import test from 'ava';
import tls from 'node:tls';
import { createLogger } from '../../proxy/runtime/log.js';
import { ControlPlane } from '../../xds/control-plane/control-plane.js';
import { MeshStore } from '../../xds/control-plane/mesh-store.js';
import { Registry } from '../../xds/vm-manager/registry.js';
import { TLV, encodeProxyHeader, textTlv } from '../../proxy/proxy-protocol.js';
import { collect, connect, echoTransfer, startEchoServer, waitFor, type TestServer } from '../helpers/apps.js';
import { runCli } from '../helpers/cli.js';
import { freePort } from '../helpers/haproxy.js';
import { meshTls, type MeshTls } from '../helpers/peer-tls.js';
import { LogCapture, metricValue, startSidecar, type TestSidecar } from '../helpers/sidecars.js';
import { vm } from '../helpers/vm-manager.js';
import type { PeerTlsMode } from '../../proxy/peer-tls/peer-policy.js';

const A = 'spiffe://vsockmesh.local/vm/vm-a';

interface World {
  address: string;
  a: TestSidecar;
  b: TestSidecar;
  appB: TestServer;
  inboundPort: number;
  outboundPort: number;
  pki: MeshTls;
}

function header(dstPort: number, sourceVm: string): Buffer {
  return encodeProxyHeader({
    command: 'proxy',
    addresses: { family: 'inet', transport: 'stream', source: { address: '10.0.0.1', port: 40000 }, destination: { address: '127.0.0.3', port: dstPort } },
    tlvs: [textTlv(TLV.VSOCKMESH_SOURCE_VM, sourceVm)],
  });
}

/**
 * vm-a (hv-1) and vm-b (hv-2, serves "echo") both under the control plane,
 * each with peer identity files and peer_tls mode disable in its file: every
 * mode they use is the one the control plane pushes. `identityB` false: vm-b
 * has no identity files at all.
 */
async function world(t: import('ava').ExecutionContext, mesh: Record<string, unknown> = {}, identityB = true): Promise<World> {
  const pki = await meshTls();
  // The pushed inbound listener's clusters go to 127.0.0.1:<port>.
  const appB = await startEchoServer('127.0.0.1');
  const inboundPort = await freePort();
  const outboundPort = await freePort();
  const registry = new Registry();
  registry.registerHypervisor({ hypervisorId: 'hv-1', vsockMode: 'host-relay', relayPort: 15100 });
  registry.registerHypervisor({ hypervisorId: 'hv-2', vsockMode: 'host-relay', relayPort: 15100 });
  registry.registerVm(vm({ vmId: 'vm-a', hypervisorId: 'hv-1', vsockCid: 3, addresses: ['127.0.0.2'], sidecar: { tcpPort: 0, vsockPort: 0 } }));
  registry.registerVm(vm({ vmId: 'vm-b', hypervisorId: 'hv-2', vsockCid: 3, addresses: ['127.0.0.3'], sidecar: { tcpPort: inboundPort, vsockPort: 0 }, services: [{ name: 'echo', port: appB.port }] }));
  const store = MeshStore.fromConfig({ services: [{ name: 'echo', port: appB.port, outbound_port: outboundPort }], ...mesh });
  const plane = new ControlPlane({ mesh: store, logger: createLogger({ level: 'warn', destination: new LogCapture() }), vms: { registry }, transport: { insecure: true }, debounce: { quietMs: 20, maxMs: 200 } });
  const address = `127.0.0.1:${await plane.start('127.0.0.1:0')}`;
  const files = (p: Record<string, unknown>): Record<string, unknown> => ({ ...p, mode: 'disable' });
  const a = await startSidecar({ node: { id: 'vm-a' }, vsock: { enabled: false }, xds: { address }, insecure: true, peer_tls: files(pki.a) });
  await waitFor(() => listening(a, 'outbound|echo'), "vm-a's outbound listener", 15_000);
  // One host for both VMs: vm-b's own outbound|echo finds vm-a's port taken (refused, NACKed); its inbound is what counts here.
  const b = await startSidecar({ node: { id: 'vm-b' }, vsock: { enabled: false }, xds: { address }, insecure: true, ...(identityB && { peer_tls: files(pki.b) }) });
  t.teardown(async () => {
    await a.sidecar.stop();
    await b.sidecar.stop();
    await plane.stop();
    await appB.close();
    await pki.cleanup();
  });
  const w = { address, a, b, appB, inboundPort, outboundPort, pki };
  await waitFor(() => modesOf(w) !== undefined && listening(w.a, 'outbound|echo'), 'the pushed listeners', 15_000);
  return w;
}

const listening = (s: TestSidecar, name: string): boolean => (s.sidecar.configDump() as { xds: { applied: { listeners: Array<{ name: string }> } } }).xds.applied.listeners.some((l) => l.name === name);

/** The peer modes of vm-b's pushed inbound listener, as its sidecar applied them. */
function modesOf(w: World): Record<string, PeerTlsMode> | undefined {
  const dump = w.b.sidecar.configDump() as { xds: { applied: { listeners: Array<{ name: string; peerModes?: Record<string, PeerTlsMode> }> } } };
  return dump.xds.applied.listeners.find((l) => l.name === 'inbound|vm-b')?.peerModes;
}

async function ctl(w: World, ...args: string[]): Promise<string> {
  const r = await runCli(['ctl', '--insecure', '--control-plane', w.address, 'peer-auth', ...args]);
  if (r.code !== 0) throw new Error(`ctl peer-auth ${args.join(' ')}: exit ${r.code}: ${r.stderr}`);
  return r.stdout;
}

async function setMode(w: World, mode: 'STRICT' | 'PERMISSIVE' | 'DISABLE'): Promise<void> {
  await ctl(w, 'put', 'echo', '--service', 'echo', '--mode', mode);
  await waitFor(() => modesOf(w)?.[w.appB.port] === mode.toLowerCase(), `vm-b's inbound under ${mode}`, 15_000);
  // vm-a originates TLS or not from the endpoint's pushed mode.
  await waitFor(() => (w.a.sidecar.configDump() as { xds: { applied: { clusters: Array<{ name: string; endpoints: Array<{ vm: { peerMode?: string } }> }> } } }).xds.applied.clusters.find((c) => c.name === 'echo')?.endpoints[0]?.vm.peerMode === mode.toLowerCase(), `vm-a's endpoint under ${mode}`, 15_000);
}

/** A hand-made plain-text hop to vm-b's inbound: what comes back. */
async function plainHop(w: World, payload = 'hello'): Promise<string> {
  const client = await connect(w.inboundPort, '127.0.0.3');
  const seen = collect(client);
  client.end(Buffer.concat([header(w.appB.port, 'vm-a'), Buffer.from(payload)]));
  return (await seen).data.toString();
}

const failures = (w: World, reason: string): Promise<number> => metricValue(w.b.sidecar, 'vsockmesh_peer_tls_failures_total', { direction: 'inbound', reason });

test('a new mesh is STRICT: the sidecars hop over mTLS, and a plain-text header claiming vm-a is refused (plain_text)', async (t) => {
  const w = await world(t);
  t.deepEqual(modesOf(w), { [w.appB.port]: 'strict' });
  const r = await echoTransfer(w.outboundPort, 100_000);
  t.is(r.receivedSha256, r.sentSha256);
  await waitFor(() => w.b.logs.access().length === 1, 'vm-b access line');
  t.like(w.b.logs.access()[0], { peer_identity: A, tls_version: 'TLSv1.3', source_vm: 'vm-a' });
  t.is(await plainHop(w), '');
  await waitFor(async () => (await failures(w, 'plain_text')) === 1, 'plain_text counted');
  const line = w.b.logs.withReason('plain_text');
  t.is(line.length, 1);
  t.is(w.b.logs.access().length, 1, 'the plain-text peer reached nothing');
});

test('ctl peer-auth moves a service STRICT -> PERMISSIVE -> STRICT -> DISABLE for new connections, without reopening the listener', async (t) => {
  const w = await world(t);
  const started = w.b.logs.lines.filter((l) => l.msg === 'listener started').length;

  await setMode(w, 'PERMISSIVE');
  // A plain-text peer now passes, labelled unauthenticated and counted; a TLS peer still proves who it is.
  const open = await connect(w.inboundPort, '127.0.0.3');
  const openSeen = collect(open);
  open.write(Buffer.concat([header(w.appB.port, 'vm-a'), Buffer.from('kept ')]));
  t.is(await plainHop(w), 'hello');
  t.is(await metricValue(w.b.sidecar, 'vsockmesh_peer_unauthenticated_total', { listener: 'inbound|vm-b' }), 2, 'the open connection and the hop');
  const r = await echoTransfer(w.outboundPort, 10_000);
  t.is(r.receivedSha256, r.sentSha256);
  await waitFor(() => w.b.logs.access().length === 2, 'two access lines');
  t.deepEqual(w.b.logs.access().map((l) => l.peer_identity).sort(), [A, 'unauthenticated']);

  await setMode(w, 'STRICT');
  t.is(await plainHop(w), '', 'a new plain-text connection is refused');
  await waitFor(async () => (await failures(w, 'plain_text')) === 1, 'plain_text counted');
  // The connection admitted under PERMISSIVE stays: a mode applies to new connections.
  open.end('still here');
  t.is((await openSeen).data.toString(), 'kept still here');

  await setMode(w, 'DISABLE');
  t.is(await plainHop(w, 'plain'), 'plain');
  // vm-a sees DISABLE on the endpoint and sends plain text; a TLS peer is refused.
  await waitFor(() => w.b.logs.access().length === 4, 'the access lines so far');
  const before = w.b.logs.access().length;
  const again = await echoTransfer(w.outboundPort, 10_000);
  t.is(again.receivedSha256, again.sentSha256);
  await waitFor(() => w.b.logs.access().length === before + 1, 'the access line of vm-a under DISABLE');
  t.is(w.b.logs.access().at(-1)!.peer_identity, undefined, 'under DISABLE a plain-text peer is not labelled');
  t.is(w.b.logs.access().at(-1)!.source_vm, 'vm-a');
  const accepted = w.appB.accepted;
  await new Promise<void>((resolve) => {
    const s = tls.connect({ host: '127.0.0.3', port: w.inboundPort, ca: w.pki.identities.a.bundlePem, key: w.pki.identities.a.keyPem, cert: w.pki.identities.a.chainPem, checkServerIdentity: () => undefined });
    s.on('error', () => resolve());
    s.on('close', () => resolve());
  });
  t.is(w.appB.accepted, accepted, 'a TLS peer reaches nothing under DISABLE (its ClientHello is no PROXY header)');
  t.is(await metricValue(w.b.sidecar, 'vsockmesh_peer_unauthenticated_total', { listener: 'inbound|vm-b' }), 2, 'DISABLE counts no unauthenticated peer');
  t.is(w.b.logs.lines.filter((l) => l.msg === 'listener started').length, started, 'the listener was never reopened');
  t.true(w.b.logs.lines.some((l) => l.msg === 'peer modes changed: they apply to new connections'));

  const list = await ctl(w, 'list');
  t.regex(list, /^echo\tDISABLE\tservice=echo\tport=\*\trevision=\d+$/m);
});

test('a mesh-wide entry and a port entry: the port entry wins; deleting it falls back to the mesh-wide mode', async (t) => {
  const w = await world(t, { peer_authentication: [{ name: 'mesh', mode: 'PERMISSIVE' }] });
  t.deepEqual(modesOf(w), { [w.appB.port]: 'permissive' });
  await ctl(w, 'put', 'echo-port', '--port', String(w.appB.port), '--mode', 'STRICT');
  await waitFor(() => modesOf(w)?.[w.appB.port] === 'strict', 'the port entry', 15_000);
  t.is(await plainHop(w), '');
  await ctl(w, 'delete', 'echo-port');
  await waitFor(() => modesOf(w)?.[w.appB.port] === 'permissive', 'back to the mesh-wide entry', 15_000);
  t.is(await plainHop(w), 'hello');
});

test('a bad mode is refused by ctl and the config API, naming the field, and changes nothing', async (t) => {
  const w = await world(t);
  const r = await runCli(['ctl', '--insecure', '--control-plane', w.address, 'peer-auth', 'put', 'x', '--service', 'nope', '--mode', 'STRICT']);
  t.not(r.code, 0);
  t.regex(r.stderr, /peer_authentication\[0\]\.service: unknown service "nope"/);
  t.regex(await ctl(w, 'list'), /no peer authentication: every port is STRICT/);
});

test('a sidecar without a peer identity under STRICT refuses plain text with a reason that says so, and keeps serving', async (t) => {
  const w = await world(t, {}, false);
  await waitFor(() => w.b.logs.withReason('strict_without_identity').length === 1, 'the warning when the STRICT port arrived');
  t.is(await plainHop(w), '');
  await waitFor(async () => (await failures(w, 'plain_text')) === 1, 'plain_text counted');
  const refusal = w.b.logs.withReason('plain_text')[0]!;
  t.regex(String(refusal.msg), /STRICT, and this sidecar has no peer identity \(peer_tls key_file, chain_file, bundle_file\)/);
  t.is(w.b.sidecar.state, 'serving');
  // Moved to PERMISSIVE (the migration step), the same sidecar lets plain text in.
  await setMode(w, 'PERMISSIVE');
  t.is(await plainHop(w), 'hello');
});
