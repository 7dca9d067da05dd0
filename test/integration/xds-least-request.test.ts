// lb_policy: least_request over xDS, end to end with real processes: a
// `vsockmesh control-plane` child, the HTTP service put through `vsockmesh
// ctl`, a sidecar child under it. Service web has two VMs: vm-b's app holds
// every request (until the round ends), vm-c's answers. Under round robin the
// slow VM gets every other request; once ctl switches the service to
// least_request, the same sidecar process (no restart) sends it at most the
// first request of a round, while it holds one.

import test, { type ExecutionContext } from 'ava';
import http from 'node:http';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { AddressInfo } from 'node:net';
import { adminRequest } from '../helpers/admin.js';
import { waitFor } from '../helpers/apps.js';
import { startInventoryPlane, startSidecarCli } from '../helpers/cli.js';
import { freePort } from '../helpers/haproxy.js';

interface Backend {
  port: number;
  seen: number;
  /** Answers every request it holds. */
  release(): void;
}

/** `hold`: keeps every request until release(); otherwise answers at once. */
async function backend(t: ExecutionContext, host: string, hold: boolean): Promise<Backend> {
  const held: http.ServerResponse[] = [];
  const b: Backend = { port: 0, seen: 0, release: () => held.splice(0).forEach((res) => res.end('late')) };
  const server = http.createServer((_req, res) => {
    b.seen++;
    if (hold) held.push(res);
    else res.end('ok');
  });
  await new Promise<void>((resolve) => server.listen(0, host, resolve));
  t.teardown(() => {
    server.closeAllConnections();
    return new Promise<void>((resolve) => server.close(() => resolve()));
  });
  b.port = (server.address() as AddressInfo).port;
  return b;
}

interface ClusterDump {
  name: string;
  lbPolicy?: string;
  endpoints: unknown[];
}

async function webCluster(admin: number): Promise<ClusterDump | undefined> {
  const dump = JSON.parse((await adminRequest(admin, 'GET', '/config_dump')).body) as { xds: { applied: { clusters: ClusterDump[]; listeners: Array<{ name: string; bound: unknown[]; warming?: boolean }> } } };
  const { clusters, listeners } = dump.xds.applied;
  const serving = listeners.some((l) => l.name === 'outbound|web' && l.warming !== true && l.bound.length > 0);
  return serving ? clusters.find((c) => c.name === 'web') : undefined;
}

/**
 * `count` requests, one at a time: the next is sent once this one was
 * answered or is held at the slow backend. Returns how many the slow one got;
 * then it answers them all, so the next round starts with none active.
 */
async function round(port: number, slow: Backend, count: number): Promise<number> {
  const start = slow.seen;
  for (let i = 0; i < count; i++) {
    const before = slow.seen;
    let answered = false;
    const req = http.get({ host: '127.0.0.1', port, path: `/r${i}`, agent: false, headers: { host: 'web' } }, (res) => {
      res.resume();
      res.on('end', () => (answered = true));
    });
    req.on('error', () => undefined);
    await waitFor(() => answered || slow.seen > before, `request ${i} answered or held`, 30_000);
  }
  const got = slow.seen - start;
  slow.release();
  return got;
}

test('ctl switches an HTTP service to least_request: the same sidecar then sends a slow VM clearly fewer requests than under round robin', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'vsockmesh-xds-lr-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const slow = await backend(t, '127.0.0.3', true);
  const fast = await backend(t, '127.0.0.4', false);
  const plane = await startInventoryPlane(t, dir, [
    { id: 'vm-a', hypervisor: 'hv-1', cid: 3, addresses: ['127.0.0.2'] },
    { id: 'vm-b', hypervisor: 'hv-1', cid: 4, addresses: ['127.0.0.3'], services: [{ name: 'web', port: slow.port }] },
    { id: 'vm-c', hypervisor: 'hv-1', cid: 5, addresses: ['127.0.0.4'], services: [{ name: 'web', port: fast.port }] },
  ]);
  const { ctl } = plane;
  const webPort = await freePort();
  const put = (policy: string) => ctl('services', 'put', 'web', '--port', String(fast.port), '--outbound-port', String(webPort), '--protocol', 'http', '--lb-policy', policy);

  let r = await put('round_robin');
  t.is(r.code, 0, r.stderr);
  const { proc, admin } = await startSidecarCli(t, { node: { id: 'vm-a' }, vsock: { enabled: false }, xds: { address: plane.address }, insecure: true, admin: { port: 0 } });
  await waitFor(async () => (await webCluster(admin))?.endpoints.length === 2, 'web served over both VMs', 60_000);
  t.is((await webCluster(admin))?.lbPolicy, undefined);
  const roundRobin = await round(webPort, slow, 20);

  r = await put('least_request');
  t.is(r.code, 0, r.stderr);
  t.regex(r.stdout, /lb_policy=least_request/);
  await waitFor(async () => (await webCluster(admin))?.lbPolicy === 'least_request', 'least_request applied', 60_000);
  const leastRequest = await round(webPort, slow, 20);

  const listed = await ctl('services', 'list');
  t.regex(listed.stdout, /^web\t.*\tlb_policy=least_request\t/m);
  t.is(proc.child.exitCode, null, 'the sidecar was not restarted');
  t.is(proc.lines.filter((l) => l.msg === 'sidecar ready').length, 1);
  t.log(`requests to the slow VM, of 20 per round: round robin ${roundRobin}, least_request ${leastRequest}`);
  t.true(roundRobin >= 8, `round robin sent the slow VM ${roundRobin} of 20`);
  t.true(leastRequest <= 2, `least_request sent the slow VM ${leastRequest} of 20 (round robin: ${roundRobin})`);
});
