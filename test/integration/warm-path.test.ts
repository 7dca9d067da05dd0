// The inbound warm path (README, "The inbound warm path"): the same
// connections through the core's replay and through JavaScript give the same
// access lines and counters; what would change a decision (a policy, a
// generation bump) reaches replayed connections too; limits, bad headers,
// drain and a large transfer hold on a warm key.

import test, { type ExecutionContext } from 'ava';
import type net from 'node:net';
import { TLV, encodeProxyHeader, textTlv } from '../../proxy/proxy-protocol.js';
import type { InboundListener } from '../../proxy/listeners/inbound.js';
import type { Listener } from '../../proxy/listeners/listener.js';
import { native } from '../../proxy/native/index.js';
import { warmInvalidate } from '../../proxy/native/warm.js';
import { collect, connect, randomPayload, sha256, startBlackHole, startEchoServer, waitFor, type TestServer } from '../helpers/apps.js';
import { metricValue, startSidecar, type TestSidecar } from '../helpers/sidecars.js';

interface Gate {
  app: TestServer;
  side: TestSidecar;
  port: number;
  inbound: InboundListener;
}

async function startGate(t: ExecutionContext, warm: boolean, inbound: Record<string, unknown> = {}, top: Record<string, unknown> = {}): Promise<Gate> {
  const app = await startEchoServer();
  const side = await startSidecar({
    ...top,
    node: { id: 'vm-b' },
    listeners: [{ kind: 'inbound', name: 'inbound', addresses: ['127.0.0.1'], port: 0, header_timeout: '300ms', ports: [{ port: app.port, proxy_protocol: false }], warm_path: warm, ...inbound }],
  });
  t.teardown(async () => {
    await side.sidecar.stop();
    await app.close();
  });
  const listeners = (side.sidecar as unknown as { listeners: Listener[] }).listeners;
  return { app, side, port: side.sidecar.listenerAddress('inbound').port, inbound: listeners.find((l) => l.name === 'inbound') as InboundListener };
}

function header(dstPort: number, sourcePort = 40000): Buffer {
  return encodeProxyHeader({
    command: 'proxy',
    addresses: { family: 'inet', transport: 'stream', source: { address: '10.0.0.1', port: sourcePort }, destination: { address: '10.0.0.2', port: dstPort } },
    tlvs: [textTlv(TLV.VSOCKMESH_SOURCE_VM, 'vm-a'), textTlv(TLV.AUTHORITY, 'db.mesh')],
  });
}

/** One connection: header and payload, half-close, everything echoed back. */
async function exchange(gate: Gate, payload: Buffer, sourcePort = 40000): Promise<Buffer> {
  // Made before connecting: this process runs the sidecar too, and a long copy would eat its header_timeout.
  const bytes = Buffer.concat([header(gate.app.port, sourcePort), payload]);
  const socket = await connect(gate.port);
  const seen = collect(socket);
  socket.write(bytes);
  socket.end();
  return (await seen).data;
}

const COUNTERS = ['vsockmesh_connections_total', 'vsockmesh_bytes_total', 'vsockmesh_connections_closed_total', 'vsockmesh_connections_refused_total', 'vsockmesh_header_errors_total'];

async function counters(gate: Gate, names: string[] = COUNTERS): Promise<Record<string, number>> {
  return Object.fromEntries(await Promise.all(names.map(async (name) => [name, await metricValue(gate.side.sidecar, name)] as const)));
}

function comparable(line: Record<string, unknown>): Record<string, unknown> {
  const rest: Record<string, unknown> = { ...line, peer: String(line.peer).replace(/:\d+$/, ':PORT') };
  delete rest.duration_ms;
  delete rest.time;
  return rest;
}

/** The gate's access lines as comparable (the app's port as APP). */
function comparableLines(gate: Gate): Record<string, unknown>[] {
  const app = String(gate.app.port);
  return gate.side.logs.access().map((l) => comparable({ ...l, dst: String(l.dst).replace(app, 'APP'), upstream: String(l.upstream).replace(app, 'APP'), cluster: String(l.cluster).replace(app, 'APP') }));
}

