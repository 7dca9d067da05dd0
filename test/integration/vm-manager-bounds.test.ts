// Bounds and pagination over real gRPC: a field beyond its bound is refused
// naming it (and ctl prints that), a request beyond the message limit never
// reaches the registry, a full registry answers RESOURCE_EXHAUSTED; ListVms
// comes in pages bounded by count and bytes, which the client and
// `ctl vms list` walk through.

import test from 'ava';
import * as grpc from '@grpc/grpc-js';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { stringify } from 'yaml';
import { runCli } from '../helpers/cli.js';
import { HV1, HV2, startVmManager, rejection, vm } from '../helpers/vm-manager.js';
import type { ListVmsResponse__Output } from '../../xds/generated/vsockmesh/vmmanager/v1/ListVmsResponse.js';
import { vmManagerProto } from '../../xds/proto.js';
import { Registry } from '../../xds/vm-manager/registry.js';

const web1 = vm({ vmId: 'web-1', hypervisorId: 'hv-1', vsockCid: 3, addresses: ['10.0.0.11'] });

test('a field beyond its bound is refused naming it, over gRPC and in ctl; a request beyond the message limit never reaches the registry', async (t) => {
  const vmm = await startVmManager({ hypervisors: [HV1] });
  t.teardown(() => vmm.stop());
  const c = vmm.client;
  const before = (await c.listVms()).revision;

  const label = await rejection(c.registerVm({ ...web1, labels: { x: 'v'.repeat(1_000) } }));
  t.like(label, { code: 'INVALID_ARGUMENT', details: 'labels["x"]: value is 1000 bytes, at most 63', answered: true });
  const services = await rejection(c.registerVm({ ...web1, services: Array.from({ length: 40 }, (_, i) => ({ name: `s${i}`, port: 80 })) }));
  t.like(services, { code: 'INVALID_ARGUMENT', details: 'services: 40 services, at most 32' });
  const resolve = await rejection(c.resolve('web-1', { kind: 'service', name: 's'.repeat(100) }));
  t.like(resolve, { code: 'INVALID_ARGUMENT', details: 'service: is 100 characters, at most 63' });
  const epoch = await new Promise<Error>((resolve) => c.watch(1, { onEvent: () => undefined, onError: resolve }, 'e'.repeat(65)));
  t.is(epoch.message, 'INVALID_ARGUMENT: epoch: is 65 characters, at most 64');

  // 4 MB: refused by the server's message limit before it is decoded.
  const huge = await rejection(c.registerVm({ ...web1, labels: { x: 'v'.repeat(4 * 1024 * 1024) } }));
  t.is(huge.code, 'RESOURCE_EXHAUSTED');
  t.regex(huge.details, /larger than max/);
  t.is((await c.listVms()).revision, before, 'nothing was registered');

  const dir = await mkdtemp(join(tmpdir(), 'vsockmesh-ctl-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const file = join(dir, 'vm.yaml');
  await writeFile(file, stringify({ id: 'web-1', hypervisor: 'hv-1', cid: 3, addresses: ['10.0.0.11'], labels: { x: 'v'.repeat(100) } }));
  const ctl = await runCli(['ctl', '--insecure', '--vm-manager', vmm.address, 'vms', 'register', '-f', file]);
  t.is(ctl.code, 1);
  t.is(ctl.stderr, 'vsockmesh ctl: INVALID_ARGUMENT: labels["x"]: value is 100 bytes, at most 63\n');
});

test('a full registry answers RESOURCE_EXHAUSTED', async (t) => {
  const registry = new Registry({ capacity: { vms: 1 } });
  const vmm = await startVmManager({ hypervisors: [HV1], vms: [web1] }, { registry });
  t.teardown(() => vmm.stop());
  const err = await rejection(vmm.client.registerVm(vm({ vmId: 'web-2', hypervisorId: 'hv-1', vsockCid: 4, addresses: ['10.0.0.12'] })));
  t.like(err, { code: 'RESOURCE_EXHAUSTED', details: 'vm_id: the registry holds 1 VMs, at most 1' });
});

test('ListVms comes in pages (hypervisors, then VMs, by id) bounded by count and bytes; the client and ctl read them all', async (t) => {
  const registry = new Registry();
  registry.registerHypervisor(HV1);
  registry.registerHypervisor(HV2);
  const n = 1_600;
  // Labels near their byte budget: about 4.3 KB per VM, so 1 MiB holds fewer than 1000.
  const labels = Object.fromEntries(Array.from({ length: 62 }, (_, i) => [`${String(i).padStart(2, '0')}${'k'.repeat(40)}`, 'v'.repeat(23)]));
  const ids: string[] = [];
  for (let i = 0; i < n; i++) {
    const vmId = `vm-${String(i).padStart(4, '0')}`;
    ids.push(vmId);
    registry.registerVm(vm({ vmId, hypervisorId: i % 2 ? 'hv-1' : 'hv-2', vsockCid: 3 + i, addresses: [`10.6.${i >> 8}.${i & 255}`], labels: i < 1_100 ? {} : labels }));
  }
  const vmm = await startVmManager({}, { registry });
  t.teardown(() => vmm.stop());

  const Client = vmManagerProto().vsockmesh.vmmanager.v1.VmManager;
  const raw = new Client(vmm.address, grpc.credentials.createInsecure());
  t.teardown(() => raw.close());
  const page = (page_size: number, page_token: string) =>
    new Promise<ListVmsResponse__Output>((resolve, reject) => raw.ListVms({ page_size, page_token }, (err, res) => (err ? reject(err as Error) : resolve(res!))));

  const pages: ListVmsResponse__Output[] = [];
  let token = '';
  do {
    const p = await page(1_000, token);
    pages.push(p);
    token = p.next_page_token;
  } while (token !== '' && pages.length < 100);
  t.deepEqual(
    pages.flatMap((p) => p.hypervisors.map((h) => h.hypervisor_id)),
    ['hv-1', 'hv-2'],
  );
  t.deepEqual(
    pages.flatMap((p) => p.vms.map((v) => v.vm_id)),
    ids,
    'every VM once, in id order',
  );
  t.is(pages[0]!.vms.length + pages[0]!.hypervisors.length, 1_000, 'small records: the page is bounded by page_size');
  // Then the large records: pages that are not the last stop well before 1000, at 1 MiB of records.
  const bytesBound = pages.slice(1, -1).map((p) => p.vms.length);
  t.true(bytesBound.length >= 2 && bytesBound.every((count) => count < 400), `pages bounded by bytes (${bytesBound.join(', ')} VMs)`);

  const defaults = await page(0, '');
  t.is(defaults.hypervisors.length + defaults.vms.length, 500, 'page_size 0: the default');
  const tooLarge = await page(1_001, '').catch((err: grpc.ServiceError) => err);
  t.like(tooLarge, { code: grpc.status.INVALID_ARGUMENT, details: 'page_size: must be 0 (the default, 500) or at most 1000 (got 1001)' });

  const all = await vmm.client.listVms();
  t.deepEqual(
    all.vms.map((v) => v.vmId),
    ids,
  );
  t.is(all.hypervisors.length, 2);

  const ctl = await runCli(['ctl', '--insecure', '--vm-manager', vmm.address, 'vms', 'list']);
  t.is(ctl.code, 0, ctl.stderr);
  t.deepEqual(
    ctl.stdout
      .trim()
      .split('\n')
      .map((l) => l.split('\t')[0]),
    ids,
  );
});
