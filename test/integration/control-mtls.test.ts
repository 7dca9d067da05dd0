// The control APIs over real mutual TLS: who may call what (each role rule
// that matters, refused with PERMISSION_DENIED and its reason), who is refused
// before any handler runs (no certificate, another CA, expired, another trust
// domain), and a server leaf rotated while an ADS stream stays up.

import test, { type ExecutionContext } from 'ava';
import * as grpc from '@grpc/grpc-js';
import { connect } from 'node:tls';
import { createLogger } from '../../proxy/runtime/log.js';
import { staticSource, type IdentityMaterial } from '../../proxy/identity/certificate-source.js';
import { MeshConfigApiClient } from '../../xds/control-plane/config-api.js';
import { ControlPlane } from '../../xds/control-plane/control-plane.js';
import { MeshStore } from '../../xds/control-plane/mesh-store.js';
import { createAdsClient, TYPE_URLS, type DiscoveryResponse__Output } from '../../xds/envoy/proto.js';
import { certificateProvider, type ControlTransport } from '../../xds/security/transport.js';
import { VmManagerClient } from '../../xds/vm-manager/client.js';
import { Registry } from '../../xds/vm-manager/registry.js';
import { waitFor } from '../helpers/apps.js';
import { LogCapture } from '../helpers/sidecars.js';
import { RotatingSource, startTestMeshCa, type TestMeshCa } from '../helpers/pki.js';
import { HV1, HV2, rejection, startVmManager, vm } from '../helpers/vm-manager.js';
import { startSidecar } from '../helpers/sidecars.js';

const meshCa = startTestMeshCa();
test.after.always(async () => (await meshCa).cleanup());

const tls = (m: IdentityMaterial): ControlTransport => ({ source: staticSource(m) });

interface Plane {
  plane: ControlPlane;
  address: string;
  registry: Registry;
  mesh: MeshStore;
  logs: LogCapture;
  source: RotatingSource;
  ca: TestMeshCa;
  /** vsockmesh_control_denied_total, summed over labels matching `labels`. */
  denied(labels?: Record<string, string>): Promise<number>;
}

async function startPlane(t: ExecutionContext): Promise<Plane> {
  const ca = await meshCa;
  const registry = new Registry();
  registry.registerHypervisor(HV1);
  registry.registerHypervisor(HV2);
  registry.registerVm(vm({ vmId: 'vm-a', hypervisorId: 'hv-1', vsockCid: 3, addresses: ['10.0.0.1'] }));
  registry.registerVm(vm({ vmId: 'vm-c', hypervisorId: 'hv-2', vsockCid: 3, addresses: ['10.0.0.3'] }));
  const mesh = MeshStore.fromConfig({ services: [{ name: 'web', port: 8080 }] });
  const logs = new LogCapture();
  const source = new RotatingSource(await ca.identity('cp', 'cp-0'));
  const plane = new ControlPlane({ mesh, logger: createLogger({ level: 'debug', destination: logs }), vms: { registry }, transport: { source }, debounce: { quietMs: 5, maxMs: 50 } });
  const address = `127.0.0.1:${await plane.start('127.0.0.1:0')}`;
  t.teardown(() => plane.stop());
  const denied = async (labels: Record<string, string> = {}): Promise<number> => {
    const metric = await plane.ads.metrics.getSingleMetric('vsockmesh_control_denied_total')!.get();
    return metric.values.filter((v) => Object.entries(labels).every(([k, want]) => v.labels[k] === want)).reduce((sum, v) => sum + v.value, 0);
  };
  return { plane, address, registry, mesh, logs, source, ca, denied };
}

function vmClient(t: ExecutionContext, address: string, transport: ControlTransport): VmManagerClient {
  const client = new VmManagerClient(address, { transport, defaultTimeoutMs: 20_000 });
  t.teardown(() => client.close());
  return client;
}

function configClient(t: ExecutionContext, address: string, transport: ControlTransport): MeshConfigApiClient {
  const client = new MeshConfigApiClient(address, transport, 20_000);
  t.teardown(() => client.close());
  return client;
}

type AdsOutcome = { response: DiscoveryResponse__Output } | { error: grpc.ServiceError };