test.serial('the same connections through the warm path and through JavaScript: identical access lines (but timings and the peer port) and counters', async (t) => {
  const warm = await startGate(t, true);
  const slow = await startGate(t, false);
  for (const gate of [warm, slow]) {
    for (let i = 0; i < 5; i++) {
      const payload = Buffer.from(`hello ${i} `.repeat(i + 1));
      t.deepEqual(await exchange(gate, payload, 40000 + i), payload);
    }
    await waitFor(() => gate.side.logs.access().length === 5, 'five access lines');
  }
  t.is(warm.inbound.warmFinishedCount, 4, 'the first connection decided, the next four replayed');
  t.is(slow.inbound.warmFinishedCount, 0);
  t.deepEqual(comparableLines(warm), comparableLines(slow));
  t.deepEqual(await counters(warm), await counters(slow));
});

const COUNTERS_WITH_RBAC = [...COUNTERS, 'vsockmesh_rbac_allowed_total', 'vsockmesh_rbac_denied_total'];

/** A policy on the app's port (or `port`) allowing `principals` (ALLOW), or denying everyone (DENY); `shadow`: a shadow filter too. */
function policy(gate: Gate, action: 'ALLOW' | 'DENY', shadow = false, port = gate.app.port) {
  const rules = { action, policies: [{ name: action === 'ALLOW' ? 'everyone' : 'no-one', principals: [{ kind: 'any' as const }] }] };
  return new Map([[port, [{ rules, shadowRules: shadow ? { action: 'DENY' as const, policies: [{ name: 'dry', principals: [{ kind: 'exact' as const, id: 'spiffe://td/vm/nobody' }] }] } : null }]]]);
}

test.serial('a port whose policy allows the peer: replayed, with the access lines and counters (rbac_allowed_total each connection) of warm_path: false', async (t) => {
  const warm = await startGate(t, true);
  const slow = await startGate(t, false);
  for (const gate of [warm, slow]) {
    gate.side.sidecar.authorization.replace(policy(gate, 'ALLOW'));
    for (let i = 0; i < 5; i++) {
      const payload = Buffer.from(`allowed ${i} `.repeat(i + 1));
      t.deepEqual(await exchange(gate, payload, 41000 + i), payload);
    }
    await waitFor(() => gate.side.logs.access().length === 5, 'five access lines');
  }
  t.is(warm.inbound.warmFinishedCount, 4, 'the first connection decided, the next four replayed');
  t.deepEqual(comparableLines(warm), comparableLines(slow));
  const seen = await counters(warm, COUNTERS_WITH_RBAC);
  t.deepEqual(seen, await counters(slow, COUNTERS_WITH_RBAC));
  t.is(seen.vsockmesh_rbac_allowed_total, 5);
});

test.serial('a port with a shadow filter stays on the slow path (the shadow is evaluated per connection)', async (t) => {
  const gate = await startGate(t, true);
  gate.side.sidecar.authorization.replace(policy(gate, 'ALLOW', true));
  for (let i = 0; i < 3; i++) await exchange(gate, Buffer.from('x'), 42000 + i);
  await waitFor(() => gate.side.logs.access().length === 3, 'three access lines');
  t.is(gate.inbound.warmFinishedCount, 0);
  t.is(await metricValue(gate.side.sidecar, 'vsockmesh_rbac_allowed_total'), 3);
});

