// The native core directly: sockets, connect errors and deadlines, the relay's
// bounded buffering, and no leaked descriptors.

import test, { type ExecutionContext } from 'ava';
import { spawn } from 'node:child_process';
import { readdirSync } from 'node:fs';
import net from 'node:net';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { native } from '../../proxy/native/index.js';
import { settledWithin } from '../../proxy/runtime/within.js';
import { freePort } from '../helpers/haproxy.js';
import { collect, connect, echoTransfer, sha256, startBlackHole, startEchoServer, startServer, waitFor } from '../helpers/apps.js';
import { startSidecar } from '../helpers/sidecars.js';

const openFds = (): number => readdirSync('/proc/self/fd').length;
const root = fileURLToPath(new URL('../..', import.meta.url));

function nativeConnect(family: 'inet' | 'inet6', host: string, port: number, timeoutMs: number): Promise<{ error: string | null; fd: number }> {
  return new Promise((resolve, reject) => {
    try {
      native.connect(family, host, port, timeoutMs, (error, fd) => resolve({ error, fd }));
    } catch (err) {
      reject(err as Error);
    }
  });
}


test.serial('a connect to a closed port reports ECONNREFUSED and leaks nothing', async (t) => {
  const before = native.openCount();
  const { error } = await nativeConnect('inet', '127.0.0.1', await freePort(), 5_000);
  t.is(error, 'ECONNREFUSED');
  t.is(native.openCount(), before);
});

test.serial('a connect that gets no answer reports ETIMEDOUT at its deadline', async (t) => {
  const blackhole = await startBlackHole();
  t.teardown(() => blackhole.close());
  const before = native.openCount();
  const { error } = await nativeConnect('inet', '127.0.0.1', blackhole.port, 300);
  t.is(error, 'ETIMEDOUT');
  t.is(native.openCount(), before);
});

test.serial('a bad address is thrown at once with a code', (t) => {
  const err = t.throws(() => native.connect('inet', 'not-an-ip', 80, 1000, () => {}));
  t.is((err as NodeJS.ErrnoException).code, 'EINVAL');
});

test.serial('listening on a port in use throws EADDRINUSE', (t) => {
  const [fd, port] = native.listen('inet', '127.0.0.1', 0, 16, () => {});
  t.teardown(() => native.close(fd));
  const err = t.throws(() => native.listen('inet', '127.0.0.1', port, 16, () => {}));
  t.is((err as NodeJS.ErrnoException).code, 'EADDRINUSE');
});

test.serial('closing a connecting socket cancels its callback', async (t) => {
  const app = await startEchoServer();
  t.teardown(() => app.close());
  const before = native.openCount();
  let called = false;
  const fd = native.connect('inet', '127.0.0.1', app.port, 1000, () => (called = true));
  native.close(fd);
  await new Promise((r) => setTimeout(r, 50));
  t.false(called);
  t.is(native.openCount(), before);
});

test.serial('relay refuses sockets that are not idle sockets of the core', (t) => {
  const err = t.throws(() => native.relay(1_000_000, 1_000_001, null, null, 0, () => {}));
  t.is((err as NodeJS.ErrnoException).code, 'EBADF');
});

/** Two idle sockets of the core, connected to each other: [accepted, connected]. */
async function idlePair(t: import('ava').ExecutionContext): Promise<[number, number]> {
  let accepted!: (fd: number) => void;
  const acceptedFd = new Promise<number>((r) => (accepted = r));
  const [lfd, port] = native.listen('inet', '127.0.0.1', 0, 16, (fd) => accepted(fd));
  t.teardown(() => native.close(lfd));
  const { error, fd } = await nativeConnect('inet', '127.0.0.1', port, 5_000);
  t.is(error, null);
  const pair: [number, number] = [await acceptedFd, fd];
  t.teardown(() => pair.forEach((f) => native.close(f)));
  return pair;
}

