// Connection limits and the overload state: refused connections are reset and
// counted, established ones keep relaying, /ready says why.

import test, { type ExecutionContext } from 'ava';
import net from 'node:net';
import { connect, startEchoServer, waitFor, type TestServer } from '../helpers/apps.js';
import { adminRequest, waitForReady } from '../helpers/admin.js';
import { startCli, writeConfig } from '../helpers/cli.js';
import { metricValue, sampleValue, startSidecar, type TestSidecar } from '../helpers/sidecars.js';

type Attempt = { outcome: 'echoed'; socket: net.Socket } | { outcome: 'refused'; code: string | undefined; received: string } | { outcome: 'no_answer' };

/**
 * Connects and sends "ping": `echoed` when it comes back (the socket stays
 * open), `refused` when the sidecar closes or resets it first. `no_answer`
 * (nothing within the deadline) is how an accept that never happens shows.
 */
function attempt(port: number): Promise<Attempt> {
  return new Promise((resolve) => {
    const socket = net.connect({ host: '127.0.0.1', port });
    let received = '';
    let code: string | undefined;
    const deadline = setTimeout(() => {
      socket.destroy();
      resolve({ outcome: 'no_answer' });
    }, 20_000);
    socket.on('error', (err: NodeJS.ErrnoException) => (code ??= err.code));
    socket.on('data', (chunk: Buffer) => {
      received += chunk.toString();
      if (received === 'ping') {
        clearTimeout(deadline);
        socket.removeAllListeners('close');
        resolve({ outcome: 'echoed', socket });
      }
    });
    socket.once('close', () => {
      clearTimeout(deadline);
      resolve({ outcome: 'refused', code, received });
    });
    socket.write('ping');
  });
}

async function echoes(socket: net.Socket, text: string): Promise<boolean> {
  let received = '';
  const got = new Promise<boolean>((resolve) => {
    const onData = (chunk: Buffer): void => {
      received += chunk.toString();
      if (received === text) {
        socket.off('data', onData);
        resolve(true);
      }
    };
    socket.on('data', onData);
    socket.once('close', () => resolve(false));
  });
  socket.write(text);
  return got;
}

async function echoApp(t: ExecutionContext): Promise<TestServer> {
  const app = await startEchoServer();
  t.teardown(() => app.close());
  return app;
}

async function sidecarWith(t: ExecutionContext, app: TestServer, config: Record<string, unknown>): Promise<TestSidecar> {
  const s = await startSidecar({ node: { id: 'vm-a' }, clusters: [{ name: 'echo', endpoints: [{ address: '127.0.0.1', port: app.port }] }], ...config });
  t.teardown(() => s.sidecar.stop());
  return s;
}

async function openEchoing(t: ExecutionContext, port: number, n: number): Promise<net.Socket[]> {
  const sockets: net.Socket[] = [];
  t.teardown(() => sockets.forEach((s) => s.destroy()));
  for (let i = 0; i < n; i++) {
    const a = await attempt(port);
    if (a.outcome !== 'echoed') throw new Error(`connection ${i + 1} of ${n}: ${a.outcome}`);
    sockets.push(a.socket);
  }
  return sockets;
}

/** A new connection to `port` is relayed (then closed). */
async function relaysNew(t: ExecutionContext, port: number): Promise<void> {
  const fresh = await attempt(port);
  t.is(fresh.outcome, 'echoed', 'a new connection is relayed');
  if (fresh.outcome === 'echoed') fresh.socket.destroy();
}

test('a listener with max_connections 3 relays 3 connections, resets the 4th (counted, logged), and takes a new one once one closes', async (t) => {
  const app = await echoApp(t);
  const { sidecar, logs } = await sidecarWith(t, app, { listeners: [{ kind: 'outbound', name: 'out', port: 0, cluster: 'echo', max_connections: 3 }] });
  const port = sidecar.listenerAddress('out').port;
  const open = await openEchoing(t, port, 3);

  const fourth = await attempt(port);
  t.like(fourth, { outcome: 'refused', code: 'ECONNRESET', received: '' });
  t.is(await metricValue(sidecar, 'vsockmesh_connections_refused_total', { listener: 'out', reason: 'listener_max_connections' }), 1);
  t.like(logs.withReason('listener_max_connections')[0], { level: 'warn', listener: 'out', msg: 'refused: listener "out" has 3 connections open (max_connections 3)' });
  for (const s of open) t.true(await echoes(s, 'still'), 'the established connections keep relaying');

  open.pop()!.end();
  await waitFor(() => sidecar.activeConnections === 2, 'the closed connection to leave');
  await relaysNew(t, port);
});

test('an inbound listener counts connections still in the header phase against its max_connections', async (t) => {
  const app = await echoApp(t);
  const { sidecar } = await sidecarWith(t, app, { listeners: [{ kind: 'inbound', name: 'in', addresses: ['127.0.0.1'], port: 0, ports: [app.port], max_connections: 2 }] });
  const port = sidecar.listenerAddress('in').port;
  const silent = [await connect(port), await connect(port)];
  t.teardown(() => silent.forEach((s) => s.destroy()));
  await waitFor(() => sidecar.activeConnections === 2, 'two connections in the header phase');
  t.like(await attempt(port), { outcome: 'refused', code: 'ECONNRESET' });
  t.is(await metricValue(sidecar, 'vsockmesh_connections_refused_total', { listener: 'in', reason: 'listener_max_connections' }), 1);
});

