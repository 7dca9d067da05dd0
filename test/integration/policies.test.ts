// Authorization policies end to end: the mesh's policies pushed by a real
// control plane to a real sidecar (vm-c, serving "db") in Envoy's RBAC shape,
// enforced on the TCP hop under real mutual TLS (peer_tls strict, identities
// from a throw-away CA) against real client sidecars vm-a and vm-b: ALLOW,
// DENY over ALLOW, shadow, a change that closes an open connection no longer
// allowed, PERMISSIVE's unauthenticated peers, and ctl policies.

import test, { type ExecutionContext } from 'ava';
import type net from 'node:net';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { TLV, encodeProxyHeader, textTlv } from '../../proxy/proxy-protocol.js';
import { createLogger } from '../../proxy/runtime/log.js';
import { ControlPlane } from '../../xds/control-plane/control-plane.js';
import { MeshConfigApiClient } from '../../xds/control-plane/config-api.js';
import { MeshStore, type RawEntry } from '../../xds/control-plane/mesh-store.js';
import { Registry } from '../../xds/vm-manager/registry.js';
import { collect, connect, echoTransfer, startEchoServer, waitFor, type TestServer } from '../helpers/apps.js';
import { runCli } from '../helpers/cli.js';
import { freePort } from '../helpers/haproxy.js';
import { writeIdentity } from '../helpers/peer-tls.js';
import { makeRoot, vmIdentity } from '../helpers/pki.js';
import { metricValue, startSidecar, type TestSidecar } from '../helpers/sidecars.js';
import { vm } from '../helpers/vm-manager.js';
import { nodeResources } from '../helpers/xds-resources.js';
import { toSnapshot } from '../../xds/control-plane/translate.js';
import { TYPE_URLS, packAny } from '../../xds/envoy/proto.js';

const TD = 'spiffe://vsockmesh.local';
const SLOW = 30_000;

interface World {
  app: TestServer;
  plane: ControlPlane;
  registry: Registry;
  mesh: MeshStore;
  api: MeshConfigApiClient;
  address: string;
  /** The sidecar under test: vm-c, serving db, everything from xDS. */
  c: TestSidecar;
  /** Client sidecars with outbound "out" to db on vm-c. */
  a: TestSidecar;
  b: TestSidecar;
  listener: string;
}

async function world(t: ExecutionContext, policies: RawEntry[], mode: 'strict' | 'permissive' = 'strict'): Promise<World> {
  const dir = await mkdtemp(join(tmpdir(), 'vsockmesh-policies-'));
  const root = await makeRoot();
  const files = async (id: string) => ({ mode, ...(await writeIdentity(dir, id, await vmIdentity(root, id))) });
  const app = await startEchoServer();
  const cPort = await freePort();
  const registry = new Registry();
  registry.registerHypervisor({ hypervisorId: 'hv-1', vsockMode: 'host-relay', relayPort: 15100 });
  registry.registerVm(vm({ vmId: 'vm-c', hypervisorId: 'hv-1', vsockCid: 5, addresses: ['127.0.0.1'], sidecar: { tcpPort: cPort, vsockPort: 0 }, services: [{ name: 'db', port: app.port }] }));
  // Under the control plane the pushed peer modes decide (the file's mode is the file's listeners').
  const mesh = MeshStore.fromConfig({ services: [{ name: 'db', port: app.port }], policies, peer_authentication: [{ name: 'mesh', mode: mode.toUpperCase() }] });
  const plane = new ControlPlane({ mesh, logger: createLogger({ level: 'silent' }), vms: { registry }, transport: { insecure: true }, debounce: { quietMs: 10, maxMs: 100 } });
  const address = `127.0.0.1:${await plane.start('127.0.0.1:0')}`;
  const api = new MeshConfigApiClient(address, { insecure: true });
  const c = await startSidecar({ node: { id: 'vm-c' }, vsock: { enabled: false }, peer_tls: await files('vm-c'), xds: { address }, insecure: true });
  const client = async (id: string) =>
    startSidecar({
      node: { id },
      vsock: { enabled: false },
      peer_tls: await files(id),
      listeners: [{ kind: 'outbound', name: 'out', port: 0, cluster: 'db' }],
      clusters: [{ name: 'db', endpoints: [{ address: '127.0.0.1', port: app.port, vm_id: 'vm-c', peer: { address: '127.0.0.1', port: cPort } }] }],
    });
  const a = await client('vm-a');
  const b = await client('vm-b');
  t.teardown(async () => {
    await a.sidecar.stop();
    await b.sidecar.stop();
    await c.sidecar.stop();
    api.close();
    await plane.stop();
    await app.close();
    await rm(dir, { recursive: true, force: true });
  });
  const w = { app, plane, registry, mesh, api, address, c, a, b, listener: 'inbound|vm-c' };
  await waitFor(() => c.sidecar.listenerAddresses(w.listener).length > 0, 'vm-c\'s inbound listener from the control plane', SLOW);
  await waitFor(() => c.sidecar.authorization.current.size === (policies.length > 0 ? 1 : 0), 'vm-c\'s policies', SLOW);
  return w;
}

