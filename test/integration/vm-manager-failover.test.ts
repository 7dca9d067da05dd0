// A sidecar listing two VM manager replicas (vm_manager.addresses), with real
// processes: two `vsockmesh vm-manager` on one real etcd and a sidecar. SIGKILL
// the replica the sidecar uses: its Watch follower reconnects to the other and
// a VM moved through the survivor reaches its resolver; a Resolve whose
// replica is gone is answered by the next one within its deadline; an
// answered error stays where it was.

import test from 'ava';
import type { VmRecord } from '../../proxy/resolve/types.js';
import { VmManagerClient } from '../../xds/vm-manager/client.js';
import { ReplicaVmManagerClient } from '../../xds/vm-manager/replicas.js';
import { adminRequest } from '../helpers/admin.js';
import { waitFor } from '../helpers/apps.js';
import { startSidecarCli } from '../helpers/cli.js';
import { freePort } from '../helpers/haproxy.js';
import { metricValue } from '../helpers/sidecars.js';
import { HV1, rejection, startVmManager, startVmManagerReplicas, vm } from '../helpers/vm-manager.js';

const web1 = vm({ vmId: 'web-1', hypervisorId: 'hv-1', vsockCid: 3, addresses: ['10.0.0.11'], sidecar: { tcpPort: 15001, vsockPort: 15001 }, services: [{ name: 'web', port: 8080 }] });

const replicaGauge = (stats: string, address: string): string | undefined =>
  new RegExp(`^vsockmesh_vm_manager_replica\\{address="${address.replace(/\./g, '\\.')}"\\} (\\S+)$`, 'm').exec(stats)?.[1];

test('a sidecar listing two vm-manager replicas on one etcd: SIGKILL its replica, a move made through the survivor reaches its resolver', async (t) => {
  const { a, b } = await startVmManagerReplicas(t);
  const onB = new VmManagerClient(b.address, { defaultTimeoutMs: 10_000, transport: { insecure: true } });
  t.teardown(() => onB.close());
  await onB.registerVm(web1);

  const { admin } = await startSidecarCli(t, {
    node: { id: 'web-1' },
    vsock: { enabled: false },
    vm_manager: { addresses: [a.address, b.address] },
    insecure: true,
    admin: { port: 0 },
  });
  const dump = async () => (JSON.parse((await adminRequest(admin, 'GET', '/config_dump')).body) as { vmManager: { replica: string | null; local: VmRecord | null } }).vmManager;
  const stats = async () => (await adminRequest(admin, 'GET', '/stats')).body;
  await waitFor(async () => (await dump()).local?.hypervisorId === 'hv-1', 'the sidecar to learn its own record', 60_000);
  t.is((await dump()).replica, a.address, 'the first replica listed is used first');
  t.is(replicaGauge(await stats(), a.address), '1');

  a.proc.kill('SIGKILL');
  await a.proc.exited;
  await onB.moveVm('web-1', 'hv-2', 5);
  await waitFor(async () => (await dump()).local?.hypervisorId === 'hv-2', 'the move made through the survivor to reach the sidecar', 60_000);
  t.is((await dump()).local?.vsockCid, 5);
  t.is((await dump()).replica, b.address);
  const after = await stats();
  t.is(replicaGauge(after, b.address), '1', 'the survivor, in /stats');
  t.is(replicaGauge(after, a.address), undefined, 'the dead replica is no longer shown');

  // A client whose current replica is the dead one: one Resolve, retried on the next replica within its deadline.
  const replicas = new ReplicaVmManagerClient([a.address, b.address], { transport: { insecure: true } });
  t.teardown(() => replicas.close());
  const answer = await replicas.resolve('', { kind: 'service', name: 'web' }, { timeoutMs: 10_000 });
  t.true(answer.found);
  t.is(answer.vm?.hypervisorId, 'hv-2');
  t.is(replicas.replica, b.address);
});

test('the replica client: a call its replica cannot take moves to the next one and is answered there; an answer, even an error, is not retried elsewhere', async (t) => {
  const vmm = await startVmManager({ hypervisors: [HV1], vms: [web1] });
  t.teardown(() => vmm.stop());
  const dead = `127.0.0.1:${await freePort()}`;
  const replicas = new ReplicaVmManagerClient([dead, vmm.address], { transport: { insecure: true } });
  t.teardown(() => replicas.close());
  t.is(replicas.replica, dead);
  t.is((await replicas.resolve('', { kind: 'vm', vmId: 'web-1' }, { timeoutMs: 10_000 })).vm?.vsockCid, 3, 'answered by the live replica');
  t.is(replicas.replica, vmm.address);
  const moves = () => metricValue({ metrics: { render: () => vmm.server.metrics.metrics() } } as never, 'vsockmesh_vm_manager_requests_total', { method: 'MoveVm' });
  const before = await moves();
  const refused = await rejection(replicas.moveVm('web-1', 'hv-9'));
  t.not(refused.code, 'UNAVAILABLE');
  t.is(replicas.replica, vmm.address, 'an answered error does not move the client');
  t.is(await moves(), before + 1, 'asked once');
});
