// The native core's TLS layer directly: handshakes with client certificates
// between two cores, the peer identity handed to JS before any byte moves,
// failures by reason, resumption, identities swapped under open connections,
// relays with a TLS side, openssl as the other end, and nothing leaked.

import test from 'ava';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { native } from '../../proxy/native/index.js';
import { collect, connect, echoTransfer, startEchoServer, startServer, waitFor } from '../helpers/apps.js';
import { makeRoot, vmIdentity, type PemIdentity } from '../helpers/pki.js';

const HOUR = 3_600_000;

interface Handshake {
  reason: string | null;
  text: string;
  resumed: boolean;
  version: string;
  serial: string;
}

function context(id: PemIdentity): number {
  return native.tlsContext(id.keyPem, id.chainPem, id.bundlePem);
}

function handshake(fd: number, ctx: number, server: boolean, sessionKey: string | null, plainPreamble: Buffer | null = null): Promise<Handshake> {
  return new Promise((resolve) => native.tlsStart(fd, ctx, server, sessionKey, plainPreamble, 10_000, (reason, text, resumed, version, serial) => resolve({ reason, text, resumed, version, serial })));
}

function nativeConnect(port: number): Promise<number> {
  return new Promise((resolve, reject) => native.connect('inet', '127.0.0.1', port, 10_000, (error, fd) => (error === null ? resolve(fd) : reject(new Error(error)))));
}

function relay(down: number, up: number): Promise<{ outcome: string; error: string | null }> {
  return new Promise((resolve) => native.relay(down, up, null, null, 0, (outcome, _a, _b, error) => resolve({ outcome: native.RELAY_OUTCOMES[outcome]!, error })));
}

/** The inbound half of a hop: accepts, handshakes as server, then relays to a plain app. */
function terminator(ctx: () => number, appPort: number) {
  const handshakes: Handshake[] = [];
  const relays: Array<Promise<{ outcome: string; error: string | null }>> = [];
  const [fd, port] = native.listen('inet', '127.0.0.1', 0, 512, (conn) => {
    void handshake(conn, ctx(), true, null).then(async (h) => {
      handshakes.push(h);
      if (h.reason !== null) {
        native.close(conn);
        return;
      }
      const up = await nativeConnect(appPort);
      relays.push(relay(conn, up));
    });
  });
  return { port, handshakes, relays, close: () => native.close(fd) };
}

/** The outbound half: accepts plain, connects to the terminator, handshakes as client expecting `expected`, relays. */
function originator(ctx: () => number, serverPort: number, expected: string) {
  const handshakes: Handshake[] = [];
  const relays: Array<Promise<{ outcome: string; error: string | null }>> = [];
  const [fd, port] = native.listen('inet', '127.0.0.1', 0, 512, (down) => {
    void nativeConnect(serverPort).then(async (up) => {
      const h = await handshake(up, ctx(), false, `127.0.0.1:${serverPort}`);
      handshakes.push(h);
      if (h.reason !== null || h.text !== expected) {
        native.close(up);
        native.close(down);
        return;
      }
      relays.push(relay(down, up));
    });
  });
  return { port, handshakes, relays, close: () => native.close(fd) };
}

interface Pki {
  a: PemIdentity;
  b: PemIdentity;
  root: Awaited<ReturnType<typeof makeRoot>>;
}

async function pki(): Promise<Pki> {
  const root = await makeRoot();
  return { root, a: await vmIdentity(root, 'vm-a'), b: await vmIdentity(root, 'vm-b') };
}

/** app <- terminator(b) <- TLS <- originator(a) <- client; torn down after the test. */
async function hop(t: import('ava').ExecutionContext, p: Pki, app?: { port: number; close(): Promise<void> }) {
  const echo = app ?? (await startEchoServer());
  const ctxA = context(p.a);
  let ctxB = context(p.b);
  const server = terminator(() => ctxB, echo.port);
  const client = originator(() => ctxA, server.port, p.b.spiffeId);
  t.teardown(async () => {
    client.close();
    server.close();
    await Promise.all([...client.relays, ...server.relays]);
    native.tlsContextFree(ctxA);
    native.tlsContextFree(ctxB);
    await echo.close();
  });
  /** A new server context, as a rotation makes one: new handshakes use it; the old one is freed. */
  const replaceServerIdentity = (id: PemIdentity): void => {
    const old = ctxB;
    ctxB = context(id);
    native.tlsContextFree(old);
  };
  return { server, client, port: client.port, replaceServerIdentity };
}

