// The multi-VM suite: this file runs INSIDE the outer QEMU guest, which is
// hypervisor hv-1 (vhost_vsock loaded, `vsockmesh control-plane` with its CA
// and the VM manager API, and `vsockmesh host-relay` as host agent hv-1, as
// processes over mutual TLS). The inner guests vm-a (CID 3), vm-b
// (CID 4) and vm-c (CID 5) reach it as CID 2 over real vhost-vsock, and each
// other only through the relay. They run no Node (minutes to start there; see
// README): they send the exact bytes a real sidecar sends, captured from one.
// Sidecars that must run run here, in the hypervisor.

import test, { type ExecutionContext } from 'ava';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { encodeRelayHeader } from '../../proxy/relay-header.js';
import { TLV, tlvText } from '../../proxy/proxy-protocol.js';
import { decodeRelayAssertion, type RelayAssertion } from '../../proxy/relay-assertion.js';
import { admitRelayed, decodeRelayedPreamble } from '../../proxy/listeners/relayed-preamble.js';
import { decodeAttestationResponse, encodeAttestationRequest, type AttestationResponse } from '../../proxy/identity/attestation-wire.js';
import { samePublicKey } from '../../proxy/identity/certificate-facts.js';
import { createCsr, generateWorkloadKeys } from '../../proxy/identity/keys-and-csr.js';
import { trustBundle, verifySvid } from '../../proxy/identity/svid.js';
import { httpGet } from '../helpers/admin-http.js';
import { collect, connect, echoTransfer, startEchoServer, waitFor, type TestServer } from '../helpers/apps.js';
import { assertInOuterGuest, loadVhostVsock, logDir, type InnerVm } from './hypervisor.js';
import {
  APP_PORT,
  Daemon,
  GUESTS,
  HYPERVISOR,
  RELAY_PORT,
  SIDECAR_PORT,
  UNREGISTERED_PORT,
  agentResult,
  bootGuest,
  captureSidecarPreamble,
  ctl,
  pattern,
  serverLog,
  sha256,
  sinkAnswer,
  serverHead,
  meshTrust,
  startRelay,
  startServers,
  startControlPlane,
  writeYaml,
  ATTESTATION_PORT,
  cleanupIdentities,
  identityFiles,
  type SidecarPreamble,
} from './topology.js';

assertInOuterGuest();

const MiB = 1024 * 1024;
/** 32 times the vsock buffer and over 100 times the relay's reads: every buffer on the way fills and drains many times. At about 55 KB/s (TCG inside TCG, one way) 16 MiB took 5 minutes, this takes half. */
const TRANSFER = 8 * MiB;
const BOOT_TIMEOUT_MS = 15 * 60_000;
/** The direct-mode sidecar and the registry-checking sidecar, both in the hypervisor. */
const SIDECAR_B = { admin: 15001, vsockPort: 15010, tcpPort: 15011 };
const SIDECAR_DIRECT = { admin: 15002, withTcp: 15021, vsockOnly: 15022, silentPorts: [15097, 15098] };

interface World {
  a: InnerVm;
  b: InnerVm;
  /** Booted once vm-a and vm-b are up (two guests boot at a time on two vCPUs). */
  c: Promise<InnerVm>;
  vms: InnerVm[];
  vmManager: Daemon;
  relay: Daemon;
  sidecarB: Daemon;
  sidecarDirect: Daemon;
  app: TestServer;
  /** What a real sidecar sends: vm-a to vm-b, vm-a to vm-c, vm-b's and vm-c's identity to vm-b. */
  fromA: SidecarPreamble;
  fromAtoC: SidecarPreamble;
  asB: SidecarPreamble;
  asC: SidecarPreamble;
  timings: Record<string, number>;
}

let world: World | undefined;

function the(): World {
  if (!world) throw new Error('the topology did not come up (see the before hook)');
  return world;
}

async function timed<T>(timings: Record<string, number>, name: string, work: Promise<T>): Promise<T> {
  const started = Date.now();
  const value = await work;
  timings[name] = Date.now() - started;
  return value;
}

