// The inbound listener's gate: a PROXY v2 header within limits, to a declared port, or nothing.

import test from 'ava';
import { TLV, encodeProxyHeader, textTlv } from '../../proxy/proxy-protocol.js';
import { collect, connect, startEchoServer, startServer, waitFor, type TestServer } from '../helpers/apps.js';
import { metricValue, startSidecar, type TestSidecar } from '../helpers/sidecars.js';

interface Gate {
  app: TestServer;
  side: TestSidecar;
  port: number;
}

async function startGate(t: { teardown(fn: () => Promise<void>): void }, inbound: Record<string, unknown> = {}): Promise<Gate> {
  const app = await startEchoServer();
  const side = await startSidecar({
    node: { id: 'vm-b' },
    listeners: [{ kind: 'inbound', name: 'inbound', addresses: ['127.0.0.1'], port: 0, header_timeout: '300ms', max_header_bytes: 256, ports: [app.port], ...inbound }],
  });
  t.teardown(async () => {
    await side.sidecar.stop();
    await app.close();
  });
  return { app, side, port: side.sidecar.listenerAddress('inbound').port };
}

function header(dstPort: number, tlvs = [textTlv(TLV.VSOCKMESH_SOURCE_VM, 'vm-a')]): Buffer {
  return encodeProxyHeader({
    command: 'proxy',
    addresses: { family: 'inet', transport: 'stream', source: { address: '10.0.0.1', port: 40000 }, destination: { address: '10.0.0.2', port: dstPort } },
    tlvs,
  });
}

/** Sends `bytes` (in the given pieces), optionally half-closes, and reports what came back. */
async function send(port: number, pieces: Buffer[], end: boolean) {
  const socket = await connect(port);
  const seen = collect(socket);
  for (const p of pieces) socket.write(p);
  if (end) socket.end();
  return seen;
}

async function refusedWith(t: import('ava').ExecutionContext, gate: Gate, reason: string): Promise<void> {
  await waitFor(async () => (await metricValue(gate.side.sidecar, 'vsockmesh_header_errors_total', { reason })) === 1, `header error ${reason}`);
  t.is(gate.side.logs.withReason(reason).length, 1, `one log line with reason ${reason}`);
  t.is(gate.app.accepted, 0, 'nothing reached the app');
}

test('garbage instead of a header is refused, counted and logged; nothing reaches the app', async (t) => {
  const gate = await startGate(t);
  const { data } = await send(gate.port, [Buffer.from('GET / HTTP/1.1\r\nHost: x\r\n\r\n')], false);
  t.is(data.length, 0);
  await refusedWith(t, gate, 'not_proxy_v2');
});

test('a PROXY v1 text header is refused with its own reason', async (t) => {
  const gate = await startGate(t);
  await send(gate.port, [Buffer.from(`PROXY TCP4 10.0.0.1 10.0.0.2 40000 ${gate.app.port}\r\n`)], false);
  await refusedWith(t, gate, 'proxy_v1_unsupported');
});

test('a PROXY header for UDP (or any transport but a TCP stream) is refused like a malformed header', async (t) => {
  const gate = await startGate(t);
  const udp = encodeProxyHeader({
    command: 'proxy',
    addresses: { family: 'inet', transport: 'dgram', source: { address: '10.0.0.1', port: 40000 }, destination: { address: '10.0.0.2', port: gate.app.port } },
    tlvs: [],
  });
  await send(gate.port, [udp, Buffer.from('datagram?')], false);
  await refusedWith(t, gate, 'not_stream');
});

test('a truncated header (peer closes midway) is refused', async (t) => {
  const gate = await startGate(t);
  await send(gate.port, [header(gate.app.port).subarray(0, 20)], true);
  await refusedWith(t, gate, 'header_truncated');
});

test('a header larger than max_header_bytes is refused before it all arrives', async (t) => {
  const gate = await startGate(t);
  const big = header(gate.app.port, [textTlv(TLV.NOOP, 'x'.repeat(1000))]);
  // Only the fixed 16 bytes: the length field alone rules it out.
  await send(gate.port, [big.subarray(0, 16)], false);
  await refusedWith(t, gate, 'too_large');
});

