// Seeding etcd with an inventory larger than one etcd transaction takes
// (etcd with its default limits: --max-txn-ops 128, --max-request-bytes
// 1.5 MiB): one `vsockmesh vm-manager --store` seeds 300 VMs; two replicas
// started at once seed it once and serve the same registry; a seed whose
// seeder died half-way is finished by a replica with the inventory, and a
// replica without one serves only once the registry is whole.

import test from 'ava';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { stringify } from 'yaml';
import { createLogger } from '../../proxy/runtime/log.js';
import { EtcdStore } from '../../xds/store/etcd-store.js';
import { MemoryStore } from '../../xds/store/memory-store.js';
import { VmManagerClient } from '../../xds/vm-manager/client.js';
import { loadInventory, parseInventory } from '../../xds/vm-manager/inventory.js';
import { REGISTRY_PREFIX, RegistryStore } from '../../xds/vm-manager/registry-store.js';
import { startCli, type CliProcess } from '../helpers/cli.js';
import { claimSeedAndDie, startEtcd } from '../helpers/etcd.js';
import { LogCapture } from '../helpers/log-capture.js';

const VMS = 300;

/** An inventory of `VMS` VMs on 3 hypervisors, each VM a service of its own. */
function inventoryYaml(): string {
  const hypervisors = [1, 2, 3].map((i) => ({ id: `hv-${i}`, vsock_mode: 'host-relay', relay_port: 15100 }));
  const vms = Array.from({ length: VMS }, (_, i) => ({
    id: `vm-${i}`,
    hypervisor: `hv-${(i % 3) + 1}`,
    cid: 3 + Math.floor(i / 3),
    addresses: [`10.1.${Math.floor(i / 250)}.${(i % 250) + 1}`],
    sidecar: { tcp_port: 15001, vsock_port: 15001 },
    services: [{ name: `svc-${i}`, port: 8080 }],
    labels: { app: `app-${i}`, tier: 'backend' },
  }));
  return stringify({ hypervisors, vms });
}