test.before(async (t) => {
  const timings: Record<string, number> = {};
  const started = Date.now();
  await loadVhostVsock();
  const a = bootGuest(GUESTS.a);
  const b = bootGuest(GUESTS.b);
  const vms = [a, b];
  world = { a, b, vms } as unknown as World;
  // The hypervisor's own services start while the guests boot.
  const vmManager = await timed(timings, 'control plane ready', startControlPlane(Object.values(GUESTS)));
  const app = await startEchoServer();
  const [relay, sidecarB, sidecarDirect] = await timed(timings, 'relay and sidecars ready', Promise.all([startRelay(), startSidecarB(app), startSidecarDirect()]));
  const [fromA, fromAtoC, asB, asC] = await Promise.all([
    captureSidecarPreamble(GUESTS.a.vmId, GUESTS.b),
    captureSidecarPreamble(GUESTS.a.vmId, GUESTS.c),
    captureSidecarPreamble(GUESTS.b.vmId, GUESTS.b),
    captureSidecarPreamble(GUESTS.c.vmId, GUESTS.b),
  ]);
  for (const vm of [a, b]) {
    const ready = await vm.waitReady(BOOT_TIMEOUT_MS);
    timings[`${vm.name} ready`] = ready.readyMs;
    t.log(`${vm.name} (CID ${vm.cid}): ${ready.line}`);
  }
  const c = bootGuest(GUESTS.c);
  vms.push(c);
  const cReady = c.waitReady(BOOT_TIMEOUT_MS).then(async (ready) => {
    timings[`${c.name} ready (booted after vm-a and vm-b)`] = ready.readyMs;
    await startServers(c, GUESTS.c);
    return c;
  });
  cReady.catch(() => {});
  await startServers(b, GUESTS.b);
  timings['topology up (vm-a and vm-b)'] = Date.now() - started;
  world = { a, b, c: cReady, vms, vmManager, relay, sidecarB, sidecarDirect, app, fromA, fromAtoC, asB, asC, timings };
  t.log(`timings (ms): ${JSON.stringify(timings)}`);
});

test.after.always(async (t) => {
  const w = world as Partial<World> | undefined;
  for (const vm of w?.vms ?? []) {
    await vm.kill();
    writeFileSync(join(logDir(), `${vm.name}.qemu.log`), vm.qemuLog());
  }
  for (const d of Daemon.started) await d.stop();
  await w?.app?.close();
  await cleanupIdentities();
  if (w?.timings) t.log(`timings (ms): ${JSON.stringify(w.timings)}`);
});

/** Sidecar "vm-b" in the hypervisor: a vsock inbound checking callers against the registry, and a TCP inbound (the direct sidecar's TCP path). */
async function startSidecarB(app: TestServer): Promise<Daemon> {
  const ports = [{ port: APP_PORT, target: { address: '127.0.0.1', port: app.port } }];
  const config = writeYaml('sidecar-b.yaml', {
    node: { id: GUESTS.b.vmId },
    admin: { port: SIDECAR_B.admin },
    vm_manager: { address: '127.0.0.1:15200', query_timeout: '10s' },
    tls: await identityFiles('vm', GUESTS.b.vmId),
    listeners: [
      { kind: 'inbound', name: 'in-vsock', transport: 'vsock', port: SIDECAR_B.vsockPort, peer_authorization: 'registry', header_timeout: '60s', ports },
      { kind: 'inbound', name: 'in-tcp', addresses: ['127.0.0.1'], port: SIDECAR_B.tcpPort, ports },
    ],
  });
  return Daemon.start('sidecar-b', ['sidecar', '-c', config], SIDECAR_B.admin, 6 * 60_000);
}

/** Sidecar "vm-a" with endpoints in vsock mode `direct` to vm-b's CID: one with a TCP peer to fall back to, one without. */
function startSidecarDirect(): Promise<Daemon> {
  const endpoint = (port: number, withTcp: boolean) => ({
    address: `10.0.0.${GUESTS.b.cid}`,
    port: APP_PORT,
    vm_id: GUESTS.b.vmId,
    ...(withTcp && { peer: { address: '127.0.0.1', port: SIDECAR_B.tcpPort } }),
    vsock: { mode: 'direct', cid: GUESTS.b.cid, port },
  });
  const config = writeYaml('sidecar-direct.yaml', {
    node: { id: GUESTS.a.vmId },
    admin: { port: SIDECAR_DIRECT.admin },
    vsock: { connect_timeout: '3s' },
    listeners: [
      { kind: 'outbound', name: 'with-tcp', port: SIDECAR_DIRECT.withTcp, cluster: 'with-tcp' },
      { kind: 'outbound', name: 'vsock-only', port: SIDECAR_DIRECT.vsockOnly, cluster: 'vsock-only' },
    ],
    clusters: [
      { name: 'with-tcp', endpoints: [endpoint(SIDECAR_DIRECT.silentPorts[0]!, true)] },
      { name: 'vsock-only', endpoints: [endpoint(SIDECAR_DIRECT.silentPorts[1]!, false)] },
    ],
  });
  return Daemon.start('sidecar-direct', ['sidecar', '-c', config], SIDECAR_DIRECT.admin, 6 * 60_000);
}

/** Puts bytes into a file in an inner guest (over its control channel). */
async function upload(vm: InnerVm, path: string, bytes: Buffer): Promise<void> {
  await vm.check(`cat > ${path}`, { input: bytes });
}

const relayed = (p: SidecarPreamble, destination: { cid: number; port: number }) => Buffer.concat([encodeRelayHeader(destination), p.proxyHeader]);