/** Opens an ADS stream as `nodeId` and waits for its first response or its error. */
function openAds(t: ExecutionContext, address: string, credentials: grpc.ChannelCredentials, nodeId: string) {
  const client = createAdsClient(address, credentials);
  const call = client.StreamAggregatedResources();
  const responses: DiscoveryResponse__Output[] = [];
  const first = new Promise<AdsOutcome>((resolve) => {
    call.on('data', (r: DiscoveryResponse__Output) => {
      responses.push(r);
      resolve({ response: r });
    });
    call.on('error', (error: grpc.ServiceError) => resolve({ error }));
  });
  call.write({ node: { id: nodeId }, type_url: TYPE_URLS.Cluster });
  t.teardown(() => {
    call.cancel();
    client.close();
  });
  return { first, responses, call };
}

test('a sidecar certificate for vm-a cannot open ADS as vm-b (PERMISSION_DENIED other_node); as vm-a it is served', async (t) => {
  const p = await startPlane(t);
  const vmA = tls(await p.ca.identity('vm', 'vm-a'));
  const { channelCredentials } = await import('../../xds/security/transport.js');
  const asB = await openAds(t, p.address, channelCredentials(vmA), 'vm-b').first;
  t.true('error' in asB, 'the stream as vm-b must fail');
  if ('error' in asB) {
    t.is(asB.error.code, grpc.status.PERMISSION_DENIED);
    t.regex(asB.error.details, /^other_node: /);
  }
  t.is(await p.denied({ role: 'sidecar', method: 'AggregatedDiscoveryService/StreamAggregatedResources', reason: 'other_node' }), 1);
  t.true(p.logs.lines.some((l) => l.reason === 'other_node' && l.spiffe_id === 'spiffe://vsockmesh.local/vm/vm-a'), 'the refusal is logged with the caller');
  t.false(p.plane.ads.nodes.nodeIds().includes('vm-b'), 'the handler never saw a request as vm-b');

  const asA = await openAds(t, p.address, channelCredentials(vmA), 'vm-a').first;
  t.true('response' in asA, `as itself it is served: ${'error' in asA ? asA.error.message : ''}`);
});

test('a sidecar certificate cannot call MoveVm (PERMISSION_DENIED role_not_allowed) and nothing moves', async (t) => {
  const p = await startPlane(t);
  const client = vmClient(t, p.address, tls(await p.ca.identity('vm', 'vm-a')));
  const err = await rejection(client.moveVm('vm-a', 'hv-2'));
  t.is(err.code, 'PERMISSION_DENIED');
  t.regex(err.details, /^role_not_allowed: /);
  t.is(p.registry.getVm('vm-a')?.hypervisorId, 'hv-1');
  // What a sidecar may do, it can.
  t.is((await client.resolve('vm-a', { kind: 'vm', vmId: 'vm-c' })).vm?.vmId, 'vm-c');
});

test('a sidecar certificate cannot call the config API', async (t) => {
  const p = await startPlane(t);
  const client = configClient(t, p.address, tls(await p.ca.identity('vm', 'vm-a')));
  const err = await rejection(client.putService({ name: 'evil', port: 9 }));
  t.is(err.code, 'PERMISSION_DENIED');
  t.regex(err.details, /^role_not_allowed: /);
  t.false(p.mesh.rawServices().some((s) => s.name === 'evil'));
  t.is((await rejection(client.syncStatus())).code, 'PERMISSION_DENIED');
});

test('a host agent for hv-1 cannot move a VM onto hv-2 nor register one there; on hv-1 it can', async (t) => {
  const p = await startPlane(t);
  const client = vmClient(t, p.address, tls(await p.ca.identity('hv', 'hv-1')));
  const move = await rejection(client.moveVm('vm-a', 'hv-2'));
  t.is(move.code, 'PERMISSION_DENIED');
  t.regex(move.details, /^other_hypervisor: /);
  const register = await rejection(client.registerVm(vm({ vmId: 'vm-x', hypervisorId: 'hv-2', vsockCid: 9, addresses: ['10.0.0.9'] })));
  t.is(register.code, 'PERMISSION_DENIED');
  t.regex(register.details, /^other_hypervisor: /);
  // vm-c lives on hv-2: hv-1 may not take it over by registering it again, nor move it.
  t.regex((await rejection(client.registerVm(vm({ vmId: 'vm-c', hypervisorId: 'hv-1', vsockCid: 7, addresses: ['10.0.0.3'] })))).details, /^vm_on_other_hypervisor: /);
  t.regex((await rejection(client.moveVm('vm-c', 'hv-1'))).details, /^vm_on_other_hypervisor: /);
  t.is(p.registry.getVm('vm-c')?.hypervisorId, 'hv-2');
  t.is(p.registry.getVm('vm-x'), undefined);
  t.is(await p.denied({ role: 'host_agent' }), 4);

  const mine = await client.registerVm(vm({ vmId: 'vm-y', hypervisorId: 'hv-1', vsockCid: 8, addresses: ['10.0.0.8'] }));
  t.is(mine.hypervisorId, 'hv-1');
  t.is((await client.moveVm('vm-y', 'hv-1', 11)).vsockCid, 11);
});

