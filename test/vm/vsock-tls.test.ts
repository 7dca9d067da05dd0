// TLS over vsock (peer_tls.over_vsock), inside the guest: sidecar A -> vsock
// (mutual TLS) -> sidecar B (vsock inbound checking the certificate against
// the VM the VM manager places at the peer's CID) -> app. Under
// vsock_loopback every sidecar is at CID 1.

import test, { type ExecutionContext } from 'ava';
import type { HypervisorRecord } from '../../proxy/resolve/types.js';
import { collect, connect, echoTransfer, startEchoServer, waitFor } from '../helpers/apps.js';
import { meshTls, writeIdentity } from '../helpers/peer-tls.js';
import { vmIdentity } from '../helpers/pki.js';
import { metricValue, startSidecar, type TestSidecar } from '../helpers/sidecars.js';
import { startVmManager } from '../helpers/vm-manager.js';
import { vm } from '../helpers/vm-manager.js';
import { MiB, assertInGuest, sized, underKvm } from './guest-env.js';

assertInGuest();
const size = sized(32 * MiB, 4 * MiB);
const sizeNote = underKvm() ? 'KVM' : 'TCG: 4 MiB instead of 32 MiB';
const LOOP1: HypervisorRecord = { hypervisorId: 'hv-1', vsockMode: 'loopback', relayPort: 0 };
const LOOP2: HypervisorRecord = { hypervisorId: 'hv-2', vsockMode: 'loopback', relayPort: 0 };

interface TlsMesh {
  a: TestSidecar;
  b: TestSidecar;
  port: number;
  vsockPort: number;
  accepted(): number;
}

/**
 * vm-b's sidecar requires TLS over vsock and checks peers against the VM
 * manager (vm-a and vm-b on hv-1, vm-c on hv-2, all CID 1); sidecar A is
 * `aId` with `aPeerTls` (null: no peer_tls), to a static vsock endpoint.
 */
async function tlsMesh(t: ExecutionContext, aId: string, aPeerTls: (tls: Awaited<ReturnType<typeof meshTls>>) => Promise<Record<string, unknown> | null>): Promise<TlsMesh> {
  const tls = await meshTls('strict', { over_vsock: true });
  t.teardown(() => tls.cleanup());
  const vmm = await startVmManager({
    hypervisors: [LOOP1, LOOP2],
    vms: [
      vm({ vmId: 'vm-a', hypervisorId: 'hv-1', vsockCid: 1, addresses: ['127.0.0.2'] }),
      vm({ vmId: 'vm-b', hypervisorId: 'hv-1', vsockCid: 1, addresses: ['127.0.0.3'] }),
      vm({ vmId: 'vm-c', hypervisorId: 'hv-2', vsockCid: 1, addresses: ['127.0.0.4'] }),
    ],
  });
  const app = await startEchoServer();
  const b = await startSidecar({
    node: { id: 'vm-b' },
    vm_manager: { address: vmm.address, query_timeout: '5s' },
    insecure: true,
    peer_tls: { ...tls.b, handshake_timeout: '30s' },
    listeners: [{ kind: 'inbound', name: 'in-vsock', transport: 'vsock', port: 0, peer_authorization: 'registry', header_timeout: '30s', ports: [app.port] }],
  });
  const vsockPort = b.sidecar.listenerAddress('in-vsock').port;
  const peerTls = await aPeerTls(tls);
  const a = await startSidecar({
    node: { id: aId },
    vsock: { connect_timeout: '10s', breaker_window: '10m' },
    ...(peerTls && { peer_tls: { ...peerTls, handshake_timeout: '30s' } }),
    listeners: [{ kind: 'outbound', name: 'out', port: 0, cluster: 'app' }],
    clusters: [{ name: 'app', authority: 'app.mesh', endpoints: [{ address: '127.0.0.1', port: app.port, vm_id: 'vm-b', vsock: { cid: 1, port: vsockPort } }] }],
  });
  t.teardown(async () => {
    await a.sidecar.stop();
    await b.sidecar.stop();
    await app.close();
    await vmm.stop();
  });
  return { a, b, port: a.sidecar.listenerAddress('out').port, vsockPort, accepted: () => app.accepted };
}

