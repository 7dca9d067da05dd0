// The HTTP listener's own HTTP/1.1 client (proxy/http/http1-client.ts) against
// real servers on loopback: keep-alive reuse, request bodies of known and
// unknown length, the response framings (Content-Length, chunked, HEAD,
// close-delimited, 1xx before the answer), and the failures that must not
// leave a connection in the pool.

import test from 'ava';
import http from 'node:http';
import net from 'node:net';
import type { AddressInfo } from 'node:net';
import { Http1Pool, type Http1Handlers, type Http1RequestHead } from '../../proxy/http/http1-client.js';
import { UpstreamSocket } from '../../proxy/http/upstream-pool.js';

interface Answer {
  status: number;
  message: string;
  headers: string[];
  body: string;
  ended: boolean;
  error: Error | undefined;
  closes: number;
}

/** Handlers that record what the exchange passes on; `done` resolves at close. */
function recorder(): { handlers: Http1Handlers; answer: Answer; done: Promise<Answer> } {
  const answer: Answer = { status: 0, message: '', headers: [], body: '', ended: false, error: undefined, closes: 0 };
  let closed!: (a: Answer) => void;
  const done = new Promise<Answer>((resolve) => (closed = resolve));
  const handlers: Http1Handlers = {
    response: (status, message, headers) => Object.assign(answer, { status, message, headers }),
    body: (chunk) => void (answer.body += chunk.toString()),
    end: () => void (answer.ended = true),
    error: (err) => void (answer.error = err),
    close: () => {
      answer.closes++;
      closed(answer);
    },
  };
  return { handlers, answer, done };
}

/** A pool to 127.0.0.1:`port` over plain TCP, with the sockets it opened. */
function poolTo(port: number): { pool: Http1Pool; opened: UpstreamSocket[] } {
  const opened: UpstreamSocket[] = [];
  const pool = new Http1Pool(
    () => {
      const socket = new UpstreamSocket([{ transport: 'tcp', target: { family: 'inet', host: '127.0.0.1', port, connectTimeoutMs: 2_000 }, label: `127.0.0.1:${port}`, preamble: null }]);
      opened.push(socket);
      return socket;
    },
    () => {},
  );
  return { pool, opened };
}

async function listen(server: net.Server): Promise<number> {
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return (server.address() as AddressInfo).port;
}

const GET: Http1RequestHead = { method: 'GET', path: '/a', headers: { host: 'web', 'x-one': ['1', '2'] }, chunked: false };

test('keep-alive: requests one after another share one connection; status, reason, header lines and body are passed on', async (t) => {
  const seen: Array<{ url: string; one: string | string[] | undefined }> = [];
  const server = http.createServer((req, res) => {
    seen.push({ url: req.url ?? '', one: req.headersDistinct['x-one'] });
    res.writeHead(201, 'Made', ['X-Two', 'a', 'X-Two', 'b', 'Content-Length', '5']);
    res.end('hello');
  });
  const port = await listen(server);
  t.teardown(() => server.close());
  const { pool, opened } = poolTo(port);
  t.teardown(() => pool.destroy());
  for (let i = 0; i < 3; i++) {
    const { handlers, done } = recorder();
    pool.request(GET, handlers, Buffer.alloc(0));
    const answer = await done;
    t.like(answer, { status: 201, message: 'Made', body: 'hello', ended: true, error: undefined, closes: 1 });
    t.deepEqual(answer.headers.slice(0, 4), ['X-Two', 'a', 'X-Two', 'b']);
    await new Promise((resolve) => setImmediate(resolve));
  }
  t.is(opened.length, 1);
  t.deepEqual(seen, [0, 1, 2].map(() => ({ url: '/a', one: ['1', '2'] })));
});

test('a body of unknown length goes in chunks, one of known length as it is; both arrive whole', async (t) => {
  const bodies: Array<{ body: string; te: string | undefined; length: string | undefined }> = [];
  const server = http.createServer((req, res) => {
    let body = '';
    req.on('data', (c: Buffer) => (body += c.toString()));
    req.on('end', () => {
      bodies.push({ body, te: req.headers['transfer-encoding'], length: req.headers['content-length'] });
      res.end('ok');
    });
  });
  const port = await listen(server);
  t.teardown(() => server.close());
  const { pool } = poolTo(port);
  t.teardown(() => pool.destroy());
  const chunked = recorder();
  const up = pool.request({ method: 'POST', path: '/c', headers: { host: 'web' }, chunked: true }, chunked.handlers, null);
  up.write(Buffer.from('abc'));
  up.write(Buffer.alloc(0));
  up.write(Buffer.from('defgh'));
  up.end();
  t.like(await chunked.done, { status: 200, body: 'ok', ended: true });
  const fixed = recorder();
  const known = pool.request({ method: 'PUT', path: '/k', headers: { host: 'web', 'content-length': '4' }, chunked: false }, fixed.handlers, null);
  known.write(Buffer.from('wxyz'));
  known.end();
  t.like(await fixed.done, { status: 200, ended: true });
  t.deepEqual(bodies, [
    { body: 'abcdefgh', te: 'chunked', length: undefined },
    { body: 'wxyz', te: undefined, length: '4' },
  ]);
});