/** The relay's access line for one connection, once it is written (lines are flushed every second). */
async function relayAccessLine(match: (l: Record<string, unknown>) => boolean, what: string): Promise<Record<string, unknown>> {
  await waitFor(() => the().relay.access().some(match), what, 60_000);
  return the().relay.access().find(match)!;
}

async function newAccepts(vm: InnerVm, port: number, before: number): Promise<Array<Record<string, string>>> {
  return (await serverLog(vm, port)).slice(before).filter((e) => e.event === 'accept');
}

/** The first connection vm-b's sink logged as closed after its log entry `from`, once it has. */
async function closedAfter(from: number): Promise<Record<string, string>> {
  let close: Record<string, string> | undefined;
  await waitFor(
    async () => {
      close = (await serverLog(the().b, SIDECAR_PORT)).slice(from).find((e) => e.event === 'close');
      return close !== undefined;
    },
    'vm-b\'s sink logged the connection',
    60_000,
  );
  return close!;
}

/** The last connection vm-b's sink got from the relay (CID 2); vm-a makes one through the relay if there is none yet. */
async function lastRelayed(): Promise<Record<string, string>> {
  const { a, b, fromA } = the();
  const log = await serverLog(b, SIDECAR_PORT);
  const last = log.filter((e) => e.event === 'close' && e.peer_cid === '2').at(-1);
  if (last) return last;
  await upload(a, '/run/to-b.bin', Buffer.concat([fromA.relayHeader, fromA.proxyHeader]));
  await a.run(`echo hello | vmagent connect 2 ${RELAY_PORT} --send /run/to-b.bin`);
  return closedAfter(log.length);
}

/** The relay's signed assertion that opened a connection vm-b's sink got (its first bytes, before the sidecar's PROXY v2 header). */
async function relayAssertion(close: Record<string, string>): Promise<{ bytes: Buffer; assertion: RelayAssertion; head: Buffer }> {
  const head = await serverHead(the().b, SIDECAR_PORT, close);
  const decoded = decodeRelayAssertion(head);
  if (decoded.kind !== 'assertion') throw new Error(`vm-b's connection from CID ${close.peer_cid} does not start with a relay assertion: ${decoded.kind === 'invalid' ? decoded.reason : 'cut short'}`);
  return { bytes: head.subarray(0, decoded.length), assertion: decoded.assertion, head };
}

/**
 * What the destination sidecar (vm-b: CID 4, vsock port 15006, on hv-1) makes
 * of a relayed connection's first bytes: the decoding and admission
 * inbound.ts runs on a connection from CID 2, at `now` (vm-b's sink is C).
 */
function destinationVerdict(head: Buffer, now: Date): ReturnType<typeof admitRelayed> | { kind: 'invalid'; code: string } {
  const preamble = decodeRelayedPreamble(head, 4096);
  if (preamble.kind === 'invalid') return { kind: 'invalid', code: preamble.code };
  if (preamble.kind !== 'done') throw new Error('the relayed preamble was cut short');
  const claimed = tlvText(preamble.value.header, TLV.VSOCKMESH_SOURCE_VM);
  return admitRelayed(preamble.value.assertion, meshTrust(), { hypervisorId: HYPERVISOR, destination: { cid: GUESTS.b.cid, port: SIDECAR_PORT }, now }, { kind: 'header', vmId: claimed });
}

function logTiming(t: ExecutionContext, started: number): void {
  t.log(`took ${((Date.now() - started) / 1000).toFixed(1)} s`);
}

test.serial('each inner guest has the CID its vhost-vsock device gives it, and the hypervisor drives it over vsock (host -> guest)', async (t) => {
  const { a, b } = the();
  for (const vm of [a, b]) {
    const out = await vm.check('echo "$(hostname) $(vmagent cid)"');
    t.is(out.trim(), `${vm.name} ${vm.cid}`);
  }
});

