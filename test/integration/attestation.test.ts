// A VM's first certificate attested by its hypervisor, on the host: the
// control plane with its CA and registry over real mutual TLS (CertifyAttested:
// the CA's check and the host agent role's limits), and the host agent's
// endpoint through its seam (a stream and the CID the kernel would have
// given; AF_VSOCK is never opened here: the guest suites run the real vsock
// path) with a real VM manager client and the real CertifyAttested client.

import test, { type ExecutionContext } from 'ava';
import { mkdtemp, rm } from 'node:fs/promises';
import { createServer, connect as tcpConnect, type AddressInfo, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Registry as MetricsRegistry } from 'prom-client';
import { staticSource, type IdentityMaterial } from '../../proxy/identity/certificate-source.js';
import { samePublicKey } from '../../proxy/identity/certificate-facts.js';
import { attestationClient } from '../../proxy/identity/attestation-client.js';
import { AttestationEndpoint, type ForwardAttested } from '../../proxy/identity/attestation-endpoint.js';
import { encodeAttestationRequest, decodeAttestationResponse } from '../../proxy/identity/attestation-wire.js';
import { createCsr, generateWorkloadKeys } from '../../proxy/identity/keys-and-csr.js';
import { RenewingSource } from '../../proxy/identity/renewing-source.js';
import { trustBundle, verifySvid } from '../../proxy/identity/svid.js';
import type { VmRecord } from '../../proxy/resolve/types.js';
import { createLogger } from '../../proxy/runtime/log.js';
import { RefusalLog } from '../../proxy/runtime/refusal-log.js';
import { CallError } from '../../xds/call-error.js';
import { ControlPlane } from '../../xds/control-plane/control-plane.js';
import { MeshStore } from '../../xds/control-plane/mesh-store.js';
import { CertificateAuthority } from '../../xds/identity/ca.js';
import { certifyAttestedClient, certifyClient } from '../../xds/identity/certify-client.js';
import { IdentityService } from '../../xds/identity/certify-server.js';
import { memoryTokenStore } from '../../xds/identity/join-token-store.js';
import { JoinTokens } from '../../xds/identity/join-tokens.js';
import type { ControlTransport } from '../../xds/security/transport.js';
import { VmManagerClient } from '../../xds/vm-manager/client.js';
import { Registry } from '../../xds/vm-manager/registry.js';
import { LogCapture } from '../helpers/log-capture.js';
import { startTestMeshCa, type TestMeshCa } from '../helpers/pki.js';
import { HV1, HV2, vm } from '../helpers/vm-manager.js';

const TD = 'vsockmesh.local';
const vmId = (name: string): string => `spiffe://${TD}/vm/${name}`;
/** Leaves of the CA under test live this long: a sidecar renews within the test. */
const LEAF_MS = 4_000;

interface World {
  pki: TestMeshCa;
  plane: ControlPlane;
  address: string;
  registry: Registry;
  identity: IdentityService;
  bundlePem: string;
  tls(kind: 'vm' | 'hv' | 'cp' | 'operator', name: string): Promise<ControlTransport>;
}

const cleanups: Array<() => Promise<void>> = [];
test.after.always(async () => {
  for (const c of cleanups) await c();
});

const world: Promise<World> = (async () => {
  const dir = await mkdtemp(join(tmpdir(), 'vsockmesh-attest-'));
  const pki = await startTestMeshCa(TD, dir);
  // The CA under test issues short leaves under the same root as the long-lived identities of the callers.
  const ca = await CertificateAuthority.open({ trustDomain: TD, upstream: { dir }, leafLifetimeMs: LEAF_MS });
  const registry = new Registry();
  registry.registerHypervisor(HV1);
  registry.registerHypervisor(HV2);
  registry.registerVm(vm({ vmId: 'vm-a', hypervisorId: 'hv-1', vsockCid: 3, addresses: ['10.0.0.3'] }));
  registry.registerVm(vm({ vmId: 'vm-b', hypervisorId: 'hv-1', vsockCid: 4, addresses: ['10.0.0.4'] }));
  registry.registerVm(vm({ vmId: 'vm-c', hypervisorId: 'hv-2', vsockCid: 5, addresses: ['10.0.0.5'] }));
  const logger = createLogger({ level: 'info', destination: new LogCapture() });
  const identity = new IdentityService({ ca, tokens: await JoinTokens.open({ store: memoryTokenStore() }), logger });
  const plane = new ControlPlane({ mesh: MeshStore.fromConfig({}), logger, vms: { registry }, transport: { source: staticSource(await pki.identity('cp', 'cp-0')) }, identity, debounce: { quietMs: 5, maxMs: 50 } });
  const address = `127.0.0.1:${await plane.start('127.0.0.1:0')}`;
  cleanups.push(async () => {
    await plane.stop();
    await pki.cleanup();
    await rm(dir, { recursive: true, force: true });
  });
  return { pki, plane, address, registry, identity, bundlePem: ca.trustBundlePem().join(''), tls: async (kind, name) => ({ source: staticSource(await pki.identity(kind, name)) }) };
})();