test('an operator can move VMs and change the mesh', async (t) => {
  const p = await startPlane(t);
  const operator = tls(await p.ca.identity('operator', 'alice'));
  t.is((await vmClient(t, p.address, operator).moveVm('vm-a', 'hv-2', 5)).hypervisorId, 'hv-2');
  const api = configClient(t, p.address, operator);
  await api.putService({ name: 'api', port: 9090 });
  t.true((await api.listServices()).some((s) => s.name === 'api'));
  t.is(await p.denied(), 0);
});

/** MoveVm of vm-a onto hv-2 with raw credentials (no check of the server's identity): the error it fails with. */
async function rawMoveVm(t: ExecutionContext, p: Plane, credentials: grpc.ChannelCredentials): Promise<grpc.ServiceError | null> {
  const { vmManagerProto } = await import('../../xds/proto.js');
  const Client = vmManagerProto().vsockmesh.vmmanager.v1.VmManager;
  const raw = new Client(p.address, credentials);
  t.teardown(() => raw.close());
  return new Promise((resolve) => raw.MoveVm({ vm_id: 'vm-a', hypervisor_id: 'hv-2', vsock_cid: 5 }, { deadline: new Date(Date.now() + 20_000) }, (e) => resolve(e)));
}

/** A call with `credentials` fails at the connection: UNAVAILABLE, and no handler (nor the guard) ever saw it. */
async function refusedAtHandshake(t: ExecutionContext, p: Plane, credentials: grpc.ChannelCredentials): Promise<void> {
  const err = await rawMoveVm(t, p, credentials);
  t.is(err?.code, grpc.status.UNAVAILABLE, `refused at the connection: ${err?.message}`);
  t.is(p.registry.getVm('vm-a')?.hypervisorId, 'hv-1');
  t.is(await p.denied(), 0, 'no call reached the guard');
}

/** Client credentials trusting the plane's bundle, presenting `identity` (or no certificate). */
async function credentialsOf(p: Plane, identity: IdentityMaterial | null): Promise<grpc.ChannelCredentials> {
  const trust = certificateProvider(staticSource(await p.ca.identity('operator', 'trust-only')));
  return grpc.experimental.createCertificateProviderChannelCredentials(trust, identity === null ? null : certificateProvider(staticSource(identity)), { checkServerIdentity: () => undefined });
}

test('a client with no certificate is refused at the handshake', async (t) => {
  const p = await startPlane(t);
  await refusedAtHandshake(t, p, await credentialsOf(p, null));
});

test('a certificate from another CA is refused at the handshake', async (t) => {
  const p = await startPlane(t);
  const other = await startTestMeshCa();
  t.teardown(() => other.cleanup());
  await refusedAtHandshake(t, p, await credentialsOf(p, await other.identity('operator', 'alice')));
});

test('an expired certificate is refused at the handshake', async (t) => {
  const p = await startPlane(t);
  const expired = await p.ca.handMade({ uri: 'spiffe://vsockmesh.local/operator/alice', notBefore: new Date(Date.now() - 7_200_000), notAfter: new Date(Date.now() - 3_600_000) });
  await refusedAtHandshake(t, p, await credentialsOf(p, expired));
});

test('a certificate for another trust domain from another root is refused at the handshake', async (t) => {
  const p = await startPlane(t);
  const other = await startTestMeshCa('other.test');
  t.teardown(() => other.cleanup());
  await refusedAtHandshake(t, p, await credentialsOf(p, await other.identity('operator', 'alice')));
});

test('a certificate for another trust domain under our own root passes TLS but is refused UNAUTHENTICATED before any handler runs', async (t) => {
  const p = await startPlane(t);
  const foreign = await p.ca.handMade({ uri: 'spiffe://other.test/operator/alice' });
  const err = await rawMoveVm(t, p, await credentialsOf(p, foreign));
  t.is(err?.code, grpc.status.UNAUTHENTICATED);
  t.regex(err?.details ?? '', /^wrong_trust_domain: /);
  t.is(p.registry.getVm('vm-a')?.hypervisorId, 'hv-1');
  t.is(await p.denied({ role: 'none', reason: 'wrong_trust_domain' }), 1);
});

