// Two `vsockmesh vm-manager` processes on one real etcd (--store): the first
// to start seeds the inventory, the second finds it; a registration through
// one is resolved and watched through the other; two registrations racing for
// one CID through both: one wins; a lease not renewed removes the VM on both;
// a Watch resumes on the other replica from a revision the first gave, and on
// a replica started later with the difference since; a revision etcd
// compacted gets OUT_OF_RANGE on every replica. And the --store flags
// are the control plane's (same parsing, same TLS default).

import test from 'ava';
import type { VmEvent } from '../../proxy/resolve/types.js';
import { EtcdStore } from '../../xds/store/etcd-store.js';
import { VmManagerClient } from '../../xds/vm-manager/client.js';
import { waitFor } from '../helpers/apps.js';
import { runCli } from '../helpers/cli.js';
import { HV1, HV2, startVmManagerProcess, startVmManagerReplicas, vm } from '../helpers/vm-manager.js';

const web1 = vm({ vmId: 'web-1', hypervisorId: 'hv-1', vsockCid: 3, addresses: ['10.0.0.11'], sidecar: { tcpPort: 15001, vsockPort: 15001 }, services: [{ name: 'web', port: 8080 }] });
const db1 = vm({ vmId: 'db-1', hypervisorId: 'hv-2', vsockCid: 3, addresses: ['10.0.1.21'], sidecar: { tcpPort: 15001, vsockPort: 15001 }, services: [{ name: 'db', port: 5432 }] });

const describe = (e: VmEvent): string => `${e.type} ${'vm' in e ? `${e.vm.vmId}@${e.vm.hypervisorId}/${e.vm.vsockCid}` : e.hypervisor.hypervisorId}`;

/** A Watch from `from`, collecting events; `error` is set when it ends. */
function watching(client: VmManagerClient, from: number) {
  const seen: { events: VmEvent[]; error?: Error & { code?: string } } = { events: [] };
  const w = client.watch(from, { onEvent: (e) => seen.events.push(e), onError: (err) => (seen.error = err) });
  return { seen, cancel: () => w.cancel() };
}