test.serial(`vm-a (CID 3) -> host relay -> vm-b (CID 4) over vhost-vsock: the sidecar's PROXY v2 header and ${TRANSFER / MiB} MiB arrive intact (sha256 taken in vm-b); the relay's access log names source CID 3 and destination CID 4`, async (t) => {
  const started = Date.now();
  const { a, b, fromA } = the();
  const preamble = Buffer.concat([fromA.relayHeader, fromA.proxyHeader]);
  t.deepEqual(fromA.relayHeader, encodeRelayHeader({ cid: GUESTS.b.cid, port: SIDECAR_PORT }), 'the sidecar names vm-b\'s CID and sidecar port to the relay');
  await upload(a, '/run/to-b.bin', preamble);
  const before = (await serverLog(b, SIDECAR_PORT)).length;
  const seed = 0x5eed;
  const r = await a.run(`vmagent connect 2 ${RELAY_PORT} --send /run/to-b.bin --pattern ${TRANSFER} ${seed}`, { timeoutMs: 15 * 60_000 });
  t.is(r.code, 0, r.stderr);
  const stream = fromA.proxyHeader.length + TRANSFER;
  const close = await closedAfter(before);
  const asserted = await relayAssertion(close);
  const answer = sinkAnswer(asserted.bytes, fromA.proxyHeader, pattern(TRANSFER, seed));
  t.is(r.stdout, answer, 'vm-b got the relay\'s assertion, then the PROXY v2 header and the payload byte for byte (the relay header went to the relay only)');
  t.like(agentResult(r.stderr), { result: 'ok', sent: String(preamble.length + TRANSFER), received: String(answer.length) });
  t.like(close, { peer_cid: '2', in: String(asserted.bytes.length + stream), end: 'eof' }, 'vm-b got the stream from the relay (CID 2)');
  const line = await relayAccessLine((l) => l.source_cid === GUESTS.a.cid && l.dst === `vsock:${GUESTS.b.cid}:${SIDECAR_PORT}`, 'the relay\'s access line');
  t.like(line, { direction: 'relay', outcome: 'closed', bytes_to_upstream: stream, bytes_to_downstream: answer.length });
  t.regex(String(line.src), new RegExp(`^vsock:${GUESTS.a.cid}:\\d+$`), 'the relay names the kernel-given source CID');
  logTiming(t, started);
});

test.serial('the relay asserts the kernel-given source: vm-b\'s sidecar check accepts what the relay signed for vm-a (CID 3) and CID 4 port 15006, refuses it for any other destination, and refuses vm-a\'s PROXY header claiming vm-b', async (t) => {
  const started = Date.now();
  const { a, fromA, asB } = the();
  await upload(a, '/run/to-b.bin', Buffer.concat([fromA.relayHeader, fromA.proxyHeader]));
  await upload(a, '/run/to-b-as-b.bin', relayed(asB, { cid: GUESTS.b.cid, port: SIDECAR_PORT }));
  const sentAt = Date.now();
  const before = (await serverLog(the().b, SIDECAR_PORT)).length;
  const r = await a.run(`echo hello | vmagent connect 2 ${RELAY_PORT} --send /run/to-b.bin`);
  t.like(agentResult(r.stderr), { result: 'ok' });
  const doneAt = Date.now();
  const { assertion, head } = await relayAssertion(await closedAfter(before));
  t.like(assertion, { sourceCid: GUESTS.a.cid, sourceVmId: GUESTS.a.vmId, destination: { cid: GUESTS.b.cid, port: SIDECAR_PORT } });
  t.true(assertion.issuedAtMs >= sentAt && assertion.issuedAtMs <= doneAt, 'the relay signed it for this connection');
  // Judged as vm-b's sidecar would on arrival (freshness is relay-assertion.test.ts's).
  const at = new Date(assertion.issuedAtMs);
  t.like(destinationVerdict(head, at), { kind: 'asserted', principal: `spiffe://vsockmesh.local/vm/${GUESTS.a.vmId}`, relay: `spiffe://vsockmesh.local/hv/${HYPERVISOR}` });
  const elsewhere = admitRelayed(assertion, meshTrust(), { hypervisorId: HYPERVISOR, destination: { cid: GUESTS.c.cid, port: SIDECAR_PORT }, now: at }, { kind: 'header', vmId: undefined });
  t.like(elsewhere, { kind: 'refused', reason: 'wrong_destination' }, 'replayed to another guest, it is refused');
  const otherRelay = admitRelayed(assertion, meshTrust(), { hypervisorId: 'hv-2', destination: { cid: GUESTS.b.cid, port: SIDECAR_PORT }, now: at }, { kind: 'header', vmId: undefined });
  t.like(otherRelay, { kind: 'refused', reason: 'wrong_relay' }, 'a guest on hv-2 trusts only hv-2\'s relay');

  const claimingB = (await serverLog(the().b, SIDECAR_PORT)).length;
  await a.run(`echo hello | vmagent connect 2 ${RELAY_PORT} --send /run/to-b-as-b.bin`);
  const claimed = await relayAssertion(await closedAfter(claimingB));
  t.is(claimed.assertion.sourceVmId, GUESTS.a.vmId, 'the relay asserts the VM behind CID 3 whatever the PROXY header claims');
  t.like(destinationVerdict(claimed.head, new Date(claimed.assertion.issuedAtMs)), { kind: 'refused', reason: 'source_vm_mismatch' });
  logTiming(t, started);
});

