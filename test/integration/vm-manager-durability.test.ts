// The VM manager applies a change only once it is durable: on a full disk
// (a real small tmpfs) every mutation is refused with the reason and nothing
// of it becomes visible (GetVm, Resolve, ListVms, Watch), ctl prints the
// server's reason; after space is freed writes succeed and a restart has
// every acknowledged change. Lease expiry takes the same path. Mutations
// planned while others are being written see them (one CID, one winner) and
// share their writes (group commit); the log is compacted while serving.

import test from 'ava';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { stringify } from 'yaml';
import { createLogger } from '../../proxy/runtime/log.js';
import { waitFor } from '../helpers/apps.js';
import { runCli } from '../helpers/cli.js';
import { smallFilesystem } from '../helpers/small-fs.js';
import { HV1, HV2, startVmManager, rejection, vm } from '../helpers/vm-manager.js';
import { Registry } from '../../xds/vm-manager/registry.js';
import { initialRegistry } from '../../xds/vm-manager/run.js';
import type { VmEvent } from '../../proxy/resolve/types.js';

const web1 = vm({ vmId: 'web-1', hypervisorId: 'hv-1', vsockCid: 3, addresses: ['10.0.0.11'], sidecar: { tcpPort: 15001, vsockPort: 15001 }, services: [{ name: 'web', port: 8080 }] });
const web2 = vm({ vmId: 'web-2', hypervisorId: 'hv-1', vsockCid: 4, addresses: ['10.0.0.12'], services: [{ name: 'api', port: 9000 }] });
const web3 = vm({ vmId: 'web-3', hypervisorId: 'hv-2', vsockCid: 5, addresses: ['10.0.0.13'] });

/** The registry a restarted VM manager would start with. */
const restarted = (statePath: string): Promise<Registry> => initialRegistry({ statePath, resolveTtlMs: 30_000 }, createLogger({ level: 'silent' }));

const NOT_APPLIED = /^not applied: cannot write state file: ENOSPC \(write\)$/;

