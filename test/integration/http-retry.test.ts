import test from 'ava';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
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
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    port: (server.address() as AddressInfo).port,
    seen,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
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

/** A sidecar with HTTP listener "http": `/retry` routes to `cluster` with `retry`, everything else to it without. */
async function sidecarFor(endpoints: Array<{ address: string; port: number }>, retry: Record<string, unknown>): Promise<{ sidecar: TestSidecar; port: number }> {
  const sidecar = await startSidecar({
    node: { id: 'vm-a' },
    listeners: [
      {
        kind: 'outbound',
        name: 'http',
        port: 0,
        protocol: 'http',
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

/** A port nothing listens on. */
async function closedPort(): Promise<number> {
  const b = await startBackend((_q, res) => res.end());
  await b.close();
  return b.port;
}

test('a dead endpoint and a live one: every GET succeeds through a retry on connect failure, counted and logged', async (t) => {
  const live = await startBackend((_q, res) => res.end('ok'));
  const dead = await closedPort();
  const s = await sidecarFor(
    [
      { address: '127.0.0.1', port: dead },
      { address: '127.0.0.1', port: live.port },
    ],
    { attempts: 2, on: ['connect_failure'] },
  );
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
