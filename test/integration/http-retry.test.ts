import test from 'ava';
import { freePort } from '../helpers/haproxy.js';
import http from 'node:http';
import http2 from 'node:http2';
import type { AddressInfo, Server } from 'node:net';
import { metricValue, startSidecar, type TestSidecar } from '../helpers/sidecars.js';

/** An HTTP/1.1 backend run by `handle`, which is told how many times this request id came before (0: the first attempt). */
interface Backend {
  port: number;
  seen: Array<{ method: string; id: string }>;
  close(): Promise<void>;
}

async function startBackend(handle: (req: http.IncomingMessage, res: http.ServerResponse, before: number) => void): Promise<Backend> {
  const seen: Backend['seen'] = [];
  const server = http.createServer((req, res) => {
    const id = String(req.headers['x-request-id']);
    const before = seen.filter((s) => s.id === id).length;
    seen.push({ method: req.method ?? '', id });
    req.resume();
    req.once('end', () => handle(req, res, before));
  });
  return listening(server, seen, () => server.closeAllConnections());
}

/** `server` listening on loopback: its port, what it saw, and a close that drops its connections first. */
async function listening<T>(server: Server, seen: T, dropConnections: () => void): Promise<{ port: number; seen: T; close(): Promise<void> }> {
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    port: (server.address() as AddressInfo).port,
    seen,
    close: () =>
      new Promise<void>((resolve) => {
        dropConnections();
        server.close(() => resolve());
      }),
  };
}

/** 503 to the first attempt of each request, 200 to the next. */
const failsOnce = (_req: http.IncomingMessage, res: http.ServerResponse, before: number): void => {
  res.statusCode = before === 0 ? 503 : 200;
  res.end(before === 0 ? 'unavailable' : 'ok');
};

interface Reply {
  status: number;
  body: string;
}

function request(port: number, path: string, id: string, options: { method?: string; body?: string } = {}): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port, path, method: options.method ?? 'GET', agent: false, headers: { host: 'web.mesh', 'x-request-id': id } }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString() }));
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end(options.body);
  });
}

type H2cPath = 'node' | 'frames';

/** A sidecar with HTTP listener "http": `/retry` routes to `cluster` with `retry`, everything else to it without. */
async function sidecarFor(endpoints: Array<{ address: string; port: number }>, retry: Record<string, unknown>, h2c?: H2cPath): Promise<{ sidecar: TestSidecar; port: number }> {
  const sidecar = await startSidecar({
    node: { id: 'vm-a' },
    listeners: [
      {
        kind: 'outbound',
        name: 'http',
        port: 0,
        protocol: 'http',
        ...(h2c !== undefined && { h2c }),
        route_config: {
          virtual_hosts: [
            {
              name: 'web',
              domains: ['*'],
              routes: [
                { match: { prefix: '/retry' }, cluster: 'svc', retry },
                { match: { prefix: '/' }, cluster: 'svc' },
              ],
            },
          ],
        },
      },
    ],
    clusters: [{ name: 'svc', endpoints }],
  });
  return { sidecar, port: sidecar.sidecar.listenerAddress('http').port };
}

