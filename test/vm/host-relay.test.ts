// Sidecar A -> host relay -> sidecar B -> app over real vsock inside the guest.
// Under vsock_loopback the relay, like every sidecar, is at CID 1, so the
// policy names source CID 1; on a hypervisor the source is the guest's CID.

import test from 'ava';
import { parseHostRelayConfig } from '../../proxy/config/load.js';
import { HostRelay } from '../../proxy/host-relay.js';
import { attestationClient } from '../../proxy/identity/attestation-client.js';
import { createCsr, generateWorkloadKeys } from '../../proxy/identity/keys-and-csr.js';
import type { VmManagerApi, VmRecord } from '../../proxy/resolve/types.js';
import { createLogger } from '../../proxy/runtime/log.js';
import { native } from '../../proxy/native/index.js';
import { connectVsock } from '../../proxy/native/vsock.js';
import { encodeRelayHeader } from '../../proxy/relay-header.js';
import { collect, connect, echoTransfer, waitFor } from '../helpers/apps.js';
import { LogCapture, metricValue } from '../helpers/sidecars.js';
import { MiB, assertInGuest, freeVsockPort, sized, underKvm } from './guest-env.js';
import { startClientSide, startRelay, startServerSide } from './mesh.js';

assertInGuest();
const size = sized(100 * MiB, 16 * MiB);

/** App and sidecar B, a relay whose policy is made from B's vsock port, and sidecar A reaching B only through the relay. The vsock connect deadline is generous: under TCG on a loaded machine a relayed connect can take over a second. */
async function relayedMesh(t: import('ava').ExecutionContext, policyFor: (bVsockPort: number) => unknown[], vsockConnectTimeout = '10s') {
  const server = await startServerSide();
  const relay = await startRelay(policyFor(server.vsockPort));
  const a = await startClientSide(server, {
    tcpFallback: false,
    vsockConnectTimeout,
    endpointVsock: { mode: 'host-relay', cid: 1, port: server.vsockPort, relay: { cid: 1, port: relay.port } },
  });
  t.teardown(async () => {
    await a.sidecar.stop();
    await relay.relay.stop();
    await server.b.sidecar.stop();
    await server.app.close();
  });
  return { relay, mesh: { a, b: server.b, app: server.app, port: a.sidecar.listenerAddress('out').port, vsockPort: server.vsockPort } };
}

test.serial(`${size / MiB} MiB through sidecar A -> host relay -> sidecar B -> app arrive intact (${underKvm() ? 'KVM' : 'TCG: 16 MiB instead of 100 MiB'})`, async (t) => {
  const { relay, mesh } = await relayedMesh(t, (bPort) => [{ source_cid: 1, destinations: [{ cid: 1, ports: [bPort] }] }]);
  const result = await echoTransfer(mesh.port, size);
  t.is(result.received, size);
  t.is(result.receivedSha256, result.sentSha256);
  await waitFor(() => relay.logs.access().length === 1 && mesh.b.logs.access().length === 1, 'access logs');
  const relayed = relay.logs.access()[0]!;
  t.like(relayed, { direction: 'relay', source_cid: 1, dst: `vsock:1:${mesh.vsockPort}`, bytes_to_downstream: size, outcome: 'closed' });
  const headerBytes = Number(relayed.bytes_to_upstream) - size;
  t.true(headerBytes >= 28 && headerBytes < 256, `the relay carried A's PROXY v2 header (${headerBytes} bytes) ahead of the payload`);
  t.like(mesh.a.logs.access()[0], { transport: 'vsock', upstream: `vsock:1:${relay.port}>1:${mesh.vsockPort}` });
  t.like(mesh.b.logs.access()[0], { listener: 'in-vsock', source_vm: 'vm-a' });
});

test.serial('a source CID outside the policy is refused and counted; nothing reaches the destination', async (t) => {
  const { relay, mesh } = await relayedMesh(t, (bPort) => [{ source_cid: 3, destinations: [{ cid: 1, ports: [bPort] }] }]);
  const client = await connect(mesh.port);
  const seen = collect(client);
  client.end('x');
  t.is((await seen).data.length, 0);
  await waitFor(async () => (await metricValue(relay.relay, 'vsockmesh_connections_refused_total', { reason: 'source_not_allowed' })) === 1, 'refusal counted');
  t.is(relay.logs.withReason('source_not_allowed').length, 1);
  t.is(mesh.b.logs.access().length, 0);
});

test.serial('a destination the policy does not permit is refused and counted', async (t) => {
  const { relay, mesh } = await relayedMesh(t, (bPort) => [{ source_cid: 1, destinations: [{ cid: 1, ports: [bPort + 1] }] }]);
  const client = await connect(mesh.port);
  const seen = collect(client);
  client.end('x');
  t.is((await seen).data.length, 0);
  await waitFor(async () => (await metricValue(relay.relay, 'vsockmesh_connections_refused_total', { reason: 'destination_not_allowed' })) === 1, 'refusal counted');
  t.is(mesh.b.logs.access().length, 0);
});

