// The demo's apps, and the tests' (test/helpers/apps.ts uses these): an echo
// app, an HTTP app that says who it is, and the clients that check what comes
// back. Real sockets; port 0.

import { createHash, randomBytes } from 'node:crypto';
import http from 'node:http';
import net from 'node:net';

export interface TestServer {
  port: number;
  address: string;
  /** Connections accepted so far. */
  accepted: number;
  sockets: Set<net.Socket>;
  close(): Promise<void>;
}

/** A TCP server; `onSocket` handles each accepted connection (half-open allowed). */
export async function startServer(onSocket: (socket: net.Socket) => void, host = '127.0.0.1'): Promise<TestServer> {
  const sockets = new Set<net.Socket>();
  const state = { accepted: 0 };
  const server = net.createServer({ allowHalfOpen: true }, (socket) => {
    state.accepted++;
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    socket.on('error', () => {});
    onSocket(socket);
  });
  await listen(server, host, 4096);
  const info = server.address() as net.AddressInfo;
  return {
    port: info.port,
    address: info.address,
    get accepted() {
      return state.accepted;
    },
    sockets,
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  };
}

/** Echoes every byte and half-closes after the client does. */
export function startEchoServer(host?: string): Promise<TestServer> {
  return startServer((socket) => socket.pipe(socket), host);
}

/** An HTTP app that answers every request with `hello from VM: METHOD PATH`. */
export async function startHttpApp(host: string, vmId: string): Promise<{ port: number; close(): Promise<void> }> {
  const server = http.createServer((req, res) => {
    res.writeHead(200, { 'content-type': 'text/plain' });
    res.end(`hello from ${vmId}: ${req.method} ${req.url}\n`);
  });
  await listen(server, host);
  return {
    port: (server.address() as net.AddressInfo).port,
    close: async () => {
      server.closeAllConnections();
      await new Promise((r) => server.close(r));
    },
  };
}

function listen(server: net.Server, host: string, backlog?: number): Promise<void> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen({ host, port: 0, ...(backlog !== undefined && { backlog }) }, () => {
      server.off('error', reject);
      resolve();
    });
  });
}

export interface Transfer {
  sent: number;
  received: number;
  sentSha256: string;
  receivedSha256: string;
  /** The client's own address and port: what a PROXY header must carry as the source. */
  localAddress: string;
  localPort: number;
}

export interface TransferOptions {
  /** Connect from this address (an app of the VM whose address it is). */
  localAddress?: string;
  /** Fail when nothing moves this long. */
  idleTimeoutMs?: number;
}

/**
 * Sends `size` random bytes (in chunks, honouring backpressure), half-closes,
 * and hashes everything received until the server's FIN.
 */
export function echoTransfer(port: number, size: number, host = '127.0.0.1', options: TransferOptions = {}): Promise<Transfer> {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ host, port, allowHalfOpen: true, ...(options.localAddress !== undefined && { localAddress: options.localAddress }) });
    const sentHash = createHash('sha256');
    const receivedHash = createHash('sha256');
    let received = 0;
    let sent = 0;
    let local = { address: '', port: 0 };
    const chunkSize = 256 * 1024;
    const write = (): void => {
      while (sent < size) {
        const chunk = randomBytes(Math.min(chunkSize, size - sent));
        sent += chunk.length;
        sentHash.update(chunk);
        if (!socket.write(chunk)) {
          socket.once('drain', write);
          return;
        }
      }
      socket.end();
    };
    socket.on('connect', () => {
      local = { address: socket.localAddress!, port: socket.localPort! };
      write();
    });
    socket.on('data', (chunk: Buffer) => {
      received += chunk.length;
      receivedHash.update(chunk);
    });
    socket.on('end', () => {
      socket.destroy();
      resolve({ sent, received, sentSha256: sentHash.digest('hex'), receivedSha256: receivedHash.digest('hex'), localAddress: local.address, localPort: local.port });
    });
    socket.on('error', reject);
    const idle = options.idleTimeoutMs;
    if (idle !== undefined) socket.setTimeout(idle, () => socket.destroy(new Error(`no progress for ${idle / 1000} s`)));
  });
}

/** GET / from `localAddress` (an app of that VM), without keep-alive. */
export function httpGet(target: { address: string; port: number }, options: TransferOptions = {}): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = http.get({ host: target.address, port: target.port, path: '/', agent: false, ...(options.localAddress !== undefined && { localAddress: options.localAddress }) }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => (body += d));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
      res.on('error', reject);
    });
    req.on('error', reject);
    const idle = options.idleTimeoutMs;
    if (idle !== undefined) req.setTimeout(idle, () => req.destroy(new Error(`no answer for ${idle / 1000} s`)));
  });
}