const policy = (name: string, action: 'ALLOW' | 'DENY', principals: string[], extra: Record<string, unknown> = {}): RawEntry => ({ name, service: 'db', action, principals, ...extra });
const outPort = (s: TestSidecar): number => s.sidecar.listenerAddress('out').port;

/** Sends through `client`'s outbound and reports what came back: an echo when let through, nothing when refused. */
async function reach(client: TestSidecar, text = 'ping'): Promise<string> {
  const socket = await connect(outPort(client));
  const seen = collect(socket);
  socket.end(text);
  return (await seen).data.toString();
}

const rbac = (w: World, name: string, labels: Record<string, string> = {}) => metricValue(w.c.sidecar, name, { listener: w.listener, ...labels });

test('an ALLOW for vm-a lets vm-a in and denies vm-b (default deny), with the principal in the log and the counters', async (t) => {
  const w = await world(t, [policy('db-from-a', 'ALLOW', [`${TD}/vm/vm-a`])]);
  const r = await echoTransfer(outPort(w.a), 64 * 1024);
  t.is(r.receivedSha256, r.sentSha256);
  t.is(await reach(w.b), '', 'vm-b gets nothing back');
  await waitFor(async () => (await rbac(w, 'vsockmesh_rbac_denied_total', { policy: 'default_deny' })) === 1, 'the denial counted');
  t.is(await rbac(w, 'vsockmesh_rbac_allowed_total'), 1);
  t.is(await rbac(w, 'vsockmesh_connections_refused_total', { reason: 'policy_denied' }), 1);
  t.like(w.c.logs.withReason('policy_denied')[0], { level: 'warn', listener: w.listener, principal: `${TD}/vm/vm-b`, policy: 'default_deny', source_vm: 'vm-b' });
  await waitFor(() => w.c.logs.access().length === 1, 'vm-a\'s access line');
  t.like(w.c.logs.access()[0], { principal: `${TD}/vm/vm-a`, peer_identity: `${TD}/vm/vm-a`, outcome: 'closed' });
  t.is(w.app.accepted, 1, 'only vm-a reached the app');
});

test('a DENY wins over an ALLOW that also names the peer', async (t) => {
  const w = await world(t, [policy('all-vms', 'ALLOW', [`${TD}/vm/vm-*`]), policy('no-b', 'DENY', [`${TD}/vm/vm-b`])]);
  t.is(await reach(w.a, 'from a'), 'from a');
  t.is(await reach(w.b), '');
  await waitFor(async () => (await rbac(w, 'vsockmesh_rbac_denied_total', { policy: 'no-b' })) === 1, 'denied by no-b');
  t.is(await rbac(w, 'vsockmesh_rbac_denied_total', { policy: 'default_deny' }), 0);
  t.like(w.c.logs.withReason('policy_denied')[0], { principal: `${TD}/vm/vm-b`, policy: 'no-b' });
});

test('a shadow policy logs and counts what it would deny but lets it through', async (t) => {
  const w = await world(t, [policy('dry-only-a', 'ALLOW', [`${TD}/vm/vm-a`], { shadow: true })]);
  t.is(await reach(w.b, 'from b'), 'from b', 'vm-b is let through');
  t.is(await reach(w.a, 'from a'), 'from a');
  t.is(await rbac(w, 'vsockmesh_rbac_shadow_denied_total', { policy: 'default_deny' }), 1, 'only vm-b would have been denied');
  t.is(await rbac(w, 'vsockmesh_rbac_denied_total'), 0);
  t.like(w.c.logs.withReason('policy_shadow_denied')[0], { principal: `${TD}/vm/vm-b`, policy: 'default_deny' });
});

