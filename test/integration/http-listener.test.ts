import test from 'ava';
import { freePort } from '../helpers/haproxy.js';
import http from 'node:http';
import http2 from 'node:http2';
import net, { type AddressInfo } from 'node:net';
import * as grpc from '@grpc/grpc-js';
import { startSidecar, type TestSidecar } from '../helpers/sidecars.js';
import { meshTls } from '../helpers/peer-tls.js';

/** An HTTP/1.1 backend that answers with its name and the request it saw; `/hang` never answers. */
interface Backend {
  name: string;
  port: number;
  seen: Array<{ url: string; headers: http.IncomingHttpHeaders }>;
  close(): Promise<void>;
}

async function startBackend(name: string): Promise<Backend> {
  const seen: Backend['seen'] = [];
  const server = http.createServer((req, res) => {
    seen.push({ url: req.url ?? '', headers: req.headers });
    if (req.url === '/hang') return;
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      res.setHeader('content-type', 'application/json');
      res.end(JSON.stringify({ backend: name, body: Buffer.concat(chunks).toString() }));
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    name,
    port: (server.address() as AddressInfo).port,
    seen,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}


interface Reply {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: string;
  reusedSocket: boolean;
}

function request(port: number, path: string, options: { host?: string; headers?: Record<string, string>; agent?: http.Agent; method?: string; body?: string } = {}): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const req = http.request(
      { host: '127.0.0.1', port, path, method: options.method ?? 'GET', agent: options.agent ?? false, headers: { host: options.host ?? 'web.mesh', ...options.headers } },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks).toString(), reusedSocket: req.reusedSocket }));
        res.on('error', reject);
      },
    );
    req.on('error', reject);
    req.end(options.body);
  });
}

const backendOf = (r: Reply): string => (JSON.parse(r.body) as { backend: string }).backend;
const endpoint = (b: Backend) => ({ address: '127.0.0.1', port: b.port });

interface Setup {
  backends: Backend[];
  sidecar: TestSidecar;
  port: number;
  stop(): Promise<void>;
}

/** Three backends a, b, c; clusters "all" (a, b, c), "a", "b", "c"; a sidecar with an HTTP listener "http" routed by `routeConfig`. */
async function setup(routeConfig: Record<string, unknown>, extra: { clusters?: Array<Record<string, unknown>>; vsock?: Record<string, unknown> } = {}): Promise<Setup> {
  const backends = await Promise.all(['a', 'b', 'c'].map(startBackend));
  const sidecar = await startSidecar({
    node: { id: 'vm-a' },
    ...(extra.vsock && { vsock: extra.vsock }),
    listeners: [{ kind: 'outbound', name: 'http', port: 0, protocol: 'http', route_config: routeConfig }],
    clusters: [
      { name: 'all', endpoints: backends.map(endpoint) },
      ...backends.map((b) => ({ name: b.name, endpoints: [endpoint(b)] })),
      ...(extra.clusters ?? []),
    ],
  });
  return {
    backends,
    sidecar,
    port: sidecar.sidecar.listenerAddress('http').port,
    stop: async () => {
      await sidecar.sidecar.stop();
      await Promise.all(backends.map((b) => b.close()));
    },
  };
}

const everything = (cluster: string, timeout?: string) => ({ virtual_hosts: [{ name: 'web', domains: ['*'], routes: [{ match: { prefix: '/' }, cluster, ...(timeout && { timeout }) }] }] });

test('HTTP/1.1: the requests of one keep-alive client connection are spread over the cluster endpoints, one by one', async (t) => {
  const s = await setup(everything('all'));
  const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
  try {
    const replies: Reply[] = [];
    for (let i = 0; i < 9; i++) replies.push(await request(s.port, `/item/${i}`, { agent }));
    t.deepEqual(
      replies.map((r) => r.status),
      Array(9).fill(200),
    );
    t.deepEqual(replies.slice(1).map((r) => r.reusedSocket), Array(8).fill(true), 'one client connection');
    const counts = new Map<string, number>();
    for (const r of replies) counts.set(backendOf(r), (counts.get(backendOf(r)) ?? 0) + 1);
    t.deepEqual([...counts.entries()].sort(), [
      ['a', 3],
      ['b', 3],
      ['c', 3],
    ]);
  } finally {
    agent.destroy();
    await s.stop();
  }
});