test.serial('a guest cannot assert a source itself: vm-a replaying the relay\'s genuine assertion straight to a sidecar (CID 2, not through the relay) is refused and counted, and through the relay it arrives after the relay\'s own and is refused', async (t) => {
  const started = Date.now();
  const { a, sidecarB, app, fromA } = the();
  const genuine = (await relayAssertion(await lastRelayed())).bytes;
  await upload(a, '/run/forged.bin', Buffer.concat([genuine, fromA.proxyHeader]));
  await upload(a, '/run/forged-relayed.bin', Buffer.concat([fromA.relayHeader, genuine, fromA.proxyHeader]));

  const refusedBefore = await sidecarB.metric('vsockmesh_header_errors_total', { listener: 'in-vsock', reason: 'not_proxy_v2' });
  const appBefore = app.accepted;
  const direct = await a.run(`echo hello | vmagent connect 2 ${SIDECAR_B.vsockPort} --send /run/forged.bin`);
  t.is(agentResult(direct.stderr).received, '0', 'no byte came back');
  await waitFor(async () => (await sidecarB.metric('vsockmesh_header_errors_total', { listener: 'in-vsock', reason: 'not_proxy_v2' })) === refusedBefore + 1, 'the refusal counted', 60_000);
  t.is(app.accepted, appBefore, 'the app behind sidecar vm-b never saw it');

  const forgedFrom = (await serverLog(the().b, SIDECAR_PORT)).length;
  await a.run(`echo hello | vmagent connect 2 ${RELAY_PORT} --send /run/forged-relayed.bin`);
  const { assertion, head } = await relayAssertion(await closedAfter(forgedFrom));
  t.like(destinationVerdict(head, new Date(assertion.issuedAtMs)), { kind: 'invalid', code: 'not_proxy_v2' }, 'the guest\'s copy comes where the PROXY v2 header must be');
  logTiming(t, started);
});

test.serial('a destination port that is not the destination VM\'s registered sidecar port is refused by the relay and counted; nothing reaches it', async (t) => {
  const started = Date.now();
  const { a, b, relay, fromA } = the();
  await upload(a, '/run/to-b-unregistered.bin', relayed(fromA, { cid: GUESTS.b.cid, port: UNREGISTERED_PORT }));
  const refusedBefore = await relay.metric('vsockmesh_connections_refused_total', { reason: 'destination_not_allowed' });
  const r = await a.run(`echo hello | vmagent connect 2 ${RELAY_PORT} --send /run/to-b-unregistered.bin`);
  t.is(agentResult(r.stderr).received, '0', 'no byte came back');
  await waitFor(async () => (await relay.metric('vsockmesh_connections_refused_total', { reason: 'destination_not_allowed' })) === refusedBefore + 1, 'the refusal counted', 60_000);
  t.like(relay.withReason('destination_not_allowed').at(-1), { source_cid: GUESTS.a.cid, dst: `vsock:${GUESTS.b.cid}:${UNREGISTERED_PORT}` });
  t.deepEqual(await newAccepts(b, UNREGISTERED_PORT, 0), [], `vm-b's server on ${UNREGISTERED_PORT} never saw a connection`);
  logTiming(t, started);
});

test.serial('a direct guest -> guest connect gets no answer at all (ETIMEDOUT, no reset) and never reaches the other guest, while the host answers at once: why host-relay mode exists', async (t) => {
  const started = Date.now();
  const { a, b } = the();
  const before = (await serverLog(b, SIDECAR_PORT)).length;
  const direct = agentResult((await a.run(`echo hello | vmagent connect ${GUESTS.b.cid} ${SIDECAR_PORT} --timeout-ms 10000`)).stderr);
  t.like(direct, { result: 'error', phase: 'connect', error: 'ETIMEDOUT' });
  t.true(Number(direct.ms) >= 9_000, `the connect waited for its whole deadline (${direct.ms} ms): the packet was dropped, not refused`);
  const host = agentResult((await a.run('echo hello | vmagent connect 2 15999 --timeout-ms 10000')).stderr);
  t.like(host, { result: 'error', phase: 'connect', error: 'ECONNRESET' }, 'the host itself answers a port without listener with a reset');
  t.deepEqual(await newAccepts(b, SIDECAR_PORT, before), [], 'vm-b never saw the direct connection');
  logTiming(t, started);
});

