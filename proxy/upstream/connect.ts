// Opening upstream connections. Callback style: this runs once per proxied
// connection, and the relay takes the socket synchronously on success.

import net from 'node:net';
import type { RelayStream } from '../relay.js';

export class ConnectError extends Error {
  constructor(
    readonly code: string,
    message: string,
  ) {
    super(message);
    this.name = 'ConnectError';
  }
}

export type ConnectCallback = (err: ConnectError | null, stream?: RelayStream) => void;

/** A pending connect that the caller can cancel (the downstream went away, drain timeout). */
export interface PendingConnect {
  cancel(): void;
}

/** Connects over TCP with a deadline; `done` runs exactly once unless cancelled first. */
export function connectTcp(address: string, port: number, timeoutMs: number, done: ConnectCallback): PendingConnect {
  const socket = net.connect({ host: address, port, allowHalfOpen: true, noDelay: true });
  let settled = false;
  const finish = (err: ConnectError | null): void => {
    if (settled) return;
    settled = true;
    clearTimeout(timer);
    socket.off('error', onError);
    if (err) {
      socket.destroy();
      done(err);
    } else {
      socket.pause();
      done(null, socket);
    }
  };
  const onError = (err: NodeJS.ErrnoException): void => {
    finish(new ConnectError(err.code ?? 'ECONNECT', `connect to ${address}:${port} failed: ${err.code ?? err.message}`));
  };
  const timer = setTimeout(() => finish(new ConnectError('ETIMEDOUT', `connect to ${address}:${port} timed out after ${timeoutMs}ms`)), timeoutMs);
  socket.once('connect', () => finish(null));
  socket.on('error', onError);
  return {
    cancel: () => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      socket.destroy();
    },
  };
}