test('weighted clusters split requests by weight', async (t) => {
  const s = await setup({
    virtual_hosts: [{ name: 'web', domains: ['*'], routes: [{ match: { prefix: '/' }, weighted_clusters: [{ name: 'a', weight: 3 }, { name: 'b', weight: 1 }] }] }],
  });
  const agent = new http.Agent({ keepAlive: true, maxSockets: 8 });
  try {
    const n = 400;
    const replies = await Promise.all(Array.from({ length: n }, (_, i) => request(s.port, `/${i}`, { agent })));
    const toA = replies.filter((r) => backendOf(r) === 'a').length;
    const toB = replies.filter((r) => backendOf(r) === 'b').length;
    t.is(toA + toB, n);
    // Expected 300/100; the binomial's standard deviation is about 8.7: seven of them either way.
    t.true(toA > 240 && toA < 360, `a got ${toA} of ${n}`);
  } finally {
    agent.destroy();
    await s.stop();
  }
});

test('virtual hosts, exact, regex, prefix and header matches pick their clusters; an unmatched request gets 404 no_route_match', async (t) => {
  const s = await setup({
    virtual_hosts: [
      {
        name: 'web',
        domains: ['web.mesh'],
        routes: [
          { match: { path: '/healthz' }, cluster: 'c' },
          { match: { safe_regex: '/users/[0-9]+' }, cluster: 'b' },
          { match: { prefix: '/api', headers: [{ name: 'x-canary', exact: 'yes' }] }, cluster: 'c' },
          { match: { prefix: '/api' }, cluster: 'a' },
        ],
      },
      { name: 'other', domains: ['*.internal'], routes: [{ match: { prefix: '/' }, cluster: 'b' }] },
    ],
  });
  try {
    t.is(backendOf(await request(s.port, '/healthz')), 'c');
    t.is(backendOf(await request(s.port, '/users/42')), 'b');
    t.is(backendOf(await request(s.port, '/api/x', { headers: { 'x-canary': 'yes' } })), 'c');
    t.is(backendOf(await request(s.port, '/api/x')), 'a');
    t.is(backendOf(await request(s.port, '/x', { host: 'db.internal:8080' })), 'b');
    const none = await request(s.port, '/users/x');
    t.is(none.status, 404);
    t.is(none.headers['x-vsockmesh-reason'], 'no_route_match');
    const noHost = await request(s.port, '/', { host: 'elsewhere' });
    t.is(noHost.status, 404);
    t.is(noHost.headers['x-vsockmesh-reason'], 'no_virtual_host');
    t.is(s.backends.reduce((n, b) => n + b.seen.length, 0), 5, 'refused requests never reach a backend');
  } finally {
    await s.stop();
  }
});

test('the backend sees x-forwarded-for with the client, an x-request-id (the client\'s own one kept), the body and no hop-by-hop headers', async (t) => {
  const s = await setup(everything('a'));
  try {
    const reply = await request(s.port, '/echo', { method: 'POST', body: 'hello', headers: { 'x-request-id': 'req-1', 'x-forwarded-for': '10.9.9.9', 'x-drop': '1', connection: 'x-drop' } });
    t.is(JSON.parse(reply.body).body, 'hello');
    const fresh = await request(s.port, '/fresh');
    t.is(fresh.status, 200);
    const [first, second] = s.backends[0]!.seen;
    t.is(first!.headers['x-request-id'], 'req-1');
    t.is(first!.headers['x-forwarded-for'], '10.9.9.9, 127.0.0.1');
    t.is(first!.headers['x-drop'], undefined);
    t.is(first!.headers.host, 'web.mesh');
    t.regex(String(second!.headers['x-request-id']), /^[0-9a-f-]{36}$/);
    t.is(second!.headers['x-forwarded-for'], '127.0.0.1');
    // RFC 7239 beside it (forwarded: append, the default).
    t.is(first!.headers.forwarded, 'for=127.0.0.1;proto=http;host=web.mesh');
  } finally {
    await s.stop();
  }
});

