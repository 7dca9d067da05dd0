// TLS over vsock through the host relay (peer_tls.over_vsock), inside the
// guest: sidecar A -> host relay (A's relay header in the clear) -> sidecar B,
// which reads the relay's signed source assertion in the clear, then runs
// mutual TLS with A end to end (the relay only carries the records), and
// admits A only when its certificate names the VM the relay asserts. Under
// vsock_loopback the relay, like every sidecar, is at CID 1: B is told its
// relay is at CID 1 (relayCid) as it would know CID 2 on a hypervisor.

import test, { type ExecutionContext } from 'ava';
import { createSidecar, type ProxyClients } from '../../proxy/cmd/proxies.js';
import { parseHostRelayConfig, parseSidecarConfig } from '../../proxy/config/load.js';
import { HostRelay } from '../../proxy/host-relay.js';
import { staticSource } from '../../proxy/identity/certificate-source.js';
import type { Destination, HypervisorRecord, Resolution, VmManagerApi, VmRecord, WatchHandlers } from '../../proxy/resolve/types.js';
import { createLogger } from '../../proxy/runtime/log.js';
import type { ServerOptions } from '../../proxy/server.js';
import type { SidecarOptions } from '../../proxy/sidecar.js';
import { collect, connect, echoTransfer, startEchoServer, waitFor } from '../helpers/apps.js';
import { meshTls } from '../helpers/peer-tls.js';
import { vmIdentity } from '../helpers/pki.js';
import { LogCapture, metricValue, startSidecar, type TestSidecar } from '../helpers/sidecars.js';
import { vm } from '../helpers/vm-manager.js';
import { MiB, assertInGuest, sized, underKvm } from './guest-env.js';

assertInGuest();
const size = sized(16 * MiB, 2 * MiB);
const sizeNote = underKvm() ? 'KVM' : 'TCG: 2 MiB instead of 16 MiB';

interface RelayedTlsMesh {
  a: TestSidecar;
  b: TestSidecar;
  relay: { relay: HostRelay; logs: LogCapture };
  port: number;
  accepted(): number;
}

/**
 * The VM manager as B's sidecar sees it: vm-b at CID 1 on hv-1, a host-relay
 * hypervisor. In process: the registry gives a host-relay hypervisor's VMs
 * CIDs 3 and up, and under vsock_loopback B listens, and the relay's
 * assertion names it, at CID 1.
 */
function vmManagerOfB(relayPort: number): VmManagerApi {
  const hypervisor: HypervisorRecord = { hypervisorId: 'hv-1', vsockMode: 'host-relay', relayPort };
  const vmB: VmRecord = { ...vm({ vmId: 'vm-b', hypervisorId: 'hv-1', vsockCid: 1, addresses: ['127.0.0.3'] }), generation: 1, leaseExpiresAt: null };
  return {
    watch: (_from: number, handlers: WatchHandlers) => {
      handlers.onOpen?.('loopback');
      handlers.onEvent({ type: 'hypervisor', hypervisor, revision: 1 });
      handlers.onEvent({ type: 'added', vm: vmB, revision: 2 });
      return { cancel: () => {} };
    },
    resolve: async (_caller: string, destination: Destination): Promise<Resolution> =>
      destination.kind === 'vm' && destination.vmId === 'vm-b' ? { found: true, vm: vmB, hypervisor, caller: vmB, sameHypervisor: true, ttlMs: 60_000, revision: 2 } : { found: false, sameHypervisor: false, ttlMs: 60_000, revision: 2 },
    close: () => {},
  } as unknown as VmManagerApi;
}

/**
 * A (vm-a's certificate) reaches B (vm-b) only through the relay (hv-1's
 * SVID), which asserts that the source is `assertedVm`: its VM manager's
 * answer for source CID 1, in process (under vsock_loopback every VM shares
 * CID 1, so no registry could tell them apart by CID).
 */
