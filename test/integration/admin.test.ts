import test from 'ava';
import { collect, connect, waitFor } from '../helpers/apps.js';
import { ADMIN_POST, adminRequest } from '../helpers/admin.js';
import { startMesh, type Mesh } from '../helpers/sidecars.js';

const request = (port: number, method: string, path: string, headers: Record<string, string> = {}) => adminRequest(port, method, path, { headers });

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
  t.is((await request(port, 'POST', '/stats', ADMIN_POST)).status, 405);
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

  const res = await request(admin, 'POST', '/drain', ADMIN_POST);
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

/** The mesh still serves: /ready 200, a new connection echoes, no drain was counted. */
async function stillServing(t: import('ava').ExecutionContext, mesh: Mesh): Promise<void> {
  const admin = mesh.a.sidecar.adminAddress()!.port;
  t.is(mesh.a.sidecar.state, 'serving');
  t.is((await request(admin, 'GET', '/ready')).status, 200);
  const client = await connect(mesh.port);
  const seen = collect(client);
  client.end('still here');
  t.is((await seen).data.toString(), 'still here');
  t.regex((await request(admin, 'GET', '/stats')).body, /vsockmesh_drains_total 0/);
}

test('POST /drain as a browser sends it (foreign Host and Origin, text/plain body) is refused 403 and nothing drains', async (t) => {
  const mesh = await startMesh();
  t.teardown(() => mesh.stop());
  const admin = mesh.a.sidecar.adminAddress()!.port;
  const res = await adminRequest(admin, 'POST', '/drain', {
    headers: { host: `evil.example:${admin}`, origin: `http://evil.example:${admin}`, 'content-type': 'text/plain;charset=UTF-8' },
    body: 'drain',
  });
  t.is(res.status, 403);
  t.is(res.body, `forbidden: Host "evil.example:${admin}" does not name this admin endpoint (use 127.0.0.1 or localhost)\n`);
  t.like(mesh.a.logs.withReason('admin_host_not_allowed')[0], { level: 'warn', method: 'POST', path: '/drain', host: `evil.example:${admin}` });
  await stillServing(t, mesh);
});

test('POST /drain with the admin header but a foreign Host (DNS rebinding) is refused', async (t) => {
  const mesh = await startMesh();
  t.teardown(() => mesh.stop());
  const admin = mesh.a.sidecar.adminAddress()!.port;
  const res = await request(admin, 'POST', '/drain', { ...ADMIN_POST, host: `rebind.example:${admin}` });
  t.is(res.status, 403);
  t.regex(res.body, /^forbidden: Host "rebind\.example:\d+" does not name this admin endpoint/);
  t.is((await request(admin, 'GET', '/config_dump', { host: `rebind.example:${admin}` })).status, 403, 'reads are refused too');
  await stillServing(t, mesh);
});

test('a simple POST /drain (right Host, no admin header, form body) and one with a cross-site Origin are refused', async (t) => {
  const mesh = await startMesh();
  t.teardown(() => mesh.stop());
  const admin = mesh.a.sidecar.adminAddress()!.port;
  const simple = await adminRequest(admin, 'POST', '/drain', { headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: 'a=1' });
  t.is(simple.status, 403);
  t.is(simple.body, 'forbidden: POST needs the header "x-vsockmesh-admin: 1" (or content-type: application/json), which a web page cannot send here\n');
  const crossSite = await request(admin, 'POST', '/drain', { ...ADMIN_POST, origin: 'http://evil.example' });
  t.is(crossSite.status, 403);
  t.regex(crossSite.body, /^forbidden: Origin "http:\/\/evil\.example" is not this admin endpoint/);
  t.is(mesh.a.logs.withReason('admin_simple_request').length, 1);
  t.is(mesh.a.logs.withReason('admin_cross_origin').length, 1);
  await stillServing(t, mesh);
});

test('POST /drain with content-type: application/json and localhost as Host drains', async (t) => {
  const mesh = await startMesh();
  t.teardown(() => mesh.stop());
  const admin = mesh.a.sidecar.adminAddress()!.port;
  const res = await adminRequest(admin, 'POST', '/drain', { headers: { host: `localhost:${admin}`, 'content-type': 'application/json' }, body: '{}' });
  t.is(res.status, 202);
  await waitFor(() => mesh.a.sidecar.state === 'drained', 'drained');
});
