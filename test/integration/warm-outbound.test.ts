// The outbound warm path (README, "The outbound warm path"): the same
// connections through the core's replay and through JavaScript give the same
// bytes on the wire (the peer sidecar's PROXY v2 header, read by a raw
// listener), the same round robin, access lines and counters; a failed
// connect is handed to JavaScript; a generation bump, limits, drain and stop.

import test, { type ExecutionContext } from 'ava';
import net from 'node:net';
import { TLV, encodeProxyHeader, tcpAddresses, textTlv } from '../../proxy/proxy-protocol.js';
import type { OutboundListener } from '../../proxy/listeners/outbound.js';
import { warmInvalidate } from '../../proxy/native/warm.js';
import { native } from '../../proxy/native/index.js';
import { WARM_LIST_FIELDS, type Listener } from '../../proxy/listeners/listener.js';
import { freePort } from '../helpers/haproxy.js';
import { collect, connect, randomPayload, sha256, startBlackHole, waitFor } from '../helpers/apps.js';
import { metricValue, startSidecar, type TestSidecar } from '../helpers/sidecars.js';

/** A raw listener: every connection's bytes, in order of arrival; each echoes what it read once the client half-closes. */
interface Raw {
  port: number;
  received: Buffer[];
  open: Set<net.Socket>;
  close(): Promise<void>;
}

