// The native AF_VSOCK sockets as applications see them (Duplex and server),
// on vsock_loopback inside the guest: every peer is CID 1.

import test from 'ava';
import { createHash, randomBytes } from 'node:crypto';
import { readdirSync } from 'node:fs';
import { native } from '../../proxy/native/index.js';
import { VMADDR_CID_LOCAL, connectVsock, createVsockServer, localCid, type VsockServer, type VsockSocket } from '../../proxy/native/vsock.js';
import { MiB, assertInGuest, sized, underKvm } from './guest-env.js';

assertInGuest();

function echoServer(): VsockServer {
  return createVsockServer({ port: 0 }, (socket) => socket.pipe(socket));
}

function connected(port: number): Promise<VsockSocket> {
  return new Promise((resolve, reject) => {
    const socket = connectVsock({ cid: VMADDR_CID_LOCAL, port });
    socket.once('connect', () => resolve(socket));
    socket.once('error', reject);
  });
}

function closeServer(server: VsockServer): Promise<void> {
  return new Promise((resolve) => server.close(() => resolve()));
}

test.serial('localCid() is 1 under vsock_loopback', (t) => {
  t.is(localCid(), 1);
});

test.serial('echo round trip, with the peer CID and port the kernel reports', async (t) => {
  let accepted: { cid: number; port: number } | undefined;
  const server = createVsockServer({ port: 0 }, (socket) => {
    accepted = { cid: socket.remoteCid, port: socket.remotePort };
    socket.pipe(socket);
  });
  t.teardown(() => closeServer(server));
  const client = await connected(server.address().port);
  const chunks: Buffer[] = [];
  client.on('data', (c: Buffer) => chunks.push(c));
  const ended = new Promise((r) => client.once('end', r));
  client.end('hello over vsock');
  await ended;
  t.is(Buffer.concat(chunks).toString(), 'hello over vsock');
  t.is(accepted?.cid, 1);
  t.true((accepted?.port ?? 0) > 0, 'the client got an auto-bound port');
  t.is(client.remoteCid, 1);
  t.is(client.bytesWritten, 16);
  t.is(client.bytesRead, 16);
});

const bigSize = sized(1024 * MiB, 256 * MiB);
test.serial(`${bigSize / MiB} MiB echoed with matching sha256 and bounded memory (${underKvm() ? 'KVM' : 'TCG: 256 MiB instead of 1 GiB'})`, async (t) => {
  const server = echoServer();
  t.teardown(() => closeServer(server));
  const client = await connected(server.address().port);
  const rssBefore = process.memoryUsage().rss;
  let peakRss = rssBefore;
  const sent = createHash('sha256');
  const received = createHash('sha256');
  let receivedBytes = 0;
  client.on('data', (c: Buffer) => {
    receivedBytes += c.length;
    received.update(c);
  });
  const ended = new Promise((r) => client.once('end', r));
  const chunk = randomBytes(MiB);
  let sentBytes = 0;
  await new Promise<void>((resolve) => {
    const pump = (): void => {
      while (sentBytes < bigSize) {
        // Rotate the chunk so the stream is not one repeated MiB.
        const piece = Buffer.from(chunk);
        piece.writeUInt32BE(sentBytes / MiB, 0);
        sent.update(piece);
        sentBytes += piece.length;
        peakRss = Math.max(peakRss, process.memoryUsage().rss);
        if (!client.write(piece)) {
          client.once('drain', pump);
          return;
        }
      }
      client.end();
      resolve();
    };
    pump();
  });
  await ended;
  t.is(receivedBytes, bigSize);
  t.is(received.digest('hex'), sent.digest('hex'));
  t.true(peakRss - rssBefore < 128 * MiB, `RSS grew by ${Math.round((peakRss - rssBefore) / MiB)} MiB while ${bigSize / MiB} MiB went through`);
});

test.serial('half-close from the client: the server sees end and can still answer', async (t) => {
  const server = createVsockServer({ port: 0 }, (socket) => {
    const got: Buffer[] = [];
    socket.on('data', (c: Buffer) => got.push(c));
    socket.on('end', () => socket.end(Buffer.concat([Buffer.from('after-fin:'), ...got])));
  });
  t.teardown(() => closeServer(server));
  const client = await connected(server.address().port);
  const chunks: Buffer[] = [];
  client.on('data', (c: Buffer) => chunks.push(c));
  const ended = new Promise((r) => client.once('end', r));
  client.end('question');
  await ended;
  t.is(Buffer.concat(chunks).toString(), 'after-fin:question');
});

