// HTTP services in the mesh, end to end with real processes: a `vsockmesh
// control-plane` child, HTTP services and routes put through `vsockmesh ctl`,
// a sidecar child under it. The sidecar's outbound listener of an HTTP
// service routes each request by the pushed RouteConfiguration (RDS): weights
// split requests; a route change applies while a keep-alive connection stays
// open and a request in flight finishes; HTTP_PROXY clients reach services
// through the same table. A bad route configuration (from an in-process
// control plane, ours never makes one) is NACKed by field path and the last
// good routes keep serving.

import test, { type ExecutionContext } from 'ava';
import http from 'node:http';
import { execFile } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import type { AddressInfo } from 'node:net';
import { stringify } from 'yaml';
import { adminRequest } from '../helpers/admin.js';
import { waitFor } from '../helpers/apps.js';
import { startInventoryPlane, startSidecarCli } from '../helpers/cli.js';
import { freePort } from '../helpers/haproxy.js';
import { createLogger } from '../../proxy/runtime/log.js';
import { ControlPlane } from '../../xds/control-plane/control-plane.js';
import { MeshStore } from '../../xds/control-plane/mesh-store.js';
import { toSnapshot } from '../../xds/control-plane/translate.js';
import { Registry } from '../../xds/vm-manager/registry.js';
import { TYPE_URLS } from '../../xds/envoy/proto.js';
import { LogCapture } from '../helpers/sidecars.js';
import { nodeResources } from '../helpers/xds-resources.js';
import { vm } from '../helpers/vm-manager.js';

const run = promisify(execFile);

/** An HTTP app that answers with its name; `/slow` waits until `release()`. */
interface Backend {
  name: string;
  port: number;
  held: Array<() => void>;
  release(): void;
}

async function backend(t: ExecutionContext, name: string, host: string): Promise<Backend> {
  const held: Array<() => void> = [];
  const server = http.createServer((req, res) => {
    const answer = (): void => void res.end(name);
    if (req.url === '/slow') held.push(answer);
    else answer();
  });
  await new Promise<void>((resolve) => server.listen(0, host, resolve));
  t.teardown(() => {
    server.closeAllConnections();
    return new Promise<void>((resolve) => server.close(() => resolve()));
  });
  return { name, port: (server.address() as AddressInfo).port, held, release: () => held.splice(0).forEach((f) => f()) };
}

interface World {
  dir: string;
  web: Backend;
  canary: Backend;
  /** The outbound port of service web on the sidecar. */
  webPort: number;
  admin: number;
  ctl: (...args: string[]) => Promise<{ code: number | null; stdout: string; stderr: string }>;
  putRoute(route: unknown): Promise<void>;
}

/** vm-a runs the sidecar; vm-b serves web, vm-c web-canary (no sidecars: the apps are reached directly). */
async function world(t: ExecutionContext, sidecarExtra: Record<string, unknown> = {}): Promise<World> {
  const dir = await mkdtemp(join(tmpdir(), 'vsockmesh-xds-http-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const web = await backend(t, 'web', '127.0.0.3');
  const canary = await backend(t, 'web-canary', '127.0.0.4');
  const plane = await startInventoryPlane(t, dir, [
    { id: 'vm-a', hypervisor: 'hv-1', cid: 3, addresses: ['127.0.0.2'] },
    { id: 'vm-b', hypervisor: 'hv-1', cid: 4, addresses: ['127.0.0.3'], services: [{ name: 'web', port: web.port }] },
    { id: 'vm-c', hypervisor: 'hv-1', cid: 5, addresses: ['127.0.0.4'], services: [{ name: 'web-canary', port: canary.port }] },
  ]);
  const { ctl } = plane;
  const [webPort, canaryPort] = [await freePort(), await freePort()];
  for (const put of [
    ['services', 'put', 'web', '--port', String(web.port), '--outbound-port', String(webPort), '--protocol', 'http'],
    ['services', 'put', 'web-canary', '--port', String(canary.port), '--outbound-port', String(canaryPort)],
  ]) {
    const r = await ctl(...put);
    t.is(r.code, 0, r.stderr);
  }
  const putRoute = async (route: unknown): Promise<void> => {
    const file = join(dir, 'route.yaml');
    await writeFile(file, stringify(route));
    const r = await ctl('routes', 'put', '-f', file);
    t.is(r.code, 0, r.stderr);
  };
  const { admin } = await startSidecarCli(t, { node: { id: 'vm-a' }, vsock: { enabled: false }, xds: { address: plane.address }, insecure: true, admin: { port: 0 }, ...sidecarExtra });
  return { dir, web, canary, webPort, admin, ctl, putRoute };
}

interface Dump {
  listeners: Array<{ name: string; bound: Array<{ address: string; port: number }>; warming?: boolean }>;
  routes: Array<{ name: string; virtualHosts: Array<{ routes: Array<{ headers: unknown[]; clusters: Array<{ name: string; weight: number }> }> }> }>;
}

async function applied(w: World): Promise<Dump> {
  return (JSON.parse((await adminRequest(w.admin, 'GET', '/config_dump')).body) as { xds: { applied: Dump } }).xds.applied;
}

/** The routes the sidecar runs for web's outbound listener, once it serves them. */
async function webRoutes(w: World): Promise<Dump['routes'][number] | undefined> {
  const dump = await applied(w);
  const serving = dump.listeners.some((l) => l.name === 'outbound|web' && l.warming !== true && l.bound.length > 0);
  return serving ? dump.routes.find((r) => r.name === 'outbound|web') : undefined;
}

/** One GET through `agent`: the body and the client port of the connection it went on. */
function get(port: number, path: string, agent: http.Agent, headers: Record<string, string> = {}): Promise<{ status: number; body: string; localPort: number }> {
  return new Promise((resolve, reject) => {
    const req = http.get({ host: '127.0.0.1', port, path, agent, headers: { host: 'web.mesh', ...headers } }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => (body += d));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body, localPort: req.socket!.localPort! }));
    });
    req.on('error', reject);
  });
}

