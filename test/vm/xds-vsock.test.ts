// xDS over real vsock, inside the guest: the control plane pushes vm-a's
// sidecar an outbound listener and vm-b's endpoint with its VM facts; both
// VMs are on the same (loopback-mode) hypervisor, so the sidecar goes over
// vsock to vm-b's sidecar, decided from the pushed metadata alone; and the
// pushed policies hold on vm-b's vsock inbound for the registry-checked caller.

import test from 'ava';
import { createLogger } from '../../proxy/runtime/log.js';
import { ControlPlane } from '../../xds/control-plane/control-plane.js';
import { MeshStore } from '../../xds/control-plane/mesh-store.js';
import { Registry } from '../../xds/vm-manager/registry.js';
import { collect, connect, echoTransfer, startEchoServer, waitFor } from '../helpers/apps.js';
import { freePort } from '../helpers/haproxy.js';
import { metricValue, startSidecar } from '../helpers/sidecars.js';
import { vm } from '../helpers/vm-manager.js';
import { MiB, assertInGuest } from './guest-env.js';

assertInGuest();

test.serial('an endpoint pushed over xDS on our hypervisor is reached over vsock; moved to another hypervisor, over TCP', async (t) => {
  const app = await startEchoServer('127.0.0.3');
  const b = await startSidecar({
    node: { id: 'vm-b' },
    listeners: [
      { kind: 'inbound', name: 'in-tcp', addresses: ['127.0.0.3'], port: 0, ports: [{ port: app.port, target: { address: '127.0.0.3', port: app.port } }] },
      { kind: 'inbound', name: 'in-vsock', transport: 'vsock', port: 0, allowed_peer_cids: [1], ports: [{ port: app.port, target: { address: '127.0.0.3', port: app.port } }] },
    ],
  });
  const registry = new Registry();
  registry.registerHypervisor({ hypervisorId: 'hv-1', vsockMode: 'loopback', relayPort: 0 });
  registry.registerHypervisor({ hypervisorId: 'hv-2', vsockMode: 'loopback', relayPort: 0 });
  registry.registerVm(vm({ vmId: 'vm-a', hypervisorId: 'hv-1', vsockCid: 1, addresses: ['127.0.0.2'], sidecar: { tcpPort: 0, vsockPort: 1 } }));
  const vmB = vm({
    vmId: 'vm-b',
    hypervisorId: 'hv-1',
    vsockCid: 1,
    addresses: ['127.0.0.3'],
    sidecar: { tcpPort: b.sidecar.listenerAddress('in-tcp').port, vsockPort: b.sidecar.listenerAddress('in-vsock').port },
    services: [{ name: 'echo', port: app.port }],
  });
  registry.registerVm(vmB);
  const outboundPort = await freePort();
  const plane = new ControlPlane({
    mesh: MeshStore.fromConfig({ services: [{ name: 'echo', port: app.port, outbound_port: outboundPort }] }),
    logger: createLogger({ level: 'silent' }),
    vms: { registry },
    transport: { insecure: true },
    debounce: { quietMs: 10, maxMs: 100 },
  });
  const port = await plane.start('127.0.0.1:0');
  const a = await startSidecar({ node: { id: 'vm-a' }, vsock: { connect_timeout: '10s' }, xds: { address: `127.0.0.1:${port}` }, insecure: true });
  t.teardown(async () => {
    await a.sidecar.stop();
    await plane.stop();
    await b.sidecar.stop();
    await app.close();
  });
  await waitFor(() => a.sidecar.xds!.clusters.get('echo')?.endpoints[0] !== undefined && a.sidecar.xds!.placement !== null, 'the endpoint and our placement', 30_000);
  t.like(a.sidecar.xds!.clusters.get('echo')!.endpoints[0]!.vm, { hypervisorId: 'hv-1', sidecar: { vsock: { cid: 1, port: b.sidecar.listenerAddress('in-vsock').port } }, vsockReach: { mode: 'direct' } });
  const r = await echoTransfer(outboundPort, 2 * MiB);
  t.is(r.receivedSha256, r.sentSha256);
  await waitFor(() => b.logs.access().length === 1, 'vm-b saw it');
  t.like(b.logs.access()[0], { listener: 'in-vsock', transport: 'vsock', source_vm: 'vm-a' });
  t.regex(String(b.logs.access()[0]!.peer), /^vsock:1:\d+$/);
  await waitFor(() => a.logs.access().length === 1, 'vm-a logged it');
  t.like(a.logs.access()[0], { transport: 'vsock', transport_reason: 'same_hypervisor', dst_vm: 'vm-b' });

  registry.moveVm('vm-b', 'hv-2');
  await waitFor(() => a.sidecar.xds!.clusters.get('echo')?.endpoints[0]?.vm?.hypervisorId === 'hv-2', 'the endpoint on hv-2', 30_000);
  const r2 = await echoTransfer(outboundPort, 1 * MiB);
  t.is(r2.receivedSha256, r2.sentSha256);
  await waitFor(() => b.logs.access().length === 2, 'vm-b saw the second');
  t.like(b.logs.access()[1], { listener: 'in-tcp', transport: 'tcp', source_vm: 'vm-a' });
  await waitFor(() => a.logs.access().length === 2, 'vm-a logged the second');
  t.like(a.logs.access()[1], { transport: 'tcp', transport_reason: 'other_hypervisor', dst_vm: 'vm-b' });
});