test.serial('two cores do a TLS 1.3 handshake with client certificates and each learns the other one\'s identity', async (t) => {
  const p = await pki();
  const h = await hop(t, p);
  const transfer = await echoTransfer(h.port, 1024 * 1024);
  t.is(transfer.receivedSha256, transfer.sentSha256);
  t.like(h.client.handshakes[0], { reason: null, text: p.b.spiffeId, version: 'TLSv1.3', resumed: false });
  t.like(h.server.handshakes[0], { reason: null, text: p.a.spiffeId, version: 'TLSv1.3', resumed: false });
  t.is(h.client.handshakes[0]!.serial, p.b.leaf.cert.serialNumber.toUpperCase());
  t.is(h.server.handshakes[0]!.serial, p.a.leaf.cert.serialNumber.toUpperCase());
});

test.serial('64 MiB each way through a TLS hop keep their sha256; the relays close cleanly', async (t) => {
  const h = await hop(t, await pki());
  const transfer = await echoTransfer(h.port, 64 * 1024 * 1024);
  t.is(transfer.received, transfer.sent);
  t.is(transfer.receivedSha256, transfer.sentSha256);
  const outcomes = await Promise.all([...h.client.relays, ...h.server.relays]);
  t.deepEqual(
    outcomes.map((o) => o.outcome),
    ['closed', 'closed'],
  );
});

test.serial('a second connection to a known peer resumes its TLS session (a ticket kept per peer)', async (t) => {
  const h = await hop(t, await pki());
  await echoTransfer(h.port, 1024); // reading the reply also reads the server's ticket
  await waitFor(() => native.tlsCounts()[1] === 1, 'a session kept');
  await echoTransfer(h.port, 1024);
  t.false(h.client.handshakes[0]!.resumed);
  t.true(h.client.handshakes[1]!.resumed);
  t.true(h.server.handshakes[1]!.resumed);
  t.is(h.server.handshakes[1]!.text, h.server.handshakes[0]!.text, 'a resumed session still names the peer');
});

test.serial('a server sends a ticket after a full handshake only: resumed connections keep resuming with the one the client has', async (t) => {
  const h = await hop(t, await pki());
  const before = native.tlsCounts()[2];
  await echoTransfer(h.port, 1024); // reading the reply also reads the server's ticket
  await waitFor(() => native.tlsCounts()[1] === 1, 'a session kept');
  t.is(native.tlsCounts()[2] - before, 1, 'one ticket after the full handshake');
  for (let i = 0; i < 5; i++) await echoTransfer(h.port, 1024); // each reply would carry a new ticket before it
  t.deepEqual(
    h.client.handshakes.map((s) => s.resumed),
    [false, true, true, true, true, true],
  );
  t.true(h.server.handshakes.slice(1).every((s) => s.resumed && s.text === h.server.handshakes[0]!.text), 'each resumed session still names the peer');
  t.is(native.tlsCounts()[2] - before, 1, 'no ticket after a resumption');
});

test.serial('a server resumes from its own session cache: one session per full handshake, none per resumption, none from before its context was replaced', async (t) => {
  const p = await pki();
  const h = await hop(t, p);
  t.is(native.tlsCounts()[3], 0, 'no server session cached yet');
  await echoTransfer(h.port, 1024); // reading the reply also reads the server's ticket
  await waitFor(() => native.tlsCounts()[1] === 1, 'a session kept');
  t.is(native.tlsCounts()[3], 1, 'the server cached the session its ticket names');
  for (let i = 0; i < 3; i++) await echoTransfer(h.port, 1024);
  t.deepEqual(
    h.server.handshakes.map((s) => s.resumed),
    [false, true, true, true],
  );
  t.true(h.server.handshakes.every((s) => s.text === p.a.spiffeId), 'each resumed session still names the peer');
  t.is(native.tlsCounts()[3], 1, 'a resumption caches nothing more');
  h.replaceServerIdentity(p.b); // the same identity again: a new context
  t.is(native.tlsCounts()[3], 0, 'the replaced context\'s sessions are gone with it');
  await echoTransfer(h.port, 1024);
  t.false(h.server.handshakes[4]!.resumed, 'the client\'s session from before the replacement does not resume');
  t.is(native.tlsCounts()[3], 1);
});