function keepAlive(t: ExecutionContext, maxSockets: number): http.Agent {
  const agent = new http.Agent({ keepAlive: true, maxSockets });
  t.teardown(() => agent.destroy());
  return agent;
}

test.serial('ctl puts an HTTP service and a 3:1 route: the sidecar\'s outbound listener splits 400 requests over the two backends by weight', async (t) => {
  const w = await world(t);
  await w.putRoute({ name: 'web-routes', domains: ['web.mesh'], routes: [{ prefix: '/', clusters: [{ service: 'web', weight: 3 }, { service: 'web-canary', weight: 1 }] }] });
  await waitFor(async () => (await webRoutes(w))?.virtualHosts[0]?.routes[0]?.clusters.length === 2, 'the weighted route on the sidecar', 60_000);
  const agent = keepAlive(t, 4);
  const counts: Record<string, number> = {};
  const requests = Array.from({ length: 400 }, (_, i) => i);
  for (let i = 0; i < requests.length; i += 20) {
    const batch = await Promise.all(requests.slice(i, i + 20).map(() => get(w.webPort, '/', agent)));
    for (const r of batch) {
      t.is(r.status, 200);
      counts[r.body] = (counts[r.body] ?? 0) + 1;
    }
  }
  t.is((counts.web ?? 0) + (counts['web-canary'] ?? 0), 400, JSON.stringify(counts));
  t.log(`web ${counts.web ?? 0}, web-canary ${counts['web-canary'] ?? 0}`);
  // Binomial(400, 3/4): mean 300, standard deviation 8.7; ±50 is over 5 deviations.
  t.true(Math.abs((counts.web ?? 0) - 300) <= 50, JSON.stringify(counts));
});

test.serial('a route change through ctl (a header match to another cluster) applies while a keep-alive connection stays open, and a request in flight finishes', async (t) => {
  const w = await world(t);
  await waitFor(async () => (await webRoutes(w)) !== undefined, 'the default route of web on the sidecar', 60_000);
  const agent = keepAlive(t, 1);
  const first = await get(w.webPort, '/', agent, { 'x-canary': '1' });
  t.deepEqual([first.status, first.body], [200, 'web'], 'no route yet: every request to web');
  const inFlight = get(w.webPort, '/slow', keepAlive(t, 1));
  await waitFor(() => w.web.held.length === 1, 'the slow request at the backend', 30_000);

  await w.putRoute({
    name: 'web-routes',
    domains: ['web', 'web.mesh'],
    routes: [
      { prefix: '/', headers: [{ name: 'x-canary', exact: '1' }], clusters: [{ service: 'web-canary' }] },
      { prefix: '/', clusters: [{ service: 'web' }] },
    ],
  });
  await waitFor(async () => ((await webRoutes(w))?.virtualHosts[0]?.routes[0]?.headers.length ?? 0) === 1, 'the header route on the sidecar', 60_000);
  const canary = await get(w.webPort, '/', agent, { 'x-canary': '1' });
  const plain = await get(w.webPort, '/', agent);
  t.deepEqual([canary.status, canary.body], [200, 'web-canary'], 'the new route, on the old connection');
  t.deepEqual([plain.status, plain.body], [200, 'web']);
  t.is(canary.localPort, first.localPort, 'the same client connection');
  t.is(plain.localPort, first.localPort);
  w.web.release();
  t.like(await inFlight, { status: 200, body: 'web' }, 'the request in flight during the change finished');
});