/** A server that answers each connection's first request with `raw` (then ends the connection if `end`). */
async function rawServer(t: import('ava').ExecutionContext, raw: string, end: boolean): Promise<{ port: number; connections: () => number }> {
  let connections = 0;
  const server = net.createServer((socket) => {
    connections++;
    socket.once('data', () => (end ? socket.end(raw) : socket.write(raw)));
    socket.on('error', () => {});
  });
  const port = await listen(server);
  t.teardown(() => server.close());
  return { port, connections: () => connections };
}

test('a response to HEAD has no body even with a Content-Length, and its connection is reused', async (t) => {
  const { port, connections } = await rawServer(t, 'HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n', false);
  const { pool, opened } = poolTo(port);
  t.teardown(() => pool.destroy());
  const head = recorder();
  pool.request({ ...GET, method: 'HEAD' }, head.handlers, Buffer.alloc(0));
  t.like(await head.done, { status: 200, body: '', ended: true, error: undefined });
  await new Promise((resolve) => setImmediate(resolve));
  t.is(opened.length, 1);
  t.is(connections(), 1);
  t.false(opened[0]!.destroyed);
});

test('1xx answers are skipped; a body delimited by the connection ends with it, and that connection is not reused', async (t) => {
  const { port } = await rawServer(t, 'HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nConnection: close\r\n\r\nto the end', true);
  const { pool, opened } = poolTo(port);
  t.teardown(() => pool.destroy());
  const first = recorder();
  pool.request(GET, first.handlers, Buffer.alloc(0));
  t.like(await first.done, { status: 200, body: 'to the end', ended: true, error: undefined, closes: 1 });
  const second = recorder();
  pool.request(GET, second.handlers, Buffer.alloc(0));
  t.like(await second.done, { status: 200, ended: true });
  t.is(opened.length, 2);
});

test('a connection cut mid-body, an answer that is not HTTP and a refused connect fail the exchange once, and nothing is reused', async (t) => {
  const cut = await rawServer(t, 'HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npart', true);
  const cutPool = poolTo(cut.port);
  t.teardown(() => cutPool.pool.destroy());
  const partial = recorder();
  cutPool.pool.request(GET, partial.handlers, Buffer.alloc(0));
  const a = await partial.done;
  t.like(a, { status: 200, body: 'part', ended: false, closes: 1 });
  t.is((a.error as NodeJS.ErrnoException | undefined)?.code, 'ECONNRESET');

  const garbage = await rawServer(t, 'SSH-2.0-OpenSSH\r\n', false);
  const garbagePool = poolTo(garbage.port);
  t.teardown(() => garbagePool.pool.destroy());
  const bad = recorder();
  garbagePool.pool.request(GET, bad.handlers, Buffer.alloc(0));
  const b = await bad.done;
  t.like(b, { status: 0, ended: false, closes: 1 });
  t.truthy(b.error);

  const closed = net.createServer();
  const deadPort = await listen(closed);
  await new Promise((resolve) => closed.close(resolve));
  const deadPool = poolTo(deadPort);
  const refused = recorder();
  deadPool.pool.request(GET, refused.handlers, Buffer.alloc(0));
  const c = await refused.done;
  t.is(c.error?.constructor.name, 'UpstreamDialError');
  t.is(c.closes, 1);
  await new Promise((resolve) => setImmediate(resolve));
  for (const s of [...cutPool.opened, ...garbagePool.opened, ...deadPool.opened]) t.true(s.destroyed);
});

test('an answer that comes before the request was sent whole ends the exchange, and its connection is closed (the rest of the body must not pass for a request)', async (t) => {
  const server = http.createServer((req, res) => {
    res.end('early');
    req.resume();
  });
  const port = await listen(server);
  t.teardown(() => server.close());
  const { pool, opened } = poolTo(port);
  t.teardown(() => pool.destroy());
  const early = recorder();
  const up = pool.request({ method: 'POST', path: '/', headers: { host: 'web' }, chunked: true }, early.handlers, null);
  up.write(Buffer.from('first'));
  t.like(await early.done, { status: 200, body: 'early', ended: true });
  up.write(Buffer.from('late'));
  up.end();
  await new Promise((resolve) => setImmediate(resolve));
  t.true(opened[0]!.destroyed);
});

