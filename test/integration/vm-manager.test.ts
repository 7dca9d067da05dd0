// The VM manager over real gRPC: API round trips, validation errors naming
// the field, leases, Watch with resume, health, persistence across a restart
// of the real process, and `vsockmesh ctl`.

import test from 'ava';
import * as grpc from '@grpc/grpc-js';
import { mkdtemp, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { stringify } from 'yaml';
import { waitFor } from '../helpers/apps.js';
import { runCli } from '../helpers/cli.js';
import { HV1, HV2, startVmManager, startVmManagerProcess, rejection, vm } from '../helpers/vm-manager.js';
import { VmManagerClient } from '../../xds/vm-manager/client.js';
import { healthProto } from '../../xds/proto.js';
import type { VmEvent } from '../../proxy/resolve/types.js';

const web1 = vm({ vmId: 'web-1', hypervisorId: 'hv-1', vsockCid: 3, addresses: ['10.0.0.11'], sidecar: { tcpPort: 15001, vsockPort: 15001 }, services: [{ name: 'web', port: 8080 }] });
const web2 = vm({ vmId: 'web-2', hypervisorId: 'hv-1', vsockCid: 4, addresses: ['10.0.0.12', 'fd00::12'], sidecar: { tcpPort: 15001, vsockPort: 15001 } });
const db1 = vm({ vmId: 'db-1', hypervisorId: 'hv-2', vsockCid: 3, addresses: ['10.0.1.21'], sidecar: { tcpPort: 15001, vsockPort: 15001 }, services: [{ name: 'db', port: 5432 }] });

test('register, get, list, move, resolve and deregister round-trip over gRPC with every field intact', async (t) => {
  const vmm = await startVmManager({ hypervisors: [HV1, HV2] });
  t.teardown(() => vmm.stop());
  const c = vmm.client;
  const registered = await c.registerVm({ ...web1, labels: { team: 'a' } });
  t.like(registered, { vmId: 'web-1', hypervisorId: 'hv-1', vsockCid: 3, generation: 1, leaseExpiresAt: null, sidecar: { tcpPort: 15001, vsockPort: 15001 } });
  t.deepEqual(registered.labels, { team: 'a' });
  t.deepEqual(registered.services, [{ name: 'web', port: 8080 }]);
  await c.registerVm(web2);
  await c.registerVm(db1);
  const noSidecar = await c.registerVm(vm({ vmId: 'legacy', hypervisorId: 'hv-2', vsockCid: 9, addresses: ['10.0.1.99'] }));
  t.is(noSidecar.sidecar, null, 'a VM without a sidecar stays without one on the wire');

  t.deepEqual(await c.getVm('web-2'), { ...web2, generation: 1, leaseExpiresAt: null });
  t.is(await c.getVm('nope'), undefined);
  const list = await c.listVms();
  t.deepEqual(list.vms.map((v) => v.vmId), ['db-1', 'legacy', 'web-1', 'web-2']);
  t.deepEqual(list.hypervisors, [HV1, HV2]);

  const byIp = await c.resolve('web-1', { kind: 'ip', ip: '10.0.0.12' });
  t.like(byIp, { found: true, sameHypervisor: true, vm: { vmId: 'web-2' }, hypervisor: HV1, caller: { vmId: 'web-1' } });
  const byV6 = await c.resolve('web-1', { kind: 'ip_port', ip: 'fd00:0::12', port: 80 });
  t.like(byV6, { found: true, port: 80, vm: { vmId: 'web-2' } }, 'IPv6 is matched in canonical form');
  const byService = await c.resolve('web-1', { kind: 'service', name: 'db' });
  t.like(byService, { found: true, sameHypervisor: false, port: 5432, vm: { vmId: 'db-1' }, hypervisor: HV2 });
  const byId = await c.resolve('unknown-caller', { kind: 'vm', vmId: 'db-1' });
  t.like(byId, { found: true, sameHypervisor: false });
  t.is(byId.caller, undefined);
  const missing = await c.resolve('web-1', { kind: 'ip', ip: '192.0.2.1' });
  t.like(missing, { found: false, sameHypervisor: false });
  t.true(missing.ttlMs > 0);

  const moved = await c.moveVm('web-2', 'hv-2', 7);
  t.like(moved, { hypervisorId: 'hv-2', vsockCid: 7, generation: 2 });
  t.like(await c.resolve('web-1', { kind: 'vm', vmId: 'web-2' }), { sameHypervisor: false, hypervisor: HV2 });

  await c.deregisterVm('web-2');
  t.is(await c.getVm('web-2'), undefined);
  t.like(await rejection(c.deregisterVm('web-2')), { code: 'NOT_FOUND' });
});

test('bad requests get INVALID_ARGUMENT naming the field, and change nothing', async (t) => {
  const vmm = await startVmManager({ hypervisors: [HV1, HV2], vms: [web1] });
  t.teardown(() => vmm.stop());
  const c = vmm.client;
  const before = (await c.listVms()).revision;
  const cases: Array<[string, Promise<unknown>, RegExp]> = [
    ['CID below 3', c.registerVm({ ...web2, vsockCid: 2 }), /^vsock_cid: /],
    ['CID above 0xFFFFFFFE', c.registerVm({ ...web2, vsockCid: 0xffffffff }), /^vsock_cid: /],
    ['CID taken on the same hypervisor', c.registerVm({ ...web2, vsockCid: 3 }), /^vsock_cid: .*web-1/],
    ['IP taken by another VM', c.registerVm({ ...web2, addresses: ['10.0.0.11'] }), /^addresses\[0\]: .*web-1/],
    ['not an IP', c.registerVm({ ...web2, addresses: ['10.0.0.300'] }), /^addresses\[0\]: /],
    ['empty id', c.registerVm({ ...web2, vmId: '' }), /^vm_id: /],
    ['unknown hypervisor', c.registerVm({ ...web2, hypervisorId: 'hv-9' }), /^hypervisor_id: .*hv-9/],
    ['move to an unknown hypervisor', c.moveVm('web-1', 'hv-9'), /^hypervisor_id: /],
    ['lease under a second', c.registerVm(web2, 10), /^lease_ttl: /],
  ];
  for (const [what, call, message] of cases) {
    const err = await rejection(call);
    t.is(err.code, 'INVALID_ARGUMENT', what);
    t.regex(err.details, message, what);
  }
  t.is((await c.listVms()).revision, before, 'no rejected request changed the registry');
  // The same CID on another hypervisor is fine: CIDs are per hypervisor.
  t.like(await c.registerVm({ ...db1, vsockCid: 3 }), { vsockCid: 3, hypervisorId: 'hv-2' });
  t.true(vmm.logs.lines.some((l) => l.reason === 'invalid_argument' && /vsock_cid/.test(String(l.detail))), 'rejections are logged with their reason');
});

test('a VM registered with a lease disappears when it is not renewed, and stays while it is', async (t) => {
  const vmm = await startVmManager({ hypervisors: [HV1] });
  t.teardown(() => vmm.stop());
  const c = vmm.client;
  // Watching from before the registrations: on a loaded machine web-1 may be gone before a later watch starts.
  const events: VmEvent[] = [];
  const w = c.watch(0, { onEvent: (e) => events.push(e), onError: () => undefined });
  t.teardown(() => w.cancel());
  await waitFor(() => events.length >= 1, 'the watch to start', 15_000);
  const leased = await c.registerVm(web1, 1_000);
  t.true(leased.leaseExpiresAt !== null && leased.leaseExpiresAt > Date.now());
  // web-2 is renewed every 300 ms (its 3 s lease leaves room for renewals delayed by a loaded machine); web-1 is left alone.
  const first = await c.registerVm(web2, 3_000);
  // A renewal still in flight when the test ends is cancelled with the client: not a failure.
  const renew = setInterval(() => void c.registerVm(web2, 3_000).catch(() => undefined), 300);
  t.teardown(() => clearInterval(renew));
  await waitFor(async () => (await c.getVm('web-1')) === undefined, 'web-1 to expire', 15_000);
  // Past the end of web-2's first lease (and a lease scan): only the renewals keep it.
  await waitFor(() => Date.now() > first.leaseExpiresAt! + 500, "the end of web-2's first lease", 15_000);
  const renewed = await c.getVm('web-2');
  t.truthy(renewed, 'the renewed VM is still there');
  t.true(renewed!.leaseExpiresAt! > first.leaseExpiresAt!, 'its lease moved');
  await waitFor(() => events.some((e) => e.type === 'removed' && e.vm.vmId === 'web-1'), 'a removed event for web-1');
  t.false(events.some((e) => e.type === 'removed' && e.vm.vmId === 'web-2'));
  t.true(vmm.logs.lines.some((l) => l.reason === 'lease_expired' && l.vm_id === 'web-1'));
});

test('Watch sends the registry, then changes; a watcher resumes from its last revision without gaps', async (t) => {
  const vmm = await startVmManager({ hypervisors: [HV1, HV2], vms: [web1] });
  t.teardown(() => vmm.stop());
  const c = vmm.client;
  const first: VmEvent[] = [];
  const w1 = c.watch(0, { onEvent: (e) => first.push(e), onError: () => undefined });
  await waitFor(() => first.length >= 3, 'the initial snapshot');
  t.deepEqual(
    first.map((e) => e.type),
    ['hypervisor', 'hypervisor', 'added'],
  );
  await c.registerVm(web2);
  await waitFor(() => first.length >= 4, 'the added event');
  const resumeFrom = first.at(-1)!.revision;
  w1.cancel();
  // Changes while nobody watches.
  await c.moveVm('web-2', 'hv-2', 5);
  await c.deregisterVm('web-1');
  const second: VmEvent[] = [];
  const w2 = c.watch(resumeFrom, { onEvent: (e) => second.push(e), onError: () => undefined });
  t.teardown(() => w2.cancel());
  await waitFor(() => second.length >= 2, 'the missed events');
  t.deepEqual(
    second.map((e) => [e.type, 'hypervisor' in e ? null : e.vm.vmId]),
    [
      ['moved', 'web-2'],
      ['removed', 'web-1'],
    ],
  );
  const moved = second[0]!;
  t.true(moved.type === 'moved' && moved.previous.hypervisorId === 'hv-1' && moved.vm.hypervisorId === 'hv-2');
  t.is(second[1]!.revision, moved.revision + 1, 'revisions are consecutive');

  // A revision of another epoch (a registry restarted without its state counts anew) must start over.
  const otherEpoch = await new Promise<Error>((resolve) => c.watch(resumeFrom, { onEvent: () => undefined, onError: resolve }, 'an-older-epoch'));
  t.regex(otherEpoch.message, /OUT_OF_RANGE: .*another epoch/);
  // A revision from the future is refused rather than silently waited on.
  const refused = await new Promise<Error>((resolve) => c.watch(10_000, { onEvent: () => undefined, onError: resolve }));
  t.regex(refused.message, /OUT_OF_RANGE/);
});

test('the gRPC health service says SERVING, and NOT_SERVING while draining', async (t) => {
  const vmm = await startVmManager();
  t.teardown(() => vmm.stop());
  const Health = healthProto().grpc.health.v1.Health;
  const health = new Health(vmm.address, grpc.credentials.createInsecure());
  t.teardown(() => health.close());
  const check = (service: string) =>
    new Promise<{ status?: string; code?: number }>((resolve) => health.Check({ service }, (err, res) => resolve(err ? { code: err.code } : { status: String(res!.status) })));
  t.deepEqual(await check(''), { status: 'SERVING' });
  t.deepEqual(await check('vsockmesh.vmmanager.v1.VmManager'), { status: 'SERVING' });
  t.deepEqual(await check('something.Else'), { code: grpc.status.NOT_FOUND });
  const statuses: string[] = [];
  const stream = health.Watch({ service: '' });
  stream.on('data', (r: { status: string }) => statuses.push(String(r.status)));
  stream.on('error', () => undefined);
  await waitFor(() => statuses.length === 1, 'the first health status');
  await vmm.server.drain(1_000);
  await waitFor(() => statuses.includes('NOT_SERVING'), 'NOT_SERVING on drain');
  t.deepEqual(statuses, ['SERVING', 'NOT_SERVING']);
});

test('with a state file, a restarted vm-manager process has every VM and the same revision', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'vsockmesh-vmm-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const inventory = join(dir, 'inventory.yaml');
  await writeFile(
    inventory,
    stringify({
      hypervisors: [{ id: 'hv-1', vsock_mode: 'host-relay' }],
      vms: [{ id: 'web-1', hypervisor: 'hv-1', cid: 3, addresses: ['10.0.0.11'], sidecar: { tcp_port: 15001, vsock_port: 15001 } }],
    }),
  );
  const state = join(dir, 'state.json');
  const first = await startVmManagerProcess(['--inventory', inventory, '--state-file', state]);
  const c1 = new VmManagerClient(first.address, { transport: { insecure: true } });
  await c1.registerVm(web2);
  await c1.moveVm('web-1', 'hv-1', 9);
  const before = await c1.listVms();
  c1.close();
  // SIGKILL: nothing gets a chance to write at exit; what was answered must already be on disk.
  first.proc.kill('SIGKILL');
  await first.proc.exited;
  // The snapshot and its log (web-2 was registered after the snapshot written at start: it is in the log).
  const stateFiles = (await readdir(dir)).filter((name) => name.startsWith('state.json')).sort();
  const stateBefore = (await Promise.all(stateFiles.map((name) => readFile(join(dir, name), 'utf8')))).join('');
  t.regex(stateBefore, /web-2/);

  const second = await startVmManagerProcess(['--inventory', inventory, '--state-file', state]);
  t.teardown(() => second.proc.kill('SIGKILL'));
  const c2 = new VmManagerClient(second.address, { transport: { insecure: true } });
  t.teardown(() => c2.close());
  const after = await c2.listVms();
  t.deepEqual(after, before, 'same VMs (web-1 still at CID 9, not the inventory CID 3), same revision');
  const servedEpoch = await new Promise<string>((resolve, reject) => {
    const w = c2.watch(after.revision, {
      onEvent: () => undefined,
      onError: reject,
      onOpen: (epoch) => {
        w.cancel();
        resolve(epoch);
      },
    });
  });
  t.is(servedEpoch, (JSON.parse(stateBefore.split('\n')[0]!) as { epoch: string }).epoch, 'the same epoch: watchers resume across the restart');
  t.true(second.proc.lines.some((l) => /state file present/.test(String(l.msg))), 'says the inventory was not applied again');
});