test('overload.max_connections caps the connections of all listeners together', async (t) => {
  const app = await echoApp(t);
  const { sidecar, logs } = await sidecarWith(t, app, {
    overload: { max_connections: 3 },
    listeners: [
      { kind: 'outbound', name: 'one', port: 0, cluster: 'echo' },
      { kind: 'outbound', name: 'two', port: 0, cluster: 'echo' },
    ],
  });
  const one = sidecar.listenerAddress('one').port;
  const two = sidecar.listenerAddress('two').port;
  const open = [...(await openEchoing(t, one, 2)), ...(await openEchoing(t, two, 1))];

  t.like(await attempt(two), { outcome: 'refused', code: 'ECONNRESET' });
  t.like(await attempt(one), { outcome: 'refused', code: 'ECONNRESET' });
  t.is(await metricValue(sidecar, 'vsockmesh_connections_refused_total', { listener: 'two', reason: 'max_connections' }), 1);
  t.is(await metricValue(sidecar, 'vsockmesh_connections_refused_total', { listener: 'one', reason: 'max_connections' }), 1);
  t.is(logs.withReason('max_connections')[0]?.msg, 'refused: 3 connections open in this process (overload.max_connections 3)');

  open.shift()!.end();
  await waitFor(() => sidecar.activeConnections === 2, 'the closed connection to leave');
  await relaysNew(t, two);
});

test('memory at max_memory: /ready is 503 overloaded with the reason, new connections are shed and counted', async (t) => {
  const app = await echoApp(t);
  // Any process's resident set is above 1 MiB.
  const { sidecar, logs } = await sidecarWith(t, app, { overload: { max_memory: '1MiB' }, listeners: [{ kind: 'outbound', name: 'out', port: 0, cluster: 'echo' }] });
  const admin = sidecar.adminAddress()!.port;
  const ready = await adminRequest(admin, 'GET', '/ready');
  t.is(ready.status, 503);
  t.regex(ready.body, /^overloaded: memory: resident set [\d.]+ MiB \(max_memory 1 MiB\)\n$/);
  t.like(await attempt(sidecar.listenerAddress('out').port), { outcome: 'refused', code: 'ECONNRESET' });
  t.is(await metricValue(sidecar, 'vsockmesh_connections_refused_total', { listener: 'out', reason: 'overload' }), 1);
  t.is(await metricValue(sidecar, 'vsockmesh_overloaded', { resource: 'memory' }), 1);
  t.is(await metricValue(sidecar, 'vsockmesh_overloaded', { resource: 'fds' }), 0);
  t.like(logs.withReason('overloaded')[0], { level: 'warn', resources: ['memory'] });
});

test('fd exhaustion: the sidecar CLI under a 256-descriptor limit sheds new connections before it runs out, keeps relaying the established ones, /ready says overloaded, and recovers', async (t) => {
  const app = await echoApp(t);
  const config = await writeConfig({
    node: { id: 'vm-a' },
    admin: { port: 0 },
    log: { access_log: false },
    listeners: [{ kind: 'outbound', name: 'out', port: 0, cluster: 'echo' }],
    clusters: [{ name: 'echo', endpoints: [{ address: '127.0.0.1', port: app.port }] }],
  });
  const proc = startCli(['sidecar', '-c', config.path], { wrapper: ['prlimit', '--nofile=256:256'] });
  const open: net.Socket[] = [];
  t.teardown(async () => {
    open.forEach((s) => s.destroy());
    proc.kill('SIGKILL');
    await proc.exited;
    await config.cleanup();
  });
  const serving = await proc.waitForLine((l) => l.msg === 'sidecar ready', 'sidecar ready');
  const admin = (serving.admin as { port: number }).port;
  const started = proc.lines.find((l) => l.msg === 'listener started')!;
  const port = (started.addresses as Array<{ port: number }>)[0]!.port;
  t.is((await adminRequest(admin, 'GET', '/ready')).status, 200);

  // Each relayed connection holds 2 of the 256 descriptors: the limit is reached well before 256 attempts.
  let refused: Attempt | undefined;
  for (let i = 0; i < 256 && refused === undefined; i++) {
    const a = await attempt(port);
    if (a.outcome === 'echoed') open.push(a.socket);
    else refused = a;
  }
  t.like(refused, { outcome: 'refused', code: 'ECONNRESET' }, 'a connection beyond the headroom is reset at once, not left in the backlog');
  t.true(open.length >= 30, `${open.length} connections were relayed before the limit`);

  const ready = await adminRequest(admin, 'GET', '/ready');
  t.is(ready.status, 503, 'the admin endpoint still answers');
  t.regex(ready.body, /^overloaded: fds: \d+ free of 256 descriptors \(min_free_fds 64\)/);
  const stats = (await adminRequest(admin, 'GET', '/stats')).body;
  t.true(sampleValue(stats, 'vsockmesh_connections_refused_total', { listener: 'out', reason: 'overload' }) >= 1);
  t.is(sampleValue(stats, 'vsockmesh_overloaded', { resource: 'fds' }), 1);
  t.like(proc.lines.find((l) => l.reason === 'overloaded'), { level: 'warn', resources: ['fds'] });
  t.like(await attempt(port), { outcome: 'refused', code: 'ECONNRESET' }, 'still shedding');

  for (const s of open) t.true(await echoes(s, 'established'), 'every established connection still relays');

  for (const s of open.splice(0)) s.destroy();
  t.is((await waitForReady(admin, 200)).body, 'serving\n');
  await proc.waitForLine((l) => l.reason === 'overload_ended', 'overload ended');
  await relaysNew(t, port);
});
