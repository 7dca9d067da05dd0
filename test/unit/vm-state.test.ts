// The registry's state files on a real filesystem: snapshot and log written
// by StateLog, read back by loadState (replay), compaction, a torn last line,
// corrupt lines named by file and line, a failed append leaving nothing, and
// the single-JSON state file of earlier versions migrated.

import test, { type ExecutionContext } from 'ava';
import { appendFile, mkdtemp, readFile, readdir, rm, truncate, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Registry, type RegistryChange, type VmInput } from '../../xds/vm-manager/registry.js';
import { StateFileError, loadState } from '../../xds/vm-manager/state-load.js';
import { StateLog, segmentPath } from '../../xds/vm-manager/state-log.js';
import { smallFilesystem } from '../helpers/small-fs.js';

const T0 = 1_700_000_000_000;

async function stateDir(t: ExecutionContext): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'vsockmesh-vmstate-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

function vm(vmId: string, cid: number, extra: Partial<VmInput> = {}): VmInput {
  return { vmId, hypervisorId: 'hv-1', vsockCid: cid, addresses: [`10.0.0.${cid}`], sidecar: { tcpPort: 15001, vsockPort: 15001 }, services: [{ name: 'web', port: 80 }], labels: { team: 'a' }, ...extra };
}

function seeded(): Registry {
  const registry = new Registry({ now: () => T0 });
  registry.registerHypervisor({ hypervisorId: 'hv-1', vsockMode: 'host-relay', relayPort: 15100 });
  registry.registerHypervisor({ hypervisorId: 'hv-2', vsockMode: 'direct', relayPort: 0 });
  registry.registerVm(vm('web-1', 3));
  return registry;
}

/** Runs `fn` on `registry` and appends what it changed to the log, as the server does. */
async function change(log: StateLog, registry: Registry, fn: (r: Registry) => unknown): Promise<RegistryChange[]> {
  const { changes } = registry.recordChanges(() => fn(registry));
  await log.append(changes);
  return changes;
}

/** What a registry holds, comparable across instances. */
const contents = (r: Registry) => ({ ...r.list(), epoch: r.epoch });

async function load(path: string): Promise<NonNullable<Awaited<ReturnType<typeof loadState>>>> {
  const loaded = await loadState(path, { now: () => T0 });
  if (!loaded) throw new Error(`nothing stored at ${path}`);
  return loaded;
}

test('no state yet: loadState says so', async (t) => {
  const dir = await stateDir(t);
  t.is(await loadState(join(dir, 'vms.json')), undefined);
});

test('start writes a snapshot; every change appended after it is replayed, revisions, generations, leases and epoch included', async (t) => {
  const path = join(await stateDir(t), 'vms.json');
  const registry = seeded();
  const log = await StateLog.start(path, registry);
  t.teardown(() => log.close());
  await change(log, registry, (r) => r.registerVm(vm('web-2', 4), 60_000));
  await change(log, registry, (r) => r.moveVm('web-1', 'hv-2', 9));
  await change(log, registry, (r) => r.registerVm(vm('web-2', 4), 120_000)); // a renewal: no revision, a new expiry
  await change(log, registry, (r) => r.registerHypervisor({ hypervisorId: 'hv-1', vsockMode: 'host-relay', relayPort: 15200 }));
  await change(log, registry, (r) => r.deregisterVm('web-1'));
  const loaded = await load(path);
  t.deepEqual(contents(loaded.registry), contents(registry));
  t.is(loaded.registry.getVm('web-2')!.leaseExpiresAt, T0 + 120_000);
  t.deepEqual(loaded.notices, []);
  t.deepEqual((await readdir(join(path, '..'))).sort(), ['vms.json', 'vms.json.log.1']);
});

test('a restart starts from a new snapshot and removes the log it covers', async (t) => {
  const path = join(await stateDir(t), 'vms.json');
  const registry = seeded();
  const first = await StateLog.start(path, registry);
  await change(first, registry, (r) => r.registerVm(vm('web-2', 4)));
  await first.close();
  const loaded = await load(path);
  const second = await StateLog.start(path, loaded.registry);
  t.teardown(() => second.close());
  t.deepEqual((await readdir(join(path, '..'))).sort(), ['vms.json', 'vms.json.log.2']);
  t.is(await readFile(segmentPath(path, 2), 'utf8'), '');
  await change(second, loaded.registry, (r) => r.deregisterVm('web-1'));
  t.deepEqual(contents((await load(path)).registry), contents(loaded.registry));
});

