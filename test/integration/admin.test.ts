import test from 'ava';
import http from 'node:http';
import { collect, connect, waitFor } from '../helpers/apps.js';
import { startMesh } from '../helpers/sidecars.js';

function request(port: number, method: string, path: string): Promise<{ status: number; body: string; contentType: string }> {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port, method, path, agent: false }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => (body += d));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body, contentType: String(res.headers['content-type']) }));
    });
    req.on('error', reject);
    req.end();
  });
}

test('/ready answers 200 while serving', async (t) => {
  const mesh = await startMesh();
  t.teardown(() => mesh.stop());
  const res = await request(mesh.a.sidecar.adminAddress()!.port, 'GET', '/ready');
  t.is(res.status, 200);
  t.is(res.body, 'serving\n');
});

test('/stats is Prometheus text with connection, byte and error metrics by listener, cluster and transport', async (t) => {
  const mesh = await startMesh();
  t.teardown(() => mesh.stop());
  const client = await connect(mesh.port);
  const seen = collect(client);
  client.end('hello');
  await seen;
  await waitFor(() => mesh.a.logs.access().length === 1, 'access log');
  const res = await request(mesh.a.sidecar.adminAddress()!.port, 'GET', '/stats');
  t.is(res.status, 200);
  t.regex(res.contentType, /^text\/plain/);
  t.regex(res.body, /vsockmesh_connections_total\{listener="out",direction="outbound",cluster="app",transport="tcp"\} 1/);
  t.regex(res.body, /vsockmesh_connections_active\{listener="out",direction="outbound",cluster="app",transport="tcp"\} 0/);
  t.regex(res.body, /vsockmesh_bytes_total\{listener="out",direction="outbound",cluster="app",transport="tcp",flow="to_upstream"\} 5/);
  t.regex(res.body, /vsockmesh_bytes_total\{listener="out",direction="outbound",cluster="app",transport="tcp",flow="to_downstream"\} 5/);
  for (const name of ['vsockmesh_upstream_connect_errors_total', 'vsockmesh_header_errors_total', 'vsockmesh_connections_refused_total', 'vsockmesh_drains_total']) {
    t.regex(res.body, new RegExp(`# TYPE ${name} counter`));
  }
});

test('bytes of open connections show in /stats before they close', async (t) => {
  const mesh = await startMesh();
  t.teardown(() => mesh.stop());
  const client = await connect(mesh.port);
  const echoed: Buffer[] = [];
  client.on('data', (c: Buffer) => echoed.push(c));
  client.write('x'.repeat(1000));
  await waitFor(() => Buffer.concat(echoed).length === 1000, 'echo');
  const res = await request(mesh.b.sidecar.adminAddress()!.port, 'GET', '/stats');
  t.regex(res.body, /vsockmesh_bytes_total\{listener="inbound",direction="inbound",cluster="inbound\|\d+",transport="tcp",flow="to_upstream"\} 1000/);
  t.regex(res.body, /vsockmesh_connections_active\{listener="inbound",direction="inbound",cluster="inbound\|\d+",transport="tcp"\} 1/);
  client.destroy();
});

test('/config_dump shows the effective config with bound addresses', async (t) => {
  const mesh = await startMesh();
  t.teardown(() => mesh.stop());
  const res = await request(mesh.a.sidecar.adminAddress()!.port, 'GET', '/config_dump');
  t.is(res.status, 200);
  t.is(res.contentType, 'application/json');
  const dump = JSON.parse(res.body) as { state: string; node: { id: string }; listeners: Array<{ name: string; bound: Array<{ port: number }> }>; clusters: Array<{ name: string }> };
  t.is(dump.state, 'serving');
  t.is(dump.node.id, 'vm-a');
  t.is(dump.listeners[0]!.name, 'out');
  t.is(dump.listeners[0]!.bound[0]!.port, mesh.port);
  t.is(dump.clusters[0]!.name, 'app');
});

test('unknown paths are 404 and wrong methods are 405', async (t) => {
  const mesh = await startMesh();
  t.teardown(() => mesh.stop());
  const port = mesh.a.sidecar.adminAddress()!.port;
  const missing = await request(port, 'GET', '/nope');
  t.is(missing.status, 404);
  t.regex(missing.body, /available: \/ready \/stats \/config_dump \/drain/);
  t.is((await request(port, 'GET', '/drain')).status, 405);
  t.is((await request(port, 'POST', '/stats')).status, 405);
});

test('POST /drain stops accepting, lets the open connection finish, and /ready turns 503', async (t) => {
  const mesh = await startMesh();
  t.teardown(() => mesh.stop());
  const admin = mesh.a.sidecar.adminAddress()!.port;
  const open = await connect(mesh.port);
  const echoed: Buffer[] = [];
  open.on('data', (c: Buffer) => echoed.push(c));
  open.write('one;');
  await waitFor(() => Buffer.concat(echoed).toString() === 'one;', 'echo');

  const res = await request(admin, 'POST', '/drain');
  t.is(res.status, 202);
  const ready = await request(admin, 'GET', '/ready');
  t.is(ready.status, 503);
  t.is(ready.body, 'draining\n');
  const refused = await connect(mesh.port).then(
    (s) => {
      s.destroy();
      return 'accepted';
    },
    (err: NodeJS.ErrnoException) => err.code,
  );
  t.is(refused, 'ECONNREFUSED');

  open.write('two;');
  await waitFor(() => Buffer.concat(echoed).toString() === 'one;two;', 'echo while draining');
  const seen = collect(open);
  open.end();
  await seen;
  await waitFor(() => mesh.a.sidecar.state === 'drained', 'drained');
  t.is((await request(admin, 'GET', '/ready')).body, 'drained\n');
  t.regex((await request(admin, 'GET', '/stats')).body, /vsockmesh_drains_total 1/);
});
