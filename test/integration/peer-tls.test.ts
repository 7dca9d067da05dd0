// TLS on the TCP peer hop between sidecars (peer_tls): who is let in under
// STRICT and PERMISSIVE, every refusal with its reason in the log and the
// counters, secure naming, a source-VM claim against the certificate,
// session resumption (rotation under open connections: peer-tls-rotation.test.ts).

import test from 'ava';
import tls from 'node:tls';
import { TLV, encodeProxyHeader, textTlv } from '../../proxy/proxy-protocol.js';
import { collect, connect, echoTransfer, startEchoServer, waitFor, type TestServer } from '../helpers/apps.js';
import { meshTls, writeIdentity, type MeshTls } from '../helpers/peer-tls.js';
import { makeRoot, vmIdentity, type PemIdentity } from '../helpers/pki.js';
import { metricValue, startMesh, startSidecar, type Mesh, type TestSidecar } from '../helpers/sidecars.js';

const HOUR = 3_600_000;

function header(dstPort: number, sourceVm: string): Buffer {
  return encodeProxyHeader({
    command: 'proxy',
    addresses: { family: 'inet', transport: 'stream', source: { address: '10.0.0.1', port: 40000 }, destination: { address: '127.0.0.1', port: dstPort } },
    tlvs: [textTlv(TLV.VSOCKMESH_SOURCE_VM, sourceVm)],
  });
}

interface Gate {
  app: TestServer;
  side: TestSidecar;
  port: number;
  pki: MeshTls;
}

/** Sidecar vm-b alone: its inbound under peer_tls `mode`, in front of an echo app. */
async function startGate(t: import('ava').ExecutionContext, mode: 'strict' | 'permissive', inbound: Record<string, unknown> = {}): Promise<Gate> {
  const pki = await meshTls(mode);
  const app = await startEchoServer();
  const side = await startSidecar({
    node: { id: 'vm-b' },
    peer_tls: pki.b,
    listeners: [{ kind: 'inbound', name: 'inbound', addresses: ['127.0.0.1'], port: 0, ports: [app.port], ...inbound }],
  });
  t.teardown(async () => {
    await side.sidecar.stop();
    await app.close();
    await pki.cleanup();
  });
  return { app, side, port: side.sidecar.listenerAddress('inbound').port, pki };
}

/** A TLS client (Node's OpenSSL) presenting `id` (or no certificate), trusting `ca`; sends `bytes`, reports what came back. */
async function tlsPeer(port: number, id: PemIdentity | null, ca: string, bytes: Buffer): Promise<{ data: Buffer; error?: string }> {
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    let error: string | undefined;
    const socket = tls.connect({
      host: '127.0.0.1',
      port,
      ca,
      minVersion: 'TLSv1.3',
      ...(id && { key: id.keyPem, cert: id.chainPem }),
      checkServerIdentity: () => undefined, // the server is checked by its chain here; its URI SAN is not a host name
    });
    socket.on('secureConnect', () => socket.end(bytes));
    socket.on('data', (c: Buffer) => chunks.push(c));
    socket.on('error', (err: NodeJS.ErrnoException) => (error = err.code ?? err.message));
    socket.on('close', () => resolve({ data: Buffer.concat(chunks), ...(error !== undefined && { error }) }));
  });
}

async function refusedWith(t: import('ava').ExecutionContext, gate: Gate, reason: string): Promise<void> {
  await waitFor(async () => (await metricValue(gate.side.sidecar, 'vsockmesh_peer_tls_failures_total', { direction: 'inbound', reason })) === 1, `failure ${reason} counted`);
  t.is(gate.side.logs.withReason(reason).length, 1, `one log line with reason ${reason}`);
  t.is(gate.app.accepted, 0, 'nothing reached the app');
}

test('STRICT: a hand-made plain PROXY v2 header claiming another VM is refused (plain_text)', async (t) => {
  const gate = await startGate(t, 'strict');
  const client = await connect(gate.port);
  const seen = collect(client);
  client.end(Buffer.concat([header(gate.app.port, 'vm-a'), Buffer.from('hello')]));
  t.is((await seen).data.length, 0);
  await refusedWith(t, gate, 'plain_text');
});

test('PERMISSIVE: the same plain header is let in, labelled unauthenticated and counted', async (t) => {
  const gate = await startGate(t, 'permissive');
  const client = await connect(gate.port);
  const seen = collect(client);
  client.end(Buffer.concat([header(gate.app.port, 'vm-a'), Buffer.from('hello')]));
  t.is((await seen).data.toString(), 'hello');
  t.is(await metricValue(gate.side.sidecar, 'vsockmesh_peer_unauthenticated_total', { listener: 'inbound' }), 1);
  await waitFor(() => gate.side.logs.access().length === 1, 'the access log');
  t.like(gate.side.logs.access()[0], { peer_identity: 'unauthenticated', source_vm: 'vm-a', outcome: 'closed' });
  t.is(gate.side.logs.access()[0]!.tls_version, undefined);
});

test('PERMISSIVE still verifies a TLS peer: the mesh identity is logged, not unauthenticated', async (t) => {
  const gate = await startGate(t, 'permissive');
  const { data } = await tlsPeer(gate.port, gate.pki.identities.a, gate.pki.identities.a.bundlePem, Buffer.concat([header(gate.app.port, 'vm-a'), Buffer.from('hi')]));
  t.is(data.toString(), 'hi');
  await waitFor(() => gate.side.logs.access().length === 1, 'the access log');
  t.like(gate.side.logs.access()[0], { peer_identity: 'spiffe://vsockmesh.local/vm/vm-a', tls_version: 'TLSv1.3' });
  t.is(await metricValue(gate.side.sidecar, 'vsockmesh_peer_unauthenticated_total'), 0);
});

