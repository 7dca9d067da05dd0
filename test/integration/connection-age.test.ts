// peer_tls.max_connection_age between two sidecars over mTLS: a connection
// past its age is cut with a reset at both ends (counted, with the reason in
// the access log), quiet ones at once and busy ones when the grace is over,
// and a new connection (a new handshake) works.

import test from 'ava';
import type net from 'node:net';
import { collect, connect, echoTransfer, randomPayload, sha256, waitFor } from '../helpers/apps.js';
import { meshTls, serialHex, writeIdentity, type MeshTls } from '../helpers/peer-tls.js';
import { makeRoot, vmIdentity } from '../helpers/pki.js';
import { metricValue, startMesh, type Mesh } from '../helpers/sidecars.js';

/** a -> b over mTLS; only the side named carries `age` (its peer_tls extra), so the cut is that side's. */
async function agedMesh(t: import('ava').ExecutionContext, side: 'a' | 'b', age: Record<string, unknown>): Promise<Mesh & { pki: MeshTls }> {
  const pki = await meshTls('strict', { reload_interval: '100ms' });
  const mesh = await startMesh({ peerTls: { a: side === 'a' ? { ...pki.a, ...age } : pki.a, b: side === 'b' ? { ...pki.b, ...age } : pki.b } });
  t.teardown(async () => {
    await mesh.stop();
    await pki.cleanup();
  });
  return { ...mesh, pki };
}

async function cutCounted(mesh: Mesh, side: 'a' | 'b', direction: 'outbound' | 'inbound'): Promise<number> {
  return metricValue(mesh[side].sidecar, 'vsockmesh_connections_closed_total', { direction, reason: 'max_connection_age' });
}

test('a quiet connection past max_connection_age is cut with a reset at both ends and counted; a new connection works', async (t) => {
  // A grace far longer than the test's deadlines: only the quiet rule can cut this connection in time.
  const mesh = await agedMesh(t, 'a', { max_connection_age: '1s', max_connection_age_grace: '10m' });
  const client = await connect(mesh.port);
  const seen = collect(client);
  client.write('ping');
  const first = await new Promise<Buffer>((resolve) => client.once('data', resolve));
  t.is(first.toString(), 'ping');

  const { errorCode, ended } = await seen;
  t.is(errorCode, 'ECONNRESET', 'the client learns its stream was cut, not ended');
  t.false(ended);
  t.is(await cutCounted(mesh, 'a', 'outbound'), 1);
  await waitFor(() => mesh.a.logs.access().length === 1 && mesh.b.logs.access().length === 1, 'both access lines', 30_000);
  t.like(mesh.a.logs.access()[0], { outcome: 'max_connection_age', tls_version: 'TLSv1.3', bytes_to_upstream: 4, bytes_to_downstream: 4 });
  t.like(mesh.b.logs.access()[0], { outcome: 'downstream_error', error_code: 'ECONNRESET' }, 'the far sidecar saw a reset and carried it to the app');

  const fresh = await echoTransfer(mesh.port, 64 * 1024);
  t.is(fresh.receivedSha256, fresh.sentSha256);
  await waitFor(() => mesh.a.logs.access().length === 2, 'the new connection\'s access line', 30_000);
  t.like(mesh.a.logs.access()[1], { outcome: 'closed', tls_version: 'TLSv1.3' });
  t.is(await cutCounted(mesh, 'a', 'outbound'), 1, 'the new connection was not cut');
});

/** Writes `chunk`-sized random pieces every `everyMs` until the socket closes; what it wrote. */
function keepWriting(socket: net.Socket, chunk: number, everyMs: number): Buffer[] {
  const sent: Buffer[] = [];
  const timer = setInterval(() => {
    if (socket.destroyed || !socket.writable) return;
    const piece = randomPayload(chunk);
    sent.push(piece);
    socket.write(piece);
  }, everyMs);
  socket.on('close', () => clearInterval(timer));
  return sent;
}

test('a busy connection past max_connection_age is cut when its grace is over (inbound side); what arrived before the cut is intact', async (t) => {
  const mesh = await agedMesh(t, 'b', { max_connection_age: '1s', max_connection_age_grace: '2s' });
  const client = await connect(mesh.port);
  const seen = collect(client);
  const sent = keepWriting(client, 1024, 20);

  const { errorCode, data } = await seen;
  t.is(errorCode, 'ECONNRESET');
  t.true(data.length > 0, 'bytes were echoed before the cut');
  t.is(sha256(data), sha256(Buffer.concat(sent).subarray(0, data.length)), 'the echoed bytes are a prefix of what was sent');
  t.is(await cutCounted(mesh, 'b', 'inbound'), 1);
  t.is(await cutCounted(mesh, 'a', 'outbound'), 0);
  await waitFor(() => mesh.b.logs.access().length === 1, 'b\'s access line', 30_000);
  t.like(mesh.b.logs.access()[0], { outcome: 'max_connection_age', peer_identity: 'spiffe://vsockmesh.local/vm/vm-a' });
  await waitFor(() => mesh.a.logs.access().length === 1, 'a\'s access line', 30_000);
  t.like(mesh.a.logs.access()[0], { outcome: 'upstream_error', error_code: 'ECONNRESET' });
});

test('what the age is for: a connection made before a rotation is cut, and the client\'s next connection handshakes with the new certificate', async (t) => {
  const mesh = await agedMesh(t, 'a', { max_connection_age: '1s', max_connection_age_grace: '10m' });
  const client = await connect(mesh.port);
  const seen = collect(client);
  // Busy (never quiet for a second) until b has its new identity, so the cut can only come after the rotation.
  const writer = setInterval(() => client.write(randomPayload(256)), 50);
  t.teardown(() => clearInterval(writer));
  const newRoot = await makeRoot('O=test, CN=new root');
  const rotatedB = await vmIdentity(newRoot, 'vm-b', { trusts: [mesh.pki.root, newRoot] });
  await writeIdentity(mesh.pki.dir, 'vm-a', { ...mesh.pki.identities.a, bundlePem: rotatedB.bundlePem });
  await writeIdentity(mesh.pki.dir, 'vm-b', rotatedB);
  await waitFor(() => [mesh.a, mesh.b].every((s) => s.logs.lines.some((l) => l.msg === 'peer TLS identity loaded' && l.replaced === true)), 'both identities reloaded', 30_000);
  t.is(mesh.a.logs.access().length, 0, 'the old connection was still open at the rotation');
  clearInterval(writer);

  t.is((await seen).errorCode, 'ECONNRESET');
  t.is(await cutCounted(mesh, 'a', 'outbound'), 1);
  const fresh = await echoTransfer(mesh.port, 1024);
  t.is(fresh.receivedSha256, fresh.sentSha256);
  await waitFor(() => mesh.a.logs.access().length === 2, 'both access lines', 30_000);
  const [old, next] = mesh.a.logs.access();
  t.like(old, { outcome: 'max_connection_age' });
  t.is(serialHex(String(old!.peer_serial)), serialHex(mesh.pki.identities.b.leaf.cert.serialNumber), 'the old connection had b\'s old certificate');
  t.like(next, { outcome: 'closed', tls_resumed: false });
  t.is(serialHex(String(next!.peer_serial)), serialHex(rotatedB.leaf.cert.serialNumber), 'the next one met b\'s new certificate');
});