test.serial('arguments of the wrong type are refused with EINVAL, and nothing is left open or half set up', async (t) => {
  const [a, b] = await idlePair(t);
  const before = native.openCount();
  const calls: Array<[string, () => unknown]> = [
    ['listen with a callback that is not a function', () => native.listen('inet', '127.0.0.1', 0, 16, 42 as never)],
    ['connect with a callback that is not a function', () => native.connect('inet', '127.0.0.1', 9, 1000, 'cb' as never)],
    ['close without an fd', () => native.close(undefined as never)],
    ['reset with an fd that is a string', () => native.reset(String(a) as never)],
    ['ref with a flag that is not a boolean', () => native.ref(a, 1 as never)],
    ['readStart with a callback that is not a function', () => native.readStart(a, 16, null as never)],
    ['relay with onDone not a function', () => native.relay(a, b, null, null, 0, 5 as never)],
    ['relay with a preamble that is not a Buffer', () => native.relay(a, b, 'hello' as never, null, 0, () => {})],
    ['relayBytes with an id that is not a number', () => native.relayBytes({} as never)],
    ['duplexOpen with onWritten not a function', () => native.duplexOpen(a, () => {}, undefined as never)],
    ['originalDst with an fd that is not a number', () => native.originalDst('3' as never, 'inet')],
  ];
  for (const [what, call] of calls) {
    const err = t.throws(call, undefined, what);
    t.is((err as NodeJS.ErrnoException | undefined)?.code, 'EINVAL', what);
    t.true(err instanceof TypeError, what);
  }
  t.is(native.openCount(), before, 'no socket was opened by a refused call');
  // Both sockets are still idle: a relay between them starts and carries bytes.
  const done = new Promise<string>((resolve) => native.relay(a, b, Buffer.from('to b'), null, 0, (outcome) => resolve(native.RELAY_OUTCOMES[outcome]!)));
  native.relayAbort(a);
  t.is(await done, 'aborted');
});

/** A client connected to a core listener (downstream fd) and a core socket connected to an app (upstream fd): what a relay joins. */
async function relayEnds(t: ExecutionContext): Promise<{ client: net.Socket; server: net.Socket; down: number; up: number }> {
  let accepted!: (fd: number) => void;
  const downstreamFd = new Promise<number>((r) => (accepted = r));
  const [lfd, port] = native.listen('inet', '127.0.0.1', 0, 16, (fd) => accepted(fd));
  t.teardown(() => native.close(lfd));
  let appSide!: (s: net.Socket) => void;
  const appSocket = new Promise<net.Socket>((r) => (appSide = r));
  const app = await startServer((s) => appSide(s));
  t.teardown(() => app.close());
  const client = await connect(port);
  const up = await nativeConnect('inet', '127.0.0.1', app.port, 5_000);
  t.is(up.error, null);
  return { client, down: await downstreamFd, up: up.fd, server: await appSocket };
}

test.serial('relayReset cuts both sides of a relay with RST: each peer sees ECONNRESET, not an end', async (t) => {
  const { client, server, down, up } = await relayEnds(t);
  const clientSaw = collect(client);
  const appSaw = collect(server);
  const done = new Promise<string>((resolve) => native.relay(down, up, null, null, 0, (outcome) => resolve(native.RELAY_OUTCOMES[outcome]!)));
  client.write('hello');
  await waitFor(() => native.relayBytes(down)?.[0] === 5, 'the relay to carry bytes');
  native.relayReset(down);
  t.is(await done, 'aborted');
  const [c, a] = await Promise.all([clientSaw, appSaw]);
  t.like(c, { errorCode: 'ECONNRESET', ended: false });
  t.like(a, { errorCode: 'ECONNRESET', ended: false });
  t.is(a.data.toString(), 'hello');
});

for (const first of ['client', 'app'] as const) {
  test.serial(`a relay ended by both peers (the ${first} first) closes each side with an end, never a reset, and reports closed`, async (t) => {
    const { client, server, down, up } = await relayEnds(t);
    const openBefore = native.openCount();
    const [ender, answerer] = first === 'client' ? [client, server] : [server, client];
    // The one that hears the end answers, then ends too: the relay's last FIN goes with the close of both sides.
    answerer.on('end', () => answerer.end('answer'));
    const enderSaw = collect(ender);
    const answererSaw = collect(answerer);
    const done = new Promise<string>((resolve) => native.relay(down, up, null, null, 0, (outcome) => resolve(native.RELAY_OUTCOMES[outcome]!)));
    ender.end('question');
    t.is(await done, 'closed');
    const [e, a] = await Promise.all([enderSaw, answererSaw]);
    t.deepEqual(e, { data: Buffer.from('answer'), ended: true });
    t.deepEqual(a, { data: Buffer.from('question'), ended: true });
    t.is(native.openCount(), openBefore - 2);
  });
}