test.serial('a policy change from allowing to denying closes an open replayed connection (policy_revoked) and refuses the next', async (t) => {
  const gate = await startGate(t, true);
  gate.side.sidecar.authorization.replace(policy(gate, 'ALLOW'));
  await exchange(gate, Buffer.from('decide'));
  await exchange(gate, Buffer.from('replayed'));
  await waitFor(() => gate.inbound.warmFinishedCount === 1, 'one replay');
  const socket = await connect(gate.port);
  const seen = collect(socket);
  socket.write(Buffer.concat([header(gate.app.port), Buffer.from('open')]));
  await waitFor(() => gate.app.accepted === 3, 'the open connection reached the app');
  gate.side.sidecar.authorization.replace(policy(gate, 'DENY'));
  const closed = await seen;
  t.true(closed.ended || closed.errorCode !== undefined, 'the open warm connection was closed');
  await waitFor(async () => (await metricValue(gate.side.sidecar, 'vsockmesh_rbac_revoked_total')) === 1, 'revocation counted');
  t.is(gate.side.logs.withReason('policy_revoked').length, 1);
  await waitFor(() => gate.inbound.warmFinishedCount === 2, 'the open connection was a replayed one; its record read');
  t.is(gate.side.logs.access()[2]!.outcome, 'aborted');
  t.deepEqual(await exchange(gate, Buffer.from('again')), Buffer.alloc(0));
  await waitFor(async () => (await metricValue(gate.side.sidecar, 'vsockmesh_connections_refused_total', { reason: 'policy_denied' })) === 1, 'the next one refused');
  t.is(gate.inbound.warmFinishedCount, 2);
  t.is(await metricValue(gate.side.sidecar, 'vsockmesh_rbac_allowed_total'), 3, 'each allowed connection counted once, replayed or not');
});

test.serial('a generation bump (any change a decision read) sends the next connection to JavaScript again', async (t) => {
  const gate = await startGate(t, true);
  await exchange(gate, Buffer.from('a'));
  await exchange(gate, Buffer.from('b'));
  await waitFor(() => gate.inbound.warmFinishedCount === 1, 'one replay');
  warmInvalidate();
  await exchange(gate, Buffer.from('c'));
  await waitFor(() => gate.side.logs.access().length === 3, 'three lines');
  t.is(gate.inbound.warmFinishedCount, 1, 'decided again in JavaScript');
  await exchange(gate, Buffer.from('d'));
  await waitFor(() => gate.inbound.warmFinishedCount === 2, 'replayed again after the new decision');
  t.is(gate.side.logs.access().length, 4);
});

test.serial('a policy denying the source closes an open warm connection (policy_revoked) and refuses new ones', async (t) => {
  const gate = await startGate(t, true);
  await exchange(gate, Buffer.from('decide'));
  const socket = await connect(gate.port);
  const seen = collect(socket);
  socket.write(Buffer.concat([header(gate.app.port), Buffer.from('open')]));
  await waitFor(() => gate.app.accepted === 2, 'the open connection reached the app');
  const deny = new Map([[gate.app.port, [{ rules: { action: 'DENY' as const, policies: [{ name: 'no-one', principals: [{ kind: 'any' as const }] }] }, shadowRules: null }]]]);
  gate.side.sidecar.authorization.replace(deny);
  const closed = await seen;
  t.true(closed.ended || closed.errorCode !== undefined, 'the open warm connection was closed');
  await waitFor(async () => (await metricValue(gate.side.sidecar, 'vsockmesh_rbac_revoked_total')) === 1, 'revocation counted');
  t.is(gate.side.logs.withReason('policy_revoked').length, 1);
  await waitFor(() => gate.side.logs.access().length === 2, 'the aborted connection has its access line');
  t.is(gate.side.logs.access()[1]!.outcome, 'aborted');
  t.deepEqual(await exchange(gate, Buffer.from('again')), Buffer.alloc(0));
  await waitFor(async () => (await metricValue(gate.side.sidecar, 'vsockmesh_connections_refused_total', { reason: 'policy_denied' })) === 1, 'the next one refused');
});

/** One connection decides the key, then two replayed ones are held open (a limit of 2 reached). */
async function decideThenHoldTwo(gate: Gate): Promise<net.Socket[]> {
  await exchange(gate, Buffer.from('decide'));
  await waitFor(() => gate.inbound.activeConnections === 0, 'the deciding connection closed');
  const open: net.Socket[] = [];
  for (let i = 0; i < 2; i++) {
    const s = await connect(gate.port);
    s.write(Buffer.concat([header(gate.app.port), Buffer.from('hold')]));
    open.push(s);
  }
  await waitFor(() => gate.app.accepted === 3, 'two held open');
  return open;
}

