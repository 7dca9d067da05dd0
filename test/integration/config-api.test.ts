// The config API through `vsockmesh ctl` against a real control plane process:
// services and routes changed at run time, refused when they would make the
// mesh invalid, kept across a restart with a mesh state file.

import test from 'ava';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { stringify } from 'yaml';
import { runCli, startCli } from '../helpers/cli.js';
import { freePort } from '../helpers/haproxy.js';

async function startPlane(args: string[]) {
  const proc = startCli(['control-plane', '--no-admin', ...args]);
  const line = await proc.waitForLine((l) => l.msg === 'control-plane serving', 'control-plane serving', 15_000);
  return { proc, address: `127.0.0.1:${String(line.port)}` };
}

test('ctl services/routes: put, list, delete; an invalid change is refused in one line and changes nothing; the mesh state file survives a restart', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'vsockmesh-cp-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const meshFile = join(dir, 'mesh.yaml');
  await writeFile(meshFile, stringify({ services: [{ name: 'web', port: 8080 }] }));
  const port = await freePort();
  const args = ['--listen', `127.0.0.1:${port}`, '--mesh', meshFile, '--mesh-state-file', join(dir, 'mesh-state.yaml')];
  let plane = await startPlane(args);
  t.teardown(() => plane.proc.kill('SIGKILL'));
  const ctl = (...a: string[]) => runCli(['ctl', '--control-plane', plane.address, ...a]);

  t.regex((await ctl('services', 'list')).stdout, /^web\tport=8080\toutbound_port=8080\ttcp/);
  const put = await ctl('services', 'put', 'api', '--port', '9090', '--outbound-port', '19090', '--protocol', 'http');
  t.is(put.code, 0, put.stderr);
  const route = join(dir, 'route.yaml');
  await writeFile(route, stringify({ name: 'api-routes', domains: ['api'], routes: [{ prefix: '/', clusters: [{ service: 'api' }] }] }));
  const putRoute = await ctl('routes', 'put', '-f', route);
  t.is(putRoute.code, 0, putRoute.stderr);
  t.regex((await ctl('routes', 'list')).stdout, /^api-routes\tapi\t\/->api:1/);

  // The route still names api: deleting api would break it.
  const refused = await ctl('services', 'delete', 'api');
  t.is(refused.code, 1);
  t.regex(refused.stderr, /^vsockmesh ctl: INVALID_ARGUMENT: .*api/);
  t.is(refused.stderr.trim().split('\n').length, 1);
  t.regex((await ctl('services', 'list')).stdout, /api\tport=9090/, 'nothing changed');
  const missing = await ctl('routes', 'delete', 'nope');
  t.is(missing.code, 1);
  t.regex(missing.stderr, /NOT_FOUND: no route "nope"/);

  plane.proc.kill('SIGTERM');
  t.like(await plane.proc.exited, { code: 0 });
  plane = await startPlane(args);
  const after = await runCli(['ctl', '--control-plane', plane.address, '-o', 'json', 'services', 'list']);
  t.deepEqual(
    (JSON.parse(after.stdout) as Array<{ name: string }>).map((s) => s.name),
    ['web', 'api'],
    'the API change survived the restart',
  );
  const down = await runCli(['ctl', '--control-plane', '127.0.0.1:1', '--timeout-ms', '2000', 'status']);
  t.is(down.code, 1);
  t.regex(down.stderr, /^vsockmesh ctl: cannot reach the control plane at 127\.0\.0\.1:1/);
});
