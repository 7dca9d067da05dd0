// Transparent capture where the hop between the two "VMs" is vsock: the
// scenario of test/integration/capture-netns.test.ts (namespaces A and B on a
// veth pair, a sidecar process in each, A's as uid 65534, `vsockmesh iptables
// apply` in A), inside the QEMU guest. vsock is not namespaced, so both
// sidecars share the guest's vsock_loopback as two VMs share one hypervisor:
// the VM manager places vm-a and vm-b on the same (loopback) hypervisor, so the
// connection curl makes to B's IP address goes from A's sidecar to B's over
// vsock, and B's app still reads A's address from the PROXY v2 header.

import test, { type ExecutionContext } from 'ava';
import { metricSum } from '../helpers/admin-http.js';
import { waitFor } from '../helpers/apps.js';
import { startSidecarCli } from '../helpers/cli.js';
import {
  A_IP,
  APP_PORT,
  B_IP,
  CAPTURE_PORT,
  NOBODY,
  accessLines,
  asNobody,
  curlApp,
  iptablesIn,
  startClientAddressApp,
  startVmManagerIn,
  statsIn,
  twoVms,
} from '../helpers/netns.js';
import { assertInGuest } from './guest-env.js';

assertInGuest();
const B_TCP_PORT = 15006;
// On a loopback hypervisor every VM is at CID 1 and its sidecar is told apart by its vsock port.
const A_VSOCK_PORT = 15007;
const B_VSOCK_PORT = 15008;
/** Each step (a Node process start, a request through both sidecars) under TCG on a loaded host. */
const DEADLINE_MS = 300_000;

async function vsockMesh(t: ExecutionContext) {
  const { a, b } = await twoVms(t, DEADLINE_MS);
  // The VM manager, B's app and B's sidecar start together: each Node start takes long under emulation.
  const vmm = startVmManagerIn(t, a, {
    hypervisors: [{ id: 'hv-1', vsock_mode: 'loopback' }],
    vms: [
      { id: 'vm-a', hypervisor: 'hv-1', cid: 1, addresses: [A_IP], sidecar: { tcp_port: B_TCP_PORT, vsock_port: A_VSOCK_PORT } },
      { id: 'vm-b', hypervisor: 'hv-1', cid: 1, addresses: [B_IP], sidecar: { tcp_port: B_TCP_PORT, vsock_port: B_VSOCK_PORT }, services: [{ name: 'web', port: APP_PORT }] },
    ],
  });
  const app = startClientAddressApp(t, b);
  const admin = { address: '127.0.0.1', port: 0 };
  const ports = [{ port: APP_PORT, proxy_protocol: true }];
  // B listens on TCP too: vsock is A's choice (same hypervisor), not the only way in.
  const startB = startSidecarCli(
    t,
    {
      node: { id: 'vm-b' },
      admin,
      listeners: [
        { kind: 'inbound', name: 'in-tcp', addresses: ['0.0.0.0'], port: B_TCP_PORT, ports },
        { kind: 'inbound', name: 'in-vsock', transport: 'vsock', port: B_VSOCK_PORT, allowed_peer_cids: [1], ports },
      ],
    },
    { wrapper: b.wrapper, readyTimeoutMs: DEADLINE_MS },
  );
  const [vmmPort, , sidecarB] = await Promise.all([vmm, app, startB]);
  const sidecarA = await startSidecarCli(
    t,
    {
      node: { id: 'vm-a' },
      admin,
      // Emulated CPUs under load: a generous vsock connect deadline, so a slow accept is not a fallback to TCP.
      vsock: { connect_timeout: '10s', breaker_window: '10m' },
      vm_manager: { address: `127.0.0.1:${vmmPort}`, query_timeout: '10s' },
      insecure: true,
      listeners: [{ kind: 'outbound', name: 'capture', addresses: ['127.0.0.1'], port: CAPTURE_PORT, cluster: 'original' }],
      clusters: [{ name: 'original', resolve: { original_destination: true } }],
    },
    { wrapper: asNobody(a), owner: NOBODY, readyTimeoutMs: DEADLINE_MS },
  );
  const counters = async () => {
    const [statsA, statsB] = await Promise.all([statsIn(a, sidecarA.admin), statsIn(b, sidecarB.admin)]);
    return {
      captureVsock: metricSum(statsA, 'vsockmesh_connections_total', { listener: 'capture', transport: 'vsock' }),
      capture: metricSum(statsA, 'vsockmesh_connections_total', { listener: 'capture' }),
      inVsock: metricSum(statsB, 'vsockmesh_connections_total', { listener: 'in-vsock' }),
      inTcp: metricSum(statsB, 'vsockmesh_connections_total', { listener: 'in-tcp' }),
    };
  };
  return { a, b, sidecarA: sidecarA.proc, sidecarB: sidecarB.proc, counters };
}

test('capture over vsock: curl in A to B\'s address goes A\'s sidecar -> vsock -> B\'s sidecar -> app (not the sidecar\'s own hop); remove: straight again', async (t) => {
  const m = await vsockMesh(t);
  t.deepEqual(await curlApp(m.a), { client: A_IP, via: 'socket' }, 'before any rule: straight to B\'s app');

  t.regex(await iptablesIn(m.a, ['apply', '--uid', String(NOBODY), '--port', String(CAPTURE_PORT)]), /IPv4: capture rules applied \(outbound to port 15001\)/);
  const viaMesh = await curlApp(m.a);
  t.deepEqual(viaMesh, { client: A_IP, via: 'proxy-header' }, `${JSON.stringify(viaMesh)}\n${m.sidecarA.stdout()}`);
  await waitFor(() => accessLines(m.sidecarA).length === 1 && accessLines(m.sidecarB).length === 1, 'an access line from each sidecar', DEADLINE_MS);
  const [lineA] = accessLines(m.sidecarA);
  const [lineB] = accessLines(m.sidecarB);
  // A's sidecar took curl's connection to B's IP address and carried it over vsock, by the VM manager's placement.
  t.like(lineA, { listener: 'capture', dst: `${B_IP}:${APP_PORT}`, transport: 'vsock', transport_reason: 'same_hypervisor', upstream: `vsock:1:${B_VSOCK_PORT}`, dst_vm: 'vm-b' });
  t.is(lineA!.fallback, undefined);
  t.regex(String(lineA!.src), new RegExp(`^${A_IP.replaceAll('.', '\\.')}:\\d+$`));
  // B's vsock inbound saw the kernel-given CID 1 and A's identity, client and destination from the PROXY v2 header.
  t.like(lineB, { listener: 'in-vsock', transport: 'vsock', source_vm: 'vm-a', src: lineA!.src, dst: `${B_IP}:${APP_PORT}`, upstream: `127.0.0.1:${APP_PORT}` });
  t.regex(String(lineB!.peer), /^vsock:1:\d+$/);
  // The sidecar's own connections (vsock to B, TCP to the VM manager) never came back to its capture listener.
  t.false(m.sidecarA.lines.some((l) => l.reason === 'no_original_destination'), m.sidecarA.stdout());
  const captured = await m.counters();
  t.deepEqual(captured, { captureVsock: 1, capture: 1, inVsock: 1, inTcp: 0 });

  t.regex(await iptablesIn(m.a, ['remove']), /IPv4: capture rules removed/);
  t.deepEqual(await curlApp(m.a), { client: A_IP, via: 'socket' }, 'straight to B\'s app again');
  t.deepEqual(await m.counters(), captured, 'neither sidecar counted anything more');
});
