// Sidecar A -> vsock -> sidecar B -> app, inside the guest; the TCP fallback
// and its breaker; socat as a real vsock peer both ways; CID authorization.

import test from 'ava';
import { execFile, spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { decodeProxyHeader, encodeProxyHeader, TLV, textTlv, tlvText } from '../../proxy/proxy-protocol.js';
import { collect, connect, echoTransfer, waitFor } from '../helpers/apps.js';
import { metricValue, startSidecar } from '../helpers/sidecars.js';
import { MiB, assertInGuest, freeVsockPort, sized, underKvm } from './guest-env.js';
import { startVsockMesh } from './mesh.js';

assertInGuest();
const run = promisify(execFile);
const size = sized(100 * MiB, 16 * MiB);
const sizeNote = underKvm() ? 'KVM' : 'TCG: 16 MiB instead of 100 MiB';

test.serial(`${size / MiB} MiB through sidecar A -> vsock -> sidecar B -> app arrive intact; logs and metrics say vsock (${sizeNote})`, async (t) => {
  const mesh = await startVsockMesh();
  t.teardown(() => mesh.stop());
  const result = await echoTransfer(mesh.port, size);
  t.is(result.received, size);
  t.is(result.receivedSha256, result.sentSha256);
  await waitFor(() => mesh.a.logs.access().length === 1 && mesh.b.logs.access().length === 1, 'access logs');
  t.like(mesh.a.logs.access()[0], { transport: 'vsock', upstream: `vsock:1:${mesh.vsockPort}`, transport_reason: 'same_hypervisor', bytes_to_upstream: size, outcome: 'closed' });
  const inbound = mesh.b.logs.access()[0]!;
  t.like(inbound, { listener: 'in-vsock', transport: 'vsock', source_vm: 'vm-a', authority: 'app.mesh', bytes_to_downstream: size });
  t.regex(String(inbound.peer), /^vsock:1:\d+$/, 'the peer is named by its kernel-given CID');
  t.is(await metricValue(mesh.a.sidecar, 'vsockmesh_connections_total', { transport: 'vsock' }), 1);
  t.is(await metricValue(mesh.a.sidecar, 'vsockmesh_connections_total', { transport: 'tcp' }), 0);
  t.is(await metricValue(mesh.b.sidecar, 'vsockmesh_bytes_total', { transport: 'vsock', flow: 'to_upstream' }), size);
});

test.serial(`the same endpoint goes over TCP when vsock is off (${sizeNote})`, async (t) => {
  const mesh = await startVsockMesh({ vsockEnabled: false });
  t.teardown(() => mesh.stop());
  const result = await echoTransfer(mesh.port, size);
  t.is(result.receivedSha256, result.sentSha256);
  await waitFor(() => mesh.a.logs.access().length === 1 && mesh.b.logs.access().length === 1, 'access logs');
  t.like(mesh.a.logs.access()[0], { transport: 'tcp', transport_reason: 'vsock_disabled' });
  t.like(mesh.b.logs.access()[0], { listener: 'in-tcp', transport: 'tcp' });
  t.is(await metricValue(mesh.a.sidecar, 'vsockmesh_connections_total', { transport: 'vsock' }), 0);
});

test.serial('a peer whose vsock listener is down is reached over TCP, the fallback is counted, and the breaker skips vsock', async (t) => {
  const deadPort = freeVsockPort();
  const mesh = await startVsockMesh({ endpointVsock: { cid: 1, port: deadPort } });
  t.teardown(() => mesh.stop());
  const first = await echoTransfer(mesh.port, 64 * 1024);
  t.is(first.receivedSha256, first.sentSha256);
  await waitFor(() => mesh.a.logs.access().length === 1, 'first access log');
  t.like(mesh.a.logs.access()[0], { transport: 'tcp', fallback: 'vsock->tcp', transport_reason: 'same_hypervisor' });
  t.is(await metricValue(mesh.a.sidecar, 'vsockmesh_transport_fallbacks_total', { from: 'vsock', to: 'tcp', code: 'ECONNREFUSED' }), 1);
  t.is(mesh.a.logs.withReason('vsock_fallback').length, 1);

  const second = await echoTransfer(mesh.port, 1024);
  t.is(second.receivedSha256, second.sentSha256);
  await waitFor(() => mesh.a.logs.access().length === 2, 'second access log');
  t.like(mesh.a.logs.access()[1], { transport: 'tcp', transport_reason: 'vsock_unhealthy' });
  t.is(mesh.a.logs.access()[1]!.fallback, undefined, 'no second vsock attempt while the breaker is open');
  t.is(await metricValue(mesh.a.sidecar, 'vsockmesh_transport_fallbacks_total'), 1);
});

test.serial('the breaker closes after its window and vsock is tried again', async (t) => {
  const deadPort = freeVsockPort();
  const mesh = await startVsockMesh({ endpointVsock: { cid: 1, port: deadPort }, breakerWindow: '200ms' });
  t.teardown(() => mesh.stop());
  await echoTransfer(mesh.port, 10);
  await new Promise((r) => setTimeout(r, 300));
  await echoTransfer(mesh.port, 10);
  await waitFor(() => mesh.a.logs.access().length === 2, 'access logs');
  t.is(await metricValue(mesh.a.sidecar, 'vsockmesh_transport_fallbacks_total'), 2);
});

test.serial('socat VSOCK-CONNECT with a PROXY v2 header reaches the app through our vsock inbound', async (t) => {
  const mesh = await startVsockMesh();
  t.teardown(() => mesh.stop());
  const header = encodeProxyHeader({
    command: 'proxy',
    addresses: { family: 'inet', transport: 'stream', source: { address: '10.9.8.7', port: 4321 }, destination: { address: '10.0.0.2', port: mesh.app.port } },
    tlvs: [textTlv(TLV.VSOCKMESH_SOURCE_VM, 'socat-vm')],
  });
  const socat = spawn('socat', ['-t', '5', '-', `VSOCK-CONNECT:1:${mesh.vsockPort}`], { stdio: ['pipe', 'pipe', 'pipe'] });
  const out: Buffer[] = [];
  socat.stdout.on('data', (c: Buffer) => out.push(c));
  let stderr = '';
  socat.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
  socat.stdin.end(Buffer.concat([header, Buffer.from('hello from socat')]));
  const code = await new Promise<number | null>((r) => socat.on('close', r));
  t.is(code, 0, stderr);
  t.is(Buffer.concat(out).toString(), 'hello from socat');
  await waitFor(() => mesh.b.logs.access().length === 1, 'access log');
  t.like(mesh.b.logs.access()[0], { listener: 'in-vsock', src: '10.9.8.7:4321', source_vm: 'socat-vm', transport: 'vsock' });
});

test.serial('our outbound into socat VSOCK-LISTEN sends a PROXY v2 header, then the bytes', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'vsockmesh-socat-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const file = join(dir, 'received');
  const port = freeVsockPort();
  const socat = spawn('socat', ['-u', `VSOCK-LISTEN:${port}`, `OPEN:${file},creat,trunc`], { stdio: 'ignore' });
  t.teardown(() => socat.kill());
  const a = await startSidecar({
    node: { id: 'vm-a' },
    listeners: [{ kind: 'outbound', name: 'out', port: 0, cluster: 'socat' }],
    clusters: [{ name: 'socat', endpoints: [{ address: '10.0.0.9', port: 9000, vm_id: 'socat-vm', vsock: { cid: 1, port } }] }],
  });
  t.teardown(() => a.sidecar.stop());
  const out = a.sidecar.listenerAddress('out').port;
  // socat may need a moment to listen (slow under TCG): retry on refusal.
  await waitFor(
    async () => {
      const client = await connect(out);
      const seen = collect(client);
      client.end('payload for socat');
      await seen;
      return a.logs.access().some((l) => l.outcome === 'closed' && l.bytes_to_upstream === 17);
    },
    'a relayed connection to socat',
    30_000,
  );
  await new Promise<void>((r) => (socat.exitCode !== null ? r() : socat.once('exit', () => r())));
  const bytes = readFileSync(file);
  const decoded = decodeProxyHeader(bytes);
  if (decoded.kind !== 'header') throw new Error(`socat received no PROXY v2 header: ${JSON.stringify(decoded)}`);
  t.like(decoded.header.addresses, { family: 'inet', destination: { address: '10.0.0.9', port: 9000 } });
  t.is(tlvText(decoded.header, TLV.VSOCKMESH_DESTINATION_VM), 'socat-vm');
  t.is(bytes.subarray(decoded.length).toString(), 'payload for socat');
});

test.serial('a vsock peer whose kernel-given CID is not allowed is refused before a byte is read', async (t) => {
  const mesh = await startVsockMesh({ allowedPeerCids: [3], tcpFallback: false });
  t.teardown(() => mesh.stop());
  const client = await connect(mesh.port);
  const seen = collect(client);
  client.write('should not arrive');
  const { data } = await seen;
  t.is(data.length, 0);
  await waitFor(async () => (await metricValue(mesh.b.sidecar, 'vsockmesh_connections_refused_total', { reason: 'peer_cid_not_allowed' })) === 1, 'refusal counted');
  t.like(mesh.b.logs.withReason('peer_cid_not_allowed')[0], { level: 'warn', peer_cid: 1 });
  t.is(mesh.app.accepted, 0);
});

test.serial('socat is on the PATH with VSOCK support (the interop tests above depend on it)', async (t) => {
  const { stdout } = await run('socat', ['-V']);
  t.regex(stdout, /#define WITH_VSOCK 1/);
});