test.serial('max_connections holds with replayed connections', async (t) => {
  const gate = await startGate(t, true, { max_connections: 2 });
  const open = await decideThenHoldTwo(gate);
  // Refused at accept with a reset: the connect itself may fail, or the bytes come back as nothing.
  t.deepEqual(await exchange(gate, Buffer.from('third')).catch(() => Buffer.alloc(0)), Buffer.alloc(0));
  await waitFor(async () => (await metricValue(gate.side.sidecar, 'vsockmesh_connections_refused_total', { reason: 'listener_max_connections' })) === 1, 'refused over the limit');
  t.is(gate.inbound.warmFinishedCount, 0, 'the two held open are replayed, still open');
  for (const s of open) s.destroy();
  await waitFor(() => gate.inbound.activeConnections === 0, 'both closed');
  t.is(gate.inbound.warmFinishedCount, 2);
  t.deepEqual(await exchange(gate, Buffer.from('after')), Buffer.from('after'));
});

test.serial('overload.max_connections (process-wide) counts replayed connections and refuses the next as JavaScript does', async (t) => {
  const gate = await startGate(t, true, {}, { overload: { max_connections: 2 } });
  const open = await decideThenHoldTwo(gate);
  t.deepEqual(await exchange(gate, Buffer.from('third')).catch(() => Buffer.alloc(0)), Buffer.alloc(0));
  await waitFor(async () => (await metricValue(gate.side.sidecar, 'vsockmesh_connections_refused_total', { reason: 'max_connections' })) === 1, 'refused over the process-wide limit');
  t.is(gate.app.accepted, 3, 'the third never reached the app');
  t.is(gate.inbound.warmFinishedCount, 0, 'the two held open are replayed, still open');
  for (const s of open) s.destroy();
  await waitFor(() => gate.inbound.activeConnections === 0, 'both closed');
  t.is(gate.inbound.warmFinishedCount, 2);
  t.deepEqual(await exchange(gate, Buffer.from('after')), Buffer.from('after'));
  t.is(gate.inbound.warmFinishedCount, 3, 'below the limit again, replayed');
});

test.serial('overload shedding refuses connections on a warm key as JavaScript does, and the replay resumes after it', async (t) => {
  const gate = await startGate(t, true);
  const monitor = gate.side.sidecar.overload;
  // The memory threshold moved under the monitor (the options it reads on each check): one check and it is overloaded.
  const thresholds = (monitor as unknown as { options: { thresholds: { maxMemoryBytes: number | null } } }).options.thresholds;
  await exchange(gate, Buffer.from('decide'));
  await waitFor(() => gate.inbound.activeConnections === 0, 'the deciding connection closed');
  thresholds.maxMemoryBytes = 1;
  monitor.check();
  t.true(monitor.overloaded);
  t.deepEqual(await exchange(gate, Buffer.from('shed')).catch(() => Buffer.alloc(0)), Buffer.alloc(0));
  await waitFor(async () => (await metricValue(gate.side.sidecar, 'vsockmesh_connections_refused_total', { reason: 'overload' })) === 1, 'shed');
  t.is(gate.app.accepted, 1, 'the shed connection never reached the app');
  t.is(gate.inbound.warmFinishedCount, 0);
  thresholds.maxMemoryBytes = null;
  monitor.check();
  t.false(monitor.overloaded);
  t.deepEqual(await exchange(gate, Buffer.from('after')), Buffer.from('after'));
  await waitFor(() => gate.inbound.warmFinishedCount === 1, 'replayed again');
});

test.serial('a bad header on a warm key is refused with the reason JavaScript gives', async (t) => {
  const gate = await startGate(t, true);
  await exchange(gate, Buffer.from('decide'));
  const good = header(gate.app.port);
  const bad = Buffer.from(good);
  bad[12] = 0x23; // version 2, command 3
  const socket = await connect(gate.port);
  const seen = collect(socket);
  socket.write(bad);
  await seen;
  await waitFor(async () => (await metricValue(gate.side.sidecar, 'vsockmesh_header_errors_total', { reason: 'bad_command' })) === 1, 'bad_command counted');
  t.is(gate.side.logs.withReason('bad_command').length, 1);
  t.is(gate.app.accepted, 1);
});