test('on a full disk a mutation is refused with the reason, nothing of it is visible, ctl prints the reason; afterwards writes succeed and a restart has every acknowledged change', async (t) => {
  const fs = await smallFilesystem(t);
  const statePath = join(fs.dir, 'vms.json');
  const vmm = await startVmManager({ hypervisors: [HV1, HV2], vms: [web1] }, { statePath });
  t.teardown(() => vmm.stop());
  const c = vmm.client;
  const events: VmEvent[] = [];
  const w = c.watch(0, { onEvent: (e) => events.push(e), onError: () => undefined });
  t.teardown(() => w.cancel());
  await waitFor(() => events.length >= 3, 'the initial snapshot on the watch');
  const before = await c.listVms();

  await fs.fill();
  for (const [what, call] of [
    ['RegisterVm', () => c.registerVm(web2)],
    ['DeregisterVm', () => c.deregisterVm('web-1')],
    ['MoveVm', () => c.moveVm('web-1', 'hv-2', 7)],
  ] as const) {
    const err = await rejection(call());
    t.is(err.code, 'UNAVAILABLE', what);
    t.regex(err.details, NOT_APPLIED, what);
  }

  t.is(await c.getVm('web-2'), undefined, 'GetVm: the refused registration is not there');
  t.like(await c.getVm('web-1'), { hypervisorId: 'hv-1', vsockCid: 3, generation: 1 }, 'GetVm: neither removed nor moved');
  t.false((await c.resolve('web-1', { kind: 'ip', ip: '10.0.0.12' })).found, 'Resolve by address');
  t.false((await c.resolve('web-1', { kind: 'service', name: 'api' })).found, 'Resolve by service');
  t.like(await c.resolve('web-2', { kind: 'vm', vmId: 'web-1' }), { found: true, hypervisor: HV1 });
  t.deepEqual(await c.listVms(), before, 'ListVms: the same VMs at the same revision');

  const dir = await mkdtemp(join(tmpdir(), 'vsockmesh-ctl-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const file = join(dir, 'vm.yaml');
  await writeFile(file, stringify({ id: 'web-2', hypervisor: 'hv-1', cid: 4, addresses: ['10.0.0.12'] }));
  const ctl = await runCli(['ctl', '--insecure', '--vm-manager', vmm.address, 'vms', 'register', '-f', file]);
  t.is(ctl.code, 1);
  t.is(ctl.stderr, 'vsockmesh ctl: UNAVAILABLE: not applied: cannot write state file: ENOSPC (write)\n', 'the server answered: its reason, not "cannot reach"');
  t.true(vmm.logs.lines.some((l) => l.reason === 'state_write_failed'), 'the server logs why');

  await fs.free();
  t.like(await c.registerVm(web3), { vmId: 'web-3', generation: 1 });
  await waitFor(() => events.some((e) => e.type === 'added' && e.vm.vmId === 'web-3'), 'web-3 on the watch');
  t.deepEqual(
    events.slice(3).map((e) => ('hypervisor' in e ? e.type : `${e.type} ${e.vm.vmId}`)),
    ['added web-3'],
    'Watch: nothing of the refused changes, then the one that was written',
  );

  const acknowledged = await c.listVms();
  await vmm.stop();
  const registry = await restarted(statePath);
  t.deepEqual(
    registry.list().vms.map((v) => [v.vmId, v.hypervisorId, v.vsockCid]),
    [
      ['web-1', 'hv-1', 3],
      ['web-3', 'hv-2', 5],
    ],
  );
  t.deepEqual(registry.list(), acknowledged);
  t.is(acknowledged.revision, before.revision + 1, 'one change: web-3');
});

test('lease expiry goes through the state file too: a VM whose removal cannot be written stays, and goes once it can', async (t) => {
  const fs = await smallFilesystem(t);
  const clock = { now: Date.now() };
  const registry = new Registry({ now: () => clock.now });
  registry.registerHypervisor(HV1);
  registry.registerVm(web1, 1_000);
  const vmm = await startVmManager({}, { statePath: join(fs.dir, 'vms.json'), registry });
  t.teardown(() => vmm.stop());
  await fs.fill();
  clock.now += 2_000;
  await waitFor(() => vmm.logs.lines.some((l) => l.reason === 'lease_expiry_failed'), 'a lease expiry that cannot be written', 15_000);
  t.truthy(await vmm.client.getVm('web-1'), 'not removed: the removal is not durable');
  await fs.free();
  await waitFor(async () => (await vmm.client.getVm('web-1')) === undefined, 'web-1 removed once the removal is written', 15_000);
  t.true(vmm.logs.lines.some((l) => l.reason === 'lease_expired' && l.vm_id === 'web-1'));
});

test('registrations racing for one CID while others are being written: exactly one wins each time, and that is what a restart has', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'vsockmesh-vmm-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const statePath = join(dir, 'vms.json');
  const vmm = await startVmManager({ hypervisors: [HV1] }, { statePath });
  t.teardown(() => vmm.stop());
  const rounds = 10;
  const calls = Array.from({ length: rounds }, (_, round) =>
    ['a', 'b'].map((side, i) => vmm.client.registerVm(vm({ vmId: `${side}-${round}`, hypervisorId: 'hv-1', vsockCid: 10 + round, addresses: [`10.9.${i}.${round}`] }))),
  ).flat();
  const results = await Promise.allSettled(calls);
  for (let round = 0; round < rounds; round++) {
    const pair = results.slice(round * 2, round * 2 + 2);
    const won = pair.filter((r) => r.status === 'fulfilled');
    const lost = pair.filter((r): r is PromiseRejectedResult => r.status === 'rejected');
    t.is(won.length, 1, `round ${round}: one winner`);
    t.is(lost.length, 1, `round ${round}: one loser`);
    const winner = won.length === 1 ? (won[0] as PromiseFulfilledResult<{ vmId: string }>).value.vmId : '?';
    t.like(lost[0]?.reason, { code: 'INVALID_ARGUMENT', details: `vsock_cid: ${10 + round} is already used by VM "${winner}" on hypervisor "hv-1"` });
  }
  const listed = (await vmm.client.listVms()).vms.map((v) => v.vmId);
  await vmm.stop();
  t.deepEqual(
    (await restarted(statePath)).list().vms.map((v) => v.vmId),
    listed,
  );
  t.is(listed.length, rounds);
});

test('mutations that arrive while a write is in flight share the next write (group commit), and every one is durable', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'vsockmesh-vmm-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const statePath = join(dir, 'vms.json');
  const vmm = await startVmManager({ hypervisors: [HV1] }, { statePath });
  t.teardown(() => vmm.stop());
  const n = 20;
  // One tick: the first starts a write, the other 19 wait for it and go in the next.
  await Promise.all(Array.from({ length: n }, (_, i) => vmm.server.mutate((r) => r.registerVm(vm({ vmId: `vm-${i}`, hypervisorId: 'hv-1', vsockCid: 3 + i, addresses: [`10.8.0.${i}`] })))));
  const writes = await vmm.server.metrics.getSingleMetric('vsockmesh_vm_manager_state_writes_total')!.get();
  t.deepEqual(
    writes.values.map((v) => [v.labels.result, v.value]),
    [['ok', 2]],
  );
  const changes = await vmm.server.metrics.getSingleMetric('vsockmesh_vm_manager_state_changes_total')!.get();
  t.is(changes.values[0]!.value, n);
  await vmm.stop();
  t.is((await restarted(statePath)).size, n);
});

test('the log is compacted while the VM manager serves; a restart reads the snapshot and the log after it', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'vsockmesh-vmm-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const statePath = join(dir, 'vms.json');
  const registry = new Registry();
  registry.registerHypervisor(HV1);
  const vmm = await startVmManager({}, { statePath, registry, compactAfterBytes: 4_096 });
  t.teardown(() => vmm.stop());
  let i = 0;
  while (!vmm.logs.lines.some((l) => l.msg === 'state log compacted')) {
    await vmm.client.registerVm(vm({ vmId: `vm-${i}`, hypervisorId: 'hv-1', vsockCid: 3 + i, addresses: [`10.7.${i >> 8}.${i & 255}`] }));
    i++;
    if (i > 500) throw new Error('no compaction after 500 registrations');
  }
  await vmm.client.deregisterVm('vm-0');
  const expected = await vmm.client.listVms();
  await vmm.stop();
  const reloaded = await restarted(statePath);
  t.deepEqual(reloaded.list(), expected);
  t.true(vmm.logs.lines.some((l) => l.msg === 'state log compacted' && Number(l.log_segment) >= 2));
});
