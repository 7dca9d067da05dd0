// A control plane whose mesh lives in a real etcd, with etcd out of reach:
// at start (it starts anyway, not ready, refusing ADS streams and changes
// with UNAVAILABLE, and becomes ready by itself once etcd serves), and later
// (it keeps serving the mesh it has, a sidecar that connects meanwhile gets
// its listeners, changes are refused with UNAVAILABLE saying why, and it
// recovers by itself when etcd is back). Readiness as the admin /ready and
// the gRPC health service report it. The same for a VM manager whose
// registry lives in etcd (vm-manager --store). Starting without etcd is the
// control plane's whose registry is not in etcd (--vm-manager): one whose
// in-process registry is waits for etcd (cp-registry-store.test.ts).

import test, { type ExecutionContext } from 'ava';
import * as grpc from '@grpc/grpc-js';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { stringify } from 'yaml';
import { MeshConfigApiClient } from '../../xds/control-plane/config-api.js';
import { TYPE_URLS, createAdsClient } from '../../xds/envoy/proto.js';
import { healthProto } from '../../xds/proto.js';
import { adminRequest } from '../helpers/admin.js';
import { waitFor } from '../helpers/apps.js';
import { runCli, startCli, startSidecarCli, type CliProcess } from '../helpers/cli.js';
import { startEtcd } from '../helpers/etcd.js';
import { freePort } from '../helpers/haproxy.js';
import { VmManagerClient } from '../../xds/vm-manager/client.js';

interface Plane {
  proc: CliProcess;
  address: string;
  ready(): Promise<{ status: number; body: string }>;
  health(service?: string): Promise<string>;
  put(name: string, port: number): Promise<{ code: number | null; stderr: string }>;
  api: MeshConfigApiClient;
}

/**
 * A control plane on etcd at `etcdPort` (maybe not serving yet), with its admin endpoint; once it listens.
 * `remoteVmManager`: its registry in a `vsockmesh vm-manager` of its own (memory) instead of in process (in etcd).
 */