test.serial('half-close from the server: the client sees end and can still send', async (t) => {
  let serverGot = '';
  let serverEnded!: () => void;
  const done = new Promise<void>((r) => (serverEnded = r));
  const server = createVsockServer({ port: 0 }, (socket) => {
    socket.on('data', (c: Buffer) => (serverGot += c.toString()));
    socket.on('end', () => {
      socket.end();
      serverEnded();
    });
    socket.end('bye');
  });
  t.teardown(() => closeServer(server));
  const client = await connected(server.address().port);
  let clientGot = '';
  client.on('data', (c: Buffer) => (clientGot += c.toString()));
  await new Promise((r) => client.once('end', r));
  t.is(clientGot, 'bye');
  client.end('late');
  await done;
  t.is(serverGot, 'late');
});

test.serial('a connect to a port with no listener fails with ECONNREFUSED naming cid:port', async (t) => {
  const server = echoServer();
  const port = server.address().port;
  await closeServer(server);
  const err = await new Promise<NodeJS.ErrnoException>((resolve) => connectVsock({ cid: 1, port }).once('error', resolve));
  t.is(err.code, 'ECONNREFUSED', 'vsock answers with a reset; the API reports it as ECONNREFUSED');
  t.regex(err.message, new RegExp(`connect ECONNREFUSED vsock 1:${port}`));
});

test.serial('a connect to a CID no transport serves fails at once with a code', async (t) => {
  const err = await new Promise<NodeJS.ErrnoException>((resolve) => connectVsock({ cid: 77, port: 1, timeoutMs: 5_000 }).once('error', resolve));
  t.true(['ENODEV', 'EHOSTUNREACH', 'ECONNREFUSED', 'ENETUNREACH'].includes(err.code ?? ''), `code ${err.code}`);
  t.regex(err.message, /vsock 77:1/);
});

test.serial('setTimeout emits timeout after inactivity, like net.Socket', async (t) => {
  const server = echoServer();
  t.teardown(() => closeServer(server));
  const client = await connected(server.address().port);
  await new Promise<void>((resolve) => client.setTimeout(100, resolve));
  t.false(client.destroyed, 'timeout only notifies');
  client.destroy();
});

test.serial('unref() lets the process exit; ref() holds it again', async (t) => {
  const server = echoServer();
  t.teardown(() => closeServer(server));
  const client = await connected(server.address().port);
  t.is(client.unref(), client);
  t.is(client.ref(), client);
  client.destroy();
  await new Promise((r) => client.once('close', r));
  t.true(client.destroyed);
});

test.serial('1,000 connect/close cycles leave the descriptor count unchanged', async (t) => {
  const server = echoServer();
  t.teardown(() => closeServer(server));
  const port = server.address().port;
  (await connected(port)).destroy(); // warm-up
  await new Promise((r) => setTimeout(r, 50));
  const fdsBefore = readdirSync('/proc/self/fd').length;
  for (let i = 0; i < 1000; i++) {
    const s = await connected(port);
    s.resume(); // read to the server's FIN, as any client must to see 'end'
    s.end();
    await new Promise((r) => s.once('close', r));
  }
  const deadline = Date.now() + 10_000;
  while (server.connectionCount > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
  t.is(server.connectionCount, 0);
  t.is(readdirSync('/proc/self/fd').length, fdsBefore);
});

test.serial('1,000 simultaneous connects all complete (no thread pool queue)', async (t) => {
  // The backlog must hold them all: vsock, like TCP, refuses connects beyond it.
  const server = createVsockServer({ port: 0, backlog: 2048 }, (socket) => socket.pipe(socket));
  const sockets: VsockSocket[] = [];
  t.teardown(async () => {
    for (const s of sockets) s.destroy();
    await closeServer(server);
  });
  const port = server.address().port;
  const results = await Promise.allSettled(
    Array.from({ length: 1000 }, () =>
      connected(port).then((s) => {
        sockets.push(s);
        return s;
      }),
    ),
  );
  t.is(results.filter((r) => r.status === 'fulfilled').length, 1000);
});

test.serial('server close stops accepting at once and fires close when its connections end', async (t) => {
  const server = echoServer();
  const port = server.address().port;
  const open = await connected(port);
  let closed = false;
  server.close(() => (closed = true));
  const err = await new Promise<NodeJS.ErrnoException>((resolve) => connectVsock({ cid: 1, port }).once('error', resolve));
  t.is(err.code, 'ECONNREFUSED');
  t.false(closed, 'close waits for the open connection');
  open.resume();
  open.end();
  await new Promise((r) => open.once('close', r));
  await new Promise((r) => setTimeout(r, 50));
  t.true(closed);
  t.false(server.listening);
});

test.serial('listening twice on one port is EADDRINUSE', (t) => {
  const server = echoServer();
  t.teardown(() => closeServer(server));
  const err = t.throws(() => createVsockServer({ port: server.address().port }));
  t.is((err as NodeJS.ErrnoException).code, 'EADDRINUSE');
});

test.serial('the core holds no socket after every test closed its own', async (t) => {
  await new Promise((r) => setTimeout(r, 100));
  t.is(native.openCount(), 0);
});