test('compaction: a new segment, a snapshot of the state when the old one ended, the old segment removed; nothing lost', async (t) => {
  const path = join(await stateDir(t), 'vms.json');
  const registry = seeded();
  const compactions: Array<{ err?: unknown; segment: number }> = [];
  let compacted!: () => void;
  const done = new Promise<void>((resolve) => (compacted = resolve));
  const log = await StateLog.start(path, registry, {
    compactAfterBytes: 2_000,
    onCompaction: (r) => {
      compactions.push(r);
      compacted();
    },
  });
  t.teardown(() => log.close());
  let cid = 10;
  while (!log.wantsCompaction) await change(log, registry, (r) => r.registerVm(vm(`vm-${cid}`, cid++)));
  await log.compact(registry.records());
  t.is(log.position.segment, 2, 'appends go to the new segment at once');
  // Changes while the snapshot is written land in the new segment.
  await change(log, registry, (r) => r.deregisterVm('web-1'));
  await done;
  t.deepEqual(
    compactions.map((c) => [c.err, c.segment]),
    [[undefined, 2]],
  );
  t.deepEqual((await readdir(join(path, '..'))).sort(), ['vms.json', 'vms.json.log.2']);
  const header = JSON.parse((await readFile(path, 'utf8')).split('\n')[0]!) as { log_segment: number; vms: number };
  t.is(header.log_segment, 2);
  t.is(header.vms, cid - 10 + 1, 'the snapshot holds the state when segment 1 ended (web-1 still there)');
  t.deepEqual(contents((await load(path)).registry), contents(registry));
});

test('a compaction whose snapshot cannot be written keeps every segment: the state still reads whole', async (t) => {
  const fs = await smallFilesystem(t);
  const path = join(fs.dir, 'vms.json');
  const registry = seeded();
  const results: unknown[] = [];
  let compacted!: () => void;
  const done = new Promise<void>((resolve) => (compacted = resolve));
  const log = await StateLog.start(path, registry, {
    compactAfterBytes: 1,
    onCompaction: (r) => {
      results.push(r.err);
      compacted();
    },
  });
  t.teardown(() => log.close());
  await change(log, registry, (r) => r.registerVm(vm('web-2', 4)));
  await fs.fill();
  await log.compact(registry.records());
  await done;
  t.regex(String((results[0] as NodeJS.ErrnoException)?.code), /ENOSPC/);
  t.deepEqual((await readdir(fs.dir)).filter((n) => n.startsWith('vms.json')).sort(), ['vms.json', 'vms.json.log.1', 'vms.json.log.2']);
  await fs.free();
  await change(log, registry, (r) => r.deregisterVm('web-1'));
  t.deepEqual(contents((await load(path)).registry), contents(registry), 'snapshot + segment 1 + segment 2');
});

test('a torn last line (power lost in the middle of an append) is dropped with a notice', async (t) => {
  const path = join(await stateDir(t), 'vms.json');
  const registry = seeded();
  const log = await StateLog.start(path, registry);
  t.teardown(() => log.close());
  await change(log, registry, (r) => r.registerVm(vm('web-2', 4)));
  const acknowledged = contents(registry);
  await appendFile(segmentPath(path, 1), '{"vm":{"vmId":"web-3","hypervisorId":"hv');
  const loaded = await load(path);
  t.deepEqual(contents(loaded.registry), acknowledged);
  t.is(loaded.notices.length, 1);
  t.is(loaded.notices[0]!.reason, 'torn_tail');
  t.regex(loaded.notices[0]!.message, /vms\.json\.log\.1: line 2 is incomplete/);
});

test('a corrupt line refuses to load, naming the file and line', async (t) => {
  const path = join(await stateDir(t), 'vms.json');
  const registry = seeded();
  const log = await StateLog.start(path, registry);
  await change(log, registry, (r) => r.registerVm(vm('web-2', 4)));
  await change(log, registry, (r) => r.registerVm(vm('web-3', 5)));
  await log.close();
  const segment = segmentPath(path, 1);
  const good = await readFile(segment, 'utf8');
  const lines = good.split('\n');

  const rejects = async (text: string, message: string | RegExp): Promise<void> => {
    await writeFile(segment, text);
    const err = await t.throwsAsync(loadState(path), { instanceOf: StateFileError });
    if (typeof message === 'string') t.is(err?.message, message);
    else t.regex(err?.message ?? '', message);
  };
  await rejects([lines[0], '{"vm":', lines[1], ''].join('\n'), new RegExp(`^state file ${segment}: line 2: not JSON`));
  await rejects([lines[0], '[1,2]', ''].join('\n'), `state file ${segment}: line 2: not a JSON object`);
  // web-3 with web-2's CID: it breaks a registry rule.
  await rejects([lines[0], lines[1]!.replace('"vsockCid":5', '"vsockCid":4'), ''].join('\n'), `state file ${segment}: line 2: vm.vsock_cid: 4 is already used by VM "web-2" on hypervisor "hv-1"`);
  await rejects([lines[0], lines[1]!.replace('"revision":5', '"revision":9'), ''].join('\n'), `state file ${segment}: line 2: revision: is 9, but the change brings the registry from 4 to 5`);
  await rejects([lines[0], '{"revision":6,"removed":"nobody"}', ''].join('\n'), `state file ${segment}: line 2: removed: no VM "nobody" to remove`);
  // The snapshot too.
  await writeFile(segment, good);
  const snapshot = await readFile(path, 'utf8');
  await writeFile(path, snapshot.replace('"vsockMode":"direct"', '"vsockMode":"vmci"'));
  const err = await t.throwsAsync(loadState(path), { instanceOf: StateFileError });
  t.is(err?.message, `state file ${path}: line 3: hypervisor.vsock_mode: must be host-relay, direct or loopback (got "vmci")`);
  await writeFile(path, snapshot.split('\n').slice(0, 2).join('\n') + '\n');
  t.regex((await t.throwsAsync(loadState(path)))?.message ?? '', /: 1 records, but the header announces 2 hypervisors and 1 VMs$/);
});