async function certified(w: World, labels: Record<string, string>): Promise<number> {
  const metric = await w.identity.metrics.getSingleMetric('vsockmesh_certify_total')!.get();
  return metric.values.filter((v) => Object.entries(labels).every(([k, want]) => v.labels[k] === want)).reduce((sum, v) => sum + v.value, 0);
}

/** CertifyAttested as host agent `hv` (a client closed at the end of the test). */
async function hostAgent(t: ExecutionContext, w: World, hv: string): Promise<ForwardAttested> {
  const client = certifyAttestedClient(w.address, await w.tls('hv', hv));
  t.teardown(() => client.close());
  return client.forward;
}

async function refusal(t: ExecutionContext, call: Promise<unknown>): Promise<CallError> {
  const err = await t.throwsAsync(call);
  t.true(err instanceof CallError, String(err));
  return err as CallError;
}

// ---- the CA's side over real mutual TLS ---------------------------------------------------

test.serial('hv-1 forwarding vm-a\'s CSR from CID 3: the CA signs exactly vm-a, for the CSR\'s key, under the bundle', async (t) => {
  const w = await world;
  const forward = await hostAgent(t, w, 'hv-1');
  const keys = generateWorkloadKeys();
  const before = await certified(w, { result: 'issued', reason: 'attested' });
  const issued = await forward({ csr: await createCsr(keys, vmId('vm-a')), vmId: 'vm-a', cid: 3 });
  t.is(issued.spiffeId, vmId('vm-a'));
  const verdict = verifySvid(issued.chainPem, trustBundle(TD, issued.bundlePem), new Date());
  t.true(verdict.ok, verdict.ok ? '' : verdict.message);
  if (verdict.ok) {
    t.is(verdict.spiffeId, vmId('vm-a'));
    t.true(samePublicKey(keys.privateKey, verdict.leaf.publicKey));
  }
  t.is(await certified(w, { result: 'issued', reason: 'attested' }), before + 1);
});

test.serial('the host agent role\'s limits: hv-2 cannot have vm-a (on hv-1) attested, nor anyone a VM the registry does not have', async (t) => {
  const w = await world;
  const csr = await createCsr(generateWorkloadKeys(), vmId('vm-a'));
  const other = await refusal(t, (await hostAgent(t, w, 'hv-2'))({ csr, vmId: 'vm-a', cid: 3 }));
  t.is(other.code, 'PERMISSION_DENIED');
  t.regex(other.details, /^vm_on_other_hypervisor: /);
  const unknown = await refusal(t, (await hostAgent(t, w, 'hv-1'))({ csr: await createCsr(generateWorkloadKeys(), vmId('vm-z')), vmId: 'vm-z', cid: 9 }));
  t.regex(unknown.details, /^vm_on_other_hypervisor: /);
});

test.serial('only a host agent may call CertifyAttested: a sidecar for itself, an operator and a control-plane replica are refused role_not_allowed', async (t) => {
  const w = await world;
  const csr = await createCsr(generateWorkloadKeys(), vmId('vm-a'));
  for (const [kind, name] of [['vm', 'vm-a'], ['operator', 'alice'], ['cp', 'cp-1']] as const) {
    const client = certifyAttestedClient(w.address, await w.tls(kind, name));
    t.teardown(() => client.close());
    const err = await refusal(t, client.forward({ csr, vmId: 'vm-a', cid: 3 }));
    t.is(err.code, 'PERMISSION_DENIED', kind);
    t.regex(err.details, /^role_not_allowed: /, kind);
  }
});

test.serial('the CA itself refuses what the role table cannot see: a CID the registry does not give the VM, a CSR for another identity, a local CID', async (t) => {
  const w = await world;
  const forward = await hostAgent(t, w, 'hv-1');
  const cases: Array<[string, { csrFor: string; vmId: string; cid: number }]> = [
    ['cid_mismatch', { csrFor: 'vm-a', vmId: 'vm-a', cid: 4 }],
    ['wrong_identity', { csrFor: 'vm-b', vmId: 'vm-a', cid: 3 }],
    ['local_cid', { csrFor: 'vm-a', vmId: 'vm-a', cid: 1 }],
  ];
  for (const [reason, c] of cases) {
    const before = await certified(w, { result: 'refused', reason });
    const err = await refusal(t, forward({ csr: await createCsr(generateWorkloadKeys(), vmId(c.csrFor)), vmId: c.vmId, cid: c.cid }));
    t.is(err.code, 'PERMISSION_DENIED', reason);
    t.regex(err.details, new RegExp(`\\(${reason}\\)$`), reason);
    t.is(await certified(w, { result: 'refused', reason }), before + 1, `${reason} counted`);
  }
});