test('a peer certificate from another CA is refused as unknown_ca', async (t) => {
  const gate = await startGate(t, 'strict');
  const stranger = await vmIdentity(await makeRoot('O=other, CN=other root'), 'vm-a');
  await tlsPeer(gate.port, stranger, gate.pki.identities.a.bundlePem, header(gate.app.port, 'vm-a'));
  await refusedWith(t, gate, 'unknown_ca');
});

test('an expired peer certificate is refused as expired', async (t) => {
  const gate = await startGate(t, 'strict');
  const expired = await vmIdentity(gate.pki.root, 'vm-a', { notBefore: new Date(Date.now() - 2 * HOUR), notAfter: new Date(Date.now() - HOUR) });
  await tlsPeer(gate.port, expired, gate.pki.identities.a.bundlePem, header(gate.app.port, 'vm-a'));
  await refusedWith(t, gate, 'expired');
});

test('a peer without a certificate is refused as no_certificate', async (t) => {
  const gate = await startGate(t, 'strict');
  await tlsPeer(gate.port, null, gate.pki.identities.a.bundlePem, header(gate.app.port, 'vm-a'));
  await refusedWith(t, gate, 'no_certificate');
});

test('a peer not on the listener\'s allowed_peer_ids is refused before its header is read', async (t) => {
  const gate = await startGate(t, 'strict', { allowed_peer_ids: ['spiffe://vsockmesh.local/vm/vm-c'] });
  await tlsPeer(gate.port, gate.pki.identities.a, gate.pki.identities.a.bundlePem, header(gate.app.port, 'vm-a'));
  await refusedWith(t, gate, 'peer_not_allowed');
});

test('a source-VM TLV that contradicts the peer certificate is refused (source_vm_mismatch)', async (t) => {
  const gate = await startGate(t, 'strict');
  const { data } = await tlsPeer(gate.port, gate.pki.identities.a, gate.pki.identities.a.bundlePem, Buffer.concat([header(gate.app.port, 'vm-c'), Buffer.from('x')]));
  t.is(data.length, 0);
  await waitFor(async () => (await metricValue(gate.side.sidecar, 'vsockmesh_connections_refused_total', { reason: 'source_vm_mismatch' })) === 1, 'the refusal counted');
  t.like(gate.side.logs.withReason('source_vm_mismatch')[0], { peer_identity: 'spiffe://vsockmesh.local/vm/vm-a', source_vm: 'vm-c' });
  t.is(gate.app.accepted, 0);
});

/** a -> b over mTLS; b's identity may be replaced by the caller (`bIdentity`). */
async function startTlsMesh(t: import('ava').ExecutionContext, options: { bIdentity?: (pki: MeshTls) => Promise<PemIdentity>; extra?: Record<string, unknown> } = {}): Promise<{ mesh: Mesh; pki: MeshTls }> {
  const pki = await meshTls('strict', options.extra);
  const b = options.bIdentity ? { ...pki.b, ...(await writeIdentity(pki.dir, 'vm-b', await options.bIdentity(pki))) } : pki.b;
  const mesh = await startMesh({ peerTls: { a: pki.a, b } });
  t.teardown(async () => {
    await mesh.stop();
    await pki.cleanup();
  });
  return { mesh, pki };
}

test('secure naming: a peer presenting the certificate of another VM than the endpoint\'s is refused (wrong_identity)', async (t) => {
  const { mesh } = await startTlsMesh(t, { bIdentity: (pki) => vmIdentity(pki.root, 'vm-c') });
  const client = await connect(mesh.port);
  const { errorCode, data } = await collect(client);
  t.is(errorCode, 'ECONNRESET');
  t.is(data.length, 0);
  t.is(await metricValue(mesh.a.sidecar, 'vsockmesh_peer_tls_failures_total', { direction: 'outbound', reason: 'wrong_identity' }), 1);
  const [line] = mesh.a.logs.withReason('wrong_identity');
  t.regex(String(line!.detail), /expected spiffe:\/\/vsockmesh\.local\/vm\/vm-b, the peer presented spiffe:\/\/vsockmesh\.local\/vm\/vm-c/);
  t.is(mesh.app.accepted, 0);
});

test('a second connection to the same peer resumes the TLS session; both ends log and count it', async (t) => {
  const { mesh } = await startTlsMesh(t);
  await echoTransfer(mesh.port, 1024);
  await echoTransfer(mesh.port, 1024);
  await waitFor(() => mesh.a.logs.access().length === 2 && mesh.b.logs.access().length === 2, 'access logs');
  t.deepEqual(
    mesh.a.logs.access().map((l) => l.tls_resumed),
    [false, true],
  );
  t.deepEqual(
    mesh.b.logs.access().map((l) => l.tls_resumed),
    [false, true],
  );
  t.is(await metricValue(mesh.a.sidecar, 'vsockmesh_peer_tls_handshakes_total', { direction: 'outbound', resumed: 'true' }), 1);
  t.is(await metricValue(mesh.b.sidecar, 'vsockmesh_peer_tls_handshakes_total', { direction: 'inbound', resumed: 'true' }), 1);
});

test('a sidecar whose identity files are not a valid X509-SVID does not start', async (t) => {
  const pki = await meshTls('strict');
  t.teardown(() => pki.cleanup());
  const wrongDomain = { ...pki.b, trust_domain: 'other.org' };
  const err = await t.throwsAsync(startSidecar({ node: { id: 'vm-b' }, peer_tls: wrongDomain, listeners: [] }));
  t.regex(err!.message, /not a valid X509-SVID of other\.org \(wrong_trust_domain\)/);
});