async function until(what: string, done: () => boolean): Promise<void> {
  const deadline = Date.now() + 30_000;
  while (!done()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

const retries = (s: TestSidecar, reason: string): Promise<number> => metricValue(s.sidecar, 'vsockmesh_http_retries_total', { listener: 'http', route: 'web/0', cluster: 'svc', reason });


/** A sidecar whose cluster has a dead endpoint, then the live one on `livePort`; `/retry` retries on connect failure. */
async function besideDeadEndpoint(livePort: number, h2c?: H2cPath): Promise<{ sidecar: TestSidecar; port: number }> {
  const dead = await freePort();
  return sidecarFor(
    [
      { address: '127.0.0.1', port: dead },
      { address: '127.0.0.1', port: livePort },
    ],
    { attempts: 2, on: ['connect_failure'] },
    h2c,
  );
}

test('a dead endpoint and a live one: every GET succeeds through a retry on connect failure, counted and logged', async (t) => {
  const live = await startBackend((_q, res) => res.end('ok'));
  const s = await besideDeadEndpoint(live.port);
  try {
    const replies: Reply[] = [];
    for (let i = 0; i < 4; i++) replies.push(await request(s.port, '/retry/x', `dead-${i}`));
    t.deepEqual(
      replies.map((r) => r.status),
      [200, 200, 200, 200],
    );
    await until('4 access lines', () => s.sidecar.logs.access().length >= 4);
    const retried = s.sidecar.logs.access().filter((l) => l.attempts === 2).length;
    t.true(retried >= 1, 'round robin gave the dead endpoint at least one first attempt');
    t.is(await retries(s.sidecar, 'connect_failure'), retried);
    // Without a retry policy the dead endpoint's turn is a 502.
    const plain: number[] = [];
    for (let i = 0; i < 4; i++) plain.push((await request(s.port, '/plain', `plain-${i}`)).status);
    t.true(plain.includes(502), `statuses without retry: ${plain.join(',')}`);
  } finally {
    await s.sidecar.sidecar.stop();
    await live.close();
  }
});

test('a 503 is retried for a GET on a route that lists it, and passed through on a route that does not and for a POST', async (t) => {
  const backend = await startBackend(failsOnce);
  const s = await sidecarFor([{ address: '127.0.0.1', port: backend.port }], { attempts: 2, on: ['503'] });
  try {
    const retried = await request(s.port, '/retry/a', 'get-retried');
    t.deepEqual(retried, { status: 200, body: 'ok' });
    t.is(backend.seen.filter((x) => x.id === 'get-retried').length, 2);
    t.is(await retries(s.sidecar, '503'), 1);

    const plain = await request(s.port, '/plain', 'get-plain');
    t.deepEqual(plain, { status: 503, body: 'unavailable' });
    t.is(backend.seen.filter((x) => x.id === 'get-plain').length, 1);

    const post = await request(s.port, '/retry/b', 'post', { method: 'POST', body: 'order=1' });
    t.deepEqual(post, { status: 503, body: 'unavailable' });
    t.deepEqual(
      backend.seen.filter((x) => x.id === 'post').map((x) => x.method),
      ['POST'],
    );
    const put = await request(s.port, '/retry/c', 'put', { method: 'PUT', body: 'state=1' });
    t.deepEqual(put, { status: 200, body: 'ok' }, 'a PUT with a small body is held and sent again');
    const big = await request(s.port, '/retry/d', 'put-big', { method: 'PUT', body: 'x'.repeat(64 * 1024 + 1) });
    t.is(big.status, 503, 'a body over 64 KiB is streamed once, never held for a retry');
    t.is(backend.seen.filter((x) => x.id === 'put-big').length, 1);
    t.is(await retries(s.sidecar, '503'), 2);
    await until('5 access lines', () => s.sidecar.logs.access().length >= 5);
    const attempts = new Map(s.sidecar.logs.access().map((l) => [l.request_id, l.attempts]));
    t.deepEqual(Object.fromEntries(attempts), { 'get-retried': 2, 'get-plain': 1, post: 1, put: 2, 'put-big': 1 });
  } finally {
    await s.sidecar.sidecar.stop();
    await backend.close();
  }
});

test('when the cluster retry budget is spent, the failure passes through', async (t) => {
  const n = 6;
  const firsts: http.ServerResponse[] = [];
  const held: http.ServerResponse[] = [];
  const backend = await startBackend((_q, res, before) => {
    if (before > 0) return void held.push(res);
    // All first attempts fail together, so their retries compete for the budget at once.
    firsts.push(res);
    if (firsts.length === n) for (const r of firsts) r.writeHead(503).end('unavailable');
  });
  const s = await sidecarFor([{ address: '127.0.0.1', port: backend.port }], { attempts: 2, on: ['503'] });
  try {
    let passedThrough = 0;
    const replies = Array.from({ length: n }, (_, i) =>
      request(s.port, '/retry/x', `budget-${i}`).then((r) => {
        if (r.status === 503) passedThrough++;
        return r;
      }),
    );
    // Retries are held by the backend until every request either got one or was answered.
    await until('every request retried or answered', () => held.length + passedThrough === n);
    for (const r of held) r.end('ok');
    const statuses = (await Promise.all(replies)).map((r) => r.status).sort();
    // 6 active requests: 20 % is 1, the minimum of 3 concurrent retries applies.
    t.deepEqual(statuses, [200, 200, 200, 503, 503, 503]);
    t.is(await retries(s.sidecar, '503'), 3);
    await until(`${n} access lines`, () => s.sidecar.logs.access().length >= n);
    t.is(s.sidecar.logs.access().filter((l) => l.retry_budget_exhausted === true).length, 3);
  } finally {
    await s.sidecar.sidecar.stop();
    await backend.close();
  }
});

test('per_try_timeout: an attempt that gets no response head in time is abandoned and a GET goes again (a POST gets 504 per_try_timeout)', async (t) => {
  // The first attempt of each request hangs; the next is answered.
  const backend = await startBackend((_q, res, before) => {
    if (before > 0) res.end('ok');
  });
  const s = await sidecarFor([{ address: '127.0.0.1', port: backend.port }], { attempts: 2, on: ['reset'], per_try_timeout: '1s' });
  try {
    t.deepEqual(await request(s.port, '/retry/get', 'hang-get'), { status: 200, body: 'ok' });
    t.is(await retries(s.sidecar, 'per_try_timeout'), 1);
    const post = await request(s.port, '/retry/post', 'hang-post', { method: 'POST', body: 'x' });
    t.is(post.status, 504);
    t.is(post.body, 'per_try_timeout\n');
    t.deepEqual(
      backend.seen.map((r) => r.id),
      ['hang-get', 'hang-get', 'hang-post'],
      'the POST was sent once',
    );
    await until('2 access lines', () => s.sidecar.logs.access().length >= 2);
    t.like(s.sidecar.logs.access().find((l) => l.method === 'POST'), { status: 504, attempts: 1, reason: 'per_try_timeout' });
  } finally {
    await s.sidecar.sidecar.stop();
    await backend.close();
  }
});

// ---- HTTP/2 (h2c) ------------------------------------------------------------
// Each test runs on both h2c paths: frame by frame (the default) and Node's http2 (`h2c: node`).

/** An h2c backend run by `handle`, told the request id and how many times it came before (0: the first attempt). */
interface Http2Backend {
  port: number;
  seen: Array<{ method: string; id: string; body: string }>;
  close(): Promise<void>;
}

async function startHttp2Backend(handle: (stream: http2.ServerHttp2Stream, before: number, id: string) => void): Promise<Http2Backend> {
  const seen: Http2Backend['seen'] = [];
  const server = http2.createServer();
  server.on('stream', (stream, headers) => {
    const id = String(headers['x-request-id']);
    const before = seen.filter((s) => s.id === id).length;
    const entry = { method: String(headers[':method']), id, body: '' };
    seen.push(entry);
    const chunks: Buffer[] = [];
    stream.on('data', (c: Buffer) => chunks.push(c));
    stream.on('error', () => undefined);
    stream.once('end', () => {
      entry.body = Buffer.concat(chunks).toString();
      if (!stream.destroyed) handle(stream, before, id);
    });
  });
  const sessions = new Set<http2.ServerHttp2Session>();
  server.on('session', (s) => {
    sessions.add(s);
    s.once('close', () => sessions.delete(s));
  });
  return listening(server, seen, () => {
    for (const s of sessions) s.destroy();
  });
}

const answerOk = (stream: http2.ServerHttp2Stream): void => {
  stream.respond({ ':status': 200 });
  stream.end('ok');
};

/** One h2c request on `session`: its status and body (status 0 and the error code when the stream failed). */
function h2request(session: http2.ClientHttp2Session, path: string, id: string, method = 'GET', body?: string): Promise<Reply> {
  return new Promise((resolve) => {
    const stream = session.request({ ':path': path, ':method': method, ':authority': 'web.mesh', 'x-request-id': id }, { endStream: body === undefined });
    let status = 0;
    const chunks: Buffer[] = [];
    stream.on('response', (h) => (status = Number(h[':status'])));
    stream.on('data', (c: Buffer) => chunks.push(c));
    stream.on('error', () => undefined);
    stream.once('close', () => resolve({ status, body: Buffer.concat(chunks).toString() }));
    if (body !== undefined) stream.end(body);
  });
}

async function withH2Client<T>(port: number, use: (session: http2.ClientHttp2Session) => Promise<T>): Promise<T> {
  const session = http2.connect(`http://127.0.0.1:${port}`);
  session.on('error', () => undefined);
  try {
    return await use(session);
  } finally {
    session.close();
  }
}

for (const h2c of ['frames', 'node'] as const) {
  test(`h2c ${h2c}: a stream the upstream resets is retried for a GET, not for a POST; a refused stream is retried for a POST too`, async (t) => {
    // The first attempt of each request is reset: REFUSED_STREAM for the `refused-` ones, INTERNAL_ERROR for the others.
    const backend = await startHttp2Backend((stream, before, id) => {
      if (before > 0) return answerOk(stream);
      stream.close(id.startsWith('refused') ? http2.constants.NGHTTP2_REFUSED_STREAM : http2.constants.NGHTTP2_INTERNAL_ERROR);
    });
    const s = await sidecarFor([{ address: '127.0.0.1', port: backend.port }], { attempts: 2, on: ['reset'] }, h2c);
    try {
      await withH2Client(s.port, async (session) => {
        t.deepEqual(await h2request(session, '/retry/get', 'reset-get'), { status: 200, body: 'ok' });
        const post = await h2request(session, '/retry/post', 'reset-post', 'POST', 'order=1');
        t.is(post.status, 502, 'a POST the upstream may have acted on is not sent again');
        t.is(post.body, 'upstream_reset\n');
        t.deepEqual(await h2request(session, '/retry/refused', 'refused-post', 'POST', 'order=2'), { status: 200, body: 'ok' });
      });
      t.deepEqual(
        backend.seen.map((x) => `${x.method} ${x.id} ${x.body}`),
        ['GET reset-get ', 'GET reset-get ', 'POST reset-post order=1', 'POST refused-post order=2', 'POST refused-post order=2'],
        'the refused POST was sent again with its whole body',
      );
      t.is(await retries(s.sidecar, 'reset'), 1);
      t.is(await retries(s.sidecar, 'refused_stream'), 1);
      await until('3 access lines', () => s.sidecar.logs.access().length >= 3);
      const lines = new Map(s.sidecar.logs.access().map((l) => [l.request_id, l]));
      t.like(lines.get('reset-get'), { protocol: 'h2', status: 200, attempts: 2 });
      t.like(lines.get('reset-post'), { protocol: 'h2', status: 502, attempts: 1, reason: 'upstream_reset' });
      t.like(lines.get('refused-post'), { protocol: 'h2', status: 200, attempts: 2 });
    } finally {
      await s.sidecar.sidecar.stop();
      await backend.close();
    }
  });

  test(`h2c ${h2c}: a POST on a stream above a GOAWAY's last stream id (never processed) is sent again on a new session`, async (t) => {
    const backend = await startHttp2Backend((stream, before, id) => {
      if (before > 0 || id === 'warm') return answerOk(stream);
      // Goes away saying it processed the session's streams up to the one before this (the warm-up's), then closes.
      stream.session?.goaway(http2.constants.NGHTTP2_NO_ERROR, stream.id! - 2);
      stream.session?.destroy();
    });
    const s = await sidecarFor([{ address: '127.0.0.1', port: backend.port }], { attempts: 2, on: ['reset'] }, h2c);
    try {
      const replies = await withH2Client(s.port, async (session) => [await h2request(session, '/retry/warm', 'warm', 'POST', 'order=2'), await h2request(session, '/retry/goaway', 'goaway-post', 'POST', 'order=3')]);
      t.deepEqual(replies, [
        { status: 200, body: 'ok' },
        { status: 200, body: 'ok' },
      ]);
      t.deepEqual(
        backend.seen.map((x) => `${x.method} ${x.body}`),
        ['POST order=2', 'POST order=3', 'POST order=3'],
      );
      t.is(await retries(s.sidecar, 'refused_stream'), 1);
    } finally {
      await s.sidecar.sidecar.stop();
      await backend.close();
    }
  });

  test(`h2c ${h2c}: a dead endpoint and a live one: every request (GET and gRPC-like POST) is answered through a retry on connect failure`, async (t) => {
    const live = await startHttp2Backend(answerOk);
    const s = await besideDeadEndpoint(live.port, h2c);
    try {
      const replies = await withH2Client(s.port, async (session) => {
        const out: Reply[] = [];
        for (let i = 0; i < 6; i++) out.push(await (i % 2 === 0 ? h2request(session, '/retry/x', `h2-dead-${i}`) : h2request(session, '/retry/x', `h2-dead-${i}`, 'POST', `call-${i}`)));
        return out;
      });
      t.deepEqual(
        replies.map((r) => r.status),
        [200, 200, 200, 200, 200, 200],
      );
      t.deepEqual(
        live.seen.filter((x) => x.method === 'POST').map((x) => x.body),
        ['call-1', 'call-3', 'call-5'],
      );
      await until('6 access lines', () => s.sidecar.logs.access().length >= 6);
      const retried = s.sidecar.logs.access().filter((l) => l.attempts === 2).length;
      t.true(retried >= 1, 'round robin gave the dead endpoint at least one first attempt');
      t.is(await retries(s.sidecar, 'connect_failure'), retried);
    } finally {
      await s.sidecar.sidecar.stop();
      await live.close();
    }
  });

  test(`h2c ${h2c}: a 503 is retried for a PUT with its body, not for one whose body outgrew the replay bound; per_try_timeout abandons a hung attempt`, async (t) => {
    // The first attempt of each request: hangs for the `hang-` ones, else 503; the next is answered.
    const backend = await startHttp2Backend((stream, before, id) => {
      if (before > 0) return answerOk(stream);
      if (id.startsWith('hang')) return;
      stream.respond({ ':status': 503 });
      stream.end('unavailable');
    });
    const s = await sidecarFor([{ address: '127.0.0.1', port: backend.port }], { attempts: 2, on: ['503', 'reset'], per_try_timeout: '1s' }, h2c);
    const big = 'b'.repeat(100 * 1024);
    try {
      await withH2Client(s.port, async (session) => {
        t.deepEqual(await h2request(session, '/retry/put', 'status-put', 'PUT', 'v=1'), { status: 200, body: 'ok' });
        t.deepEqual(await h2request(session, '/retry/big', 'status-big', 'PUT', big), { status: 503, body: 'unavailable' }, 'a body past the replay bound is not sent again');
        t.deepEqual(await h2request(session, '/retry/hang', 'hang-get'), { status: 200, body: 'ok' });
      });
      t.deepEqual(
        backend.seen.map((x) => `${x.id} ${x.body.length}`),
        ['status-put 3', 'status-put 3', `status-big ${big.length}`, 'hang-get 0', 'hang-get 0'],
      );
      t.is(await retries(s.sidecar, '503'), 1);
      t.is(await retries(s.sidecar, 'per_try_timeout'), 1);
    } finally {
      await s.sidecar.sidecar.stop();
      await backend.close();
    }
  });
}