/** An open connection through `client` that has carried bytes both ways. */
async function openConnection(client: TestSidecar): Promise<{ socket: net.Socket; closed: Promise<{ data: Buffer; ended: boolean; errorCode?: string }> }> {
  const socket = await connect(outPort(client));
  const closed = collect(socket);
  const echoed = new Promise<void>((resolve) => socket.once('data', () => resolve()));
  socket.write('hello');
  await echoed;
  return { socket, closed };
}

test('a policy change closes an open connection that is no longer allowed; another stays open', async (t) => {
  const w = await world(t, []);
  const fromA = await openConnection(w.a);
  const fromB = await openConnection(w.b);
  await waitFor(() => w.app.accepted === 2, 'both connections at the app');
  await w.api.putPolicy({ name: 'no-b', service: 'db', action: 'DENY', principals: [`${TD}/vm/vm-b`], ports: [], shadow: false });
  const b = await fromB.closed;
  t.true(b.ended || b.errorCode !== undefined, 'vm-b\'s connection was closed');
  await waitFor(async () => (await rbac(w, 'vsockmesh_rbac_revoked_total', { policy: 'no-b' })) === 1, 'the revocation counted');
  t.like(w.c.logs.withReason('policy_revoked')[0], { principal: `${TD}/vm/vm-b`, policy: 'no-b' });
  const more = new Promise<string>((resolve) => fromA.socket.once('data', (d: Buffer) => resolve(d.toString())));
  fromA.socket.write('still here');
  t.is(await more, 'still here', 'vm-a\'s connection carries on');
  fromA.socket.end();
  await fromA.closed;
  t.is(await reach(w.b), '', 'and a new one from vm-b is refused');
});

test('PERMISSIVE: a plain-text peer is unauthenticated, an ALLOW naming a mesh identity does not admit it, one naming unauthenticated does', async (t) => {
  const w = await world(t, [policy('db-from-a', 'ALLOW', [`${TD}/vm/vm-a`])], 'permissive');
  const port = w.c.sidecar.listenerAddress(w.listener).port;
  const plain = async (): Promise<string> => {
    const socket = await connect(port);
    const seen = collect(socket);
    const header = encodeProxyHeader({
      command: 'proxy',
      addresses: { family: 'inet', transport: 'stream', source: { address: '10.0.0.1', port: 40000 }, destination: { address: '127.0.0.1', port: w.app.port } },
      tlvs: [textTlv(TLV.VSOCKMESH_SOURCE_VM, 'vm-a')],
    });
    socket.end(Buffer.concat([header, Buffer.from('plain')]));
    return (await seen).data.toString();
  };
  t.is(await plain(), '', 'claiming vm-a in the header proves nothing');
  await waitFor(async () => (await rbac(w, 'vsockmesh_rbac_denied_total', { policy: 'default_deny' })) === 1, 'denied');
  t.like(w.c.logs.withReason('policy_denied')[0], { principal: 'unauthenticated', peer_identity: 'unauthenticated', source_vm: 'vm-a' });
  await w.api.putPolicy({ name: 'plain-ok', service: 'db', action: 'ALLOW', principals: ['unauthenticated'], ports: [], shadow: false });
  await waitFor(() => [...(w.c.sidecar.authorization.current.get(w.app.port) ?? [])].some((f) => f.rules?.policies.some((p) => p.name === 'plain-ok')), 'the new policy at vm-c', SLOW);
  t.is(await plain(), 'plain');
});

