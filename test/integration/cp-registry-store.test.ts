// The control plane's in-process VM manager with `--store etcd://...` (a
// real etcd): its registry lives in etcd like `vsockmesh vm-manager --store`'s,
// so replicas on one etcd serve one registry (the inventory seeded once, a
// change through one seen by the other); with etcd away it is not ready
// (saying why), answers reads, refuses writes with UNAVAILABLE, and is ready
// again by itself; with etcd away at start it waits for it before listening.

import test, { type ExecutionContext } from 'ava';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { stringify } from 'yaml';
import { EtcdStore } from '../../xds/store/etcd-store.js';
import { VmManagerClient } from '../../xds/vm-manager/client.js';
import { REGISTRY_PREFIX } from '../../xds/vm-manager/registry-store.js';
import { adminRequest } from '../helpers/admin.js';
import { waitFor } from '../helpers/apps.js';
import { startCli, type CliProcess } from '../helpers/cli.js';
import { startEtcd } from '../helpers/etcd.js';
import { freePort } from '../helpers/haproxy.js';

const SEEDED = 'the store held no registry: the inventory was written to it';

interface Plane {
  proc: CliProcess;
  vmm: VmManagerClient;
  ready(): Promise<{ status: number; body: string }>;
}

async function files(t: ExecutionContext): Promise<{ mesh: string; inventory: string }> {
  const dir = await mkdtemp(join(tmpdir(), 'vsockmesh-cp-registry-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const mesh = join(dir, 'mesh.yaml');
  const inventory = join(dir, 'inventory.yaml');
  await writeFile(mesh, stringify({ services: [{ name: 'web', port: 8080, outbound_port: await freePort() }] }));
  await writeFile(
    inventory,
    stringify({
      hypervisors: [
        { id: 'hv-1', vsock_mode: 'host-relay', relay_port: 15100 },
        { id: 'hv-2', vsock_mode: 'host-relay', relay_port: 15100 },
      ],
      vms: [{ id: 'vm-a', hypervisor: 'hv-1', cid: 3, addresses: ['127.0.0.2'] }],
    }),
  );
  return { mesh, inventory };
}

/** `vsockmesh control-plane --store` with its in-process VM manager; `ready` resolves once it logged its ready line. */
async function startPlane(t: ExecutionContext, etcdPort: number, paths: { mesh: string; inventory: string }): Promise<{ plane: Promise<Plane>; proc: CliProcess }> {
  const [port, adminPort] = [await freePort(), await freePort()];
  const address = `127.0.0.1:${port}`;
  const proc = startCli([
    ...['control-plane', '--insecure', '--listen', address, '--admin-port', String(adminPort)],
    ...['--mesh', paths.mesh, '--inventory', paths.inventory, '--store', `etcd://127.0.0.1:${etcdPort}`, '--store-insecure'],
  ]);
  t.teardown(() => proc.kill('SIGKILL'));
  const plane = proc.waitForLine((l) => l.msg === 'control-plane ready', 'control-plane ready', 90_000).then(() => {
    const vmm = new VmManagerClient(address, { defaultTimeoutMs: 30_000, transport: { insecure: true } });
    t.teardown(() => vmm.close());
    return {
      proc,
      vmm,
      ready: async () => {
        const r = await adminRequest(adminPort, 'GET', '/ready');
        return { status: r.status, body: r.body };
      },
    };
  });
  return { plane, proc };
}

test('two control planes on one etcd serve one VM registry: the inventory is seeded once, a VM registered through one resolves on the other and is in etcd', async (t) => {
  const etcd = await startEtcd(t);
  const port = Number(etcd.endpoint.split(':')[1]);
  const paths = await files(t);
  const [a, b] = await Promise.all([(await startPlane(t, port, paths)).plane, (await startPlane(t, port, paths)).plane]);
  t.is([a, b].filter((p) => p.proc.lines.some((l) => l.msg === SEEDED)).length, 1, 'exactly one replica seeds the registry');

  await a.vmm.registerVm({ vmId: 'vm-new', hypervisorId: 'hv-2', vsockCid: 9, addresses: ['127.0.0.9'], sidecar: null, services: [{ name: 'api', port: 9090 }], labels: {} });
  await waitFor(async () => (await b.vmm.getVm('vm-new')) !== undefined, 'the VM registered through replica a seen by replica b', 60_000);
  const resolved = await b.vmm.resolve('', { kind: 'service', name: 'api' });
  t.is(resolved.vm?.vmId, 'vm-new', 'replica b resolves the service of a VM registered through replica a');
  await b.vmm.moveVm('vm-a', 'hv-2');
  await waitFor(async () => (await a.vmm.getVm('vm-a'))?.hypervisorId === 'hv-2', 'a move through replica b seen by replica a', 60_000);

  const client = new EtcdStore({ endpoints: [etcd.endpoint], transport: { insecure: true } });
  t.teardown(() => client.close());
  const keys = (await client.list(REGISTRY_PREFIX)).records.map((r) => r.key.slice(REGISTRY_PREFIX.length));
  t.true(keys.includes('vms/vm-new') && keys.includes('vms/vm-a') && keys.includes('hypervisors/hv-2'), `the registry is in etcd (${keys.join(', ')})`);
  const [fromA, fromB] = await Promise.all([a.vmm.listVms(), b.vmm.listVms()]);
  t.deepEqual(fromB, fromA, 'the same registry, at the same revision, on both');
});

test('etcd goes away: the control plane is not ready saying the registry store is unavailable, answers VM reads, refuses VM writes with UNAVAILABLE; ready again by itself', async (t) => {
  const etcd = await startEtcd(t);
  const port = Number(etcd.endpoint.split(':')[1]);
  const p = await (await startPlane(t, port, await files(t))).plane;
  await waitFor(async () => (await p.ready()).status === 200, 'ready', 60_000);

  await etcd.stop();
  await waitFor(async () => (await p.ready()).status === 503, '/ready 503 once etcd is gone', 60_000);
  t.regex((await p.ready()).body, /^not ready: (mesh|registry) store unavailable/);
  t.is((await p.vmm.getVm('vm-a'))?.hypervisorId, 'hv-1', 'reads answer from the registry it has');
  await t.throwsAsync(p.vmm.moveVm('vm-a', 'hv-2'), { message: /UNAVAILABLE/ });
  t.like(p.proc.lines.find((l) => l.reason === 'registry_store_unavailable'), { level: 'warn' });

  await etcd.restart();
  await waitFor(async () => (await p.ready()).status === 200, '/ready 200 once etcd is back', 60_000);
  t.truthy(p.proc.lines.find((l) => l.msg === 'registry store reachable again: ready'));
  await p.vmm.moveVm('vm-a', 'hv-2');
  t.is((await p.vmm.getVm('vm-a'))?.hypervisorId, 'hv-2');
  const client = new EtcdStore({ endpoints: [etcd.endpoint], transport: { insecure: true } });
  t.teardown(() => client.close());
  const stored = await client.get(`${REGISTRY_PREFIX}vms/vm-a`);
  t.is((JSON.parse(stored?.value ?? '{}') as { hypervisorId?: string }).hypervisorId, 'hv-2', 'the move is in etcd');
});

test('etcd down at start: the control plane does not serve a registry it could not read; it reads (and seeds) it once etcd serves, then is ready', async (t) => {
  const etcdPort = await freePort();
  const { plane, proc } = await startPlane(t, etcdPort, await files(t));
  await proc.waitForLine((l) => l.reason === 'registry_store_unavailable', 'registry_store_unavailable', 60_000);
  t.false(proc.lines.some((l) => l.msg === 'control-plane ready'), 'not serving without the registry');
  await startEtcd(t, { clientPort: etcdPort });
  const p = await plane;
  await waitFor(async () => (await p.ready()).status === 200, '/ready 200 once etcd serves', 60_000);
  t.true(proc.lines.some((l) => l.msg === SEEDED), 'the inventory seeded etcd once it answered');
  t.is((await p.vmm.getVm('vm-a'))?.hypervisorId, 'hv-1');
});

test('a control plane following a VM manager on etcd over Watch (--vm-manager) drops a hypervisor whose record is deleted in etcd, not only the VMs on it', async (t) => {
  const etcd = await startEtcd(t);
  const paths = await files(t);
  const vmm = startCli(['vm-manager', '--insecure', '--no-admin', '--listen', '127.0.0.1:0', '--inventory', paths.inventory, '--store', `etcd://${etcd.endpoint}`, '--store-insecure']);
  t.teardown(() => vmm.kill('SIGKILL'));
  const vmmPort = String((await vmm.waitForLine((l) => l.msg === 'vm-manager serving', 'vm-manager serving', 90_000)).port);
  const adminPort = await freePort();
  const plane = startCli([
    ...['control-plane', '--insecure', '--listen', `127.0.0.1:${await freePort()}`, '--admin-port', String(adminPort)],
    ...['--mesh', paths.mesh, '--vm-manager', `127.0.0.1:${vmmPort}`],
  ]);
  t.teardown(() => plane.kill('SIGKILL'));
  await plane.waitForLine((l) => l.msg === 'control-plane ready', 'control-plane ready', 90_000);
  const registry = async (): Promise<{ vm_manager: string; hypervisors: number; vms: number }> =>
    (JSON.parse((await adminRequest(adminPort, 'GET', '/config_dump')).body) as { registry: { vm_manager: string; hypervisors: number; vms: number } }).registry;
  await waitFor(async () => (await registry()).hypervisors === 2, 'the mirror to hold both hypervisors', 60_000);
  t.deepEqual(await registry(), { vm_manager: `127.0.0.1:${vmmPort}`, hypervisors: 2, vms: 1 });

  const client = new EtcdStore({ endpoints: [etcd.endpoint], transport: { insecure: true } });
  t.teardown(() => client.close());
  await client.commit({ deletes: [`${REGISTRY_PREFIX}hypervisors/hv-1`] });
  await waitFor(async () => (await registry()).vms === 0, "vm-a (on hv-1) out of the control plane's mirror", 60_000);
  await waitFor(async () => (await registry()).hypervisors === 1, "hv-1 out of the control plane's mirror too", 60_000);
  t.deepEqual(await registry(), { vm_manager: `127.0.0.1:${vmmPort}`, hypervisors: 1, vms: 0 });
});