test.serial('a sidecar configured `direct` toward a guest that does not answer (as a guest\'s direct connect to another guest gets no answer) falls back to its TCP path within vsock.connect_timeout; without a TCP path it fails with upstream_error ETIMEDOUT', async (t) => {
  const started = Date.now();
  const { b, sidecarDirect } = the();
  const code = { from: 'vsock', to: 'tcp', code: 'ETIMEDOUT' };
  const fallbacksBefore = await sidecarDirect.metric('vsockmesh_transport_fallbacks_total', code);
  const errorsBefore = await sidecarDirect.metric('vsockmesh_upstream_connect_errors_total', { transport: 'vsock', code: 'ETIMEDOUT' });
  // A frozen guest answers nothing, like the vhost-vsock host that drops a guest's packet to another guest.
  b.pause();
  try {
    const r = await echoTransfer(SIDECAR_DIRECT.withTcp, 256 * 1024);
    t.is(r.receivedSha256, r.sentSha256, 'the connection completed over the TCP path');
    t.is(await sidecarDirect.metric('vsockmesh_transport_fallbacks_total', code), fallbacksBefore + 1);
    const client = await connect(SIDECAR_DIRECT.vsockOnly);
    const seen = collect(client);
    client.write('hello');
    const outcome = await seen;
    t.is(outcome.data.length, 0);
    t.is(outcome.errorCode, 'ECONNRESET', 'the app sees a reset, not a hang');
  } finally {
    b.resume();
  }
  await waitFor(async () => (await sidecarDirect.metric('vsockmesh_upstream_connect_errors_total', { transport: 'vsock', code: 'ETIMEDOUT' })) === errorsBefore + 1, 'the connect error counted', 30_000);
  await waitFor(() => sidecarDirect.access().length >= 2, 'two access lines', 30_000);
  const [withTcp, vsockOnly] = sidecarDirect.access().slice(-2);
  t.like(withTcp, { listener: 'with-tcp', transport: 'tcp', fallback: 'vsock->tcp', outcome: 'closed' });
  t.like(vsockOnly, { listener: 'vsock-only', transport: 'vsock', outcome: 'upstream_error', error_code: 'ETIMEDOUT' });
  logTiming(t, started);
});

test.serial('`peer_authorization: registry` checks the real kernel CID: CID 3 claiming vm-a is served; CID 3 claiming vm-b (CID 4) is refused and counted', async (t) => {
  const started = Date.now();
  const { a, sidecarB, fromA, asB } = the();
  await upload(a, '/run/as-a.bin', fromA.proxyHeader);
  await upload(a, '/run/as-b.bin', asB.proxyHeader);
  const payload = 64 * 1024;
  const served = await a.run(`vmagent connect 2 ${SIDECAR_B.vsockPort} --send /run/as-a.bin --pattern ${payload} 3 --sha256`);
  t.like(agentResult(served.stderr), { result: 'ok', received: String(payload), sha256: sha256(pattern(payload, 3)) }, 'the app behind sidecar vm-b echoed the payload');
  await waitFor(() => sidecarB.access().some((l) => l.listener === 'in-vsock'), 'sidecar vm-b\'s access line', 30_000);
  const line = sidecarB.access().find((l) => l.listener === 'in-vsock')!;
  t.like(line, { source_vm: GUESTS.a.vmId, outcome: 'closed' });
  t.regex(String(line.peer), new RegExp(`^vsock:${GUESTS.a.cid}:\\d+$`), 'the peer is named by the CID vhost-vsock gave vm-a');

  const before = await sidecarB.metric('vsockmesh_connections_refused_total', { reason: 'peer_identity_mismatch' });
  const forged = await a.run(`echo hello | vmagent connect 2 ${SIDECAR_B.vsockPort} --send /run/as-b.bin`);
  t.is(agentResult(forged.stderr).received, '0');
  await waitFor(async () => (await sidecarB.metric('vsockmesh_connections_refused_total', { reason: 'peer_identity_mismatch' })) === before + 1, 'the refusal counted', 30_000);
  t.like(sidecarB.withReason('peer_identity_mismatch').at(-1), { peer_cid: GUESTS.a.cid, source_vm: GUESTS.b.vmId });
  logTiming(t, started);
});

test.serial('a source CID the VM manager does not place on this hypervisor is refused by the relay and counted; nothing reaches the destination', async (t) => {
  const started = Date.now();
  const { b, relay, asC } = the();
  const c = await the().c;
  t.regex(await ctl(['vms', 'list']), new RegExp(`${GUESTS.c.vmId}\\s.*${GUESTS.c.placedOn}`), 'the VM manager places vm-c on hv-2');
  await upload(c, '/run/to-b.bin', relayed(asC, { cid: GUESTS.b.cid, port: SIDECAR_PORT }));
  const before = (await serverLog(b, SIDECAR_PORT)).length;
  const refusedBefore = await relay.metric('vsockmesh_connections_refused_total');
  const r = await c.run(`echo hello | vmagent connect 2 ${RELAY_PORT} --send /run/to-b.bin`);
  t.is(agentResult(r.stderr).received, '0', 'no byte came back');
  await waitFor(async () => (await relay.metric('vsockmesh_connections_refused_total')) === refusedBefore + 1, 'the refusal counted', 60_000);
  t.like(relay.proc.lines.filter((l) => l.source_cid === GUESTS.c.cid && typeof l.reason === 'string').at(-1), { dst: `vsock:${GUESTS.b.cid}:${SIDECAR_PORT}` });
  t.false(relay.access().some((l) => l.source_cid === GUESTS.c.cid), 'nothing relayed for CID 5');
  t.deepEqual(await newAccepts(b, SIDECAR_PORT, before), [], 'vm-b never saw it');
  logTiming(t, started);
});