test.serial('50 connections at once each relay their first bytes, however they arrived with the handshake\'s last message', async (t) => {
  const h = await hop(t, await pki());
  const transfers = await Promise.all(Array.from({ length: 50 }, () => echoTransfer(h.port, 100)));
  t.true(transfers.every((x) => x.received === x.sent && x.receivedSha256 === x.sentSha256));
  t.is(h.server.handshakes.length, 50);
});

test.serial('once handshakes and closes stop, the core returns the memory they freed to the system (malloc_trim)', async (t) => {
  const h = await hop(t, await pki());
  const before = native.trimCount();
  const transfers = await Promise.all(Array.from({ length: 20 }, () => echoTransfer(h.port, 100)));
  t.true(transfers.every((x) => x.receivedSha256 === x.sentSha256));
  await waitFor(() => native.trimCount() > before, 'a trim once the burst is over', 20_000); // at most one trim per 5 s (trim.c)
  t.true(native.trimCount() > before);
});

test.serial('a connection that ends in a reset leaves the peer\'s session resumable for the next one', async (t) => {
  const h = await hop(t, await pki());
  await echoTransfer(h.port, 1024);
  await waitFor(() => native.tlsCounts()[1] === 1, 'a session kept');
  const client = await connect(h.port);
  const echoed = new Promise<void>((resolve) => client.once('data', () => resolve()));
  client.write('x');
  await echoed;
  client.resetAndDestroy();
  t.like(await h.client.relays[1], { outcome: 'downstream_error' }, 'its TLS side is freed without close_notify');
  await echoTransfer(h.port, 1024);
  t.deepEqual(
    h.client.handshakes.map((s) => s.resumed),
    [false, true, true],
  );
  t.true(h.server.handshakes[2]!.resumed);
});

test.serial('the client half-closes first over TLS: the app sees EOF, answers, and its FIN comes back', async (t) => {
  const app = await startServer((socket) => {
    const chunks: Buffer[] = [];
    socket.on('data', (c: Buffer) => chunks.push(c));
    socket.on('end', () => socket.end(Buffer.concat([Buffer.from('after-fin:'), ...chunks])));
  });
  const h = await hop(t, await pki(), app);
  const client = await connect(h.port);
  const seen = collect(client);
  client.end('question');
  const { data, ended, errorCode } = await seen;
  t.is(data.toString(), 'after-fin:question');
  t.true(ended);
  t.is(errorCode, undefined);
});

test.serial('the app half-closes first over TLS: the client sees EOF and can still send', async (t) => {
  const received: Buffer[] = [];
  let appEnded!: () => void;
  const ended = new Promise<void>((r) => (appEnded = r));
  const app = await startServer((socket) => {
    socket.on('data', (c: Buffer) => received.push(c));
    socket.on('end', () => appEnded());
    socket.end('bye-from-app');
  });
  const h = await hop(t, await pki(), app);
  const client = await connect(h.port);
  const chunks: Buffer[] = [];
  client.on('data', (c: Buffer) => chunks.push(c));
  await new Promise<void>((resolve) => client.once('end', resolve));
  t.is(Buffer.concat(chunks).toString(), 'bye-from-app');
  client.end('late-data-after-app-fin');
  await ended;
  t.is(Buffer.concat(received).toString(), 'late-data-after-app-fin');
});