test('an endpoint that refuses the connection gives 502 upstream_connect_failed; a route timeout gives 504 route_timeout', async (t) => {
  const dead = await freePort();
  const s = await setup(
    {
      virtual_hosts: [
        {
          name: 'web',
          domains: ['*'],
          routes: [
            { match: { prefix: '/dead' }, cluster: 'dead' },
            // Long enough for the request to reach the backend on a loaded machine before the timeout fires.
            { match: { prefix: '/hang' }, cluster: 'a', timeout: '2s' },
          ],
        },
      ],
    },
    { clusters: [{ name: 'dead', endpoints: [{ address: '127.0.0.1', port: dead }] }] },
  );
  try {
    const refused = await request(s.port, '/dead');
    t.is(refused.status, 502);
    t.is(refused.headers['x-vsockmesh-reason'], 'upstream_connect_failed');
    const slow = await request(s.port, '/hang');
    t.is(slow.status, 504);
    t.is(slow.headers['x-vsockmesh-reason'], 'route_timeout');
    t.is(s.backends[0]!.seen.length, 1, 'the slow request did reach the backend');
  } finally {
    await s.stop();
  }
});

test('no endpoint the transport policy allows gives 503 no_healthy_endpoint', async (t) => {
  const s = await setup(everything('all'), { vsock: { policy: 'vsock-only' } });
  try {
    const reply = await request(s.port, '/');
    t.is(reply.status, 503);
    t.is(reply.headers['x-vsockmesh-reason'], 'no_healthy_endpoint');
    t.is(s.backends.reduce((n, b) => n + b.seen.length, 0), 0);
  } finally {
    await s.stop();
  }
});

test('every request is counted by route, cluster, status class and transport, and logged with its route and request id', async (t) => {
  const s = await setup({
    virtual_hosts: [
      {
        name: 'web',
        domains: ['*'],
        routes: [
          { match: { path: '/missing' }, cluster: 'a' },
          { match: { prefix: '/' }, cluster: 'all' },
        ],
      },
    ],
  });
  try {
    await request(s.port, '/one', { headers: { 'x-request-id': 'logged-1' } });
    await request(s.port, '/two');
    await request(s.port, '/three');
    const text = await s.sidecar.sidecar.metrics.registry.getSingleMetricAsString('vsockmesh_http_requests_total');
    t.regex(text, /vsockmesh_http_requests_total\{listener="http",route="web\/1",cluster="all",status_class="2xx",transport="tcp"\} 3/);
    const histogram = await s.sidecar.sidecar.metrics.registry.getSingleMetricAsString('vsockmesh_http_request_duration_seconds');
    t.regex(histogram, /vsockmesh_http_request_duration_seconds_count\{listener="http",route="web\/1",cluster="all"\} 3/);
    const lines = s.sidecar.logs.access().filter((l) => l.request_id === 'logged-1');
    t.is(lines.length, 1);
    t.like(lines[0], { listener: 'http', protocol: 'http/1.1', method: 'GET', path: '/one', status: 200, route: 'web/1', cluster: 'all', transport: 'tcp' });
  } finally {
    await s.stop();
  }
});

// ---- HTTP/2 prior knowledge: gRPC -----------------------------------------------

const identity = (b: Buffer): Buffer => b;
const whoService: grpc.ServiceDefinition = {
  who: { path: '/test.Who/Who', requestStream: false, responseStream: false, requestSerialize: identity, requestDeserialize: identity, responseSerialize: identity, responseDeserialize: identity },
};