/** A connection through sidecar A that B refuses: nothing comes back (an echo would: the client ends its side), and the app never sees it. */
async function refused(t: ExecutionContext, m: TlsMesh): Promise<void> {
  const client = await connect(m.port);
  const seen = collect(client);
  client.end('must not reach the app');
  const { data } = await seen;
  t.is(data.length, 0);
}

test.serial(`mutual TLS over vsock: ${size / MiB} MiB arrive intact, both sides name the other's certificate (${sizeNote})`, async (t) => {
  const m = await tlsMesh(t, 'vm-a', async (tls) => tls.a);
  const result = await echoTransfer(m.port, size);
  t.is(result.received, size);
  t.is(result.receivedSha256, result.sentSha256);
  await waitFor(() => m.a.logs.access().length === 1 && m.b.logs.access().length === 1, 'access logs', 60_000);
  t.like(m.a.logs.access()[0], { transport: 'vsock', upstream: `vsock:1:${m.vsockPort}`, peer_identity: 'spiffe://vsockmesh.local/vm/vm-b', tls_version: 'TLSv1.3', bytes_to_upstream: size });
  const inbound = m.b.logs.access()[0]!;
  t.like(inbound, { listener: 'in-vsock', transport: 'vsock', peer_identity: 'spiffe://vsockmesh.local/vm/vm-a', principal: 'spiffe://vsockmesh.local/vm/vm-a', tls_version: 'TLSv1.3', bytes_to_downstream: size });
  t.regex(String(inbound.peer), /^vsock:1:\d+$/, 'the peer is still named by its kernel-given CID');
  t.is(await metricValue(m.a.sidecar, 'vsockmesh_peer_tls_handshakes_total', { direction: 'outbound' }), 1);
  t.is(await metricValue(m.b.sidecar, 'vsockmesh_peer_tls_handshakes_total', { direction: 'inbound' }), 1);
});

test.serial('a plain-text vsock peer is refused by a sidecar requiring TLS over vsock, before a byte reaches the app', async (t) => {
  const m = await tlsMesh(t, 'vm-a', async () => null);
  await refused(t, m);
  await waitFor(async () => (await metricValue(m.b.sidecar, 'vsockmesh_peer_tls_failures_total', { direction: 'inbound', reason: 'plain_text' })) === 1, 'refusal counted', 60_000);
  t.like(m.b.logs.withReason('plain_text')[0], { level: 'warn', detail: 'a plain-text peer is refused: peer_tls.over_vsock requires TLS on the vsock hop' });
  t.is(m.accepted(), 0);
});

test.serial("a TLS peer over vsock whose certificate names a VM the CID does not belong to is refused (cid_identity_mismatch)", async (t) => {
  // vm-c's certificate, from CID 1 on hv-1; the VM manager places vm-c on hv-2.
  const m = await tlsMesh(t, 'vm-c', async (tls) => ({ mode: 'strict', over_vsock: true, ...(await writeIdentity(tls.dir, 'vm-c', await vmIdentity(tls.root, 'vm-c'))) }));
  await refused(t, m);
  await waitFor(async () => (await metricValue(m.b.sidecar, 'vsockmesh_connections_refused_total', { reason: 'cid_identity_mismatch' })) === 1, 'refusal counted', 60_000);
  t.like(m.b.logs.withReason('cid_identity_mismatch')[0], { level: 'warn', peer_cid: 1 });
  t.regex(m.b.logs.withReason('cid_identity_mismatch')[0]!.msg as string, /certificate of VM vm-c, which the VM manager places at CID 1 on hv-2 \(we are on hv-1\)/);
  t.is(m.accepted(), 0);
});