test.serial('a listener out of descriptors counts the failed accepts, then accepts every waiting connection once descriptors are free', async (t) => {
  // A child with a small descriptor limit holds every connection it accepts until told how many to expect;
  // then it lets go of them and closes each one it accepts from then on.
  const script = `
    import { native } from './dist/proxy/native/index.js';
    import { createInterface } from 'node:readline';
    const held = [];
    let accepted = 0;
    let expected = Infinity;
    const say = (o) => console.log(JSON.stringify(o));
    const [lfd, port] = native.listen('inet', '127.0.0.1', 0, 1024, (fd) => {
      accepted++;
      if (expected === Infinity) held.push(fd);
      else native.close(fd);
      if (accepted === expected) finish();
    });
    const finish = () => {
      say({ accepted, failures: native.acceptFailures() });
      for (const fd of held.splice(0)) native.close(fd);
      native.close(lfd);
      process.stdin.destroy();
      clearInterval(watch);
    };
    const watch = setInterval(() => {
      if (native.acceptFailures().EMFILE > 0 && !said) { said = true; say({ full: accepted }); }
    }, 10);
    let said = false;
    createInterface({ input: process.stdin }).on('line', (line) => {
      expected = Number(line);
      for (const fd of held.splice(0)) native.close(fd);
      if (accepted === expected) finish();
    });
    say({ port });
  `;
  const child = spawn('sh', ['-c', 'ulimit -n 64 && exec "$0" --input-type=module -e "$1"', process.execPath, script], { cwd: root, stdio: ['pipe', 'pipe', 'inherit'] });
  t.teardown(() => child.kill('SIGKILL'));
  const lines = createInterface({ input: child.stdout })[Symbol.asyncIterator]();
  /** The child's next report; fails the test (instead of hanging) if none comes within a generous deadline. */
  const next = async (what: string): Promise<Record<string, unknown>> => {
    const line = lines.next();
    if (!(await settledWithin(line, 60_000))) throw new Error(`the child did not report ${what} within 60 s`);
    return JSON.parse(((await line).value as string | undefined) ?? 'null') as Record<string, unknown>;
  };
  const { port } = (await next('its port')) as { port: number };
  const clients: net.Socket[] = [];
  t.teardown(() => clients.forEach((c) => c.destroy()));
  const open = (n: number) => Promise.all(Array.from({ length: n }, () => connect(port).then((c) => clients.push(c))));
  await open(100);
  const { full } = (await next('running out of descriptors')) as { full: number };
  t.true(full < 64, `the child ran out of descriptors after ${full} accepts`);
  // More connections arrive while the listener waits to retry: each is an edge that finds it still out of descriptors.
  await open(20);
  child.stdin.write(`${clients.length}\n`);
  const { accepted, failures } = (await next('every connection accepted')) as { accepted: number; failures: Record<string, number> };
  t.is(accepted, clients.length, 'every waiting connection was accepted once descriptors were free');
  t.true(failures.EMFILE! > 0, 'the failed accepts were counted as EMFILE');
  t.deepEqual(Object.keys(failures).sort(), ['EMFILE', 'ENFILE', 'ENOBUFS', 'ENOMEM']);
});