// ---- the host agent's endpoint, through its seam ------------------------------------------

interface Agent {
  endpoint: AttestationEndpoint;
  metrics: MetricsRegistry;
  logs: LogCapture;
  /** A connection to the endpoint that it sees as coming from `cid`. */
  connectAs(cid: number): Socket;
  attempts(labels: Record<string, string>): Promise<number>;
}

/** hv-1's endpoint with a real VM manager client and a real CertifyAttested client; `vms` replaces the VM manager's records (stale records). */
async function startAgent(t: ExecutionContext, w: World, vms?: VmRecord[]): Promise<Agent> {
  const transport = await w.tls('hv', 'hv-1');
  const vmManager = new VmManagerClient(w.address, { transport, defaultTimeoutMs: 20_000 });
  const client = certifyAttestedClient(w.address, transport);
  const metrics = new MetricsRegistry();
  const logs = new LogCapture();
  const logger = createLogger({ level: 'info', destination: logs });
  const endpoint = new AttestationEndpoint({
    hypervisorId: 'hv-1',
    vmsOnHypervisor: async () => vms ?? (await vmManager.listVms()).vms.filter((r) => r.hypervisorId === 'hv-1'),
    forward: client.forward,
    requestTimeoutMs: 20_000,
    logger,
    refusals: new RefusalLog(logger),
    metrics,
    name: 'attestation',
  });
  // One listener per CID a test uses: a connection to it is "from" that CID.
  const servers = new Map<number, Server>();
  for (const cid of [1, 3, 4, 5, 9]) {
    const server = createServer({ allowHalfOpen: true }, (socket) => void endpoint.handle(socket, cid));
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    servers.set(cid, server);
  }
  t.teardown(async () => {
    for (const s of servers.values()) await new Promise((r) => s.close(r));
    vmManager.close();
    client.close();
  });
  return {
    endpoint,
    metrics,
    logs,
    connectAs: (cid) => tcpConnect((servers.get(cid)!.address() as AddressInfo).port, '127.0.0.1'),
    attempts: async (labels) => {
      const metric = await metrics.getSingleMetric('vsockmesh_attestations_total')!.get();
      return metric.values.filter((v) => Object.entries(labels).every(([k, want]) => v.labels[k] === want)).reduce((sum, v) => sum + v.value, 0);
    },
  };
}

/** What the sidecar's attestation client gets when its connection comes from `cid`, asking as `vm`. */
async function attest(agent: Agent, cid: number, vm: string, csrFor = vm) {
  const ask = attestationClient({ vmId: vm, port: 15101, connect: () => agent.connectAs(cid), timeoutMs: 30_000 });
  const keys = generateWorkloadKeys();
  return { keys, answer: ask(await createCsr(keys, vmId(csrFor))) };
}

test.serial('through the endpoint: the guest at CID 3 asking as vm-a gets a certificate for vm-a and its own key; counted issued', async (t) => {
  const w = await world;
  const agent = await startAgent(t, w);
  const { keys, answer } = await attest(agent, 3, 'vm-a');
  const got = await answer;
  const verdict = verifySvid(got.chainPem, trustBundle(TD, got.bundlePem), new Date());
  t.true(verdict.ok && verdict.spiffeId === vmId('vm-a') && samePublicKey(keys.privateKey, verdict.leaf.publicKey));
  t.is(await agent.attempts({ result: 'issued', reason: 'attested' }), 1);
  t.true(agent.logs.lines.some((l) => l.source_cid === 3 && l.vm_id === 'vm-a'), 'the issue is logged with the CID');
});

test.serial('through the endpoint: refusals before the CA is asked: another VM\'s id from CID 4, an unregistered CID, a CID of a VM on another hypervisor, the loopback CID', async (t) => {
  const w = await world;
  const agent = await startAgent(t, w);
  const before = await certified(w, {});
  const cases: Array<[number, string, string]> = [
    [4, 'vm-a', 'other_vm'],
    [9, 'vm-a', 'unknown_cid'],
    [5, 'vm-c', 'unknown_cid'],
    [1, 'vm-a', 'local_cid'],
  ];
  for (const [cid, vm, reason] of cases) {
    const counted = await agent.attempts({ result: 'refused', reason });
    const err = await t.throwsAsync((await attest(agent, cid, vm)).answer);
    t.is((err as CallError).code, 'PERMISSION_DENIED', `${cid} ${vm}`);
    t.regex(err!.message, new RegExp(`\\(${reason}\\)$`), `${cid} ${vm}`);
    t.is(await agent.attempts({ result: 'refused', reason }), counted + 1, `${reason} counted`);
    t.true(agent.logs.lines.some((l) => l.reason === reason), `${reason} logged`);
  }
  t.is(await certified(w, {}), before, 'the CA was never asked');
});