test('a client refuses a server that is not a control-plane replica', async (t) => {
  const ca = await meshCa;
  const registry = new Registry();
  const vmm = await startVmManager({}, { registry, transport: tls(await ca.identity('vm', 'impostor')), clientTransport: tls(await ca.identity('operator', 'alice')) });
  t.teardown(() => vmm.stop());
  const err = await rejection(vmm.client.listVms());
  t.is(err.code, 'UNAVAILABLE');
});

test('the VM manager on its own port applies the same rules: hv-1 cannot register a VM on hv-2', async (t) => {
  const ca = await meshCa;
  const registry = new Registry();
  registry.registerHypervisor(HV1);
  registry.registerHypervisor(HV2);
  const vmm = await startVmManager({}, { registry, transport: tls(await ca.identity('cp', 'vmm-0')), clientTransport: tls(await ca.identity('hv', 'hv-1')) });
  t.teardown(() => vmm.stop());
  const err = await rejection(vmm.client.registerVm(vm({ vmId: 'vm-x', hypervisorId: 'hv-2', vsockCid: 9, addresses: ['10.0.0.9'] })));
  t.is(err.code, 'PERMISSION_DENIED');
  t.is((await vmm.client.registerVm(vm({ vmId: 'vm-x', hypervisorId: 'hv-1', vsockCid: 9, addresses: ['10.0.0.9'] }))).hypervisorId, 'hv-1');
});

/** The serial of the leaf a new TLS connection to `address` is served with. */
async function servedSerial(address: string, client: IdentityMaterial): Promise<string> {
  const [host, port] = address.split(':');
  return new Promise((resolve, reject) => {
    const socket = connect({ host, port: Number(port), key: client.keyPem, cert: client.chainPem, ca: client.bundlePem, ALPNProtocols: ['h2'], checkServerIdentity: () => undefined }, () => {
      resolve(socket.getPeerCertificate().serialNumber);
      socket.destroy();
    });
    socket.on('error', reject);
  });
}

test('a rotated server leaf is used by new connections while an open ADS stream stays up and keeps receiving pushes', async (t) => {
  const p = await startPlane(t);
  const vmA = await p.ca.identity('vm', 'vm-a');
  const { channelCredentials } = await import('../../xds/security/transport.js');
  const before = await servedSerial(p.address, vmA);
  const stream = openAds(t, p.address, channelCredentials(tls(vmA)), 'vm-a');
  const first = await stream.first;
  t.true('response' in first);
  let ended = false;
  stream.call.on('error', () => (ended = true));
  stream.call.on('end', () => (ended = true));

  const next = await p.ca.identity('cp', 'cp-0');
  p.source.rotate(next);
  const after = await servedSerial(p.address, vmA);
  t.not(after, before, 'a new connection gets the new leaf');
  t.is(after.toLowerCase(), new (await import('node:crypto')).X509Certificate(next.chainPem).serialNumber.toLowerCase());

  const seen = stream.responses.length;
  await p.mesh.put('services', { name: 'after-rotation', port: 9191 });
  await waitFor(() => stream.responses.length > seen, 'a push on the stream opened before the rotation', 20_000);
  t.false(ended, 'the stream opened before the rotation is still up');
  // And a new client connects with the rotated server identity.
  t.is((await vmClient(t, p.address, tls(await p.ca.identity('operator', 'alice'))).getVm('vm-a'))?.vmId, 'vm-a');
});

test('a sidecar with a tls: section gets its configuration over mutual TLS as its own node', async (t) => {
  const p = await startPlane(t);
  const files = await p.ca.files(await p.ca.identity('vm', 'vm-a'));
  const { sidecar } = await startSidecar({ node: { id: 'vm-a' }, vsock: { enabled: false }, xds: { address: p.address }, tls: { cert: files.certPath, key: files.keyPath, ca: files.caPath } });
  t.teardown(() => sidecar.stop());
  const acked = (): boolean => p.plane.ads.syncStatus().some((s) => s.nodeId === 'vm-a' && s.lastAckVersion !== null && s.lastAckVersion !== '');
  await waitFor(acked, 'vm-a ACKs a configuration pushed over mTLS', 30_000);
  t.is(await p.denied(), 0);
});
