// The frame-level h2c forwarder with real peers (Node http2 client and
// server): bodies past every window cross both ways whole (flow control on
// both sides: the peers keep Node's 64 KiB windows), and an upstream's
// SETTINGS_MAX_CONCURRENT_STREAMS is respected by opening another pooled
// connection rather than having streams refused. A raw client shows
// malformed requests refused as stream errors before the backend, and a
// rapid-reset flood ending the connection with ENHANCE_YOUR_CALM.

import test from 'ava';
import http2 from 'node:http2';
import { createHash } from 'node:crypto';
import type { AddressInfo } from 'node:net';
import net from 'node:net';
import { startSidecar } from '../helpers/sidecars.js';
import {
  DATA, ENHANCE_YOUR_CALM, SETTINGS_INITIAL_WINDOW_SIZE, windowUpdateFrame, FLAG_END_HEADERS, FLAG_END_STREAM, FrameReader, GOAWAY, HEADERS, PREFACE, PROTOCOL_ERROR, RST_STREAM, CANCEL, frame, rstStreamFrame, settingsFrame,
} from '../../proxy/http/h2/frames.js';
import { encodeHeaderBlock, type HeaderField } from '../../proxy/http/h2/hpack.js';

const everything = { virtual_hosts: [{ name: 'web', domains: ['*'], routes: [{ match: { prefix: '/' }, cluster: 'h2' }] }] };

async function withForwarder(backend: http2.Http2Server, run: (port: number) => Promise<void>): Promise<void> {
  await new Promise<void>((resolve) => backend.listen(0, '127.0.0.1', resolve));
  const sidecar = await startSidecar({
    node: { id: 'vm-a' },
    listeners: [{ kind: 'outbound', name: 'http', port: 0, protocol: 'http', h2c: 'frames', route_config: everything }],
    clusters: [{ name: 'h2', endpoints: [{ address: '127.0.0.1', port: (backend.address() as AddressInfo).port }] }],
  });
  try {
    await run(sidecar.sidecar.listenerAddress('http').port);
  } finally {
    await sidecar.sidecar.stop();
    await new Promise<void>((resolve) => backend.close(() => resolve()));
  }
}

function call(session: http2.ClientHttp2Session, path: string, body?: Buffer): Promise<{ status: number; body: Buffer }> {
  return new Promise((resolve, reject) => {
    const stream = session.request({ ':path': path, ':authority': 'web.mesh', ':method': body ? 'POST' : 'GET' }, { endStream: body === undefined });
    let status = 0;
    const chunks: Buffer[] = [];
    stream.on('response', (h) => (status = Number(h[':status'])));
    stream.on('data', (c: Buffer) => chunks.push(c));
    stream.on('end', () => resolve({ status, body: Buffer.concat(chunks) }));
    stream.on('error', reject);
    if (body) stream.end(body);
  });
}

const sha = (b: Buffer): string => createHash('sha256').update(b).digest('hex');

test('a 3 MiB request body and a 3 MiB answer cross whole, on two streams at once, with 64 KiB peer windows', async (t) => {
  const backend = http2.createServer();
  backend.on('stream', (stream) => {
    const chunks: Buffer[] = [];
    stream.on('data', (c: Buffer) => chunks.push(c));
    stream.on('end', () => {
      const got = Buffer.concat(chunks);
      stream.respond({ ':status': 200, 'x-request-sha': sha(got) });
      // The answer: the request body twice over, so it outgrows the request.
      stream.end(Buffer.concat([got, got]));
    });
  });
  await withForwarder(backend, async (port) => {
    const session = http2.connect(`http://127.0.0.1:${port}`);
    try {
      const bodies = [Buffer.alloc(3 << 19, 1), Buffer.alloc(3 << 19, 2)].map((b, i) => {
        for (let k = 0; k < b.length; k += 4096) b[k] = (k / 4096 + i) & 0xff;
        return b;
      });
      const replies = await Promise.all(bodies.map((b) => call(session, '/echo', b)));
      for (const [i, r] of replies.entries()) {
        t.is(r.status, 200);
        t.is(r.body.length, 2 * bodies[i]!.length);
        t.is(sha(r.body), sha(Buffer.concat([bodies[i]!, bodies[i]!])));
      }
    } finally {
      session.destroy();
    }
  });
});