/**
 * A guest asks the host agent for its first certificate as a sidecar would:
 * one request to CID 2 at the attestation port, the answer read to EOF. The
 * key and the CSR are made here and the guest sends the bytes (the inner
 * guests run no Node and no OpenSSL); the CID is the one vhost-vsock gives
 * the guest's connection.
 */
async function attestFrom(vm: InnerVm, asVm: string, csrFor = asVm): Promise<{ response: AttestationResponse; keys: ReturnType<typeof generateWorkloadKeys> }> {
  const keys = generateWorkloadKeys();
  const request = encodeAttestationRequest({ csr: await createCsr(keys, `spiffe://vsockmesh.local/vm/${csrFor}`), vmId: asVm });
  const file = `/run/attest-${asVm}-${csrFor}.bin`;
  await upload(vm, file, request);
  const r = await vm.run(`vmagent connect 2 ${ATTESTATION_PORT} --send ${file}`, { timeoutMs: 10 * 60_000 });
  assertConnected(r.stderr);
  const decoded = decodeAttestationResponse(Buffer.from(r.stdout, 'latin1'));
  if (decoded.kind !== 'done') throw new Error(`no complete attestation answer (${decoded.kind === 'invalid' ? decoded.reason : `${r.stdout.length} bytes`}): ${r.stderr}`);
  return { response: decoded.value, keys };
}

function assertConnected(stderr: string): void {
  const result = agentResult(stderr);
  if (result.result !== 'ok') throw new Error(`vmagent connect to the attestation port failed: ${stderr}`);
}

test.serial('attestation: the guest at CID 3 gets a certificate for vm-a through the host agent (the kernel-given CID names it); the CA signed exactly vm-a, for the key of the CSR', async (t) => {
  const started = Date.now();
  const { a, relay, vmManager } = the();
  const issuedBefore = await relay.metric('vsockmesh_attestations_total', { result: 'issued' });
  const certifiedBefore = await vmManager.metric('vsockmesh_certify_total', { result: 'issued', reason: 'attested' });
  const { response, keys } = await attestFrom(a, GUESTS.a.vmId);
  t.true(response.ok, response.ok ? '' : `${response.reason}: ${response.message}`);
  if (!response.ok) return;
  const verdict = verifySvid(response.certificateChain, trustBundle('vsockmesh.local', response.trustBundle), new Date());
  t.true(verdict.ok, verdict.ok ? '' : verdict.message);
  if (verdict.ok) {
    t.is(verdict.spiffeId, 'spiffe://vsockmesh.local/vm/vm-a');
    t.true(samePublicKey(keys.privateKey, verdict.leaf.publicKey), 'the certificate is for the key of the CSR the guest sent');
  }
  t.is(response.spiffeId, 'spiffe://vsockmesh.local/vm/vm-a');
  t.is(await relay.metric('vsockmesh_attestations_total', { result: 'issued' }), issuedBefore + 1);
  t.is(await vmManager.metric('vsockmesh_certify_total', { result: 'issued', reason: 'attested' }), certifiedBefore + 1, 'the CA signed it through CertifyAttested');
  await waitFor(() => relay.proc.lines.some((l) => l.source_cid === GUESTS.a.cid && l.vm_id === GUESTS.a.vmId), 'the host agent logged the attestation with the CID', 30_000);
  logTiming(t, started);
});

test.serial('attestation: the guest at CID 4 asking for vm-a is refused by the host agent (other_vm), and the CA is never asked', async (t) => {
  const started = Date.now();
  const { b, relay, vmManager } = the();
  const refusedBefore = await relay.metric('vsockmesh_attestations_total', { result: 'refused', reason: 'other_vm' });
  const certifyBefore = await vmManager.metric('vsockmesh_certify_total');
  const { response } = await attestFrom(b, GUESTS.a.vmId);
  t.like(response, { ok: false, reason: 'other_vm' });
  if (!response.ok) t.regex(response.message, /CID 4 is vm-b/);
  t.is(await relay.metric('vsockmesh_attestations_total', { result: 'refused', reason: 'other_vm' }), refusedBefore + 1);
  t.is(await vmManager.metric('vsockmesh_certify_total'), certifyBefore, 'no Certify call of any kind');
  logTiming(t, started);
});

test.serial('attestation: vm-a\'s own CID with a CSR for vm-b passes the host agent but the CA refuses it (wrong_identity, answered ca_refused)', async (t) => {
  const started = Date.now();
  const { a, vmManager } = the();
  const before = await vmManager.metric('vsockmesh_certify_total', { result: 'refused', reason: 'wrong_identity' });
  const { response } = await attestFrom(a, GUESTS.a.vmId, GUESTS.b.vmId);
  t.like(response, { ok: false, reason: 'ca_refused' });
  if (!response.ok) t.regex(response.message, /wrong_identity/);
  t.is(await vmManager.metric('vsockmesh_certify_total', { result: 'refused', reason: 'wrong_identity' }), before + 1);
  logTiming(t, started);
});