async function startRaw(): Promise<Raw> {
  const received: Buffer[] = [];
  const open = new Set<net.Socket>();
  const server = net.createServer((socket) => {
    open.add(socket);
    const chunks: Buffer[] = [];
    socket.on('data', (c) => chunks.push(c));
    socket.on('end', () => {
      const all = Buffer.concat(chunks);
      received.push(all);
      socket.end(all);
    });
    socket.on('error', () => {});
    socket.on('close', () => open.delete(socket));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    port: (server.address() as net.AddressInfo).port,
    received,
    open,
    close: () => {
      for (const s of open) s.destroy();
      return new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

/** The app port the peer's header names (nothing listens there: the peer is the raw listener). */
const APP_PORT = 9;

interface Out {
  side: TestSidecar;
  port: number;
  outbound: OutboundListener;
  peer: Raw;
  app: Raw;
}

/** Sidecar vm-a, outbound listener "out" to cluster "app": endpoint 0 through a peer sidecar (the raw `peer`), endpoint 1 straight to the raw `app`. */
async function startOut(
  t: ExecutionContext,
  warm: boolean | undefined,
  outbound: Record<string, unknown> = {},
  endpoints?: (peer: Raw, app: Raw) => unknown[],
  top: Record<string, unknown> = {},
  cluster: Record<string, unknown> = {},
): Promise<Out> {
  const peer = await startRaw();
  const app = await startRaw();
  const side = await startSidecar({
    ...top,
    node: { id: 'vm-a' },
    listeners: [{ kind: 'outbound', name: 'out', port: 0, cluster: 'app', ...(warm !== undefined && { warm_path: warm }), ...outbound }],
    clusters: [
      {
        name: 'app',
        ...cluster,
        endpoints: endpoints?.(peer, app) ?? [
          { address: '127.0.0.1', port: APP_PORT, vm_id: 'vm-b', peer: { address: '127.0.0.1', port: peer.port } },
          { address: '127.0.0.1', port: app.port },
        ],
      },
    ],
  });
  t.teardown(async () => {
    await side.sidecar.stop();
    await peer.close();
    await app.close();
  });
  const listeners = (side.sidecar as unknown as { listeners: Listener[] }).listeners;
  return { side, port: side.sidecar.listenerAddress('out').port, outbound: listeners.find((l) => l.name === 'out') as OutboundListener, peer, app };
}

/** The slow path's header for a client at `source` (ProxyHeaderTemplate, built here by the plain encoder). */
function expectedHeader(source: { address: string; port: number }): Buffer {
  return encodeProxyHeader({
    command: 'proxy',
    addresses: tcpAddresses(source, { address: '127.0.0.1', port: APP_PORT }),
    tlvs: [textTlv(TLV.VSOCKMESH_SOURCE_VM, 'vm-a'), textTlv(TLV.VSOCKMESH_DESTINATION_VM, 'vm-b')],
  });
}

/** One connection: payload, half-close, everything echoed back; with the client's own address. */
async function exchange(out: Out, payload: Buffer, host = '127.0.0.1'): Promise<{ data: Buffer; source: { address: string; port: number }; errorCode?: string | undefined }> {
  const socket = await connect(out.port, host);
  const source = { address: socket.localAddress!, port: socket.localPort! };
  const seen = collect(socket);
  socket.end(payload);
  const { data, errorCode } = await seen;
  return { data, source, errorCode };
}

const COUNTERS = ['vsockmesh_connections_total', 'vsockmesh_bytes_total', 'vsockmesh_connections_closed_total', 'vsockmesh_connections_refused_total', 'vsockmesh_transport_decisions_total', 'vsockmesh_upstream_connect_errors_total'];

async function counters(out: Out): Promise<Record<string, number>> {
  return Object.fromEntries(await Promise.all(COUNTERS.map(async (name) => [name, await metricValue(out.side.sidecar, name)] as const)));
}

/** An access line but what differs between runs: timings, the client's port, the raw app's port. */
function comparable(out: Out, line: Record<string, unknown>): Record<string, unknown> {
  const rest: Record<string, unknown> = { ...line, src: String(line.src).replace(/:\d+$/, ':PORT') };
  for (const key of ['dst', 'upstream']) rest[key] = String(line[key]).replace(`:${out.app.port}`, ':APP').replace(`:${out.peer.port}`, ':PEER');
  delete rest.duration_ms;
  delete rest.time;
  return rest;
}

test.serial('the same connections with the warm path and without: the same bytes at the peer (its PROXY v2 header) and the app, the same round robin, access lines and counters', async (t) => {
  const warm = await startOut(t, true);
  const slow = await startOut(t, false);
  const order = (out: Out, sources: { address: string; port: number }[]) => {
    // Which endpoint each connection reached, and that the peer's bytes are the slow path's header then the payload.
    const peerBytes = [...out.peer.received];
    return sources.map((source, i) => {
      const payload = Buffer.from(`hello ${i} `.repeat(i + 1));
      const asPeer = Buffer.concat([expectedHeader(source), payload]);
      const atPeer = peerBytes.findIndex((b) => b.equals(asPeer));
      if (atPeer >= 0) return 'peer';
      return out.app.received.some((b) => b.equals(payload)) ? 'app' : 'nowhere';
    });
  };
  const runs = new Map<Out, string[]>();
  for (const out of [warm, slow]) {
    const sources = [];
    for (let i = 0; i < 6; i++) {
      const payload = Buffer.from(`hello ${i} `.repeat(i + 1));
      const { data, source } = await exchange(out, payload);
      sources.push(source);
      t.true(data.subarray(data.length - payload.length).equals(payload), 'echoed');
    }
    await waitFor(() => out.side.logs.access().length === 6, 'six access lines');
    runs.set(out, order(out, sources));
  }
  t.is(warm.outbound.warmFinishedCount, 5, 'the first connection decided, the next five replayed');
  t.is(slow.outbound.warmFinishedCount, 0);
  t.deepEqual(runs.get(warm), ['peer', 'app', 'peer', 'app', 'peer', 'app']);
  t.deepEqual(runs.get(slow), runs.get(warm));
  const lines = (out: Out) => out.side.logs.access().map((l) => comparable(out, l));
  t.deepEqual(lines(warm), lines(slow));
  t.deepEqual(await counters(warm), await counters(slow));
});

test.serial('an idle listener holds no warm path: it starts at the first connection decided, and the next one is replayed', async (t) => {
  const out = await startOut(t, true);
  const warmOf = (o: Out) => (o.outbound as unknown as { warm: unknown }).warm;
  t.is(warmOf(out), null, 'started and idle: no record batch, no listener in the core');
  await exchange(out, Buffer.from('first'));
  t.not(warmOf(out), null, 'the first decided connection started it');
  await exchange(out, Buffer.from('second'));
  await waitFor(() => out.outbound.warmFinishedCount === 1, 'the second connection replayed');
});

test.serial('the peer header over IPv6: a client on ::1 gets the header the slow path writes', async (t) => {
  const endpoints = (peer: Raw) => [{ address: '127.0.0.1', port: APP_PORT, vm_id: 'vm-b', peer: { address: '127.0.0.1', port: peer.port } }];
  for (const warm of [true, false]) {
    const out = await startOut(t, warm, { addresses: ['::1'] }, endpoints);
    for (let i = 0; i < 3; i++) {
      const payload = Buffer.from(`v6 ${i}`);
      const { source } = await exchange(out, payload, '::1');
      await waitFor(() => out.peer.received.length === i + 1, 'the peer read it');
      t.deepEqual(out.peer.received[i], Buffer.concat([expectedHeader(source), payload]));
    }
    t.is(out.outbound.warmFinishedCount, warm ? 2 : 0);
  }
});

test.serial('a failed connect on the warm path hands the client to JavaScript: one access line and one connect error per connection, as without it', async (t) => {
  const deadPort = await freePort();
  const endpoints = () => [{ address: '127.0.0.1', port: APP_PORT, vm_id: 'vm-b', peer: { address: '127.0.0.1', port: deadPort } }];
  const warm = await startOut(t, true, {}, endpoints);
  const slow = await startOut(t, false, {}, endpoints);
  for (const out of [warm, slow]) {
    for (let i = 0; i < 3; i++) t.is((await exchange(out, Buffer.from('x'))).errorCode, 'ECONNRESET');
    await waitFor(() => out.side.logs.access().length === 3, 'three access lines');
  }
  t.is(warm.outbound.warmFinishedCount, 0);
  t.deepEqual(
    warm.side.logs.access().map((l) => comparable(warm, l)),
    slow.side.logs.access().map((l) => comparable(slow, l)),
  );
  t.deepEqual(await counters(warm), await counters(slow));
  t.is(await metricValue(warm.side.sidecar, 'vsockmesh_upstream_connect_errors_total'), 3);
});

test.serial('a connect that times out on the warm path is the slow path\'s attempt: waited once, not dialled again, the same endpoints, lines and counters as without it', async (t) => {
  const blackhole = await startBlackHole();
  t.teardown(() => blackhole.close());
  // Endpoint 0 never answers (through a "peer" that is a black hole), endpoint 1 is the raw app.
  const endpoints = (_peer: Raw, app: Raw) => [
    { address: '127.0.0.1', port: APP_PORT, vm_id: 'vm-b', peer: { address: '127.0.0.1', port: blackhole.port } },
    { address: '127.0.0.1', port: app.port },
  ];
  const runs = new Map<boolean, { out: Out; results: string[] }>();
  for (const warm of [true, false]) {
    const out = await startOut(t, warm, {}, endpoints, {}, { connect_timeout: '1s' });
    // Round robin: 0 (timed out), 1, 0 (timed out), 1; with the warm path the first is JavaScript's, the rest the core's.
    const results = [];
    for (let i = 0; i < 4; i++) {
      const { data, errorCode } = await exchange(out, Buffer.from(`c${i}`));
      results.push(errorCode ?? data.toString());
    }
    await waitFor(() => out.side.logs.access().length === 4, 'four access lines');
    runs.set(warm, { out, results });
  }
  const warm = runs.get(true)!;
  const slow = runs.get(false)!;
  t.deepEqual(slow.results, ['ECONNRESET', 'c1', 'ECONNRESET', 'c3']);
  // Before, the core's timed-out connection was decided and dialled again in JavaScript (a second wait), there to the next endpoint.
  t.deepEqual(warm.results, slow.results);
  t.is(warm.out.outbound.warmFinishedCount, 2, 'the two that reached the app were the core\'s');
  t.deepEqual(
    warm.out.side.logs.access().map((l) => [l.outcome, l.error_code]),
    [['upstream_error', 'ETIMEDOUT'], ['closed', undefined], ['upstream_error', 'ETIMEDOUT'], ['closed', undefined]],
  );
  t.deepEqual(
    warm.out.side.logs.access().map((l) => comparable(warm.out, l)),
    slow.out.side.logs.access().map((l) => comparable(slow.out, l)),
  );
  t.deepEqual(await counters(warm.out), await counters(slow.out));
  t.is(await metricValue(warm.out.side.sidecar, 'vsockmesh_upstream_connect_errors_total', { code: 'ETIMEDOUT' }), 2);
});

test.serial('a stop or a drain\'s deadline while the upstream connect is under way: an "aborted" access line per connection and the same counters, with the warm path and without', async (t) => {
  const blackhole = await startBlackHole();
  t.teardown(() => blackhole.close());
  const endpoints = () => [{ address: '127.0.0.1', port: APP_PORT, vm_id: 'vm-b', peer: { address: '127.0.0.1', port: blackhole.port } }];
  for (const how of ['stop', 'deadline'] as const) {
    const runs = new Map<boolean, Out>();
    for (const warm of [true, false]) {
      const out = await startOut(t, warm, {}, endpoints, {}, { connect_timeout: '60s' });
      runs.set(warm, out);
      // The first is decided in JavaScript (installing the entry); the second is the core's. Both stay connecting.
      const seen = [collect(await connect(out.port))];
      await waitFor(() => out.outbound.activeConnections === 1, 'the first decided');
      seen.push(collect(await connect(out.port)));
      await waitFor(() => out.outbound.activeConnections === 2, 'the second connecting');
      if (how === 'stop') await out.outbound.stop();
      else {
        const drained = out.outbound.drain();
        out.outbound.abortConnections();
        await drained;
      }
      for (const s of await Promise.all(seen)) t.true(s.ended || s.errorCode !== undefined, `${how}: closed`);
      await waitFor(() => out.side.logs.access().length === 2, `${how}: two access lines`);
      t.is(out.outbound.activeConnections, 0);
    }
    const warm = runs.get(true)!;
    const slow = runs.get(false)!;
    t.is(warm.outbound.warmFinishedCount, 1, `${how}: the second was the core's`);
    t.deepEqual(
      warm.side.logs.access().map((l) => l.outcome),
      ['aborted', 'aborted'],
    );
    t.deepEqual(
      warm.side.logs.access().map((l) => comparable(warm, l)),
      slow.side.logs.access().map((l) => comparable(slow, l)),
    );
    t.deepEqual(await counters(warm), await counters(slow));
  }
});

test.serial('a generation bump (any change a decision read) sends the next connection to JavaScript, which decides and installs again', async (t) => {
  const out = await startOut(t, true);
  await exchange(out, Buffer.from('a'));
  await exchange(out, Buffer.from('b'));
  await waitFor(() => out.outbound.warmFinishedCount === 1, 'one replay');
  warmInvalidate();
  await exchange(out, Buffer.from('c'));
  await waitFor(() => out.side.logs.access().length === 3, 'three lines');
  t.is(out.outbound.warmFinishedCount, 1, 'decided again in JavaScript');
  await exchange(out, Buffer.from('d'));
  await waitFor(() => out.outbound.warmFinishedCount === 2, 'replayed again after the new decision');
  // a (JS: peer), b (core, from JS's next: app); after the bump c (JS, its own counter still after a: app), d (core, from JS's next: peer).
  // Round robin holds within each, not across (the core's picks do not move the cluster's counter).
  t.deepEqual(out.peer.received.map((b) => b.subarray(b.length - 1).toString()), ['a', 'd']);
  t.deepEqual(out.app.received.map(String), ['b', 'c']);
});

test.serial('max_connections counts the core\'s open connections: over the limit, refused as JavaScript refuses', async (t) => {
  const out = await startOut(t, true, { max_connections: 2 });
  await exchange(out, Buffer.from('decide'));
  const held = [await connect(out.port), await connect(out.port)];
  for (const s of held) s.write('open');
  await waitFor(() => out.peer.open.size + out.app.open.size === 2, 'two held connections reached their upstreams');
  t.is(out.outbound.activeConnections, 2);
  // Refused at accept with a reset: the connect itself may fail, or the bytes come back as nothing.
  t.deepEqual(await exchange(out, Buffer.from('over')).then((r) => r.data, () => Buffer.alloc(0)), Buffer.alloc(0));
  await waitFor(async () => (await metricValue(out.side.sidecar, 'vsockmesh_connections_refused_total', { reason: 'listener_max_connections' })) === 1, 'refused over the limit');
  t.is(out.outbound.warmFinishedCount, 0, 'the two held open are replayed, still open');
  for (const s of held) s.end();
  await waitFor(() => out.outbound.warmFinishedCount === 2, 'the held ones finished in the core');
  t.deepEqual((await exchange(out, Buffer.from('after'))).data.subarray(-5), Buffer.from('after'));
  t.is(out.outbound.warmFinishedCount, 3, 'below the limit again, replayed');
});

test.serial('overload.max_connections (process-wide) counts the core\'s connections and refuses the next as JavaScript does', async (t) => {
  // warm_path left out: on by default.
  const out = await startOut(t, undefined, {}, (_peer, app) => [{ address: '127.0.0.1', port: app.port }], { overload: { max_connections: 2 } });
  const { side, outbound, app } = out;
  await exchange(out, Buffer.from('decide'));
  const held = [await connect(out.port), await connect(out.port)];
  for (const s of held) s.write('open');
  await waitFor(() => app.open.size === 2, 'two held connections reached the app');
  t.deepEqual(await exchange(out, Buffer.from('over')).then((r) => r.data, () => Buffer.alloc(0)), Buffer.alloc(0));
  await waitFor(async () => (await metricValue(side.sidecar, 'vsockmesh_connections_refused_total', { reason: 'max_connections' })) === 1, 'refused over the process-wide limit');
  t.is(app.received.length, 1, 'only the deciding one finished at the app');
  for (const s of held) s.end();
  await waitFor(() => outbound.warmFinishedCount === 2, 'the held ones finished in the core (on by default)');
});

/** One connection decides (to the peer), the next is replayed (to the app) and held open. */
async function decideThenHold(out: Out): Promise<{ socket: net.Socket; seen: ReturnType<typeof collect> }> {
  await exchange(out, Buffer.from('decide'));
  const socket = await connect(out.port);
  const seen = collect(socket);
  socket.write('open');
  await waitFor(() => out.app.open.size === 1, 'the replayed connection reached the app');
  return { socket, seen };
}

test.serial('drain waits for the core\'s connections; stop closes those still open', async (t) => {
  const out = await startOut(t, true);
  const { socket, seen } = await decideThenHold(out);
  let drained = false;
  const draining = out.outbound.drain().then(() => {
    drained = true;
  });
  for (let i = 0; i < 3; i++) await new Promise((resolve) => setImmediate(resolve));
  t.false(drained, 'the warm connection keeps the drain waiting');
  socket.end();
  await draining;
  t.true((await seen).ended);
  t.is(out.outbound.warmFinishedCount, 1);

  const again = await startOut(t, true);
  const { seen: openSeen } = await decideThenHold(again);
  await again.outbound.stop();
  const closed = await openSeen;
  t.true(closed.ended || closed.errorCode !== undefined, 'closed by the stop');
  t.is(again.outbound.activeConnections, 0);
});

test.serial('the settle\'s look (warmMoved): the core\'s relaying connections and the bytes they moved, as warmList with relayBytes counts them, moving with traffic', async (t) => {
  const out = await startOut(t, true);
  const { socket, seen } = await decideThenHold(out);
  const id = (out.outbound as unknown as { warm: { id: number } }).warm.id;
  const listed = (): [number, number] => {
    const list = native.warmList(id);
    let moved = 0;
    for (let i = 0; i < list.length; i += WARM_LIST_FIELDS) moved += native.relayBytes(list[i] as number)!.reduce((a, b) => a + b);
    return [list.length / WARM_LIST_FIELDS, moved];
  };
  await waitFor(() => native.warmMoved(id)[1] === 4, 'the first bytes ("open") relayed');
  t.deepEqual(native.warmMoved(id), [1, 4]);
  t.deepEqual(native.warmMoved(id), listed());
  const before = out.outbound.warmActivity();
  t.is(before.open, 1);
  socket.write('0123456789');
  await waitFor(() => native.warmMoved(id)[1] === 14, 'ten more bytes relayed');
  t.deepEqual(native.warmMoved(id), listed());
  t.is(out.outbound.warmActivity().activity, before.activity + 10, 'the look saw them');
  socket.end();
  await seen;
  await waitFor(() => out.outbound.warmFinishedCount === 1, 'finished in the core');
  t.deepEqual(native.warmMoved(id), [0, 0]);
});

test.serial('64 MiB through a replayed connection arrive intact', async (t) => {
  const out = await startOut(t, true, {}, (_peer, app) => [{ address: '127.0.0.1', port: app.port }]);
  await exchange(out, Buffer.from('decide'));
  const payload = randomPayload(64 * 1024 * 1024);
  const { data } = await exchange(out, payload);
  t.is(sha256(data), sha256(payload));
  await waitFor(() => out.outbound.warmFinishedCount === 1, 'replayed');
});