test.serial('a policy pushed over xDS applies on the vsock inbound too, by the principal the registry check gives the caller', async (t) => {
  const app = await startEchoServer('127.0.0.3');
  t.teardown(() => app.close());
  const registry = new Registry();
  registry.registerHypervisor({ hypervisorId: 'hv-1', vsockMode: 'loopback', relayPort: 0 });
  // Under vsock_loopback every sidecar is CID 1: vm-a and vm-c both pass the registry check, each as itself.
  registry.registerVm(vm({ vmId: 'vm-a', hypervisorId: 'hv-1', vsockCid: 1, addresses: ['127.0.0.2'], sidecar: { tcpPort: 0, vsockPort: 1 } }));
  registry.registerVm(vm({ vmId: 'vm-c', hypervisorId: 'hv-1', vsockCid: 1, addresses: ['127.0.0.4'], sidecar: { tcpPort: 0, vsockPort: 2 } }));
  const tcpPort = await freePort('127.0.0.3');
  const plane = new ControlPlane({
    mesh: MeshStore.fromConfig({
      services: [{ name: 'echo', port: app.port, outbound_port: await freePort() }],
      policies: [{ name: 'echo-from-a', service: 'echo', action: 'ALLOW', principals: ['spiffe://vsockmesh.local/vm/vm-a'] }],
    }),
    logger: createLogger({ level: 'silent' }),
    vms: { registry },
    transport: { insecure: true },
    debounce: { quietMs: 10, maxMs: 100 },
  });
  const address = `127.0.0.1:${await plane.start('127.0.0.1:0')}`;
  t.teardown(() => plane.stop());
  // vm-b: the vsock inbound is its own (static, registry-checked); the policies come with the inbound listener the control plane pushes.
  const b = await startSidecar({
    node: { id: 'vm-b' },
    vm_manager: { address, query_timeout: '5s' },
    xds: { address },
    insecure: true,
    listeners: [{ kind: 'inbound', name: 'in-vsock', transport: 'vsock', port: 0, peer_authorization: 'registry', ports: [{ port: app.port, target: { address: '127.0.0.3', port: app.port } }] }],
  });
  t.teardown(() => b.sidecar.stop());
  const vsockPort = b.sidecar.listenerAddress('in-vsock').port;
  registry.registerVm(vm({ vmId: 'vm-b', hypervisorId: 'hv-1', vsockCid: 1, addresses: ['127.0.0.3'], sidecar: { tcpPort, vsockPort }, services: [{ name: 'echo', port: app.port }] }));
  const client = (id: string) =>
    startSidecar({
      node: { id },
      vsock: { connect_timeout: '10s' },
      listeners: [{ kind: 'outbound', name: 'out', port: 0, cluster: 'b' }],
      clusters: [{ name: 'b', endpoints: [{ address: '127.0.0.3', port: app.port, vm_id: 'vm-b', vsock: { cid: 1, port: vsockPort } }] }],
    });
  const a = await client('vm-a');
  t.teardown(() => a.sidecar.stop());
  const c = await client('vm-c');
  t.teardown(() => c.sidecar.stop());
  await waitFor(() => b.sidecar.authorization.current.has(app.port), 'vm-b has the policy', 60_000);

  const r = await echoTransfer(a.sidecar.listenerAddress('out').port, 64 * 1024);
  t.is(r.receivedSha256, r.sentSha256, 'vm-a is allowed');
  await waitFor(() => b.logs.access().length === 1, 'vm-b logged vm-a');
  t.like(b.logs.access()[0], { listener: 'in-vsock', transport: 'vsock', source_vm: 'vm-a', principal: 'spiffe://vsockmesh.local/vm/vm-a' });

  const socket = await connect(c.sidecar.listenerAddress('out').port);
  const seen = collect(socket);
  socket.end('from vm-c');
  t.is((await seen).data.length, 0, 'vm-c is denied');
  await waitFor(async () => (await metricValue(b.sidecar, 'vsockmesh_rbac_denied_total', { listener: 'in-vsock', policy: 'default_deny' })) === 1, 'the denial counted');
  t.like(b.logs.withReason('policy_denied')[0], { listener: 'in-vsock', principal: 'spiffe://vsockmesh.local/vm/vm-c', source_vm: 'vm-c' });
  t.is(app.accepted, 1, 'only vm-a reached the app');
});
