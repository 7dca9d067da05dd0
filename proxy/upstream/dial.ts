// Opening an upstream socket: the attempts of one transport decision in order
// (vsock, then the TCP fallback), each connected by the native core and, when
// the attempt says so, made secure (peer TLS) before anything is written. The
// L4 relay (listeners/proxied-connection.ts) and the HTTP pools
// (http/upstream-socket.ts) both open their upstreams here.

import { native, type SocketFamily, type SocketHost } from '../native/index.js';
import { vsockConnectCode } from '../native/vsock.js';
import type { TransportName } from '../metrics.js';
import type { PeerFields, SecureOutcome } from '../peer-tls/peer-tls.js';

export interface UpstreamTarget {
  family: SocketFamily;
  host: SocketHost;
  port: number;
  connectTimeoutMs: number;
}

/** One way to reach the upstream; a connection tries its attempts in order. */
export interface UpstreamAttempt {
  transport: TransportName;
  target: UpstreamTarget;
  /** For logs: `127.0.0.1:15006`, `vsock:5:15007`, `vsock:2:15100>5:15007`. */
  label: string;
  /** Ours, written ahead of everything (relay header, PROXY v2 header). */
  preamble: Buffer | null;
  /** Called when this attempt fails and a later one will be tried. */
  onFallback?: (code: string, next: UpstreamAttempt) => void;
  /** Makes the connected socket secure (peer TLS) before anything is written; a failure ends the connection with its reason. */
  secure?: (fd: number, done: (outcome: SecureOutcome) => void) => void;
}

/**
 * How a dial ended: a connected (and, if asked, secured) socket the caller
 * now owns, whose preamble it must write first; or the last attempt's connect
 * error code; or the peer TLS refusal.
 */
export type DialOutcome =
  | { kind: 'connected'; attempt: UpstreamAttempt; fd: number; peer?: PeerFields }
  | { kind: 'connect_failed'; attempt: UpstreamAttempt; code: string }
  | { kind: 'secure_failed'; attempt: UpstreamAttempt; reason: string; detail: string };

export interface DialHandlers {
  /** An attempt failed and `next` is tried (after its own onFallback). */
  onFallback?: (from: UpstreamAttempt, next: UpstreamAttempt) => void;
  done: (outcome: DialOutcome) => void;
}

/** A dial under way; abort() closes its socket, and `done` is not called after it. */
export interface Dial {
  abort(): void;
}

export function dial(attempts: readonly UpstreamAttempt[], handlers: DialHandlers): Dial {
  let pendingFd = -1;
  let aborted = false;
  const tryAttempt = (index: number): void => {
    const attempt = attempts[index]!;
    const { target } = attempt;
    const failed = (raw: string): void => {
      const code = attempt.transport === 'vsock' ? vsockConnectCode(raw) : raw;
      const next = attempts[index + 1];
      if (next === undefined) {
        handlers.done({ kind: 'connect_failed', attempt, code });
        return;
      }
      attempt.onFallback?.(code, next);
      handlers.onFallback?.(attempt, next);
      tryAttempt(index + 1);
    };
    try {
      pendingFd = native.connect(target.family, target.host, target.port, target.connectTimeoutMs, (error, fd) => {
        pendingFd = -1;
        if (aborted) return;
        if (error !== null) failed(error);
        else if (attempt.secure) secure(attempt, attempt.secure, fd);
        else handlers.done({ kind: 'connected', attempt, fd });
      });
    } catch (err) {
      failed((err as NodeJS.ErrnoException).code ?? 'EINVAL');
    }
  };
  const secure = (attempt: UpstreamAttempt, start: NonNullable<UpstreamAttempt['secure']>, fd: number): void => {
    pendingFd = fd; // an abort meanwhile closes it, and the handshake's callback never comes
    start(fd, (outcome) => {
      pendingFd = -1;
      if (outcome.ok) {
        handlers.done({ kind: 'connected', attempt, fd, peer: outcome.fields });
        return;
      }
      native.close(fd);
      handlers.done({ kind: 'secure_failed', attempt, reason: outcome.reason, detail: outcome.detail });
    });
  };
  tryAttempt(0);
  return {
    abort: () => {
      aborted = true;
      if (pendingFd >= 0) native.close(pendingFd);
      pendingFd = -1;
    },
  };
}