async function setup(t: import('ava').ExecutionContext) {
  const dir = await mkdtemp(join(tmpdir(), 'vsockmesh-vmm-seed-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const etcd = await startEtcd(t);
  const inventory = join(dir, 'inventory.yaml');
  await writeFile(inventory, inventoryYaml());
  const store = ['--store', `etcd://${etcd.endpoint}`, '--store-insecure'];
  return { etcd, inventory, store };
}

/** `vsockmesh vm-manager` as a child process (killed with the test); `serving` resolves with its address. */
function vmManager(t: import('ava').ExecutionContext, args: string[]): { proc: CliProcess; serving: Promise<string> } {
  const proc = startCli(['vm-manager', '--listen', '127.0.0.1:0', '--no-admin', '--insecure', ...args]);
  t.teardown(() => proc.kill('SIGKILL'));
  const serving = proc.waitForLine((l) => l.msg === 'vm-manager serving', 'vm-manager serving', 90_000).then((l) => `127.0.0.1:${String(l.port)}`);
  return { proc, serving };
}

function client(t: import('ava').ExecutionContext, address: string): VmManagerClient {
  const c = new VmManagerClient(address, { defaultTimeoutMs: 30_000, transport: { insecure: true } });
  t.teardown(() => c.close());
  return c;
}

/** Every VM of the inventory resolves by id and by its service, where the inventory put it. */
async function assertAllResolvable(t: import('ava').ExecutionContext, c: VmManagerClient): Promise<void> {
  const unresolved: string[] = [];
  for (let i = 0; i < VMS; i++) {
    const [byId, byService] = await Promise.all([c.resolve('', { kind: 'vm', vmId: `vm-${i}` }), c.resolve('', { kind: 'service', name: `svc-${i}` })]);
    if (!byId.found || byId.vm?.hypervisorId !== `hv-${(i % 3) + 1}` || byId.vm.vsockCid !== 3 + Math.floor(i / 3) || byService.vm?.vmId !== `vm-${i}`) unresolved.push(`vm-${i}`);
  }
  t.deepEqual(unresolved, [], 'every VM of the inventory resolves');
}

test(`one vm-manager --store seeds ${VMS} VMs into an etcd with its default request limits, in several transactions; every VM resolves`, async (t) => {
  const { inventory, store } = await setup(t);
  const a = vmManager(t, [...store, '--inventory', inventory]);
  const c = client(t, await a.serving);
  const seeded = a.proc.lines.find((l) => /^registry seeded in \d+ store transactions$/.test(String(l.msg)));
  t.truthy(seeded, 'the seed is logged');
  t.like(seeded, { records: VMS + 3, written: VMS + 3 });
  t.true(Number(seeded!.transactions) > 2, 'more than one transaction of records');
  t.true(a.proc.lines.some((l) => l.msg === 'the store held no registry: the inventory was written to it'));
  const listed = await c.listVms();
  t.is(listed.vms.length, VMS);
  t.deepEqual(listed.hypervisors.map((h) => h.hypervisorId), ['hv-1', 'hv-2', 'hv-3']);
  await assertAllResolvable(t, c);
});

test(`two replicas started at once with the same ${VMS}-VM inventory: exactly one seeds, both serve the same registry`, async (t) => {
  const { inventory, store } = await setup(t);
  const replicas = [vmManager(t, [...store, '--inventory', inventory]), vmManager(t, [...store, '--inventory', inventory])];
  const [ca, cb] = (await Promise.all(replicas.map((r) => r.serving))).map((address) => client(t, address));
  const seeders = replicas.filter((r) => r.proc.lines.some((l) => l.msg === 'the store held no registry: the inventory was written to it'));
  t.is(seeders.length, 1, 'exactly one replica seeds');
  const other = replicas.find((r) => r !== seeders[0])!;
  t.true(other.proc.lines.some((l) => l.msg === 'the store holds a registry: the inventory is not applied again'));
  t.false(other.proc.lines.some((l) => /^registry seeded/.test(String(l.msg))), 'the other wrote nothing');
  const [fromA, fromB] = await Promise.all([ca!.listVms(), cb!.listVms()]);
  t.is(fromA.vms.length, VMS);
  t.deepEqual(fromB, fromA, 'the same registry, at the same revision, on both');
  await assertAllResolvable(t, cb!);
});

test('a seed whose seeder died half-way: a replica without inventory waits, one with the inventory writes only what is missing, then both serve the whole registry', async (t) => {
  const { etcd, inventory, store } = await setup(t);
  // The records of the inventory as the registry store writes them (into a memory store), to leave a part of them in etcd.
  const memory = new MemoryStore();
  const reference = await RegistryStore.open({ store: memory, logger: createLogger({ level: 'error', destination: new LogCapture() }) });
  const parsed = parseInventory(inventoryYaml(), 'inventory.yaml');
  await reference.mutate((r) => loadInventory(r, parsed));
  await reference.close();
  const records = (await memory.list(REGISTRY_PREFIX)).records.filter((r) => /\/(hypervisors|vms)\//.test(r.key));
  await memory.close();
  t.is(records.length, VMS + 3);

  // A seeder that claimed the seed, wrote two chunks and died: its lease (3 s: it must outlive the claim on a loaded machine) ends unrenewed.
  const etcdClient = new EtcdStore({ endpoints: [etcd.endpoint], transport: { insecure: true } });
  t.teardown(() => etcdClient.close());
  t.true(await claimSeedAndDie(etcdClient, REGISTRY_PREFIX, 3_000));
  const half = records.slice(0, 120);
  for (let i = 0; i < half.length; i += 60) t.true((await etcdClient.commit({ puts: half.slice(i, i + 60).map((r) => ({ key: r.key, value: r.value })) })).ok);
  const before = new Map((await etcdClient.list(REGISTRY_PREFIX)).records.map((r) => [r.key, r.modRevision]));

  const reader = vmManager(t, store);
  await reader.proc.waitForLine((l) => /^the registry in the store is not whole yet/.test(String(l.msg)), 'the replica without inventory waiting', 60_000);
  const seeder = vmManager(t, [...store, '--inventory', inventory]);
  const [readerAddress, seederAddress] = await Promise.all([reader.serving, seeder.serving]);
  t.like(seeder.proc.lines.find((l) => l.reason === 'seed_taken_over'), { level: 'warn', owner: 'dead-seeder' });
  t.like(seeder.proc.lines.find((l) => /^registry seeded in/.test(String(l.msg))), { records: VMS + 3, written: VMS + 3 - half.length });
  const after = new Map((await etcdClient.list(REGISTRY_PREFIX)).records.map((r) => [r.key, r.modRevision]));
  t.deepEqual(half.map((r) => after.get(r.key)), half.map((r) => before.get(r.key)), 'what the dead seeder wrote is not written again');

  const [cr, cs] = [client(t, readerAddress), client(t, seederAddress)];
  const [fromReader, fromSeeder] = await Promise.all([cr.listVms(), cs.listVms()]);
  t.is(fromReader.vms.length, VMS, 'the replica without inventory served only the whole registry');
  t.deepEqual(fromReader, fromSeeder);
  await assertAllResolvable(t, cr);
});