test.serial('a malformed relay header is refused and counted', async (t) => {
  const relay = await startRelay([{ source_cid: 1, destinations: [{ cid: 1 }] }]);
  t.teardown(() => relay.relay.stop());
  const socket = connectVsock({ cid: 1, port: relay.port });
  const closed = new Promise((r) => socket.once('close', r));
  socket.on('error', () => {});
  socket.resume();
  socket.end(Buffer.from('GET / HTTP/1.1\r\n\r\n'));
  await closed;
  await waitFor(async () => (await metricValue(relay.relay, 'vsockmesh_header_errors_total', { reason: 'bad_magic' })) === 1, 'header error counted');
  t.is(relay.logs.withReason('bad_magic').length, 1);
});

test.serial('a destination that is down gives the source a clean close and leaks nothing', async (t) => {
  const dead = freeVsockPort();
  const relay = await startRelay([{ source_cid: 1, destinations: [{ cid: 1, ports: [dead] }] }]);
  t.teardown(() => relay.relay.stop());
  const openBefore = native.openCount();
  const socket = connectVsock({ cid: 1, port: relay.port });
  socket.on('error', () => {});
  const chunks: Buffer[] = [];
  socket.on('data', (c: Buffer) => chunks.push(c));
  const closed = new Promise((r) => socket.once('close', r));
  socket.write(encodeRelayHeader({ cid: 1, port: dead }));
  socket.end('for nobody');
  await closed;
  t.is(Buffer.concat(chunks).length, 0);
  await waitFor(async () => (await metricValue(relay.relay, 'vsockmesh_upstream_connect_errors_total', { code: 'ECONNREFUSED' })) === 1, 'connect error counted');
  await waitFor(() => relay.relay.activeConnections === 0, 'the relay holds no connection');
  t.is(native.openCount(), openBefore, 'no socket left open in the core');
});

test.serial('1,000 concurrent relayed connections all complete', async (t) => {
  // 1,000 connects at once, three hops each, one process: a generous connect deadline for emulated CPUs.
  const { relay, mesh } = await relayedMesh(t, (bPort) => [{ source_cid: 1, destinations: [{ cid: 1, ports: [bPort] }] }], '60s');
  const n = 1000;
  const results = await Promise.all(
    Array.from({ length: n }, async (_, i) => {
      const client = await connect(mesh.port);
      const seen = collect(client);
      client.end(`relayed-${i}`);
      return (await seen).data.toString() === `relayed-${i}`;
    }),
  );
  if (results.filter(Boolean).length !== n) {
    t.log('a:', JSON.stringify(mesh.a.logs.lines.filter((l) => l.level !== 'info' || l.log === 'access').slice(0, 3)));
    t.log('relay:', JSON.stringify(relay.logs.lines.filter((l) => l.level !== 'info' || l.log === 'access').slice(0, 3)));
    t.log('b:', JSON.stringify(mesh.b.logs.lines.filter((l) => l.level !== 'info' || l.log === 'access').slice(0, 3)));
  }
  t.is(results.filter(Boolean).length, n);
  await waitFor(() => relay.logs.access().length === n, 'every relayed connection logged', 60_000);
  t.true(relay.logs.access().every((l) => l.outcome === 'closed'));
});

test.serial('attestation: a request from the loopback CID is refused (local_cid) even when the registry places the VM at CID 1; the CA is never asked', async (t) => {
  const logs = new LogCapture();
  // A loopback hypervisor's records: its VMs carry CID 1, which no guest can prove.
  const vmA: VmRecord = { vmId: 'vm-a', hypervisorId: 'hv-1', vsockCid: 1, addresses: ['10.0.0.1'], sidecar: null, services: [], labels: {}, generation: 1, leaseExpiresAt: null };
  const vmManager = { listVms: async () => ({ vms: [vmA], hypervisors: [], revision: 1 }), close: () => {} } as unknown as VmManagerApi;
  let forwarded = 0;
  const config = parseHostRelayConfig({
    node: { id: 'hv-1' },
    admin: { port: 0 },
    listen: { port: 0 },
    vm_manager: { address: '127.0.0.1:1', hypervisor_id: 'hv-1' },
    tls: { cert: '/nonexistent/cert.pem', key: '/nonexistent/key.pem', ca: '/nonexistent/ca.pem' },
    attestation: { port: freeVsockPort(), control_plane: '127.0.0.1:1' },
  });
  const relay = new HostRelay(config, {
    logger: createLogger({ level: 'info', destination: logs }),
    vmManager: { client: vmManager, closeOnStop: false },
    attestation: { forward: () => Promise.reject(new Error(`forwarded ${++forwarded}`)), close: () => {} },
  });
  await relay.start();
  t.teardown(() => relay.stop());
  const port = relay.listenerAddress('attestation').port;
  const ask = attestationClient({ vmId: 'vm-a', port, connect: () => connectVsock({ cid: 1, port }) });
  const err = await t.throwsAsync(ask(await createCsr(generateWorkloadKeys(), 'spiffe://vsockmesh.local/vm/vm-a')));
  t.is((err as { code?: string }).code, 'PERMISSION_DENIED');
  t.regex(err!.message, /CID 1 is no guest's.*\(local_cid\)$/);
  t.is(await metricValue(relay, 'vsockmesh_attestations_total', { result: 'refused', reason: 'local_cid' }), 1);
  t.is(forwarded, 0);
  t.true(logs.withReason('local_cid').some((l) => l.source_cid === 1));
});