test.serial('HTTP_PROXY=http://127.0.0.1:PORT curl http://web.mesh/ reaches the app through the pushed L7 table', async (t) => {
  const w = await world(t, { listeners: [{ kind: 'forward_proxy', name: 'egress', port: 0 }] });
  await w.putRoute({ name: 'web-routes', domains: ['web.mesh'], routes: [{ prefix: '/', headers: [{ name: 'x-canary', exact: '1' }], clusters: [{ service: 'web-canary' }] }, { prefix: '/', clusters: [{ service: 'web' }] }] });
  await waitFor(async () => ((await webRoutes(w))?.virtualHosts[0]?.routes.length ?? 0) === 2, 'the header route on the sidecar', 60_000);
  const dump = JSON.parse((await adminRequest(w.admin, 'GET', '/config_dump')).body) as { listeners: Array<{ name: string; bound: Array<{ port: number }> }> };
  const proxy = dump.listeners.find((l) => l.name === 'egress')!.bound[0]!.port;
  const env = { ...process.env, HTTP_PROXY: `http://127.0.0.1:${proxy}`, http_proxy: `http://127.0.0.1:${proxy}` };
  const plain = await run('curl', ['-sS', '--max-time', '60', 'http://web.mesh/'], { env, timeout: 90_000 });
  t.is(plain.stdout, 'web');
  const canary = await run('curl', ['-sS', '--max-time', '60', '-H', 'x-canary: 1', 'http://web.mesh/'], { env, timeout: 90_000 });
  t.is(canary.stdout, 'web-canary', 'routed by the header match the control plane pushed');
});

test.serial('a bad route configuration is NACKed with its field path; the last good routes keep serving', async (t) => {
  const web = await backend(t, 'web', '127.0.0.3');
  const registry = new Registry();
  registry.registerHypervisor({ hypervisorId: 'hv-1', vsockMode: 'host-relay', relayPort: 15100 });
  registry.registerVm(vm({ vmId: 'vm-a', hypervisorId: 'hv-1', vsockCid: 3, addresses: ['127.0.0.2'] }));
  registry.registerVm(vm({ vmId: 'vm-b', hypervisorId: 'hv-1', vsockCid: 4, addresses: ['127.0.0.3'], services: [{ name: 'web', port: web.port }] }));
  const webPort = await freePort();
  const mesh = MeshStore.fromConfig({ services: [{ name: 'web', port: web.port, outbound_port: webPort, protocol: 'http' }] });
  const plane = new ControlPlane({ mesh, logger: createLogger({ level: 'info', destination: new LogCapture() }), vms: { registry }, transport: { insecure: true }, debounce: { quietMs: 20, maxMs: 200 } });
  const address = `127.0.0.1:${await plane.start('127.0.0.1:0')}`;
  t.teardown(() => plane.stop());
  const { proc, admin } = await startSidecarCli(t, { node: { id: 'vm-a' }, vsock: { enabled: false }, xds: { address }, insecure: true, admin: { port: 0 } });
  const w = { admin } as World;
  await waitFor(async () => (await webRoutes(w)) !== undefined, 'web\'s routes on the sidecar', 60_000);
  const agent = keepAlive(t, 1);
  t.like(await get(webPort, '/', agent), { status: 200, body: 'web' });

  // What a broken control plane might send: web's routes with a regular expression that does not compile.
  const good = nodeResources(mesh.config, { vms: registry.list().vms, hypervisors: registry.list().hypervisors }, 'vm-a');
  const routes = good.routes.map((r) => (r.name === 'outbound|web' ? { ...r, virtual_hosts: [{ name: 'web', domains: ['*'], routes: [{ match: { safe_regex: { regex: '/(unclosed' } }, route: { cluster: 'web' } }] }] } : r));
  plane.cache.setSnapshot('vm-a', toSnapshot({ ...good, routes }));
  await waitFor(() => plane.ads.syncStatus().some((s) => s.nodeId === 'vm-a' && s.typeUrl === TYPE_URLS.RouteConfiguration && s.lastNack !== null), 'an RDS NACK', 60_000);
  const nack = plane.ads.syncStatus().find((s) => s.nodeId === 'vm-a' && s.typeUrl === TYPE_URLS.RouteConfiguration)!.lastNack!;
  t.regex(nack.error, /route_configuration "outbound\|web": virtual_hosts\[0\]\.routes\[0\]\.match\.safe_regex\.regex: not a valid regular expression/);
  await proc.waitForLine((l) => l.reason === 'xds_nack', 'the NACK logged by the sidecar', 30_000);
  const kept = await webRoutes(w);
  t.deepEqual(kept?.virtualHosts[0]?.routes[0]?.clusters, [{ name: 'web', weight: 1 }], 'the last good routes stay in config_dump');
  const after = await get(webPort, '/any/path', agent);
  t.like(after, { status: 200, body: 'web' }, 'and keep serving');
});