test('two vm-manager replicas on one etcd: one registry, the same answers, watches see changes made through the other, leases end on both, compaction is OUT_OF_RANGE on both', async (t) => {
  const { etcd, store, a, b } = await startVmManagerReplicas(t);
  t.true(a.proc.lines.some((l) => /the store held no registry: the inventory was written/.test(String(l.msg))), 'the first replica seeds the inventory');
  t.true(b.proc.lines.some((l) => /the store holds a registry: the inventory is not applied again/.test(String(l.msg))), 'the second finds it');
  const ca = new VmManagerClient(a.address, { defaultTimeoutMs: 10_000, transport: { insecure: true } });
  const cb = new VmManagerClient(b.address, { defaultTimeoutMs: 10_000, transport: { insecure: true } });
  t.teardown(() => {
    ca.close();
    cb.close();
  });
  t.deepEqual((await cb.listVms()).hypervisors, [HV1, HV2]);

  const onB = watching(cb, 0);
  t.teardown(onB.cancel);
  await waitFor(() => onB.seen.events.length >= 2, 'the registry on b', 15_000);
  const registered = await ca.registerVm(web1);
  await waitFor(async () => (await cb.resolve('', { kind: 'service', name: 'web' })).found, 'b to resolve what a registered', 15_000);
  const [fromA, fromB] = await Promise.all([ca.resolve('', { kind: 'service', name: 'web' }), cb.resolve('', { kind: 'service', name: 'web' })]);
  t.deepEqual(fromB, fromA, 'the same Resolve answer from both replicas');
  t.like(fromB.vm, { vmId: 'web-1', generation: registered.generation, vsockCid: 3 });
  await waitFor(() => onB.seen.events.some((e) => e.type === 'added'), 'the registration on b\'s Watch', 15_000);
  const added = onB.seen.events.find((e) => e.type === 'added')!;
  t.is(describe(added), 'added web-1@hv-1/3');
  t.is(added.revision, fromA.revision, "the event carries the store revision a answers at");

  // Through b, watched on a.
  const onA = watching(ca, added.revision);
  t.teardown(onA.cancel);
  await cb.moveVm('web-1', 'hv-2', 7);
  await waitFor(() => onA.seen.events.length >= 1, 'the move on a\'s Watch', 15_000);
  t.deepEqual(onA.seen.events.map(describe), ['moved web-1@hv-2/7']);

  // Racing for one CID through both replicas: exactly one wins.
  const race = await Promise.allSettled([ca.registerVm(db1), cb.registerVm({ ...db1, vmId: 'db-2', addresses: ['10.0.1.22'] })]);
  t.is(race.filter((r) => r.status === 'fulfilled').length, 1, 'exactly one of two registrations for one CID wins');
  const loser = race.find((r) => r.status === 'rejected') as PromiseRejectedResult;
  t.like(loser.reason, { code: 'INVALID_ARGUMENT' });
  t.regex((loser.reason as Error).message, /vsock_cid: 3 is already used by VM "db-[12]" on hypervisor "hv-2"/);

  // A lease registered through a, not renewed: gone on both.
  const beforeLease = (await ca.listVms()).revision;
  await ca.registerVm(vm({ vmId: 'batch-1', hypervisorId: 'hv-1', vsockCid: 9, addresses: ['10.0.0.99'] }), 1_000);
  await waitFor(() => onB.seen.events.some((e) => e.type === 'removed' && e.vm.vmId === 'batch-1'), 'the lease to end, on b\'s Watch', 20_000);
  t.is(await ca.getVm('batch-1'), undefined);
  t.is(await cb.getVm('batch-1'), undefined);
  await waitFor(() => onA.seen.events.some((e) => e.type === 'removed'), 'the lease end on a\'s Watch', 15_000);

  // Resuming on b from a revision a gave: exactly what came after it.
  const resumed = watching(cb, beforeLease);
  t.teardown(resumed.cancel);
  await waitFor(() => resumed.seen.events.length >= 2, 'the resumed Watch', 15_000);
  t.deepEqual(resumed.seen.events.map(describe), ['added batch-1@hv-1/9', 'removed batch-1@hv-1/9']);
  t.is(resumed.seen.error, undefined);

  // A replica started after the revision a Watch resumes from: the difference since (etcd still has that state).
  const c = await startVmManagerProcess(store);
  t.teardown(() => c.proc.kill('SIGKILL'));
  const cc = new VmManagerClient(c.address, { defaultTimeoutMs: 10_000, transport: { insecure: true } });
  t.teardown(() => cc.close());
  const late = watching(cc, added.revision);
  t.teardown(late.cancel);
  const db = race[0]!.status === 'fulfilled' ? 'db-1' : 'db-2';
  await waitFor(() => late.seen.events.length >= 2, 'the difference on the late replica', 15_000);
  t.deepEqual(late.seen.events.map(describe), [`added ${db}@hv-2/3`, 'moved web-1@hv-2/7']);
  t.is(late.seen.events[1]!.type === 'moved' && late.seen.events[1]!.previous.hypervisorId, 'hv-1');
  t.is(late.seen.error, undefined);

  // etcd compacts: a Watch from before it gets OUT_OF_RANGE on every replica.
  const etcdClient = new EtcdStore({ endpoints: [etcd.endpoint], transport: { insecure: true } });
  t.teardown(() => etcdClient.close());
  const now = (await cb.listVms()).revision;
  await etcdClient.compact(now);
  for (const client of [ca, cb, cc]) {
    const old = watching(client, beforeLease);
    await waitFor(() => old.seen.error !== undefined, 'OUT_OF_RANGE', 15_000);
    t.is(old.seen.error!.code, 'OUT_OF_RANGE');
    t.regex(old.seen.error!.message, /compacted/);
    t.deepEqual(old.seen.events, []);
  }
  t.is(onB.seen.error, undefined, 'watches that were following go on');
});

test('vm-manager --store takes the control plane\'s flags: TLS with a client certificate by default, and not with --state-file', async (t) => {
  const plain = await runCli(['vm-manager', '--insecure', '--no-admin', '--listen', '127.0.0.1:0', '--store', 'etcd://127.0.0.1:2379']);
  t.not(plain.code, 0);
  t.regex(plain.stderr, /--store: etcd is spoken to over TLS with a client certificate: give --store-cert, --store-key and --store-ca \(or --store-insecure for plain text\)/);
  const both = await runCli(['vm-manager', '--insecure', '--no-admin', '--listen', '127.0.0.1:0', '--store', 'etcd://127.0.0.1:2379', '--store-insecure', '--state-file', '/nonexistent/vms.json']);
  t.not(both.code, 0);
  t.regex(both.stderr, /--state-file and --store: give one/);
});