test.serial('a header cut short on a warm key times out as today', async (t) => {
  const gate = await startGate(t, true);
  await exchange(gate, Buffer.from('decide'));
  const socket = await connect(gate.port);
  const seen = collect(socket);
  socket.write(header(gate.app.port).subarray(0, 20));
  await seen;
  await waitFor(async () => (await metricValue(gate.side.sidecar, 'vsockmesh_header_errors_total', { reason: 'header_timeout' })) === 1, 'header_timeout counted');
  t.is(gate.app.accepted, 1);
});

test.serial('a header longer than the core\'s first read (256 bytes), sent in two pieces, is replayed whole: echo, access line and open-connection list', async (t) => {
  const gate = await startGate(t, true);
  await exchange(gate, Buffer.from('decide'));
  const authority = `${'a'.repeat(600)}.mesh`;
  const long = encodeProxyHeader({
    command: 'proxy',
    addresses: { family: 'inet', transport: 'stream', source: { address: '10.0.0.1', port: 40000 }, destination: { address: '10.0.0.2', port: gate.app.port } },
    tlvs: [textTlv(TLV.VSOCKMESH_SOURCE_VM, 'vm-a'), textTlv(TLV.AUTHORITY, authority)],
  });
  t.true(long.length > 512);
  const socket = await connect(gate.port);
  const seen = collect(socket);
  socket.write(long.subarray(0, 200));
  await new Promise((r) => setTimeout(r, 50));
  socket.write(Buffer.concat([long.subarray(200), Buffer.from('long header')]));
  await waitFor(() => gate.app.accepted === 2, 'the second connection reached the app');
  // The open warm connection's header as policies re-read it (warmList): revoking by a DENY policy still finds it.
  const deny = new Map([[gate.app.port, [{ rules: { action: 'DENY' as const, policies: [{ name: 'no-one', principals: [{ kind: 'any' as const }] }] }, shadowRules: null }]]]);
  gate.side.sidecar.authorization.replace(deny);
  const closed = await seen;
  t.deepEqual(closed.data, Buffer.from('long header'));
  await waitFor(() => gate.side.logs.access().length === 2, 'two lines');
  t.is(gate.inbound.warmFinishedCount, 1, 'replayed by the core');
  t.like(gate.side.logs.access()[1], { authority, outcome: 'aborted' });
});

test.serial('drain waits for an open warm connection and refuses new ones', async (t) => {
  const gate = await startGate(t, true);
  await exchange(gate, Buffer.from('decide'));
  const socket = await connect(gate.port);
  const seen = collect(socket);
  socket.write(Buffer.concat([header(gate.app.port), Buffer.from('open')]));
  await waitFor(() => gate.app.accepted === 2, 'open');
  let drained = false;
  const drain = gate.inbound.drain().then(() => {
    drained = true;
  });
  await new Promise((r) => setTimeout(r, 100));
  t.false(drained, 'the warm connection holds the drain');
  await t.throwsAsync(connect(gate.port));
  socket.end();
  await seen;
  await drain;
  t.true(drained);
});

test.serial('a stop closes a connection still sending its header in the core (not handed over or replayed after it)', async (t) => {
  const gate = await startGate(t, true);
  await exchange(gate, Buffer.from('decide'));
  await waitFor(() => gate.inbound.activeConnections === 0, 'the deciding connection closed');
  const socket = await connect(gate.port);
  const seen = collect(socket);
  socket.write(header(gate.app.port).subarray(0, 20));
  await waitFor(() => gate.inbound.activeConnections === 1, 'the core reads its header');
  await gate.inbound.stop();
  t.is(gate.inbound.activeConnections, 0, 'closed by the stop itself');
  const closed = await seen;
  t.true(closed.ended || closed.errorCode !== undefined);
  t.is(gate.app.accepted, 1, 'never reached the app');
});