async function startGrpcBackend(name: string, seen: grpc.Metadata[]): Promise<{ port: number; server: grpc.Server }> {
  const server = new grpc.Server();
  server.addService(whoService, {
    who: (call: grpc.ServerUnaryCall<Buffer, Buffer>, callback: grpc.sendUnaryData<Buffer>) => {
      seen.push(call.metadata);
      callback(null, Buffer.from(name));
    },
  });
  const port = await new Promise<number>((resolve, reject) => server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (err, p) => (err ? reject(err) : resolve(p))));
  return { port, server };
}

test('gRPC (h2c): the calls of one client channel are spread over three backends, with x-forwarded-for and x-request-id', async (t) => {
  const seen: grpc.Metadata[] = [];
  const backends = await Promise.all(['g1', 'g2', 'g3'].map((n) => startGrpcBackend(n, seen)));
  const sidecar = await startSidecar({
    node: { id: 'vm-a' },
    listeners: [{ kind: 'outbound', name: 'grpc', port: 0, protocol: 'http', cluster: 'who' }],
    clusters: [{ name: 'who', endpoints: backends.map((b) => ({ address: '127.0.0.1', port: b.port })) }],
  });
  const Client = grpc.makeGenericClientConstructor(whoService, 'Who');
  const client = new Client(`127.0.0.1:${sidecar.sidecar.listenerAddress('grpc').port}`, grpc.credentials.createInsecure());
  const call = () =>
    new Promise<string>((resolve, reject) =>
      (client as unknown as { who: (req: Buffer, cb: (err: Error | null, res?: Buffer) => void) => void }).who(Buffer.from('hi'), (err, res) => (err ? reject(err) : resolve(res!.toString()))),
    );
  try {
    const answers: string[] = [];
    for (let i = 0; i < 9; i++) answers.push(await call());
    t.deepEqual([...answers].sort(), ['g1', 'g1', 'g1', 'g2', 'g2', 'g2', 'g3', 'g3', 'g3']);
    t.is(sidecar.logs.access().filter((l) => l.protocol === 'h2' && l.status === 200).length, 9);
    t.is(seen[0]!.get('x-forwarded-for')[0], '127.0.0.1');
    t.regex(String(seen[0]!.get('x-request-id')[0]), /^[0-9a-f-]{36}$/);
  } finally {
    client.close();
    await sidecar.sidecar.stop();
    for (const b of backends) b.server.forceShutdown();
  }
});

test('two hops: requests go through the peer sidecar with the PROXY v2 header like L4 connections, spread over its ports', async (t) => {
  const backends = await Promise.all(['a', 'b'].map(startBackend));
  const b = await startSidecar({ node: { id: 'vm-b' }, listeners: [{ kind: 'inbound', name: 'inbound', addresses: ['127.0.0.1'], port: 0, ports: backends.map((x) => x.port) }] });
  const inbound = b.sidecar.listenerAddress('inbound');
  const a = await startSidecar({
    node: { id: 'vm-a' },
    listeners: [{ kind: 'outbound', name: 'http', port: 0, protocol: 'http', cluster: 'web' }],
    clusters: [{ name: 'web', endpoints: backends.map((x) => ({ ...endpoint(x), vm_id: 'vm-b', peer: { address: inbound.address, port: inbound.port } })) }],
  });
  const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
  try {
    const port = a.sidecar.listenerAddress('http').port;
    const replies: Reply[] = [];
    for (let i = 0; i < 4; i++) replies.push(await request(port, `/${i}`, { agent }));
    t.deepEqual(replies.map(backendOf).sort(), ['a', 'a', 'b', 'b']);
    const lines = a.logs.access().filter((l) => l.status === 200);
    t.is(lines.length, 4);
    t.true(lines.every((l) => l.upstream === `${inbound.address}:${inbound.port}` && l.transport === 'tcp'));
    // One pooled connection per endpoint reached the peer sidecar, its header naming vm-a.
    await a.sidecar.stop();
    await waitForAccess(b, 2);
    t.deepEqual(b.logs.access().map((l) => l.source_vm), ['vm-a', 'vm-a']);
  } finally {
    agent.destroy();
    await a.sidecar.stop();
    await b.sidecar.stop();
    await Promise.all(backends.map((x) => x.close()));
  }
});