test.serial('an accepted socket reads its data, then EOF as (null, null)', async (t) => {
  const chunks: Buffer[] = [];
  let eof!: () => void;
  const ended = new Promise<void>((r) => (eof = r));
  const [lfd, port] = native.listen('inet6', '::1', 0, 16, (fd) => {
    native.readStart(fd, 4, (error, chunk) => {
      t.is(error, null);
      if (chunk === null) {
        native.close(fd);
        eof();
        return;
      }
      chunks.push(chunk);
      return 4;
    });
  });
  t.teardown(() => native.close(lfd));
  const client = await connect(port, '::1');
  client.end('0123456789');
  await ended;
  t.is(Buffer.concat(chunks).toString(), '0123456789');
  t.true(chunks.every((c) => c.length <= 4), 'reads honour the requested maximum');
});

test.serial('a relay whose reader stalls buffers at most one read per direction, then delivers everything', async (t) => {
  let resumeApp!: () => void;
  const appReceived: Buffer[] = [];
  let appDone!: () => void;
  const done = new Promise<void>((r) => (appDone = r));
  const app = await startServer((socket) => {
    socket.pause();
    resumeApp = () => socket.resume();
    socket.on('data', (c: Buffer) => appReceived.push(c));
    socket.on('end', () => {
      socket.end();
      appDone();
    });
  });
  const side = await startSidecar({
    node: { id: 'vm-a' },
    listeners: [{ kind: 'outbound', name: 'out', port: 0, cluster: 'app' }],
    clusters: [{ name: 'app', endpoints: [{ address: '127.0.0.1', port: app.port }] }],
  });
  t.teardown(async () => {
    await side.sidecar.stop();
    await app.close();
  });
  const client = await connect(side.sidecar.listenerAddress('out').port);
  const payload = Buffer.alloc(32 * 1024 * 1024, 7);
  client.write(payload);
  client.end();
  // Kernel buffers fill up on both hops; the sidecar must stop reading, not hoard.
  let lastPending = -1;
  let stable = 0;
  await waitFor(() => {
    const pending = native.pendingBytes();
    stable = pending === lastPending ? stable + 1 : 0;
    lastPending = pending;
    return client.writableLength > 0 && stable > 20;
  }, 'the relay to stall');
  t.true(native.pendingBytes() <= 2 * 64 * 1024, `pending ${native.pendingBytes()} bytes`);
  t.true(client.writableLength > 16 * 1024 * 1024, 'most of the payload is still held by the writer, not the sidecar');
  resumeApp();
  await done;
  t.is(sha256(Buffer.concat(appReceived)), sha256(payload));
  await collect(client);
});

test.serial('1,000 proxied connections opened and closed leave no descriptor behind', async (t) => {
  const app = await startEchoServer();
  const side = await startSidecar({
    node: { id: 'vm-a' },
    log: { level: 'warn', access_log: false },
    listeners: [{ kind: 'outbound', name: 'out', port: 0, cluster: 'app' }],
    clusters: [{ name: 'app', endpoints: [{ address: '127.0.0.1', port: app.port }] }],
  });
  t.teardown(async () => {
    await side.sidecar.stop();
    await app.close();
  });
  const port = side.sidecar.listenerAddress('out').port;
  // Warm-up, so lazily opened descriptors (timers, loggers) are not counted as leaks.
  await echoTransfer(port, 10);
  const fdsBefore = openFds();
  const openBefore = native.openCount();
  for (let i = 0; i < 1000; i++) {
    const s = await connect(port);
    s.destroy();
  }
  await waitFor(() => side.sidecar.activeConnections === 0 && native.openCount() === openBefore, 'every connection closed');
  await waitFor(() => app.sockets.size === 0, 'app side closed');
  t.is(openFds(), fdsBefore);
});

test('settleMemory collects the garbage left in V8\'s heap and counts each run', (t) => {
  const holder: { garbage?: number[][] } = { garbage: Array.from({ length: 64 }, () => Array.from({ length: 32_768 }, (_, i) => i + 0.5)) };
  const held = process.memoryUsage().heapUsed;
  t.is(holder.garbage!.length, 64);
  delete holder.garbage;
  const before = native.settleCount();
  native.settleMemory();
  t.is(native.settleCount(), before + 1);
  // 64 arrays of 32,768 doubles: 16 MiB, all garbage now.
  t.true(process.memoryUsage().heapUsed < held - 12 * 1024 * 1024, `heap used ${held} -> ${process.memoryUsage().heapUsed}`);
});
