// xDS over real vsock, inside the guest: the control plane pushes vm-a's
// sidecar an outbound listener and vm-b's endpoint with its VM facts; both
// VMs are on the same (loopback-mode) hypervisor, so the sidecar goes over
// vsock to vm-b's sidecar, decided from the pushed metadata alone.

import test from 'ava';
import { createLogger } from '../../proxy/runtime/log.js';
import { ControlPlane } from '../../xds/control-plane/control-plane.js';
import { MeshStore } from '../../xds/control-plane/mesh-store.js';
import { Registry } from '../../xds/vm-manager/registry.js';
import { echoTransfer, startEchoServer, waitFor } from '../helpers/apps.js';
import { freePort } from '../helpers/haproxy.js';
import { startSidecar } from '../helpers/sidecars.js';
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