async function relayedTlsMesh(t: ExecutionContext, assertedVm: string): Promise<RelayedTlsMesh> {
  const tls = await meshTls('strict', { over_vsock: true });
  t.teardown(() => tls.cleanup());
  const hv = await vmIdentity(tls.root, 'unused', { uris: ['spiffe://vsockmesh.local/hv/hv-1'] });
  const source = { ...vm({ vmId: assertedVm, hypervisorId: 'hv-1', vsockCid: 1, addresses: [] }), generation: 1, leaseExpiresAt: null } satisfies VmRecord;
  const relayVmManager = { authorizeRelay: async () => ({ allowed: true, source, destination: source }), close: () => {} } as unknown as VmManagerApi;
  const relayLogs = new LogCapture();
  const relay = new HostRelay(
    parseHostRelayConfig({ node: { id: 'hv-1' }, admin: { port: 0 }, listen: { port: 0 }, header_timeout: '30s', connect_timeout: '30s', vm_manager: { address: '127.0.0.1:1', hypervisor_id: 'hv-1' }, insecure: true }),
    {
      logger: createLogger({ level: 'debug', destination: relayLogs }),
      vmManager: { client: relayVmManager, closeOnStop: false },
      assertionIdentity: staticSource({ keyPem: hv.keyPem, chainPem: hv.chainPem, bundlePem: hv.bundlePem, spiffeId: 'spiffe://vsockmesh.local/hv/hv-1', notAfter: new Date(hv.leaf.cert.validTo) }),
    },
  );
  await relay.start();
  t.teardown(() => relay.stop());
  const relayPort = relay.listenerAddress('relay').port;
  const app = await startEchoServer();
  t.teardown(() => app.close());
  const bLogs = new LogCapture();
  const bOptions: ServerOptions & ProxyClients & Pick<SidecarOptions, 'relayCid'> = {
    logger: createLogger({ level: 'debug', destination: bLogs }),
    vmManager: { client: vmManagerOfB(relayPort), closeOnStop: false },
    relayCid: 1,
  };
  const bSidecar = await createSidecar(
    parseSidecarConfig({
      admin: { port: 0 },
      drain_timeout: '5s',
      node: { id: 'vm-b' },
      vm_manager: { address: '127.0.0.1:1', query_timeout: '5s' },
      insecure: true,
      peer_tls: { ...tls.b, handshake_timeout: '30s' },
      listeners: [{ kind: 'inbound', name: 'in-vsock', transport: 'vsock', port: 0, peer_authorization: 'registry', header_timeout: '30s', ports: [app.port] }],
    }),
    bOptions,
  );
  await bSidecar.start();
  t.teardown(() => bSidecar.stop());
  await waitFor(() => bSidecar.resolver?.local() != null, 'vm-b knows its own record', 60_000);
  const b = { sidecar: bSidecar, logs: bLogs };
  const a = await startSidecar({
    node: { id: 'vm-a' },
    vsock: { connect_timeout: '10s', breaker_window: '10m' },
    peer_tls: { ...tls.a, handshake_timeout: '30s' },
    listeners: [{ kind: 'outbound', name: 'out', port: 0, cluster: 'app' }],
    clusters: [
      {
        name: 'app',
        authority: 'app.mesh',
        endpoints: [{ address: '127.0.0.1', port: app.port, vm_id: 'vm-b', vsock: { mode: 'host-relay', cid: 1, port: bSidecar.listenerAddress('in-vsock').port, relay: { cid: 1, port: relayPort } } }],
      },
    ],
  });
  t.teardown(() => a.sidecar.stop());
  return { a, b, relay: { relay, logs: relayLogs }, port: a.sidecar.listenerAddress('out').port, accepted: () => app.accepted };
}

test.serial(`mutual TLS over vsock through the host relay: ${size / MiB} MiB arrive intact; B names A's certificate and the relay that asserted it (${sizeNote})`, async (t) => {
  const m = await relayedTlsMesh(t, 'vm-a');
  const result = await echoTransfer(m.port, size);
  t.is(result.received, size);
  t.is(result.receivedSha256, result.sentSha256);
  await waitFor(() => m.a.logs.access().length === 1 && m.b.logs.access().length === 1 && m.relay.logs.access().length === 1, 'access logs', 60_000);
  t.like(m.a.logs.access()[0], { transport: 'vsock', peer_identity: 'spiffe://vsockmesh.local/vm/vm-b', tls_version: 'TLSv1.3', bytes_to_upstream: size });
  t.like(m.b.logs.access()[0], {
    listener: 'in-vsock',
    peer_identity: 'spiffe://vsockmesh.local/vm/vm-a',
    principal: 'spiffe://vsockmesh.local/vm/vm-a',
    relay: 'spiffe://vsockmesh.local/hv/hv-1',
    tls_version: 'TLSv1.3',
    bytes_to_downstream: size,
  });
  // The relay carried A's TLS records: more than the payload (the handshake, record framing), never fewer.
  const relayed = m.relay.logs.access()[0]!;
  t.like(relayed, { direction: 'relay', outcome: 'closed' });
  t.true(Number(relayed.bytes_to_upstream) > size && Number(relayed.bytes_to_downstream) > size, 'the relay carried TLS records, not the bare payload');
  t.is(await metricValue(m.a.sidecar, 'vsockmesh_peer_tls_handshakes_total', { direction: 'outbound' }), 1);
  t.is(await metricValue(m.b.sidecar, 'vsockmesh_peer_tls_handshakes_total', { direction: 'inbound' }), 1);
});

test.serial('through the host relay, a certificate naming another VM than the relay asserts is refused (relay_identity_mismatch), counted and logged; nothing reaches the app', async (t) => {
  // The relay asserts vm-c (a relay that lies, or vm-a's certificate in vm-c's hands): A presents vm-a's.
  const m = await relayedTlsMesh(t, 'vm-c');
  const client = await connect(m.port);
  const seen = collect(client);
  client.end('must not reach the app');
  t.is((await seen).data.length, 0);
  await waitFor(async () => (await metricValue(m.b.sidecar, 'vsockmesh_connections_refused_total', { reason: 'relay_identity_mismatch' })) === 1, 'refusal counted', 60_000);
  const refusal = m.b.logs.withReason('relay_identity_mismatch')[0]!;
  t.like(refusal, { level: 'warn', peer_cid: 1, source_vm: 'vm-a' });
  t.regex(refusal.msg as string, /certificate of VM vm-a, but the relay asserts the source is VM vm-c/);
  t.is(m.accepted(), 0);
});
