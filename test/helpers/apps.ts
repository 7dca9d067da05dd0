// Sample upstream apps and clients for tests: real sockets on loopback, port 0.

import { createHash, randomBytes } from 'node:crypto';
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
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen({ host, port: 0, backlog: 4096 }, resolve);
  });
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

export interface Transfer {
  sent: number;
  received: number;
  sentSha256: string;
  receivedSha256: string;
}

/**
 * Sends `size` random bytes (in chunks, honouring backpressure), half-closes,
 * and hashes everything received until the server's FIN.
 */
export function echoTransfer(port: number, size: number, host = '127.0.0.1'): Promise<Transfer> {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ host, port, allowHalfOpen: true });
    const sentHash = createHash('sha256');
    const receivedHash = createHash('sha256');
    let received = 0;
    let sent = 0;
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
    socket.on('connect', write);
    socket.on('data', (chunk: Buffer) => {
      received += chunk.length;
      receivedHash.update(chunk);
    });
    socket.on('end', () => {
      socket.destroy();
      resolve({ sent, received, sentSha256: sentHash.digest('hex'), receivedSha256: receivedHash.digest('hex') });
    });
    socket.on('error', reject);
  });
}

/** Connects and resolves once connected. */
export function connect(port: number, host = '127.0.0.1'): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ host, port, allowHalfOpen: true });
    socket.once('connect', () => {
      socket.off('error', reject);
      resolve(socket);
    });
    socket.once('error', reject);
  });
}

/**
 * Resolves with what the socket saw until it closed: data, whether it ended
 * cleanly, its error code. Answers the peer's FIN with its own, as a client would.
 */
export function collect(socket: net.Socket): Promise<{ data: Buffer; ended: boolean; errorCode?: string }> {
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    let ended = false;
    let errorCode: string | undefined;
    socket.on('data', (c: Buffer) => chunks.push(c));
    socket.on('end', () => {
      ended = true;
      socket.end();
    });
    socket.on('error', (err: NodeJS.ErrnoException) => (errorCode = err.code));
    socket.on('close', () => resolve({ data: Buffer.concat(chunks), ended, ...(errorCode !== undefined && { errorCode }) }));
  });
}

export function randomPayload(size: number): Buffer {
  return randomBytes(size);
}

export function sha256(data: Uint8Array): string {
  return createHash('sha256').update(data).digest('hex');
}

/** Resolves when the condition holds, polling; rejects after `timeoutMs` with `what`. */
export async function waitFor(condition: () => boolean | Promise<boolean>, what: string, timeoutMs = 5_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await condition())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}