test.serial('an app reset crosses the TLS hop as a reset', async (t) => {
  const app = await startServer((socket) => socket.on('data', () => socket.resetAndDestroy()));
  const h = await hop(t, await pki(), app);
  const client = await connect(h.port);
  const seen = collect(client);
  client.write('die');
  t.is((await seen).errorCode, 'ECONNRESET');
});

test.serial('a client reset crosses the TLS hop as a reset', async (t) => {
  let appError: string | undefined;
  let closed!: () => void;
  const appClosed = new Promise<void>((r) => (closed = r));
  const app = await startServer((socket) => {
    socket.on('error', (err: NodeJS.ErrnoException) => (appError = err.code));
    socket.on('close', () => closed());
  });
  const h = await hop(t, await pki(), app);
  const client = await connect(h.port);
  client.write('x');
  await waitFor(() => app.accepted === 1, 'the app connection');
  client.resetAndDestroy();
  await appClosed;
  t.is(appError, 'ECONNRESET');
});

/** One handshake from a client identity to a server identity; both sides' results. */
async function tryHandshake(clientId: PemIdentity, serverId: PemIdentity): Promise<{ client: Handshake; server: Handshake }> {
  const clientCtx = context(clientId);
  const serverCtx = context(serverId);
  let serverResult!: (h: Handshake) => void;
  const server = new Promise<Handshake>((r) => (serverResult = r));
  const [lfd, port] = native.listen('inet', '127.0.0.1', 0, 16, (fd) => {
    void handshake(fd, serverCtx, true, null).then((h) => {
      native.close(fd);
      serverResult(h);
    });
  });
  const fd = await nativeConnect(port);
  const client = await handshake(fd, clientCtx, false, null);
  // TLS 1.3: a client learns of a refused certificate only from the alert that follows.
  if (client.reason === null) void relay(fd, await nativeConnect(port)).catch(() => {});
  else native.close(fd);
  const result = { client, server: await server };
  native.close(lfd);
  native.tlsContextFree(clientCtx);
  native.tlsContextFree(serverCtx);
  return result;
}

test.serial('a client certificate from another CA is refused as unknown_ca', async (t) => {
  const p = await pki();
  const stranger = await vmIdentity(await makeRoot('O=other, CN=other root'), 'vm-a', { trusts: [p.root] });
  const { server } = await tryHandshake(stranger, p.b);
  t.is(server.reason, 'unknown_ca');
  t.regex(server.text, /issuer certificate/);
});

test.serial('a server certificate from another CA is refused by the client as unknown_ca', async (t) => {
  const p = await pki();
  const stranger = await vmIdentity(await makeRoot('O=other, CN=other root'), 'vm-b', { trusts: [p.root] });
  const { client } = await tryHandshake(p.a, stranger);
  t.is(client.reason, 'unknown_ca');
});

test.serial('an expired client certificate is refused as expired', async (t) => {
  const p = await pki();
  const expired = await vmIdentity(p.root, 'vm-a', { notBefore: new Date(Date.now() - 2 * HOUR), notAfter: new Date(Date.now() - HOUR) });
  const { server } = await tryHandshake(expired, p.b);
  t.is(server.reason, 'expired');
});

test.serial('a certificate with two URI SANs gives no identity (several_uri_sans)', async (t) => {
  const p = await pki();
  const two = await vmIdentity(p.root, 'vm-a', { uris: ['spiffe://vsockmesh.local/vm/vm-a', 'spiffe://vsockmesh.local/vm/vm-c'] });
  const { server } = await tryHandshake(two, p.b);
  t.is(server.reason, 'several_uri_sans');
});

test.serial('a peer that sends plain bytes is reported as plain_text with nothing consumed', async (t) => {
  const p = await pki();
  const ctx = context(p.b);
  let result!: (v: { h: Handshake; first: Buffer | null }) => void;
  const done = new Promise<{ h: Handshake; first: Buffer | null }>((r) => (result = r));
  const [lfd, port] = native.listen('inet', '127.0.0.1', 0, 16, (fd) => {
    void handshake(fd, ctx, true, null).then((h) => {
      native.readStart(fd, 64, (_e, chunk) => {
        native.close(fd);
        result({ h, first: chunk });
      });
    });
  });
  t.teardown(() => {
    native.close(lfd);
    native.tlsContextFree(ctx);
  });
  const client = await connect(port);
  client.write('\r\n\r\n\0\r\nQUIT\n-plain');
  const { h, first } = await done;
  client.destroy();
  t.is(h.reason, 'plain_text');
  t.is(first?.toString(), '\r\n\r\n\0\r\nQUIT\n-plain');
});