test('ctl policies put, list, delete; a bad policy is refused naming the field and changes nothing', async (t) => {
  const w = await world(t, []);
  const ctl = (...a: string[]) => runCli(['ctl', '--insecure', '--control-plane', w.address, ...a]);
  const put = await ctl('policies', 'put', 'db-from-web', '--service', 'db', '--action', 'ALLOW', '--principal', `${TD}/vm/web-*`, '--principal', 'unauthenticated', '--port', String(w.app.port));
  t.is(put.code, 0, put.stderr);
  const listed = JSON.parse((await ctl('-o', 'json', 'policies', 'list')).stdout) as Array<{ mod_revision: string }>;
  t.like(listed[0], { name: 'db-from-web', service: 'db', action: 'ALLOW', principals: [`${TD}/vm/web-*`, 'unauthenticated'], ports: [w.app.port], shadow: false });
  const revision = Number(listed[0]!.mod_revision);
  t.true(revision > 0);
  t.is((await ctl('policies', 'list')).stdout, `db-from-web\tALLOW\tservice=db\tports=${w.app.port}\t${TD}/vm/web-*,unauthenticated\trevision=${revision}\n`);
  // Compare-and-swap, as for services: a change from a stale read is ABORTED and changes nothing.
  const stale = await ctl('policies', 'put', 'db-from-web', '--service', 'db', '--action', 'DENY', '--principal', '*', '--expect-revision', String(revision + 1));
  t.is(stale.code, 1);
  t.regex(stale.stderr, /ABORTED: not applied: policy "db-from-web" was changed by someone else/);
  t.is((await w.api.listPolicies())[0]!.action, 'ALLOW');
  await waitFor(() => w.c.sidecar.authorization.current.has(w.app.port), 'the policy at vm-c', SLOW);
  t.is(await reach(w.a), '', 'vm-a is not web-*');

  const bad = await ctl('policies', 'put', 'oops', '--service', 'db', '--action', 'allow', '--principal', 'web-1');
  t.is(bad.code, 1);
  t.regex(bad.stderr, /^vsockmesh ctl: INVALID_ARGUMENT: .*policies\[1\]\.action: must be "ALLOW" or "DENY" \(got "allow"\).*policies\[1\]\.principals\[0\]: "web-1": must be a SPIFFE ID/);
  const unknown = await ctl('policies', 'put', 'oops', '--service', 'nope', '--action', 'DENY', '--principal', '*');
  t.regex(unknown.stderr, /policies\[1\]\.service: unknown service "nope"/);
  t.is((await w.api.listPolicies()).length, 1, 'nothing changed');

  t.is((await ctl('policies', 'delete', 'db-from-web')).code, 0);
  t.is((await ctl('policies', 'list')).stdout, 'no policies\n');
  t.regex((await ctl('policies', 'delete', 'db-from-web')).stderr, /NOT_FOUND/);
  await waitFor(() => w.c.sidecar.authorization.current.size === 0, 'no policy left at vm-c', SLOW);
  t.is(await reach(w.a, 'again'), 'again');
});

test('RBAC the sidecar cannot enforce is NACKed naming the field, and the policies in service stay enforced', async (t) => {
  const w = await world(t, [policy('db-from-a', 'ALLOW', [`${TD}/vm/vm-a`])]);
  const resources = nodeResources(w.mesh.config, w.registry.list(), 'vm-c');
  const inbound = resources.listeners.find((l) => l.name === w.listener)!;
  const chain = inbound.filter_chains![0]!;
  // Envoy could enforce a source-IP principal; this sidecar cannot (it authorizes by identity only).
  const bySourceIp = { permissions: [{ any: true }], principals: [{ source_ip: { address_prefix: '127.0.0.0', prefix_len: { value: 8 } } }] };
  chain.filters = [{ name: 'envoy.filters.network.rbac', typed_config: packAny(TYPE_URLS.NetworkRbac, { stat_prefix: 'x', rules: { action: 'ALLOW', policies: { 'any-local': bySourceIp } } }) }, ...chain.filters!];
  w.plane.cache.setSnapshot('vm-c', toSnapshot(resources));
  const lds = () => w.plane.ads.syncStatus().find((s) => s.nodeId === 'vm-c' && s.typeUrl === TYPE_URLS.Listener);
  await waitFor(() => lds()?.lastNack != null, 'the LDS NACK', SLOW);
  t.regex(lds()!.lastNack!.error, /listener "inbound\|vm-c": filter_chains\[0\]\.filters\[0\]\.typed_config\.rules\.policies\["any-local"\]\.principals\[0\]: source_ip cannot be enforced by this sidecar/);
  t.is(await reach(w.b), '', 'vm-b is still denied by the policies in service');
  t.is(await reach(w.a, 'a'), 'a');
});
