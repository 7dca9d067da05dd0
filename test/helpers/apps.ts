// Sample upstream apps and clients for tests: real sockets on loopback, port 0.
// The echo app and its client are the demo's (proxy/cmd/demo/apps.ts).

import { spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import net from 'node:net';

export { echoTransfer, startEchoServer, startServer, type TestServer, type Transfer } from '../../proxy/cmd/demo/apps.js';

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

/**
 * A port on 127.0.0.1 whose connects never complete (they time out): a
 * listener that never accepts, its one-slot backlog taken by a connection
 * made here, so the kernel drops every further SYN.
 */
export async function startBlackHole(): Promise<{ port: number; close(): void }> {
  const child = spawn('python3', ['-c', 'import socket,time\ns=socket.socket()\ns.bind(("127.0.0.1",0))\ns.listen(0)\nprint(s.getsockname()[1],flush=True)\ntime.sleep(600)'], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const port = Number(await new Promise<string>((resolve) => child.stdout.once('data', (d: Buffer) => resolve(d.toString()))));
  const filler = await connect(port);
  filler.on('error', () => {});
  return {
    port,
    close: () => {
      filler.destroy();
      child.kill('SIGKILL');
    },
  };
}