test.serial('a client may send a plain preamble before its ClientHello; the server reads it plain, then handshakes', async (t) => {
  const p = await pki();
  const [ctxA, ctxB] = [context(p.a), context(p.b)];
  let serverSide!: (v: { preamble: string; h: Handshake }) => void;
  const served = new Promise<{ preamble: string; h: Handshake }>((r) => (serverSide = r));
  const [lfd, port] = native.listen('inet', '127.0.0.1', 0, 16, (fd) => {
    native.readStart(fd, 5, (_e, chunk) => {
      native.readStop(fd);
      void handshake(fd, ctxB, true, null).then((h) => {
        native.close(fd);
        serverSide({ preamble: chunk?.toString() ?? '', h });
      });
    });
  });
  t.teardown(() => {
    native.close(lfd);
    native.tlsContextFree(ctxA);
    native.tlsContextFree(ctxB);
  });
  const fd = await nativeConnect(port);
  const client = await handshake(fd, ctxA, false, null, Buffer.from('HELLO'));
  native.close(fd);
  const { preamble, h } = await served;
  t.is(preamble, 'HELLO');
  t.like(h, { reason: null, text: p.a.spiffeId });
  t.like(client, { reason: null, text: p.b.spiffeId });
});

test.serial('a new context replaces an identity: an open connection keeps flowing, new handshakes present the new certificate', async (t) => {
  const p = await pki();
  const { client, replaceServerIdentity } = await hop(t, p);
  const open = await connect(client.port);
  const chunks: Buffer[] = [];
  open.on('data', (c: Buffer) => chunks.push(c));
  open.write('before;');
  await waitFor(() => Buffer.concat(chunks).toString() === 'before;', 'the first echo');
  const rotated = await vmIdentity(p.root, 'vm-b');
  replaceServerIdentity(rotated);
  open.write('after;');
  await waitFor(() => Buffer.concat(chunks).toString() === 'before;after;', 'the open connection still echoes');
  await echoTransfer(client.port, 1024);
  t.is(client.handshakes[1]!.serial, rotated.leaf.cert.serialNumber.toUpperCase());
  t.not(client.handshakes[0]!.serial, client.handshakes[1]!.serial);
  const seen = collect(open);
  open.end();
  t.true((await seen).ended);
});

test.serial('bad PEM is refused naming the part that is wrong', async (t) => {
  const p = await pki();
  const wrongKey = (await vmIdentity(p.root, 'vm-x')).keyPem;
  t.throws(() => native.tlsContext('not a key', p.a.chainPem, p.a.bundlePem), { code: 'ERR_VSOCKMESH_TLS', message: /private key is not a PEM key/ });
  t.throws(() => native.tlsContext(p.a.keyPem, 'nothing', p.a.bundlePem), { message: /certificate chain/ });
  t.throws(() => native.tlsContext(wrongKey, p.a.chainPem, p.a.bundlePem), { message: /does not match/ });
  t.throws(() => native.tlsContext(p.a.keyPem, p.a.chainPem, ''), { message: /trust bundle/ });
  t.is(native.tlsCounts()[0], 0, 'nothing half made is kept');
});

// ---- openssl as the other end ----------------------------------------------