test('a missing or torn segment that is not the last, and a log without its snapshot, refuse to load', async (t) => {
  const path = join(await stateDir(t), 'vms.json');
  const registry = seeded();
  const log = await StateLog.start(path, registry);
  await change(log, registry, (r) => r.registerVm(vm('web-2', 4)));
  await log.close();
  const first = await readFile(segmentPath(path, 1), 'utf8');
  await writeFile(segmentPath(path, 3), '');
  t.regex((await t.throwsAsync(loadState(path)))?.message ?? '', /line 1: log segment 2 is missing/);
  await writeFile(segmentPath(path, 2), '');
  await writeFile(segmentPath(path, 1), first.slice(0, -5));
  t.regex((await t.throwsAsync(loadState(path)))?.message ?? '', /vms\.json\.log\.1: line 1: incomplete line in a log segment that is not the last/);
  await rm(path);
  t.regex((await t.throwsAsync(loadState(path)))?.message ?? '', /vms\.json: missing, but its log .*vms\.json\.log\.1 is there/);
});

test('a failed append (full disk) leaves nothing of it in the log; the next append lands whole after the last good one', async (t) => {
  const fs = await smallFilesystem(t);
  const path = join(fs.dir, 'vms.json');
  const registry = seeded();
  const log = await StateLog.start(path, registry);
  t.teardown(() => log.close());
  await change(log, registry, (r) => r.registerVm(vm('web-2', 4)));
  const durable = contents(registry);
  const before = await readFile(segmentPath(path, 1), 'utf8');
  await fs.fill();
  // Larger than one page, so it cannot fit in what the segment's last page has left.
  const planning = registry.clone();
  const { changes } = planning.recordChanges(() => planning.registerVm(vm('big', 6, { labels: Object.fromEntries(Array.from({ length: 60 }, (_, i) => [`k${i}`, 'v'.repeat(60)])) })));
  const err = await t.throwsAsync(log.append(changes));
  t.is((err as NodeJS.ErrnoException).code, 'ENOSPC');
  t.is(await readFile(segmentPath(path, 1), 'utf8'), before, 'cut back to the acknowledged lines');
  t.deepEqual(contents((await load(path)).registry), durable);
  await fs.free();
  await change(log, registry, (r) => r.registerVm(vm('web-3', 5)));
  const after = await readFile(segmentPath(path, 1), 'utf8');
  t.true(after.startsWith(before) && !after.includes('\0') && after.endsWith('\n'), 'no hole, no torn line');
  t.deepEqual(contents((await load(path)).registry), contents(registry));
});

test('the single-JSON state file of earlier versions is read, and rewritten as a snapshot at start', async (t) => {
  const path = join(await stateDir(t), 'vms.json');
  const registry = seeded();
  registry.registerVm(vm('web-2', 4), 60_000);
  const { epoch, revision, hypervisors, vms } = registry.records();
  await writeFile(path, `${JSON.stringify({ version: 1, epoch, revision, hypervisors, vms })}\n`);
  const migrated = await load(path);
  t.deepEqual(contents(migrated.registry), contents(registry));
  t.deepEqual(
    migrated.notices.map((n) => n.reason),
    ['migrated_state_file'],
  );
  const log = await StateLog.start(path, migrated.registry);
  t.teardown(() => log.close());
  t.regex(await readFile(path, 'utf8'), /^\{"format":"vsockmesh-vm-registry-snapshot","version":2,/);
  const again = await load(path);
  t.deepEqual(contents(again.registry), contents(registry));
  t.deepEqual(again.notices, []);
});

test('a version 1 state file with a record beyond the bounds is refused, naming the record', async (t) => {
  const path = join(await stateDir(t), 'vms.json');
  const registry = seeded();
  const { epoch, revision, hypervisors, vms } = registry.records();
  const oversized = [{ ...vms[0]!, labels: { x: 'v'.repeat(4 * 1024 * 1024) } }];
  await writeFile(path, `${JSON.stringify({ version: 1, epoch, revision, hypervisors, vms: oversized })}\n`);
  const err = await t.throwsAsync(loadState(path), { instanceOf: StateFileError });
  t.is(err?.message, `state file ${path}: vms[0].labels["x"]: value is 4194304 bytes, at most 63`);
});

test('a snapshot of another format is refused', async (t) => {
  const path = join(await stateDir(t), 'vms.json');
  await writeFile(path, '{"format":"something-else","version":7}\n');
  t.regex((await t.throwsAsync(loadState(path)))?.message ?? '', /line 1: not a registry snapshot/);
  await truncate(path, 0);
  t.regex((await t.throwsAsync(loadState(path)))?.message ?? '', /empty/);
});
