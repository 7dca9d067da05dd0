// Control-plane replicas and a sidecar that lists them all (xds.addresses),
// with real processes: two `vsockmesh control-plane` on one real etcd, the
// same inventory each (so they serve the same VMs and the same content-hash
// versions), a sidecar process, an echo app behind it. SIGKILL the replica
// the sidecar is connected to: connections keep going through the sidecar
// throughout (a transfer open across the failover completes intact, and new
// connections made meanwhile all succeed), the sidecar connects to the other
// replica and resumes from the versions it has (nothing applied again), and
// a change made afterwards through the survivor reaches it.

import test from 'ava';
import { createHash } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { stringify } from 'yaml';
import { adminRequest } from '../helpers/admin.js';
import { connect, echoTransfer, randomPayload, startEchoServer, waitFor } from '../helpers/apps.js';
import { runCli, startControlPlane, startSidecarCli } from '../helpers/cli.js';
import { startEtcd } from '../helpers/etcd.js';
import { freePort } from '../helpers/haproxy.js';

function metric(stats: string, line: RegExp): number {
  const m = line.exec(stats);
  return m === null ? Number.NaN : Number(m[1]);
}

test('a sidecar listing two replicas on one etcd: SIGKILL its replica, traffic keeps flowing, it resumes on the other and gets a change made there', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'vsockmesh-failover-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const etcd = await startEtcd(t);
  const app = await startEchoServer('127.0.0.3');
  t.teardown(() => app.close());
  const [webPort, apiPort] = [await freePort(), await freePort()];
  await writeFile(join(dir, 'mesh.yaml'), stringify({ services: [{ name: 'web', port: app.port, outbound_port: webPort }] }));
  await writeFile(
    join(dir, 'inventory.yaml'),
    stringify({
      hypervisors: [{ id: 'hv-1', vsock_mode: 'host-relay', relay_port: 15100 }],
      vms: [
        { id: 'vm-a', hypervisor: 'hv-1', cid: 3, addresses: ['127.0.0.2'] },
        // No sidecar: the app is reached directly.
        { id: 'vm-b', hypervisor: 'hv-1', cid: 4, addresses: ['127.0.0.3'], services: [{ name: 'web', port: app.port }, { name: 'api', port: app.port }] },
      ],
    }),
  );
  const args = async () => ['--insecure', '--listen', `127.0.0.1:${await freePort()}`, '--mesh', join(dir, 'mesh.yaml'), '--inventory', join(dir, 'inventory.yaml'), '--store', `etcd://${etcd.endpoint}`, '--store-insecure'];
  const replicas = [await startControlPlane(await args()), await startControlPlane(await args())];
  for (const r of replicas) t.teardown(() => r.proc.kill('SIGKILL'));

  const { proc, admin } = await startSidecarCli(t, {
    node: { id: 'vm-a' },
    vsock: { enabled: false },
    xds: { addresses: replicas.map((r) => r.address) },
    insecure: true,
    admin: { port: 0 },
  });
  const stats = async () => (await adminRequest(admin, 'GET', '/stats')).body;
  const dump = async () =>
    JSON.parse((await adminRequest(admin, 'GET', '/config_dump')).body) as {
      xds: { control_plane: string | null; reconnects: number; applied: { listeners: Array<{ name: string }>; clusters: Array<{ name: string; endpoints: unknown[] }> } };
    };
  const listeners = async () => (await dump()).xds.applied.listeners.map((l) => l.name);
  await waitFor(async () => (await listeners()).includes('outbound|web'), 'outbound|web from a replica', 60_000);
  const first = (await dump()).xds.control_plane;
  const connected = replicas.find((r) => r.address === first);
  const survivor = replicas.find((r) => r.address !== first)!;
  t.truthy(connected, `connected to one of the replicas (${first})`);
  const before = await stats();
  t.is(metric(before, new RegExp(`^vsockmesh_xds_control_plane\\{address="${first!.replace(/\./g, '\\.')}"\\} (\\S+)$`, 'm')), 1, 'the replica it is connected to, in /stats');
  t.is(metric(before, /^vsockmesh_xds_reconnects_total (\S+)$/m), 0);

  // A connection held open across the failover, and new connections one after another meanwhile.
  const held = await connect(webPort);
  const sent = createHash('sha256');
  const received = createHash('sha256');
  let receivedBytes = 0;
  held.on('data', (chunk: Buffer) => {
    received.update(chunk);
    receivedBytes += chunk.length;
  });
  const heldErrors: string[] = [];
  held.on('error', (err: NodeJS.ErrnoException) => heldErrors.push(err.code ?? err.message));
  const heldClosed = new Promise<boolean>((resolve) => held.on('close', (hadError) => resolve(hadError)));
  const write = (size: number): number => {
    const chunk = randomPayload(size);
    sent.update(chunk);
    held.write(chunk);
    return size;
  };
  let sentBytes = write(256 * 1024);
  await waitFor(() => receivedBytes === sentBytes, 'the first half echoed', 30_000);
  let churning = true;
  const outcomes = { ok: 0, failed: [] as string[] };
  const churn = (async () => {
    while (churning) {
      const r = await echoTransfer(webPort, 16 * 1024).then(
        (x) => (x.sent === x.received && x.sentSha256 === x.receivedSha256 ? 'ok' : 'corrupt'),
        (err: Error) => err.message,
      );
      if (r === 'ok') outcomes.ok++;
      else outcomes.failed.push(r);
    }
  })();

  const killedAt = proc.lines.length;
  connected!.proc.kill('SIGKILL');
  await connected!.proc.exited;
  await waitFor(async () => (await dump()).xds.control_plane === survivor.address, 'the sidecar on the surviving replica', 60_000);
  sentBytes += write(256 * 1024);
  held.end();
  t.false(await heldClosed, `the held connection closed cleanly ${heldErrors.join(', ')}`);
  t.is(receivedBytes, sentBytes);
  t.is(received.digest('hex'), sent.digest('hex'), 'every byte came back, in order');

  const after = await stats();
  t.true(metric(after, /^vsockmesh_xds_reconnects_total (\S+)$/m) >= 1, 'the reconnect is counted');
  t.is(metric(after, new RegExp(`^vsockmesh_xds_control_plane\\{address="${survivor.address.replace(/\./g, '\\.')}"\\} (\\S+)$`, 'm')), 1);
  t.true(Number.isNaN(metric(after, new RegExp(`^vsockmesh_xds_control_plane\\{address="${first!.replace(/\./g, '\\.')}"\\} (\\S+)$`, 'm'))), 'the dead replica is no longer shown');
  // The survivor computes the same versions: the sidecar recognises them and applies nothing again.
  await proc.waitForLine((l) => / LDS version \S+ resumed \(already applied\)$/.test(String(l.msg)), 'LDS resumed on the survivor', 30_000);
  await proc.waitForLine((l) => / CDS version \S+ resumed \(already applied\)$/.test(String(l.msg)), 'CDS resumed on the survivor', 30_000);
  t.deepEqual(proc.lines.slice(killedAt).filter((l) => / applied$/.test(String(l.msg))).map((l) => l.msg), [], 'no version applied again');

  // A change through the survivor reaches the sidecar, and carries traffic.
  const put = await runCli(['ctl', '--insecure', '--control-plane', survivor.address, '--timeout-ms', '30000', 'services', 'put', 'api', '--port', String(app.port), '--outbound-port', String(apiPort)]);
  t.is(put.code, 0, put.stderr);
  await waitFor(async () => (await listeners()).includes('outbound|api'), 'outbound|api through the survivor', 60_000);
  // Its listener may come before the cluster's endpoints (EDS is asked for once CDS named it).
  await waitFor(async () => ((await dump()).xds.applied.clusters.find((c) => c.name === 'api')?.endpoints.length ?? 0) > 0, 'the api endpoints', 60_000);
  const api = await echoTransfer(apiPort, 64 * 1024);
  t.is(api.received, api.sent);
  t.is(api.receivedSha256, api.sentSha256);

  churning = false;
  await churn;
  t.deepEqual(outcomes.failed, [], 'no connection failed during the failover');
  t.true(outcomes.ok > 0);
});