async function waitForAccess(s: TestSidecar, n: number): Promise<void> {
  const deadline = Date.now() + 20_000;
  while (s.logs.access().length < n) {
    if (Date.now() > deadline) throw new Error(`expected ${n} access lines, got ${s.logs.access().length}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

test('a backend that resets the connection mid-request gives 502 upstream_reset', async (t) => {
  const server = http.createServer((req) => req.socket.destroy());
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const sidecar = await startSidecar({
    node: { id: 'vm-a' },
    listeners: [{ kind: 'outbound', name: 'http', port: 0, protocol: 'http', cluster: 'rude' }],
    clusters: [{ name: 'rude', endpoints: [{ address: '127.0.0.1', port: (server.address() as AddressInfo).port }] }],
  });
  try {
    const reply = await request(sidecar.sidecar.listenerAddress('http').port, '/');
    t.is(reply.status, 502);
    t.is(reply.headers['x-vsockmesh-reason'], 'upstream_reset');
  } finally {
    await sidecar.sidecar.stop();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  }
});

test('HTTP/2: a dead endpoint gives 502 upstream_connect_failed, a hanging one 504 route_timeout', async (t) => {
  const dead = await freePort();
  const hanging = http2.createServer();
  hanging.on('stream', () => {});
  await new Promise<void>((resolve) => hanging.listen(0, '127.0.0.1', resolve));
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
                { match: { prefix: '/dead' }, cluster: 'dead' },
                { match: { prefix: '/hang' }, cluster: 'hang', timeout: '300ms' },
              ],
            },
          ],
        },
      },
    ],
    clusters: [
      { name: 'dead', endpoints: [{ address: '127.0.0.1', port: dead }] },
      { name: 'hang', endpoints: [{ address: '127.0.0.1', port: (hanging.address() as AddressInfo).port }] },
    ],
  });
  const session = http2.connect(`http://127.0.0.1:${sidecar.sidecar.listenerAddress('http').port}`);
  const get = (path: string) =>
    new Promise<http2.IncomingHttpHeaders>((resolve, reject) => {
      const stream = session.request({ ':path': path });
      stream.on('response', (headers) => resolve(headers));
      stream.on('error', reject);
      stream.resume();
    });
  try {
    const refused = await get('/dead');
    t.is(Number(refused[':status']), 502);
    t.is(refused['x-vsockmesh-reason'], 'upstream_connect_failed');
    const slow = await get('/hang');
    t.is(Number(slow[':status']), 504);
    t.is(slow['x-vsockmesh-reason'], 'route_timeout');
  } finally {
    session.destroy();
    await sidecar.sidecar.stop();
    await new Promise<void>((resolve) => hanging.close(() => resolve()));
  }
});

/** A frame's type, flags and stream as a raw HTTP/2 client sees it. */
interface FrameSeen {
  type: number;
  flags: number;
  stream: number;
}

const FRAME = { DATA: 0, HEADERS: 1, RST_STREAM: 3, SETTINGS: 4 } as const;
const END_STREAM = 0x1;

/**
 * One GET on stream 1 of a raw h2c connection (no client library between the
 * test and the frames): the frames the listener sends on it, up to the one
 * that ends the stream (END_STREAM, or RST_STREAM).
 */
function rawH2Get(port: number, authority: string, path: string): Promise<FrameSeen[]> {
  const literal = (index: number, value: string): Buffer => Buffer.concat([Buffer.from([0x40 | index, value.length]), Buffer.from(value)]);
  // :method GET, :scheme http (static table 2, 6), :authority and :path as literals with indexed names (1, 4), no Huffman.
  const block = Buffer.concat([Buffer.from([0x82, 0x86]), literal(1, authority), literal(4, path)]);
  const frame = (type: number, flags: number, stream: number, payload: Buffer): Buffer => {
    const head = Buffer.alloc(9);
    head.writeUIntBE(payload.length, 0, 3);
    head[3] = type;
    head[4] = flags;
    head.writeUInt32BE(stream, 5);
    return Buffer.concat([head, payload]);
  };
  return new Promise((resolve, reject) => {
    const socket = net.connect(port, '127.0.0.1');
    const seen: FrameSeen[] = [];
    let pending = Buffer.alloc(0);
    socket.on('error', reject);
    socket.on('close', () => reject(new Error(`connection closed before stream 1 ended: ${JSON.stringify(seen)}`)));
    socket.write(Buffer.concat([Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n'), frame(FRAME.SETTINGS, 0, 0, Buffer.alloc(0)), frame(FRAME.HEADERS, 0x4 | END_STREAM, 1, block)]));
    socket.on('data', (chunk: Buffer) => {
      pending = Buffer.concat([pending, chunk]);
      while (pending.length >= 9 && pending.length >= 9 + pending.readUIntBE(0, 3)) {
        const f = { type: pending[3]!, flags: pending[4]!, stream: pending.readUInt32BE(5) & 0x7fffffff };
        pending = pending.subarray(9 + pending.readUIntBE(0, 3));
        if (f.type === FRAME.SETTINGS && (f.flags & 0x1) === 0) socket.write(frame(FRAME.SETTINGS, 0x1, 0, Buffer.alloc(0)));
        if (f.stream !== 1) continue;
        seen.push(f);
        const ends = f.type === FRAME.RST_STREAM || ((f.type === FRAME.DATA || f.type === FRAME.HEADERS) && (f.flags & END_STREAM) !== 0);
        if (ends) {
          socket.removeAllListeners('close');
          socket.destroy();
          resolve(seen);
        }
      }
    });
  });
}

test('HTTP/2: an answer without trailers ends its stream with END_STREAM, not RST_STREAM; one with trailers passes them on', async (t) => {
  const backend = http2.createServer();
  backend.on('stream', (stream, headers) => {
    if (headers[':path'] === '/trailers') {
      stream.respond({ ':status': 200, 'content-type': 'application/grpc' }, { waitForTrailers: true });
      stream.once('wantTrailers', () => stream.sendTrailers({ 'grpc-status': '0', 'grpc-message': 'fine' }));
    } else stream.respond({ ':status': 200 });
    stream.end('answer');
  });
  await new Promise<void>((resolve) => backend.listen(0, '127.0.0.1', resolve));
  const sidecar = await startSidecar({
    node: { id: 'vm-a' },
    listeners: [{ kind: 'outbound', name: 'http', port: 0, protocol: 'http', route_config: everything('h2') }],
    clusters: [{ name: 'h2', endpoints: [{ address: '127.0.0.1', port: (backend.address() as AddressInfo).port }] }],
  });
  const port = sidecar.sidecar.listenerAddress('http').port;
  const session = http2.connect(`http://127.0.0.1:${port}`);
  try {
    // A client may take a reset stream as a failed one (curl, gRPC clients) and it only went out on the session's next read.
    const frames = await rawH2Get(port, 'web.mesh', '/plain');
    t.deepEqual(
      frames.filter((f) => f.type === FRAME.RST_STREAM),
      [],
    );
    const last = frames.at(-1)!;
    t.is(last.type, FRAME.DATA);
    t.is(last.flags & END_STREAM, END_STREAM);
    const grpcLike = await new Promise<{ body: string; trailers: http2.IncomingHttpHeaders | undefined }>((resolve, reject) => {
      const stream = session.request({ ':path': '/trailers', ':authority': 'web.mesh' });
      const chunks: Buffer[] = [];
      let trailers: http2.IncomingHttpHeaders | undefined;
      stream.on('data', (c: Buffer) => chunks.push(c));
      stream.on('trailers', (h) => (trailers = h));
      stream.on('end', () => resolve({ body: Buffer.concat(chunks).toString(), trailers }));
      stream.on('error', reject);
    });
    t.is(grpcLike.body, 'answer');
    t.is(grpcLike.trailers?.['grpc-status'], '0');
    t.is(grpcLike.trailers?.['grpc-message'], 'fine');
  } finally {
    session.destroy();
    await sidecar.sidecar.stop();
    await new Promise<void>((resolve) => backend.close(() => resolve()));
  }
});

test('drain closes idle keep-alive HTTP/1.1 connections and HTTP/2 sessions, so it finishes without aborting any', async (t) => {
  // Requests go upstream in their own protocol: HTTP/2 ones to an HTTP/2 backend.
  const h2backend = http2.createServer((_req, res) => res.end('h2'));
  await new Promise<void>((resolve) => h2backend.listen(0, '127.0.0.1', resolve));
  const s = await setup(
    {
      virtual_hosts: [
        { name: 'web', domains: ['web.mesh'], routes: [{ match: { prefix: '/' }, cluster: 'all' }] },
        { name: 'h2', domains: ['h2.mesh'], routes: [{ match: { prefix: '/' }, cluster: 'h2' }] },
      ],
    },
    { clusters: [{ name: 'h2', endpoints: [{ address: '127.0.0.1', port: (h2backend.address() as AddressInfo).port }] }] },
  );
  const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
  const session = http2.connect(`http://127.0.0.1:${s.port}`);
  try {
    t.is((await request(s.port, '/', { agent })).status, 200);
    const h2 = await new Promise<number>((resolve, reject) => {
      const stream = session.request({ ':path': '/', ':authority': 'h2.mesh' });
      stream.on('response', (headers) => resolve(Number(headers[':status'])));
      stream.on('error', reject);
      stream.resume();
    });
    t.is(h2, 200);
    const sessionClosed = new Promise<void>((resolve) => session.once('close', () => resolve()));
    const result = await s.sidecar.sidecar.drain(20_000);
    t.is(result.aborted, 0);
    await sessionClosed;
  } finally {
    agent.destroy();
    session.destroy();
    await s.stop();
    await new Promise<void>((resolve) => h2backend.close(() => resolve()));
  }
});

/** Raw bytes to the listener; what comes back before it closes. */
function raw(port: number, bytes: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(port, '127.0.0.1', () => socket.end(bytes));
    const chunks: Buffer[] = [];
    socket.on('data', (c: Buffer) => chunks.push(c));
    socket.on('end', () => resolve(Buffer.concat(chunks).toString()));
    socket.on('error', reject);
  });
}

test('malformed HTTP/1.1: Content-Length with Transfer-Encoding (400) and oversized headers (431) never reach the backend; bad chunking gets 400', async (t) => {
  const s = await setup(everything('a'));
  try {
    const smuggled = await raw(s.port, 'POST / HTTP/1.1\r\nHost: web.mesh\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /evil HTTP/1.1\r\nHost: web.mesh\r\n\r\n');
    t.regex(smuggled, /^HTTP\/1\.1 400 /);
    const huge = await raw(s.port, `GET / HTTP/1.1\r\nHost: web.mesh\r\nX-Big: ${'a'.repeat(20_000)}\r\n\r\n`);
    t.regex(huge, /^HTTP\/1\.1 431 /);
    // Refused at the headers: nothing was sent upstream (a request that follows proves the backend is reached otherwise).
    t.is((await request(s.port, '/after')).status, 200);
    t.deepEqual(
      s.backends[0]!.seen.map((r) => r.url),
      ['/after'],
    );
    // A body error comes after the headers went upstream: the client gets 400 and the upstream request is aborted.
    const badChunk = await raw(s.port, 'POST / HTTP/1.1\r\nHost: web.mesh\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n');
    t.regex(badChunk, /^HTTP\/1\.1 400 /);
  } finally {
    await s.stop();
  }
});

test('under peer TLS, HTTP/1.1 requests and gRPC calls cross the peer hop over TLS, checked against the endpoint\'s VM', async (t) => {
  const tls = await meshTls('strict');
  const backend = await startBackend('tls');
  const seen: grpc.Metadata[] = [];
  const grpcBackend = await startGrpcBackend('g', seen);
  const b = await startSidecar({
    node: { id: 'vm-b' },
    peer_tls: tls.b,
    listeners: [{ kind: 'inbound', name: 'inbound', addresses: ['127.0.0.1'], port: 0, ports: [backend.port, grpcBackend.port] }],
  });
  const inbound = b.sidecar.listenerAddress('inbound');
  const peer = { vm_id: 'vm-b', peer: { address: inbound.address, port: inbound.port } };
  const a = await startSidecar({
    node: { id: 'vm-a' },
    peer_tls: tls.a,
    listeners: [
      { kind: 'outbound', name: 'http', port: 0, protocol: 'http', cluster: 'web' },
      { kind: 'outbound', name: 'grpc', port: 0, protocol: 'http', cluster: 'who' },
    ],
    clusters: [
      { name: 'web', endpoints: [{ ...endpoint(backend), ...peer }] },
      { name: 'who', endpoints: [{ address: '127.0.0.1', port: grpcBackend.port, ...peer }] },
    ],
  });
  const Client = grpc.makeGenericClientConstructor(whoService, 'Who');
  const client = new Client(`127.0.0.1:${a.sidecar.listenerAddress('grpc').port}`, grpc.credentials.createInsecure());
  try {
    const replies = [await request(a.sidecar.listenerAddress('http').port, '/one', { method: 'POST', body: 'x'.repeat(100_000) }), await request(a.sidecar.listenerAddress('http').port, '/two')];
    t.deepEqual(
      replies.map((r) => [r.status, backendOf(r)]),
      [
        [200, 'tls'],
        [200, 'tls'],
      ],
    );
    t.is((JSON.parse(replies[0]!.body) as { body: string }).body.length, 100_000);
    const answer = await new Promise<string>((resolve, reject) =>
      (client as unknown as { who: (req: Buffer, cb: (err: Error | null, res?: Buffer) => void) => void }).who(Buffer.from('hi'), (err, res) => (err ? reject(err) : resolve(res!.toString()))),
    );
    t.is(answer, 'g');
    const text = await a.sidecar.metrics.registry.getSingleMetricAsString('vsockmesh_peer_tls_handshakes_total');
    t.regex(text, /vsockmesh_peer_tls_handshakes_total\{listener="(http|grpc)",direction="outbound"/);
  } finally {
    client.close();
    await a.sidecar.stop();
    await b.sidecar.stop();
    await backend.close();
    grpcBackend.server.forceShutdown();
    await tls.cleanup();
  }
});

test('a pooled upstream connection the backend closed while idle is not reused: the next request gets a fresh one', async (t) => {
  const closed: Array<Promise<void>> = [];
  const server = http.createServer((req, res) => {
    req.resume();
    res.end('ok');
  });
  server.on('connection', (socket) => closed.push(new Promise((resolve) => socket.once('close', () => resolve()))));
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const sidecar = await startSidecar({
    node: { id: 'vm-a' },
    listeners: [{ kind: 'outbound', name: 'http', port: 0, protocol: 'http', route_config: everything('idle', '5s') }],
    clusters: [{ name: 'idle', endpoints: [{ address: '127.0.0.1', port: (server.address() as AddressInfo).port }] }],
  });
  const port = sidecar.sidecar.listenerAddress('http').port;
  try {
    t.is((await request(port, '/first')).status, 200);
    // The backend ends its idle keep-alive connection (as servers do after their keep-alive timeout).
    server.closeIdleConnections();
    await Promise.all(closed);
    const second = await request(port, '/second');
    t.is(second.status, 200);
    t.is(second.body, 'ok');
  } finally {
    await sidecar.sidecar.stop();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  }
});

test('a client that connects and leaves without a byte is closed at once, so a drain does not wait for it', async (t) => {
  const s = await setup(everything('a'));
  try {
    await raw(s.port, '');
    const result = await s.sidecar.sidecar.drain(20_000);
    t.is(result.aborted, 0);
  } finally {
    await s.stop();
  }
});