test('an upstream allowing 2 concurrent streams gets 6 concurrent calls over more than one pooled connection, none refused', async (t) => {
  const backend = http2.createServer({ settings: { maxConcurrentStreams: 2 } });
  const sessions = new Set<http2.Http2Session>();
  backend.on('stream', (stream, _headers) => {
    sessions.add(stream.session!);
    stream.respond({ ':status': 200 });
    stream.end('ok');
  });
  await withForwarder(backend, async (port) => {
    const session = http2.connect(`http://127.0.0.1:${port}`);
    try {
      // The first call is answered first, so the upstream's SETTINGS are known before the next six.
      t.is((await call(session, '/first')).status, 200);
      const replies = await Promise.all(Array.from({ length: 6 }, (_, i) => call(session, `/c${i}`)));
      t.deepEqual(
        replies.map((r) => r.status),
        [200, 200, 200, 200, 200, 200],
      );
      t.true(sessions.size >= 2, `${sessions.size} upstream connection(s)`);
    } finally {
      session.destroy();
    }
  });
});

type Seen = { type: number; flags: number; streamId: number; payload: Buffer };

/** A raw h2c client: frames out as given, frames in as read; `until` waits for one that matches. */
async function rawClient(port: number): Promise<{ send(b: Buffer): void; until(match: (f: Seen) => boolean): Promise<Seen>; close(): void }> {
  const socket = net.connect(port, '127.0.0.1');
  await new Promise<void>((resolve) => socket.once('connect', resolve));
  const seen: Seen[] = [];
  const waiters: Array<() => void> = [];
  let closed = false;
  const reader = new FrameReader((type, flags, streamId, payload) => {
    seen.push({ type, flags, streamId, payload: Buffer.from(payload) });
    for (const w of waiters.splice(0)) w();
  });
  socket.on('data', (c: Buffer) => reader.push(c));
  socket.on('close', () => {
    closed = true;
    for (const w of waiters.splice(0)) w();
  });
  socket.on('error', () => {});
  socket.write(Buffer.concat([PREFACE, settingsFrame([])]));
  return {
    send: (b) => socket.write(b),
    until: async (match) => {
      for (;;) {
        const hit = seen.find(match);
        if (hit) return hit;
        if (closed) throw new Error('connection closed first');
        await new Promise<void>((resolve) => waiters.push(resolve));
      }
    },
    close: () => socket.destroy(),
  };
}

const headers = (streamId: number, fields: HeaderField[], end: boolean): Buffer =>
  frame(HEADERS, FLAG_END_HEADERS | (end ? FLAG_END_STREAM : 0), streamId, encodeHeaderBlock(fields));
const get: HeaderField[] = [
  [':method', 'GET'],
  [':scheme', 'http'],
  [':authority', 'web.mesh'],
  [':path', '/ok'],
];

test('malformed requests are stream errors (RST_STREAM PROTOCOL_ERROR) that never reach the backend; the connection goes on', async (t) => {
  const paths: string[] = [];
  const backend = http2.createServer();
  backend.on('stream', (stream, h) => {
    paths.push(String(h[':path']));
    stream.respond({ ':status': 200 });
    stream.resume();
    stream.on('end', () => stream.end('ok'));
  });
  await withForwarder(backend, async (port) => {
    const c = await rawClient(port);
    try {
      const rstOn = (id: number) => (f: Seen) => f.type === RST_STREAM && f.streamId === id;
      c.send(headers(1, [...get.slice(0, 3), [':path', '/upper'], ['X-Upper', '1']], true));
      c.send(headers(3, [...get.slice(0, 3), [':path', '/conn'], ['connection', 'close']], true));
      c.send(headers(5, [[':method', 'POST'], [':scheme', 'http'], [':authority', 'web.mesh'], [':path', '/short'], ['content-length', '5']], false));
      c.send(frame(DATA, FLAG_END_STREAM, 5, Buffer.from('abc')));
      for (const id of [1, 3, 5]) t.is((await c.until(rstOn(id))).payload.readUInt32BE(0), PROTOCOL_ERROR, `stream ${id}`);
      c.send(headers(7, get, true));
      const answer = await c.until((f) => f.type === DATA && f.streamId === 7 && (f.flags & FLAG_END_STREAM) !== 0);
      t.is(answer.payload.toString(), 'ok');
      // /short reached the backend before its body proved short; it was reset there.
      t.false(paths.includes('/upper'));
      t.false(paths.includes('/conn'));
      t.true(paths.includes('/ok'));
    } finally {
      c.close();
    }
  });
});