test.serial('attestation: a CID no VM of this hypervisor has (vm-c at CID 5, which the registry places on hv-2) is refused (unknown_cid)', async (t) => {
  const started = Date.now();
  const { relay, vmManager } = the();
  const c = await the().c;
  const refusedBefore = await relay.metric('vsockmesh_attestations_total', { result: 'refused', reason: 'unknown_cid' });
  const certifyBefore = await vmManager.metric('vsockmesh_certify_total');
  const { response } = await attestFrom(c, GUESTS.c.vmId);
  t.like(response, { ok: false, reason: 'unknown_cid' });
  t.is(await relay.metric('vsockmesh_attestations_total', { result: 'refused', reason: 'unknown_cid' }), refusedBefore + 1);
  t.is(await vmManager.metric('vsockmesh_certify_total'), certifyBefore, 'the CA was never asked');
  logTiming(t, started);
});

test.serial('the relay\'s destination guest is killed mid-transfer: the source gets a clean error, and the relay keeps serving (an open relayed connection and new ones)', async (t) => {
  const started = Date.now();
  const { a, b, relay, fromA, fromAtoC } = the();
  const c = await the().c;
  await ctl(['vms', 'move', GUESTS.c.vmId, '--hypervisor', HYPERVISOR]);
  await upload(a, '/run/to-b.bin', Buffer.concat([fromA.relayHeader, fromA.proxyHeader]));
  await upload(a, '/run/to-c.bin', Buffer.concat([fromAtoC.relayHeader, fromAtoC.proxyHeader]));
  const relayPid = relay.pid;

  // A relayed connection to vm-b that stays open across the kill.
  const heldFrom = (await serverLog(b, SIDECAR_PORT)).length;
  const held = a.start(`vmagent connect 2 ${RELAY_PORT} --send /run/to-b.bin`);
  held.write('before\n');
  await waitFor(async () => (await newAccepts(b, SIDECAR_PORT, heldFrom)).length === 1, 'the held connection relayed to vm-b', 5 * 60_000);

  const total = 256 * MiB;
  const victim = a.start(`vmagent connect 2 ${RELAY_PORT} --send /run/to-c.bin --pattern ${total} 7 --sha256`);
  victim.end();
  const toC = { listener: 'relay', cluster: `cid:${GUESTS.c.cid}` };
  await waitFor(async () => (await relay.metric('vsockmesh_bytes_total', toC)) >= MiB, 'a MiB relayed to vm-c', 5 * 60_000);
  await c.kill();
  const killedAt = Date.now();
  const r = await victim.done;
  const result = agentResult(r.stderr);
  t.is(result.result, 'error', r.stderr);
  t.true(['ECONNRESET', 'EPIPE', 'EOF'].includes(result.error!), `a clean error (${result.error}) ${((Date.now() - killedAt) / 1000).toFixed(1)} s after the kill`);
  t.log(`the source saw ${result.error} in phase ${result.phase} after ${result.sent} bytes sent, ${((Date.now() - killedAt) / 1000).toFixed(1)} s after the kill`);
  t.true(Number(result.received) < fromAtoC.proxyHeader.length + total);
  const line = await relayAccessLine((l) => l.dst === `vsock:${GUESTS.c.cid}:${SIDECAR_PORT}`, 'the relay\'s access line for vm-c');
  t.like(line, { source_cid: GUESTS.a.cid, outcome: 'upstream_error' });

  t.is(relay.pid, relayPid);
  t.is((await httpGet(relay.adminPort, '/ready')).status, 200, 'the relay is still ready');
  held.end('after\n');
  const heldResult = await held.done;
  const heldAssertion = (await relayAssertion(await closedAfter(heldFrom))).bytes;
  t.is(heldResult.stdout, sinkAnswer(heldAssertion, fromA.proxyHeader, Buffer.from('before\nafter\n')), 'the connection held across the kill carried every byte');
  t.like(agentResult(heldResult.stderr), { result: 'ok' });
  const againFrom = (await serverLog(b, SIDECAR_PORT)).length;
  const again = await a.run(`vmagent connect 2 ${RELAY_PORT} --send /run/to-b.bin --pattern ${MiB} 11`, { timeoutMs: 10 * 60_000 });
  const againAssertion = (await relayAssertion(await closedAfter(againFrom))).bytes;
  t.is(again.stdout, sinkAnswer(againAssertion, fromA.proxyHeader, pattern(MiB, 11)), 'a new relayed transfer to vm-b is intact');
  await waitFor(async () => (await relay.metric('vsockmesh_connections_active', { listener: 'relay' })) === 0, 'no relayed connection left open', 60_000);
  logTiming(t, started);
});
