// The daemon agent in the sidecar against a real VM manager over gRPC:
// coalescing, negative cache, unknown destinations go direct, a VM manager
// that dies (cached answers, then plain TCP, counted and logged once), and the
// host relay's policy from the VM manager.

import test from 'ava';
import { echoTransfer, startEchoServer, waitFor, type TestServer } from '../helpers/apps.js';
import { metricValue, startSidecar, type TestSidecar } from '../helpers/sidecars.js';
import { HV1, HV2, startVmManager, startVmManagerProcess, vm } from '../helpers/vm-manager.js';
import { RelayAuthorizer } from '../../proxy/resolve/relay-authorizer.js';
import { VmManagerClient } from '../../xds/vm-manager/client.js';
import { writeFile, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { stringify } from 'yaml';
import { freePort } from '../helpers/haproxy.js';

/**
 * vm-a (the caller, hv-1) and vm-b (hv-2, so the decision is TCP to its
 * sidecar; this host never uses vsock). vm-b's sidecar listens on vm-b's own
 * loopback address, its app on that address too.
 */
async function startB(app: TestServer, address: string): Promise<TestSidecar> {
  return startSidecar({
    node: { id: 'vm-b' },
    vsock: { enabled: false },
    listeners: [{ kind: 'inbound', name: 'inbound', addresses: [address], port: 0, ports: [{ port: app.port, target: { address, port: app.port } }] }],
  });
}

function startA(vmManager: string, cluster: Record<string, unknown>, extra: Record<string, unknown> = {}): Promise<TestSidecar> {
  return startSidecar({
    node: { id: 'vm-a' },
    vsock: { enabled: false },
    vm_manager: { address: vmManager, query_timeout: '1s', ...extra },
    insecure: true,
    listeners: [{ kind: 'outbound', name: 'out', port: 0, cluster: 'app' }],
    clusters: [{ name: 'app', ...cluster }],
  });
}

const vmA = vm({ vmId: 'vm-a', hypervisorId: 'hv-1', vsockCid: 3, addresses: ['127.0.0.2'], sidecar: { tcpPort: 1, vsockPort: 1 } });

test('100 simultaneous connections to a new destination make one Resolve query, and all arrive', async (t) => {
  const app = await startEchoServer('127.0.0.3');
  const b = await startB(app, '127.0.0.3');
  const vmm = await startVmManager({
    hypervisors: [HV1, HV2],
    vms: [vmA, vm({ vmId: 'vm-b', hypervisorId: 'hv-2', vsockCid: 3, addresses: ['127.0.0.3'], sidecar: { tcpPort: b.sidecar.listenerAddress('inbound').port, vsockPort: 0 } })],
  });
  const a = await startA(vmm.address, { resolve: { vm: 'vm-b', port: app.port } });
  t.teardown(async () => {
    await a.sidecar.stop();
    await b.sidecar.stop();
    await vmm.stop();
    await app.close();
  });
  const port = a.sidecar.listenerAddress('out').port;
  const transfers = await Promise.all(Array.from({ length: 100 }, () => echoTransfer(port, 4096)));
  for (const r of transfers) t.is(r.receivedSha256, r.sentSha256);
  t.is(await metricValue({ metrics: { render: () => vmm.server.metrics.metrics() } } as never, 'vsockmesh_vm_manager_requests_total', { method: 'Resolve' }), 1, 'one query reached the VM manager');
  t.deepEqual(a.sidecar.resolver!.counters.queries, { found: 1, not_found: 0, unavailable: 0 });
  await waitFor(() => a.logs.access().length === 100, '100 access lines');
  t.true(a.logs.access().every((l) => l.transport === 'tcp' && l.transport_reason === 'other_hypervisor' && l.dst_vm === 'vm-b'));
  t.is(await metricValue(a.sidecar, 'vsockmesh_transport_decisions_total', { reason: 'other_hypervisor' }), 100);
  t.is(b.logs.access().length, 100, 'every connection went through vm-b\'s sidecar');
});

test('an unknown destination goes direct over TCP, and "unknown" is cached (one query for two connections)', async (t) => {
  const app = await startEchoServer('127.0.0.4');
  const vmm = await startVmManager({ hypervisors: [HV1, HV2], vms: [vmA] });
  const a = await startA(vmm.address, { resolve: { address: '127.0.0.4', port: app.port } }, { negative_ttl: '1m' });
  t.teardown(async () => {
    await a.sidecar.stop();
    await vmm.stop();
    await app.close();
  });
  const port = a.sidecar.listenerAddress('out').port;
  for (let i = 0; i < 2; i++) {
    const r = await echoTransfer(port, 10_000);
    t.is(r.receivedSha256, r.sentSha256);
  }
  t.deepEqual(a.sidecar.resolver!.counters.queries, { found: 0, not_found: 1, unavailable: 0 });
  await waitFor(() => a.logs.access().length === 2, 'access lines');
  t.true(a.logs.access().every((l) => l.transport_reason === 'unknown_destination' && l.upstream === `127.0.0.4:${app.port}`));
});

test('policy vsock-only refuses (and counts) what vsock cannot carry instead of falling back', async (t) => {
  const app = await startEchoServer('127.0.0.4');
  const vmm = await startVmManager({ hypervisors: [HV1, HV2], vms: [vmA] });
  const a = await startA(vmm.address, { resolve: { address: '127.0.0.4', port: app.port } }, { policy: 'vsock-only' });
  t.teardown(async () => {
    await a.sidecar.stop();
    await vmm.stop();
    await app.close();
  });
  const r = await echoTransfer(a.sidecar.listenerAddress('out').port, 100).catch((err: NodeJS.ErrnoException) => err.code);
  t.true(typeof r === 'string' || r?.received === 0, 'nothing was carried');
  await waitFor(async () => (await metricValue(a.sidecar, 'vsockmesh_connections_refused_total', { reason: 'vsock_only_unavailable' })) === 1, 'the refusal counted');
  t.is(app.accepted, 0);
});

test('VM manager killed: traffic continues on cached answers, then plain TCP, counted and logged once', async (t) => {
  const app = await startEchoServer('127.0.0.5');
  const b = await startB(app, '127.0.0.5');
  const dir = await mkdtemp(join(tmpdir(), 'vsockmesh-res-'));
  const inventory = join(dir, 'inventory.yaml');
  await writeFile(
    inventory,
    stringify({
      hypervisors: [
        { id: 'hv-1', vsock_mode: 'host-relay' },
        { id: 'hv-2', vsock_mode: 'host-relay' },
      ],
      vms: [
        { id: 'vm-a', hypervisor: 'hv-1', cid: 3, addresses: ['127.0.0.2'] },
        { id: 'vm-b', hypervisor: 'hv-2', cid: 3, addresses: ['127.0.0.5'], sidecar: { tcp_port: b.sidecar.listenerAddress('inbound').port, vsock_port: 0 } },
      ],
    }),
  );
  // Answers may be cached for 1.5 s.
  const vmm = await startVmManagerProcess(['--inventory', inventory, '--resolve-ttl-ms', '1500']);
  const a = await startA(vmm.address, { resolve: { address: '127.0.0.5', port: app.port } }, { query_timeout: '300ms' });
  t.teardown(async () => {
    vmm.proc.kill('SIGKILL');
    await a.sidecar.stop();
    await b.sidecar.stop();
    await app.close();
    await rm(dir, { recursive: true, force: true });
  });
  const port = a.sidecar.listenerAddress('out').port;
  const check = async (): Promise<void> => {
    const r = await echoTransfer(port, 50_000);
    t.is(r.receivedSha256, r.sentSha256);
  };
  await check();
  vmm.proc.kill('SIGKILL');
  await vmm.proc.exited;
  await check(); // cached: still the same decision, through vm-b's sidecar
  await waitFor(() => a.logs.access().length === 2, 'two access lines');
  t.deepEqual(
    a.logs.access().map((l) => l.transport_reason),
    ['other_hypervisor', 'other_hypervisor'],
  );
  t.is(await metricValue(a.sidecar, 'vsockmesh_resolver_plain_tcp_total'), 0);
  // Let the cached answer expire; now nobody can answer.
  await new Promise((r) => setTimeout(r, 1_600));
  await check();
  await check();
  await waitFor(() => a.logs.access().length === 4, 'four access lines');
  t.deepEqual(
    a.logs.access().slice(2).map((l) => [l.transport_reason, l.upstream]),
    [
      ['vm_manager_unavailable', `127.0.0.5:${app.port}`],
      ['vm_manager_unavailable', `127.0.0.5:${app.port}`],
    ],
  );
  t.is(await metricValue(a.sidecar, 'vsockmesh_resolver_plain_tcp_total'), 2, 'each plain-TCP connection counted');
  t.is(a.logs.withReason('vm_manager_unavailable').length, 1, 'the outage is logged once, not per connection');
  t.is(await metricValue(a.sidecar, 'vsockmesh_resolver_vm_manager_up'), 0);
  t.is(b.logs.access().length, 2, 'only the two cached connections went through vm-b\'s sidecar');
});

test('the host relay asks the VM manager: only registered guests, only to a sidecar vsock port on the same hypervisor; no answer, no relay', async (t) => {
  const vmm = await startVmManager({
    hypervisors: [HV1, HV2],
    vms: [
      vm({ vmId: 'a', hypervisorId: 'hv-1', vsockCid: 3, addresses: ['10.0.0.3'], sidecar: { tcpPort: 15001, vsockPort: 15001 } }),
      vm({ vmId: 'b', hypervisorId: 'hv-1', vsockCid: 4, addresses: ['10.0.0.4'], sidecar: { tcpPort: 15001, vsockPort: 15002 } }),
      vm({ vmId: 'c', hypervisorId: 'hv-2', vsockCid: 5, addresses: ['10.0.0.5'], sidecar: { tcpPort: 15001, vsockPort: 15001 } }),
    ],
  });
  t.teardown(() => vmm.stop());
  const authorizer = new RelayAuthorizer({ api: vmm.client, hypervisorId: 'hv-1', queryTimeoutMs: 10_000, cacheTtlMs: 60_000 });
  // The answer names the VM behind the source CID: the relay asserts it to the destination.
  t.deepEqual(await authorizer.authorize(3, { cid: 4, port: 15002 }), { allowed: true, sourceVmId: 'a' });
  const denied = async (source: number, cid: number, port: number) => {
    const d = await authorizer.authorize(source, { cid, port });
    return d.allowed ? 'allowed' : d.detail;
  };
  t.regex(await denied(9, 4, 15002), /VM manager: .*9/, 'an unregistered source CID');
  t.regex(await denied(3, 4, 22), /VM manager: .*22/, 'a port that is not the sidecar\'s');
  t.regex(await denied(3, 5, 15001), /VM manager: /, 'a CID on another hypervisor');
  t.is(authorizer.queries, 4);
  t.deepEqual(authorizer.cached(3, { cid: 4, port: 15002 }), { allowed: true, sourceVmId: 'a' }, 'answers are reused');
  await authorizer.authorize(3, { cid: 4, port: 15002 });
  t.is(authorizer.queries, 4);

  const down = new RelayAuthorizer({ api: new VmManagerClient('127.0.0.1:1', { transport: { insecure: true } }), hypervisorId: 'hv-1', queryTimeoutMs: 500, cacheTtlMs: 60_000 });
  const d = await down.authorize(3, { cid: 4, port: 15002 });
  t.like(d, { allowed: false, reason: 'vm_manager_unavailable' });
  t.is(down.cached(3, { cid: 4, port: 15002 }), undefined, 'an outage is not cached as a denial');
});

for (const stateFile of [true, false]) {
  const title = stateFile
    ? 'after the VM manager restarts (state file kept), the sidecar\'s Watch resumes and a move made after the restart reaches its cache'
    : 'after the VM manager restarts without its state (revision back to the start), the sidecar watches again from scratch and sees a later move';
  test(title, async (t) => {
    const dir = await mkdtemp(join(tmpdir(), 'vsockmesh-res-'));
    const inventory = join(dir, 'inventory.yaml');
    await writeFile(
      inventory,
      stringify({
        hypervisors: [
          { id: 'hv-1', vsock_mode: 'host-relay' },
          { id: 'hv-2', vsock_mode: 'host-relay' },
        ],
        vms: [
          { id: 'vm-a', hypervisor: 'hv-1', cid: 3, addresses: ['127.0.0.2'] },
          { id: 'vm-b', hypervisor: 'hv-2', cid: 3, addresses: ['127.0.0.6'], sidecar: { tcp_port: 15006, vsock_port: 15006 } },
        ],
      }),
    );
    const port = await freePort();
    const args = ['--listen', `127.0.0.1:${port}`, '--inventory', inventory, ...(stateFile ? ['--state-file', join(dir, 'state.json')] : [])];
    const first = await startVmManagerProcess(args);
    const a = await startA(first.address, { resolve: { vm: 'vm-b', port: 80 } });
    const resolver = a.sidecar.resolver!;
    let current = first;
    t.teardown(async () => {
      current.proc.kill('SIGKILL');
      await a.sidecar.stop();
      await rm(dir, { recursive: true, force: true });
    });
    t.like(await resolver.resolve({ kind: 'vm', vmId: 'vm-b' }), { kind: 'resolved', resolution: { vm: { hypervisorId: 'hv-2' } } });
    // A move while the first VM manager runs arrives over Watch.
    const c1 = new VmManagerClient(first.address, { transport: { insecure: true } });
    await c1.moveVm('vm-b', 'hv-1', 5);
    c1.close();
    await waitFor(() => resolver.lookup({ kind: 'vm', vmId: 'vm-b' })?.vm?.vsockCid === 5, 'the first move in the cache');
    first.proc.kill('SIGKILL');
    await first.proc.exited;
    current = await startVmManagerProcess(args);
    const c2 = new VmManagerClient(current.address, { transport: { insecure: true } });
    t.teardown(() => c2.close());
    // This process's channels to the address share one connection, which is still backing off after the kill.
    await c2.waitForReady(10_000);
    await c2.moveVm('vm-b', 'hv-2', 6);
    await waitFor(() => resolver.lookup({ kind: 'vm', vmId: 'vm-b' })?.vm?.vsockCid === 6, 'the move after the restart in the cache', 15_000);
    t.like(resolver.lookup({ kind: 'vm', vmId: 'vm-b' }), { sameHypervisor: false, vm: { hypervisorId: 'hv-2' } });
  });
}