test('a rapid-reset flood (streams opened and cancelled at once) ends the connection with GOAWAY ENHANCE_YOUR_CALM', async (t) => {
  const backend = http2.createServer();
  // The backend never answers: every stream is still open when cancelled.
  backend.on('stream', () => {});
  await withForwarder(backend, async (port) => {
    const c = await rawClient(port);
    try {
      const burst: Buffer[] = [];
      for (let id = 1; id < 2 * 1000; id += 2) burst.push(headers(id, get, true), rstStreamFrame(id, CANCEL));
      c.send(Buffer.concat(burst));
      const goaway = await c.until((f) => f.type === GOAWAY);
      t.is(goaway.payload.readUInt32BE(4), ENHANCE_YOUR_CALM);
      t.regex(goaway.payload.subarray(8).toString(), /rapid reset/);
    } finally {
      c.close();
    }
  });
});

test('a client that grants a huge window and does not read holds the upstream back: the backend gets to send a bounded part of a 128 MiB answer', async (t) => {
  const total = 128 << 20;
  const chunk = Buffer.alloc(64 << 10, 7);
  let written = 0;
  const backend = http2.createServer();
  backend.on('stream', (stream) => {
    stream.respond({ ':status': 200 });
    // One chunk at a time, the next once the last has gone out (within the windows the sidecar gives).
    const next = (): void => {
      if (written >= total || stream.destroyed) return void stream.end();
      stream.write(chunk, () => {
        written += chunk.length;
        next();
      });
    };
    next();
  });
  await withForwarder(backend, async (port) => {
    const socket = net.connect(port, '127.0.0.1');
    await new Promise<void>((resolve) => socket.once('connect', resolve));
    socket.on('error', () => {});
    try {
      socket.write(Buffer.concat([PREFACE, settingsFrame([[SETTINGS_INITIAL_WINDOW_SIZE, 0x7fffffff]]), windowUpdateFrame(0, 0x7fffffff - 65535), headers(1, get, true)]));
      // Never read: the answer piles up toward this client.
      socket.pause();
      // Until the backend has sent everything or stopped being let to send more.
      let last = -1;
      let still = 0;
      while (written < total && still < 10) {
        await new Promise((resolve) => setTimeout(resolve, 100));
        still = written === last ? still + 1 : 0;
        last = written;
      }
      t.log(`the backend sent ${(written / 1048576).toFixed(1)} MiB of ${total >> 20}`);
      t.true(written < 32 << 20, `the backend sent ${written >> 20} MiB to a client that reads nothing`);
    } finally {
      socket.destroy();
    }
  });
});

// Node's http2 path (h2c: node) answers such a stream 502: its client cannot send a CONNECT with :scheme and :path.
test(`a CONNECT stream is tunnelled to the routed upstream (CONNECT with :authority only): its 200, then bytes both ways`, async (t) => {
  const authorities: string[] = [];
  const backend = http2.createServer();
  // An h2c server that takes CONNECT (RFC 9113 8.5): answers 200 and echoes the tunnel's bytes upper-cased.
  backend.on('stream', (stream, h) => {
    if (h[':method'] !== 'CONNECT') return void stream.close(http2.constants.NGHTTP2_PROTOCOL_ERROR);
    authorities.push(String(h[':authority']));
    stream.respond({ ':status': 200 });
    stream.on('data', (c: Buffer) => stream.write(c.toString().toUpperCase()));
    stream.on('end', () => stream.end());
  });
  await new Promise<void>((resolve) => backend.listen(0, '127.0.0.1', resolve));
  const sidecar = await startSidecar({
    node: { id: 'vm-a' },
    listeners: [{ kind: 'outbound', name: 'http', port: 0, protocol: 'http', h2c: 'frames', route_config: everything }],
    clusters: [{ name: 'h2', endpoints: [{ address: '127.0.0.1', port: (backend.address() as AddressInfo).port }] }],
  });
  const session = http2.connect(`http://127.0.0.1:${sidecar.sidecar.listenerAddress('http').port}`);
  session.on('error', () => {});
  try {
    const tunnel = session.request({ ':method': 'CONNECT', ':authority': 'web.mesh:443' });
    const status = await new Promise<number>((resolve, reject) => {
      tunnel.once('response', (h) => resolve(Number(h[':status'])));
      tunnel.once('error', reject);
    });
    t.is(status, 200);
    const echoed = new Promise<string>((resolve) => {
      let got = '';
      tunnel.on('data', (c: Buffer) => {
        got += c.toString();
        if (got.length >= 11) resolve(got);
      });
    });
    tunnel.write('hello ');
    tunnel.write('world');
    t.is(await echoed, 'HELLO WORLD');
    t.deepEqual(authorities, ['web.mesh:443']);
    tunnel.close();
  } finally {
    session.destroy();
    await sidecar.sidecar.stop();
    await new Promise<void>((resolve) => backend.close(() => resolve()));
  }
});