test('vm-manager refuses to start on an invalid inventory, naming the entry and field', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'vsockmesh-vmm-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const inventory = join(dir, 'inventory.yaml');
  await writeFile(
    inventory,
    stringify({
      hypervisors: [{ id: 'hv-1', vsock_mode: 'host-relay' }],
      vms: [
        { id: 'a', hypervisor: 'hv-1', cid: 3, addresses: ['10.0.0.1'] },
        { id: 'b', hypervisor: 'hv-1', cid: 3, addresses: ['10.0.0.2'] },
      ],
    }),
  );
  const r = await runCli(['vm-manager', '--listen', '127.0.0.1:0', '--no-admin', '--insecure', '--inventory', inventory]);
  t.is(r.code, 2);
  t.regex(r.stderr, /vms\[1\]\.vsock_cid/);
});

test('ctl: vms register/list/move/deregister, hypervisors, resolve with the decision and why, and one-line errors', async (t) => {
  const vmm = await startVmManager({ hypervisors: [HV1, HV2], vms: [web1] });
  t.teardown(() => vmm.stop());
  const dir = await mkdtemp(join(tmpdir(), 'vsockmesh-ctl-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const ctl = (...args: string[]) => runCli(['ctl', '--insecure', '--vm-manager', vmm.address, ...args]);
  const file = join(dir, 'vm.yaml');
  await writeFile(file, stringify({ id: 'web-2', hypervisor: 'hv-1', cid: 4, addresses: ['10.0.0.12'], sidecar: { tcp_port: 15001, vsock_port: 15001 }, services: [{ name: 'api', port: 9000 }] }));

  const reg = await ctl('vms', 'register', '-f', file);
  t.is(reg.code, 0, reg.stderr);
  t.regex(reg.stdout, /registered web-2\thypervisor=hv-1\tcid=4/);
  const list = await ctl('vms', 'list');
  t.deepEqual(
    list.stdout.trim().split('\n').map((l) => l.split('\t')[0]),
    ['web-1', 'web-2'],
  );
  const json = await ctl('-o', 'json', 'vms', 'list');
  t.is((JSON.parse(json.stdout) as { vms: unknown[] }).vms.length, 2);

  const same = await ctl('resolve', 'service/api', '--from', 'web-1');
  t.is(same.code, 0, same.stderr);
  t.regex(same.stdout, /decision: vsock 4:15001 via host relay 2:15100 \(same_hypervisor\), fallback tcp 10\.0\.0\.12:15001/);

  const move = await ctl('vms', 'move', 'web-2', '--hypervisor', 'hv-2', '--cid', '5');
  t.is(move.code, 0, move.stderr);
  t.regex(move.stdout, /moved web-2\thypervisor=hv-2\tcid=5/);
  const other = await ctl('resolve', '10.0.0.12:9000', '--from', 'web-1');
  t.regex(other.stdout, /decision: tcp 10\.0\.0\.12:15001 \(other_hypervisor\)/);
  const unknown = await ctl('resolve', '192.0.2.7:80', '--from', 'web-1');
  t.regex(unknown.stdout, /not in the registry[\s\S]*decision: direct 192\.0\.2\.7:80 \(unknown_destination\)/);
  const tcpOnly = await ctl('resolve', 'vm/web-1', '--from', 'web-1', '--policy', 'tcp-only');
  t.regex(tcpOnly.stdout, /\(tcp_only_policy\)/);

  const hv = await ctl('hypervisors', 'register', 'hv-3', '--vsock-mode', 'direct');
  t.is(hv.code, 0, hv.stderr);
  t.regex((await ctl('hypervisors', 'list')).stdout, /hv-3\tvsock=direct/);

  // Errors: one line, non-zero.
  const bad = await ctl('vms', 'move', 'web-2', '--hypervisor', 'hv-1', '--cid', '3');
  t.is(bad.code, 1);
  t.regex(bad.stderr, /^vsockmesh ctl: INVALID_ARGUMENT: vsock_cid: .*web-1.*\n$/);
  const notFound = await ctl('vms', 'deregister', 'ghost');
  t.is(notFound.code, 1);
  t.is(notFound.stderr.trim().split('\n').length, 1);
  const badDest = await ctl('resolve', 'not a destination');
  t.is(badDest.code, 2);
  t.regex(badDest.stderr, /^vsockmesh ctl: destination "not a destination": expected/);
  await writeFile(file, 'id: x\nhypervisor: hv-1\ncid: three\n');
  const badFile = await ctl('vms', 'register', '-f', file);
  t.is(badFile.code, 2);
  t.is(badFile.stderr.trim().split('\n').length, 1, badFile.stderr);
  const down = await runCli(['ctl', '--insecure', '--vm-manager', '127.0.0.1:1', '--timeout-ms', '2000', 'vms', 'list']);
  t.is(down.code, 1);
  t.regex(down.stderr, /^vsockmesh ctl: cannot reach the VM manager at 127\.0\.0\.1:1: (UNAVAILABLE|DEADLINE_EXCEEDED)/);
});
