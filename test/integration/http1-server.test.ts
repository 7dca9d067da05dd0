// The HTTP listener's own HTTP/1.1 server side (http1-server.ts) and how an
// answer goes back (http1-answer.ts): byte for byte when it may, else its
// head written again and its body framed for the client. Raw bytes on a TCP
// socket on the client side, so that what is asserted is what was sent.

import test from 'ava';
import http from 'node:http';
import net, { type AddressInfo } from 'node:net';
import { HELD_HIGH_WATER, Http1ServerConnection, type Http1ServerRequest } from '../../proxy/http/http1-server.js';
import { Http1Deadlines } from '../../proxy/http/http1-deadlines.js';
import type { VsockSocket } from '../../proxy/native/vsock.js';
import { RawClient } from '../helpers/raw-client.js';
import { startSidecar, type TestSidecar } from '../helpers/sidecars.js';

/** A backend: `/chunked` answers without a length, `/close` with Connection: close, `/hold/NAME` waits for release(NAME); anything else echoes its path and body. */
interface Backend {
  port: number;
  seen: string[];
  release(name: string): void;
  close(): Promise<void>;
}

async function startBackend(): Promise<Backend> {
  const seen: string[] = [];
  const held = new Map<string, () => void>();
  const releases = new Map<string, () => void>();
  const server = http.createServer((req, res) => {
    const url = req.url ?? '';
    seen.push(url);
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const body = Buffer.concat(chunks).toString();
      if (url === '/chunked') {
        res.write('one,');
        res.end('two');
        return;
      }
      if (url === '/close') {
        res.setHeader('connection', 'close');
        res.setHeader('keep-alive', 'timeout=1');
        res.end('closing');
        return;
      }
      const answer = (): void => void res.end(`${url} ${body}`);
      if (!url.startsWith('/hold/')) return answer();
      const name = url.slice('/hold/'.length);
      if (releases.has(name)) return answer();
      held.set(name, answer);
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    port: (server.address() as AddressInfo).port,
    seen,
    release(name) {
      releases.set(name, () => undefined);
      held.get(name)?.();
    },
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

async function setup(): Promise<{ backend: Backend; sidecar: TestSidecar; port: number; stop(): Promise<void> }> {
  const backend = await startBackend();
  const sidecar = await startSidecar({
    node: { id: 'vm-a' },
    listeners: [{ kind: 'outbound', name: 'http', port: 0, protocol: 'http', route_config: { virtual_hosts: [{ name: 'web', domains: ['*'], routes: [{ match: { prefix: '/' }, cluster: 'app' }] }] } }],
    clusters: [{ name: 'app', endpoints: [{ address: '127.0.0.1', port: backend.port }] }],
  });
  return {
    backend,
    sidecar,
    port: sidecar.sidecar.listenerAddress('http').port,
    stop: async () => {
      await sidecar.sidecar.stop();
      await backend.close();
    },
  };
}

/** A raw client connection, and a wait for whole answers. */
class Client extends RawClient {
  /** Resolves once `n` whole answers with a content-length came. */
  answers(n: number): Promise<string> {
    return this.until((text) => [...text.matchAll(/content-length: (\d+)\r\n(?:.*\r\n)*?\r\n/gi)].length >= n && text.split('HTTP/1.1 ').length - 1 >= n && lastBodyWhole(text));
  }
}

/** The last answer in `text` (with a content-length) has its whole body. */
function lastBodyWhole(text: string): boolean {
  const at = text.lastIndexOf('HTTP/1.1 ');
  const end = text.indexOf('\r\n\r\n', at);
  if (end < 0) return false;
  const length = /content-length: (\d+)/i.exec(text.slice(at, end));
  return length !== null && text.length - (end + 4) >= Number(length[1]);
}

test('pipelined requests are answered in request order, a later answer held until the earlier one is written', async (t) => {
  const s = await setup();
  const client = new Client(s.port);
  try {
    client.socket.write('GET /hold/first HTTP/1.1\r\nHost: web.mesh\r\n\r\nPOST /second HTTP/1.1\r\nHost: web.mesh\r\nContent-Length: 2\r\n\r\nhi');
    // The second is answered upstream while the first is held there.
    await waitFor(() => s.backend.seen.includes('/second'));
    s.backend.release('first');
    const text = await client.answers(2);
    const bodies = text.split('HTTP/1.1 ').slice(1).map((a) => a.slice(a.indexOf('\r\n\r\n') + 4));
    t.deepEqual(bodies, ['/hold/first ', '/second hi']);
    t.deepEqual(s.backend.seen.sort(), ['/hold/first', '/second']);
  } finally {
    client.socket.destroy();
    await s.stop();
  }
});

test('a later answer held behind an earlier one asks its writer to wait past the high-water mark (memory stays bounded) and resumes once written in order', async (t) => {
  const requests: Http1ServerRequest[] = [];
  let bothIn!: () => void;
  const both = new Promise<void>((resolve) => (bothIn = resolve));
  // The server side on a plain TCP socket: the same Duplex interface as the core's sockets.
  const server = net.createServer((socket) => {
    new Http1ServerConnection(socket as unknown as VsockSocket, (request) => {
      requests.push(request);
      if (requests.length === 2) bothIn();
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const client = new Client((server.address() as AddressInfo).port);
  try {
    client.socket.write('GET /one HTTP/1.1\r\nHost: a\r\n\r\nGET /two HTTP/1.1\r\nHost: a\r\n\r\n');
    await both;
    const [one, two] = requests as [Http1ServerRequest, Http1ServerRequest];
    const chunk = Buffer.alloc(HELD_HIGH_WATER / 4, 'b');
    const chunks = 6;
    t.true(two.write(`HTTP/1.1 200 OK\r\ncontent-length: ${chunk.length * chunks}\r\n\r\n`));
    // Held behind /one: true while under the mark, false once it is reached.
    const said = [0, 1, 2, 3].map(() => two.write(chunk));
    t.deepEqual(said, [true, true, true, false]);
    let resumed = false;
    const resumedOnce = new Promise<void>((resolve) => two.whenWritable(() => ((resumed = true), resolve())));
    t.false(resumed, 'held: its writer waits');
    t.is(client.text, '', 'nothing of the later answer before the earlier one');
    one.write('HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\none');
    one.finish(false);
    await resumedOnce;
    for (let i = 4; i < chunks; i++) two.write(chunk);
    two.finish(false);
    const text = await client.answers(2);
    t.true(text.startsWith('HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\noneHTTP/1.1 200 OK\r\n'));
    t.is(text.length, 'HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\none'.length + `HTTP/1.1 200 OK\r\ncontent-length: ${chunk.length * chunks}\r\n\r\n`.length + chunk.length * chunks);
  } finally {
    client.socket.destroy();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  }
});

test('an HTTP/1.0 client gets an answer of unknown length without chunks, ended by the close of its connection', async (t) => {
  const s = await setup();
  const client = new Client(s.port);
  try {
    client.socket.write('GET /chunked HTTP/1.0\r\nHost: web.mesh\r\n\r\n');
    const text = await client.until((_, ended) => ended);
    const [head, body] = text.split('\r\n\r\n');
    t.regex(head!, /^HTTP\/1\.1 200 OK\r\n/);
    t.notRegex(head!, /transfer-encoding/i);
    t.regex(head!, /\r\nConnection: close$/i);
    t.is(body, 'one,two');
  } finally {
    client.socket.destroy();
    await s.stop();
  }
});

test('an HTTP/1.1 client gets the upstream answer byte for byte; hop-by-hop headers of the upstream hop are dropped and the connection carries on', async (t) => {
  const s = await setup();
  const client = new Client(s.port);
  try {
    client.socket.write('GET /chunked HTTP/1.1\r\nHost: web.mesh\r\n\r\n');
    const chunked = await client.until((text) => text.endsWith('0\r\n\r\n'));
    t.regex(chunked, /\r\nTransfer-Encoding: chunked\r\n/i);
    t.true(chunked.endsWith('\r\n\r\n4\r\none,\r\n3\r\ntwo\r\n0\r\n\r\n'), chunked);
    client.forget();
    client.socket.write('GET /close HTTP/1.1\r\nHost: web.mesh\r\n\r\n');
    const closing = await client.answers(1);
    t.notRegex(closing, /keep-alive: timeout/i, 'the upstream hop\'s Keep-Alive');
    t.notRegex(closing, /connection: close/i, 'the upstream hop\'s Connection');
    t.true(closing.endsWith('\r\n\r\nclosing'));
    client.forget();
    client.socket.write('GET /again HTTP/1.1\r\nHost: web.mesh\r\n\r\n');
    t.true((await client.answers(1)).endsWith('/again '), 'the client connection carries on');
  } finally {
    client.socket.destroy();
    await s.stop();
  }
});

test('Expect: 100-continue is answered with 100 Continue before the body is sent; another expectation gets 417', async (t) => {
  const s = await setup();
  const client = new Client(s.port);
  try {
    client.socket.write('POST /upload HTTP/1.1\r\nHost: web.mesh\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n');
    await client.until((text) => text.includes('\r\n\r\n'));
    t.is(client.text, 'HTTP/1.1 100 Continue\r\n\r\n');
    client.socket.write('data');
    t.true((await client.answers(1)).endsWith('/upload data'));
    client.forget();
    client.socket.write('GET /odd HTTP/1.1\r\nHost: web.mesh\r\nExpect: something-else\r\n\r\n');
    t.regex(await client.answers(1), /^HTTP\/1\.1 417 /);
    t.false(s.backend.seen.includes('/odd'));
  } finally {
    client.socket.destroy();
    await s.stop();
  }
});

test('an HTTP/1.1 request without Host gets 400 and never reaches the app', async (t) => {
  const s = await setup();
  const client = new Client(s.port);
  try {
    client.socket.write('GET /nohost HTTP/1.1\r\n\r\n');
    t.regex(await client.until((_, ended) => ended), /^HTTP\/1\.1 400 /);
    t.deepEqual(s.backend.seen, []);
  } finally {
    client.socket.destroy();
    await s.stop();
  }
});

test('a drain puts Connection: close on the answer of a request in flight and closes the connection after it', async (t) => {
  const s = await setup();
  const client = new Client(s.port);
  try {
    client.socket.write('GET /hold/drain HTTP/1.1\r\nHost: web.mesh\r\n\r\n');
    await waitFor(() => s.backend.seen.includes('/hold/drain'));
    const drained = s.sidecar.sidecar.drain(20_000);
    s.backend.release('drain');
    const text = await client.until((_, ended) => ended);
    t.regex(text, /^HTTP\/1\.1 200 OK\r\n/);
    t.regex(text, /\r\nConnection: close\r\n/i);
    t.true(text.endsWith('/hold/drain '));
    t.is((await drained).aborted, 0);
  } finally {
    client.socket.destroy();
    await s.stop();
  }
});

async function waitFor(check: () => boolean): Promise<void> {
  while (!check()) await new Promise((resolve) => setTimeout(resolve, 10));
}

/** A server side on plain TCP with the checker `deadlines`; `onRequest` gets each request. */
async function rawServer(deadlines: Http1Deadlines, onRequest: (request: Http1ServerRequest) => void): Promise<{ port: number; close(): Promise<void> }> {
  const server = net.createServer((socket) => void new Http1ServerConnection(socket as unknown as VsockSocket, onRequest, deadlines));
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return { port: (server.address() as AddressInfo).port, close: () => new Promise<void>((resolve) => server.close(() => resolve())) };
}

test('a head not whole within the headers timeout gets 408 and the connection is closed; the request never reaches its handler', async (t) => {
  const requests: string[] = [];
  const server = await rawServer(new Http1Deadlines({ headersTimeoutMs: 50, requestTimeoutMs: 60_000, checkIntervalMs: 10 }), (r) => void requests.push(r.url));
  const client = new Client(server.port);
  try {
    client.socket.write('GET /slow HTTP/1.1\r\nHost: a\r\n');
    const text = await client.until((_, ended) => ended);
    t.is(text, 'HTTP/1.1 408 Request Timeout\r\nConnection: close\r\n\r\n');
    t.deepEqual(requests, []);
  } finally {
    client.socket.destroy();
    await server.close();
  }
});

test('a body not whole within the request timeout gets 408 after its head reached the handler; an earlier request of the connection was answered', async (t) => {
  const requests: string[] = [];
  const server = await rawServer(new Http1Deadlines({ headersTimeoutMs: 60_000, requestTimeoutMs: 50, checkIntervalMs: 10 }), (r) => {
    requests.push(r.url);
    r.discardBody();
    if (r.url === '/first') r.answer(200, {}, 'one', false);
  });
  const client = new Client(server.port);
  try {
    client.socket.write('GET /first HTTP/1.1\r\nHost: a\r\n\r\n');
    await client.answers(1);
    client.socket.write('POST /slow HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\nab');
    const text = await client.until((_, ended) => ended);
    t.true(text.endsWith('oneHTTP/1.1 408 Request Timeout\r\nConnection: close\r\n\r\n'), text);
    t.deepEqual(requests, ['/first', '/slow']);
  } finally {
    client.socket.destroy();
    await server.close();
  }
});