async function plane(t: ExecutionContext, etcdPort: number, options: { remoteVmManager?: boolean } = {}): Promise<Plane> {
  const dir = await mkdtemp(join(tmpdir(), 'vsockmesh-outage-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  await writeFile(join(dir, 'mesh.yaml'), stringify({ services: [{ name: 'web', port: 8080, outbound_port: await freePort() }] }));
  await writeFile(join(dir, 'inventory.yaml'), stringify({ hypervisors: [{ id: 'hv-1', vsock_mode: 'host-relay', relay_port: 15100 }], vms: [{ id: 'vm-a', hypervisor: 'hv-1', cid: 3, addresses: ['127.0.0.2'] }] }));
  const [port, adminPort] = [await freePort(), await freePort()];
  const address = `127.0.0.1:${port}`;
  let registry = ['--inventory', join(dir, 'inventory.yaml')];
  if (options.remoteVmManager === true) {
    const vmm = startCli(['vm-manager', '--insecure', '--no-admin', '--listen', '127.0.0.1:0', ...registry]);
    t.teardown(() => vmm.kill('SIGKILL'));
    registry = ['--vm-manager', `127.0.0.1:${String((await vmm.waitForLine((l) => l.msg === 'vm-manager serving', 'vm-manager serving', 60_000)).port)}`];
  }
  const proc = startCli([
    ...['control-plane', '--insecure', '--listen', address, '--admin-port', String(adminPort)],
    ...['--mesh', join(dir, 'mesh.yaml'), ...registry, '--store', `etcd://127.0.0.1:${etcdPort}`, '--store-insecure'],
  ]);
  t.teardown(() => proc.kill('SIGKILL'));
  await proc.waitForLine((l) => l.msg === 'control-plane ready', 'control-plane ready', 60_000);
  const Health = healthProto().grpc.health.v1.Health;
  const healthClient = new Health(address, grpc.credentials.createInsecure());
  t.teardown(() => healthClient.close());
  const api = new MeshConfigApiClient(address, { insecure: true }, 30_000);
  t.teardown(() => api.close());
  return {
    proc,
    address,
    api,
    ready: async () => {
      const r = await adminRequest(adminPort, 'GET', '/ready');
      return { status: r.status, body: r.body };
    },
    health: (service = '') =>
      new Promise((resolve) => healthClient.Check({ service }, (err, res) => resolve(err ? `error ${grpc.status[err.code]}` : String(res!.status)))),
    put: (name, servicePort) => runCli(['ctl', '--insecure', '--control-plane', address, '--timeout-ms', '30000', 'services', 'put', name, '--port', String(servicePort)]),
  };
}

test('etcd down at start: the control plane (its registry in a VM manager) starts not ready, refuses changes and ADS with UNAVAILABLE, and becomes ready by itself once etcd serves', async (t) => {
  const etcdPort = await freePort();
  const p = await plane(t, etcdPort, { remoteVmManager: true });
  const notReady = await p.ready();
  t.is(notReady.status, 503);
  t.regex(notReady.body, /^not ready: mesh store unavailable, no mesh read yet \(retrying\): etcd at 127\.0\.0\.1:\d+ did not answer/);
  t.is(await p.health(), 'NOT_SERVING');
  t.is(await p.health('envoy.service.discovery.v3.AggregatedDiscoveryService'), 'NOT_SERVING');
  const refused = await p.put('api', 9090);
  t.is(refused.code, 1);
  t.regex(refused.stderr, /UNAVAILABLE: not applied: mesh store unavailable, no mesh read yet \(retrying\): etcd at 127\.0\.0\.1:\d+ did not answer .*: retry once the control plane is ready/);
  t.like(p.proc.lines.find((l) => l.reason === 'mesh_store_unavailable'), { level: 'warn' });
  // An ADS stream is refused (a sidecar tries another replica), not answered with an empty mesh.
  const ads = createAdsClient(p.address, grpc.credentials.createInsecure());
  t.teardown(() => ads.close());
  const stream = ads.StreamAggregatedResources();
  const adsError = new Promise<grpc.ServiceError>((resolve) => stream.on('error', resolve));
  stream.on('data', () => t.fail('no response without a mesh'));
  stream.write({ node: { id: 'vm-a' }, type_url: TYPE_URLS.Listener });
  const failed = await adsError;
  t.is(failed.code, grpc.status.UNAVAILABLE);
  t.regex(failed.details, /^the control plane is not ready: mesh store unavailable, no mesh read yet/);

  await startEtcd(t, { clientPort: etcdPort });
  await waitFor(async () => (await p.ready()).status === 200, '/ready 200 once etcd serves', 60_000);
  t.is((await p.ready()).body, 'serving\n');
  t.is(await p.health(), 'SERVING');
  t.deepEqual((await p.api.listServices()).map((s) => s.name), ['web'], 'seeded from the mesh file once etcd answered');
  const put = await p.put('api', 9090);
  t.is(put.code, 0, put.stderr);
  t.deepEqual((await p.api.listServices()).map((s) => s.name), ['web', 'api']);
});

test('etcd goes away later: the last mesh is still served (a sidecar connecting meanwhile gets it), changes get UNAVAILABLE, not ready; back to ready by itself', async (t) => {
  const etcdPort = await freePort();
  const etcd = await startEtcd(t, { clientPort: etcdPort });
  const p = await plane(t, etcdPort);
  await waitFor(async () => (await p.ready()).status === 200, 'ready', 60_000);
  t.is(await p.health(), 'SERVING');

  await etcd.stop();
  await waitFor(async () => (await p.ready()).status === 503, '/ready 503 once etcd is gone', 60_000);
  t.regex((await p.ready()).body, /^not ready: mesh store unavailable, serving the mesh as of revision \d+ \(reconnecting\): etcd at 127\.0\.0\.1:\d+/);
  t.is(await p.health(), 'NOT_SERVING');
  t.is(await p.health('envoy.service.discovery.v3.AggregatedDiscoveryService'), 'SERVING', 'ADS still serves the last snapshot');
  const refused = await p.put('api', 9090);
  t.is(refused.code, 1);
  t.regex(refused.stderr, /UNAVAILABLE: not applied: mesh store unavailable, serving the mesh as of revision \d+ \(reconnecting\): etcd at 127\.0\.0\.1:\d+.*: retry once the control plane is ready/);
  t.deepEqual((await p.api.listServices()).map((s) => s.name), ['web'], 'reads answer from the mesh it has');
  // A sidecar that connects now gets the mesh the control plane had.
  const sidecar = await startSidecarCli(t, { node: { id: 'vm-a' }, vsock: { enabled: false }, xds: { address: p.address }, insecure: true, admin: { port: 0 } });
  const listeners = async () => (JSON.parse((await adminRequest(sidecar.admin, 'GET', '/config_dump')).body) as { xds: { applied: { listeners: Array<{ name: string }> } } }).xds.applied.listeners.map((l) => l.name);
  await waitFor(async () => (await listeners()).includes('outbound|web'), 'the last mesh served while etcd is away', 60_000);

  await etcd.restart();
  await waitFor(async () => (await p.ready()).status === 200, '/ready 200 once etcd is back', 60_000);
  t.is(await p.health(), 'SERVING');
  const put = await p.put('api', 9090);
  t.is(put.code, 0, put.stderr);
  t.deepEqual((await p.api.listServices()).map((s) => s.name), ['web', 'api']);
  t.truthy(p.proc.lines.find((l) => l.msg === 'mesh store reachable again: ready'));
});

test('a VM manager on etcd: etcd goes away, it is not ready (saying why), still answers reads, refuses writes; ready again by itself once etcd is back', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'vsockmesh-vmm-outage-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const etcd = await startEtcd(t);
  const inventory = join(dir, 'inventory.yaml');
  await writeFile(inventory, stringify({ hypervisors: [{ id: 'hv-1', vsock_mode: 'host-relay', relay_port: 15100 }, { id: 'hv-2', vsock_mode: 'host-relay', relay_port: 15100 }], vms: [{ id: 'vm-a', hypervisor: 'hv-1', cid: 3, addresses: ['127.0.0.2'] }] }));
  const [port, adminPort] = [await freePort(), await freePort()];
  const address = `127.0.0.1:${port}`;
  const proc = startCli(['vm-manager', '--insecure', '--listen', address, '--admin-port', String(adminPort), '--inventory', inventory, '--store', `etcd://${etcd.endpoint}`, '--store-insecure']);
  t.teardown(() => proc.kill('SIGKILL'));
  await proc.waitForLine((l) => l.msg === 'vm-manager ready', 'vm-manager ready', 60_000);
  const ready = async () => {
    const r = await adminRequest(adminPort, 'GET', '/ready');
    return { status: r.status, body: r.body };
  };
  const healthClient = new (healthProto().grpc.health.v1.Health)(address, grpc.credentials.createInsecure());
  t.teardown(() => healthClient.close());
  const health = (service = ''): Promise<string> =>
    new Promise((resolve) => healthClient.Check({ service }, (err, res) => resolve(err ? `error ${grpc.status[err.code]}` : String(res!.status))));
  const vmm = new VmManagerClient(address, { defaultTimeoutMs: 30_000, transport: { insecure: true } });
  t.teardown(() => vmm.close());
  t.is((await ready()).status, 200);
  t.is(await health(), 'SERVING');

  await etcd.stop();
  await waitFor(async () => (await ready()).status === 503, '/ready 503 once etcd is gone', 60_000);
  t.regex((await ready()).body, /^not ready: registry store unavailable, serving the registry as of revision \d+ \(reconnecting\): /);
  t.is(await health(), 'NOT_SERVING');
  t.is(await health('vsockmesh.vmmanager.v1.VmManager'), 'SERVING', 'the VM manager API still answers reads');
  t.is((await vmm.getVm('vm-a'))?.hypervisorId, 'hv-1', 'reads answer from the registry it has');
  await t.throwsAsync(vmm.moveVm('vm-a', 'hv-2'), { message: /UNAVAILABLE/ });
  t.like(proc.lines.find((l) => l.reason === 'registry_store_unavailable'), { level: 'warn' });

  await etcd.restart();
  await waitFor(async () => (await ready()).status === 200, '/ready 200 once etcd is back', 60_000);
  t.is(await health(), 'SERVING');
  await vmm.moveVm('vm-a', 'hv-2');
  t.is((await vmm.getVm('vm-a'))?.hypervisorId, 'hv-2');
  t.truthy(proc.lines.find((l) => l.msg === 'registry store reachable again: ready'));
});