test.serial('a drain\'s deadline closes a connection still sending its header in the core, and the drain ends', async (t) => {
  // A long header_timeout: only the deadline's close ends the connection.
  const gate = await startGate(t, true, { header_timeout: '60s' });
  await exchange(gate, Buffer.from('decide'));
  await waitFor(() => gate.inbound.activeConnections === 0 && gate.side.logs.access().length === 1, 'the deciding connection closed');
  const socket = await connect(gate.port);
  const seen = collect(socket);
  socket.write(header(gate.app.port).subarray(0, 20));
  await waitFor(() => gate.inbound.activeConnections === 1, 'the core reads its header');
  const drained = gate.inbound.drain();
  gate.inbound.abortConnections();
  await drained;
  t.is(gate.inbound.activeConnections, 0);
  const closed = await seen;
  t.true(closed.ended || closed.errorCode !== undefined);
  t.is(gate.app.accepted, 1, 'never reached the app');
  t.is(gate.side.logs.access().length, 1, 'no line for it, as for one JavaScript reads');
});

test.serial('a stop or a drain\'s deadline while the connect to the app is under way: an "aborted" access line per connection and the same counters, with the warm path and without', async (t) => {
  const blackhole = await startBlackHole();
  t.teardown(() => blackhole.close());
  // The declared port's app is the black hole (127.0.0.1 at the same port): its connects stay under way.
  const port = blackhole.port;
  const names = [...COUNTERS_WITH_RBAC, 'vsockmesh_upstream_connect_errors_total'];
  for (const how of ['stop', 'deadline'] as const) {
    const runs = new Map<boolean, Gate>();
    for (const warm of [true, false]) {
      const gate = await startGate(t, warm, { ports: [{ port }], connect_timeout: '60s' });
      runs.set(warm, gate);
      // An allowing policy: the decision's rbac_allowed_total is counted for an aborted connection too.
      gate.side.sidecar.authorization.replace(policy(gate, 'ALLOW', false, port));
      // Connecting: the core holds the accepted socket and the one dialling the app. The first is decided in
      // JavaScript (installing the entry), the second is the core's; both send early bytes, never relayed.
      const open = native.openCount();
      const seen: Promise<{ ended: boolean; errorCode?: string }>[] = [];
      for (const n of [1, 2]) {
        const socket = await connect(gate.port);
        seen.push(collect(socket));
        socket.write(Buffer.concat([header(port, 43000 + n), Buffer.from('early')]));
        await waitFor(() => native.openCount() === open + 2 * n, `${how}: connection ${n} connecting`);
      }
      if (how === 'stop') await gate.inbound.stop();
      else {
        const drained = gate.inbound.drain();
        gate.inbound.abortConnections();
        await drained;
      }
      for (const s of await Promise.all(seen)) t.true(s.ended || s.errorCode !== undefined, `${how}: closed`);
      await waitFor(() => gate.side.logs.access().length === 2, `${how}: two access lines`);
      t.is(gate.inbound.activeConnections, 0);
      t.is(native.openCount(), open - 1, `${how}: every socket closed (and the listening one)`);
    }
    const warm = runs.get(true)!;
    const slow = runs.get(false)!;
    t.is(warm.inbound.warmFinishedCount, 1, `${how}: the second was the core's`);
    t.deepEqual(
      warm.side.logs.access().map((l) => [l.outcome, l.bytes_to_upstream, l.bytes_to_downstream]),
      [
        ['aborted', 0, 0],
        ['aborted', 0, 0],
      ],
    );
    t.deepEqual(comparableLines(warm), comparableLines(slow));
    const totals = await counters(warm, names);
    t.deepEqual(totals, await counters(slow, names));
    t.is(totals.vsockmesh_rbac_allowed_total, 2, `${how}: each decision counted`);
    t.is(totals.vsockmesh_connections_total, 0, `${how}: neither relayed`);
  }
});

test.serial('64 MiB through the warm path arrive whole (sha256)', async (t) => {
  const gate = await startGate(t, true);
  await exchange(gate, Buffer.from('decide'));
  await waitFor(() => gate.inbound.activeConnections === 0, 'the deciding connection closed');
  const payload = randomPayload(64 * 1024 * 1024);
  const back = await exchange(gate, payload);
  t.is(back.length, payload.length);
  t.is(sha256(back), sha256(payload));
  await waitFor(() => gate.side.logs.access().length === 2, 'two lines');
  t.is(gate.inbound.warmFinishedCount, 1, 'replayed');
  t.like(gate.side.logs.access()[1], { bytes_to_upstream: payload.length, bytes_to_downstream: payload.length, outcome: 'closed' });
});