test('trailers after a chunked body are not passed on, nor taken for the next response\'s header lines when its head comes in pieces', async (t) => {
  let requests = 0;
  const server = net.createServer((socket) => {
    socket.on('data', () => {
      requests++;
      if (requests === 1) socket.write('HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\nX-Trailer: t\r\n\r\n');
      else {
        socket.write('HTTP/1.1 200 OK\r\nX-Second: 1\r\n');
        setTimeout(() => socket.write('Content-Length: 0\r\n\r\n'), 50);
      }
    });
  });
  const port = await listen(server);
  t.teardown(() => server.close());
  const { pool, opened } = poolTo(port);
  t.teardown(() => pool.destroy());
  const first = recorder();
  pool.request(GET, first.handlers, Buffer.alloc(0));
  t.like(await first.done, { status: 200, body: 'ok', ended: true, headers: ['Transfer-Encoding', 'chunked'] });
  await new Promise((resolve) => setImmediate(resolve));
  const second = recorder();
  pool.request(GET, second.handlers, Buffer.alloc(0));
  const answer = await second.done;
  t.like(answer, { status: 200, ended: true, error: undefined });
  t.deepEqual(answer.headers, ['X-Second', '1', 'Content-Length', '0']);
  t.is(opened.length, 1);
});

test('a handler that throws fails its exchange with that error instead of taking the process down, and its connection is closed', async (t) => {
  const server = http.createServer((_req, res) => res.end('ok'));
  const port = await listen(server);
  t.teardown(() => server.close());
  const { pool, opened } = poolTo(port);
  t.teardown(() => pool.destroy());
  const throwing = recorder();
  pool.request(GET, { ...throwing.handlers, response: () => { throw new Error('handler broke'); } }, Buffer.alloc(0));
  const answer = await throwing.done;
  t.is(answer.error?.message, 'handler broke');
  t.like(answer, { ended: false, closes: 1 });
  t.true(opened[0]!.destroyed);
});

test('raw: every byte of the answer is handed on as read, after response() of its head and before end(); the connection is reused after', async (t) => {
  const answers = ['HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\none\r\n', '3\r\ntwo\r\n0\r\n\r\n'];
  const server = net.createServer((socket) => {
    socket.on('data', () => {
      socket.write(answers[0]!);
      setTimeout(() => socket.write(answers[1]!), 20);
    });
  });
  const port = await listen(server);
  t.teardown(() => server.close());
  const { pool, opened } = poolTo(port);
  t.teardown(() => pool.destroy());
  for (let i = 0; i < 2; i++) {
    const events: string[] = [];
    const { handlers, done } = recorder();
    pool.request(
      GET,
      {
        ...handlers,
        response: (status, message, headers) => {
          events.push(`response ${status}`);
          handlers.response(status, message, headers);
        },
        end: () => {
          events.push('end');
          handlers.end();
        },
        raw: (chunk) => void events.push(chunk.toString('latin1')),
      },
      Buffer.alloc(0),
    );
    const answer = await done;
    t.like(answer, { status: 200, body: 'onetwo', ended: true, error: undefined });
    t.deepEqual(events, ['response 200', answers[0], answers[1], 'end']);
    await new Promise((resolve) => setImmediate(resolve));
  }
  t.is(opened.length, 1);
});

test('raw: bytes after the answer in the same read are not handed on; the exchange fails and the connection is closed', async (t) => {
  const server = net.createServer((socket) => {
    socket.on('data', () => socket.write('HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nsmug'));
  });
  const port = await listen(server);
  t.teardown(() => server.close());
  const { pool, opened } = poolTo(port);
  t.teardown(() => pool.destroy());
  const passed: string[] = [];
  const { handlers, done } = recorder();
  pool.request(GET, { ...handlers, raw: (chunk) => void passed.push(chunk.toString('latin1')) }, Buffer.alloc(0));
  const answer = await done;
  t.deepEqual(passed, []);
  t.false(answer.ended);
  t.true(answer.error instanceof Error, "failed, not ended");
  t.is(answer.closes, 1);
  await new Promise((resolve) => setImmediate(resolve));
  t.true(opened[0]!.destroyed);
});