async function pemFiles(t: import('ava').ExecutionContext, id: PemIdentity): Promise<{ key: string; cert: string; ca: string }> {
  const dir = await mkdtemp(join(tmpdir(), 'vsockmesh-tls-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const files = { key: join(dir, 'key.pem'), cert: join(dir, 'cert.pem'), ca: join(dir, 'ca.pem') };
  await Promise.all([writeFile(files.key, id.keyPem), writeFile(files.cert, id.chainPem), writeFile(files.ca, id.bundlePem)]);
  return files;
}

function openssl(t: import('ava').ExecutionContext, args: string[]): ChildProcess & { output: () => string } {
  const child = spawn('openssl', args, { stdio: ['pipe', 'pipe', 'pipe'] });
  let output = '';
  child.stdout!.on('data', (d: Buffer) => (output += d.toString()));
  child.stderr!.on('data', (d: Buffer) => (output += d.toString()));
  t.teardown(() => {
    child.kill('SIGKILL');
  });
  return Object.assign(child, { output: () => output });
}

test.serial('openssl s_client with our certificates talks to a core server, which learns its identity', async (t) => {
  const p = await pki();
  const echo = await startEchoServer();
  const ctx = context(p.b);
  const server = terminator(() => ctx, echo.port);
  t.teardown(async () => {
    server.close();
    native.tlsContextFree(ctx);
    await echo.close();
  });
  const files = await pemFiles(t, p.a);
  const client = openssl(t, ['s_client', '-connect', `127.0.0.1:${server.port}`, '-tls1_3', '-cert', files.cert, '-key', files.key, '-CAfile', files.ca, '-verify_return_error', '-quiet']);
  client.stdin!.write('hello through openssl\n');
  await waitFor(() => client.output().includes('hello through openssl'), 'the echo through s_client', 20_000);
  client.stdin!.end();
  t.like(server.handshakes[0], { reason: null, text: p.a.spiffeId, version: 'TLSv1.3' });
});

test.serial('openssl s_client without a certificate is refused as no_certificate', async (t) => {
  const p = await pki();
  const ctx = context(p.b);
  const server = terminator(() => ctx, 1);
  t.teardown(() => {
    server.close();
    native.tlsContextFree(ctx);
  });
  const files = await pemFiles(t, p.a);
  const client = openssl(t, ['s_client', '-connect', `127.0.0.1:${server.port}`, '-tls1_3', '-CAfile', files.ca, '-quiet']);
  client.stdin!.write('x\n');
  await waitFor(() => server.handshakes.length === 1, 'the refused handshake', 20_000);
  t.is(server.handshakes[0]!.reason, 'no_certificate');
});

test.serial('a core client talks to openssl s_server (verify required) with our certificates', async (t) => {
  const p = await pki();
  const files = await pemFiles(t, p.b);
  const port = await freeLoopbackPort();
  const server = openssl(t, ['s_server', '-accept', `127.0.0.1:${port}`, '-tls1_3', '-cert', files.cert, '-key', files.key, '-CAfile', files.ca, '-Verify', '2', '-verify_return_error', '-rev']);
  await waitFor(() => server.output().includes('ACCEPT'), 's_server listening', 20_000);
  const ctx = context(p.a);
  const client = originator(() => ctx, port, p.b.spiffeId);
  t.teardown(() => {
    client.close();
    native.tlsContextFree(ctx);
  });
  const app = await connect(client.port);
  const chunks: Buffer[] = [];
  app.on('data', (c: Buffer) => chunks.push(c));
  app.on('error', () => {}); // s_server is killed at teardown: a reset
  app.write('olleh\n');
  await waitFor(() => Buffer.concat(chunks).toString().includes('hello'), 's_server -rev answer', 20_000);
  t.like(client.handshakes[0], { reason: null, text: p.b.spiffeId, version: 'TLSv1.3' });
  t.regex(server.output(), /Verification: OK/, 's_server verified our client certificate');
  app.destroy();
});

async function freeLoopbackPort(): Promise<number> {
  const [fd, port] = native.listen('inet', '127.0.0.1', 0, 1, () => {});
  native.close(fd);
  return port;
}

test.serial('after all of the above, no socket, context or session is left', async (t) => {
  await waitFor(() => native.openCount() === 0, 'every socket closed', 20_000);
  const [contexts, clientSessions, , serverSessions] = native.tlsCounts();
  t.deepEqual([contexts, clientSessions, serverSessions], [0, 0, 0]);
});