test.serial('through the endpoint: the CA\'s own check stands when the host agent\'s records are stale (vm-c at CID 5 "on hv-1"): refused ca_refused, nothing issued', async (t) => {
  const w = await world;
  const stale = [{ ...w.registry.getVm('vm-c')!, hypervisorId: 'hv-1' }];
  const agent = await startAgent(t, w, stale);
  const err = await t.throwsAsync((await attest(agent, 5, 'vm-c')).answer);
  t.regex(err!.message, /vm_on_other_hypervisor.*\(ca_refused\)$/);
  t.is(await agent.attempts({ result: 'refused', reason: 'ca_refused' }), 1);
});

test.serial('through the endpoint: a request larger than the bound is refused from its length alone; a malformed one by what is wrong; a silent guest times out', async (t) => {
  const w = await world;
  const agent = await startAgent(t, w);
  const exchange = (bytes: Buffer): Promise<Buffer> =>
    new Promise((resolve, reject) => {
      const socket = agent.connectAs(3);
      const chunks: Buffer[] = [];
      socket.on('data', (c: Buffer) => chunks.push(c));
      socket.on('error', reject);
      socket.on('end', () => resolve(Buffer.concat(chunks)));
      socket.write(bytes);
    });
  const huge = Buffer.alloc(4);
  huge.writeUInt32BE(0x7fffffff);
  t.like(decodeAttestationResponse(await exchange(huge)), { kind: 'done', value: { ok: false, reason: 'request_too_large' } });
  const malformed = Buffer.from([0, 0, 0, 2, (1 << 3) | 2, 50]);
  t.like(decodeAttestationResponse(await exchange(malformed)), { kind: 'done', value: { ok: false, reason: 'malformed_request' } });
  t.is(await agent.attempts({ result: 'refused', reason: 'request_too_large' }), 1);
  t.is(await agent.attempts({ result: 'refused', reason: 'malformed_request' }), 1);

  const quick = new AttestationEndpoint({ hypervisorId: 'hv-1', vmsOnHypervisor: async () => [], forward: () => Promise.reject(new Error('never')), requestTimeoutMs: 200, logger: createLogger({ level: 'error' }), refusals: new RefusalLog(createLogger({ level: 'error' })), metrics: new MetricsRegistry(), name: 'attestation' });
  const half = encodeAttestationRequest({ csr: 'x'.repeat(100), vmId: 'vm-a' }).subarray(0, 20);
  const { PassThrough } = await import('node:stream');
  const stream = new PassThrough();
  stream.write(half);
  t.like(await quick.handle(stream, 3), { result: 'refused', reason: 'request_timeout' });
  t.true(stream.destroyed, 'a silent guest\'s connection is closed');
});

/** vm-a's sidecar identity as a config with `identity.attest` makes it (proxy/cmd/proxies.ts), its connection to the host agent coming from `cid`. */
function sidecarSource(t: ExecutionContext, w: World, agent: Agent, cid: number): RenewingSource {
  const certify = certifyClient(w.address, { trustDomain: TD, bootstrapBundlePem: w.bundlePem });
  const source = new RenewingSource({ spiffeId: vmId('vm-a'), certify, attest: attestationClient({ vmId: 'vm-a', port: 15101, connect: () => agent.connectAs(cid) }), logger: createLogger({ level: 'error' }) });
  t.teardown(() => source.stop());
  return source;
}

test.serial('a sidecar\'s renewing source with attest: the first certificate through the host agent, then renewals over Certify with the current certificate', async (t) => {
  const w = await world;
  const agent = await startAgent(t, w);
  const source = sidecarSource(t, w, agent, 3);
  await source.start();
  const first: IdentityMaterial = source.current();
  t.is(first.spiffeId, vmId('vm-a'));
  t.is(await agent.attempts({ result: 'issued' }), 1);
  const renewalsBefore = await certified(w, { result: 'issued', reason: 'renewal' });
  const renewed = await new Promise<IdentityMaterial>((resolve) => source.onChange(resolve));
  t.is(renewed.spiffeId, vmId('vm-a'));
  t.not(renewed.chainPem, first.chainPem);
  t.is(await certified(w, { result: 'issued', reason: 'renewal' }), renewalsBefore + 1, 'the renewal went over Certify');
  t.is(await agent.attempts({ result: 'issued' }), 1, 'not through the host agent again');
});

test.serial('a sidecar whose host agent refuses does not start: the reason is in the error', async (t) => {
  const w = await world;
  const source = sidecarSource(t, w, await startAgent(t, w), 4);
  await t.throwsAsync(source.start(), { message: /refused the first certificate .*\(other_vm\)/ });
});