test('a header that does not complete within header_timeout is refused', async (t) => {
  const gate = await startGate(t);
  const socket = await connect(gate.port);
  const seen = collect(socket);
  socket.write(header(gate.app.port).subarray(0, 10));
  const { ended, errorCode } = await seen;
  t.true(ended || errorCode !== undefined, 'the sidecar closed the connection');
  await refusedWith(t, gate, 'header_timeout');
});

test('a connection that sends nothing is refused at the deadline', async (t) => {
  const gate = await startGate(t);
  const socket = await connect(gate.port);
  await collect(socket);
  await refusedWith(t, gate, 'header_timeout');
});

test('a destination port the listener does not declare is refused', async (t) => {
  const gate = await startGate(t);
  const undeclared = gate.app.port === 65000 ? 65001 : 65000;
  const { data } = await send(gate.port, [header(undeclared), Buffer.from('hello')], false);
  t.is(data.length, 0);
  await waitFor(async () => (await metricValue(gate.side.sidecar, 'vsockmesh_connections_refused_total', { reason: 'undeclared_port' })) === 1, 'refusal counted');
  const [line] = gate.side.logs.withReason('undeclared_port');
  t.like(line, { level: 'warn', dst: `10.0.0.2:${undeclared}`, source_vm: 'vm-a' });
  t.is(gate.app.accepted, 0);
});

test('a PROXY LOCAL header (health check) is closed without reaching the app', async (t) => {
  const gate = await startGate(t);
  const local = encodeProxyHeader({ command: 'local', addresses: { family: 'unspec' }, tlvs: [] });
  const { ended } = await send(gate.port, [local], false);
  t.true(ended);
  t.is(gate.app.accepted, 0);
  t.is(await metricValue(gate.side.sidecar, 'vsockmesh_header_errors_total'), 0);
});

test('payload in the same packet as the header is relayed, not lost', async (t) => {
  const gate = await startGate(t);
  const { data } = await send(gate.port, [Buffer.concat([header(gate.app.port), Buffer.from('same-packet')])], true);
  t.is(data.toString(), 'same-packet');
});

test('a header followed at once by FIN carries the FIN to the app (no connection left half-open)', async (t) => {
  let appEnds = 0;
  const app = await startServer((socket) => {
    socket.resume();
    socket.on('end', () => {
      appEnds++;
      socket.end();
    });
  });
  t.teardown(() => app.close());
  const gate = await startGate(t, { ports: [app.port] });
  const results = await Promise.all(Array.from({ length: 50 }, () => send(gate.port, [header(app.port)], true)));
  t.true(results.every((r) => r.ended));
  t.is(appEnds, 50);
  await waitFor(() => gate.side.sidecar.activeConnections === 0, 'no connection left open');
});

test('a header sent one byte at a time is accepted', async (t) => {
  const gate = await startGate(t, { header_timeout: '5s' });
  const bytes = header(gate.app.port);
  const socket = await connect(gate.port);
  socket.setNoDelay(true);
  const seen = collect(socket);
  for (const byte of bytes) {
    socket.write(Buffer.from([byte]));
    await new Promise((r) => setImmediate(r));
  }
  socket.end('after-slow-header');
  const { data } = await seen;
  t.is(data.toString(), 'after-slow-header');
  t.is(await metricValue(gate.side.sidecar, 'vsockmesh_header_errors_total'), 0);
});

test('a declared port with a target connects to the target, not to the named port', async (t) => {
  const app = await startEchoServer();
  t.teardown(() => app.close());
  const gate = await startGate(t, { ports: [{ port: 8080, target: { address: '127.0.0.1', port: app.port } }] });
  const { data } = await send(gate.port, [header(8080), Buffer.from('mapped')], true);
  t.is(data.toString(), 'mapped');
  t.is(app.accepted, 1);
});

test('refused connections do not disturb an established one', async (t) => {
  const gate = await startGate(t);
  const good = await connect(gate.port);
  const echoed: Buffer[] = [];
  good.on('data', (c: Buffer) => echoed.push(c));
  good.write(Buffer.concat([header(gate.app.port), Buffer.from('one;')]));
  await waitFor(() => Buffer.concat(echoed).toString() === 'one;', 'first echo');
  await Promise.all([send(gate.port, [Buffer.from('junk')], true), send(gate.port, [header(1)], true)]);
  good.write('two;');
  await waitFor(() => Buffer.concat(echoed).toString() === 'one;two;', 'echo after refusals');
  const seen = collect(good);
  good.end();
  t.true((await seen).ended);
});
