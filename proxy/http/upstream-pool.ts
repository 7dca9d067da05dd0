// Upstream connections of an HTTP listener, kept alive per endpoint and
// transport plan: a pool of HTTP/1.1 connections (http1-client.ts) or one
// multiplexed HTTP/2 session (h2c) per key. Their sockets are opened by
// upstream/dial.ts with the attempts of upstream/connector.ts, so a request
// reaches an endpoint the way an L4 connection does (vsock or TCP, PROXY v2
// header first); Node's http2 runs on the core's socket through
// createConnection. A pooled peer
// TLS connection past peer_tls.max_connection_age is retired, not cut: it
// takes no new request and closes once idle (HTTP/2: GOAWAY, then close).

import type http2 from 'node:http2';
import { VsockSocket } from '../native/vsock.js';
import { http2Module } from './http2-module.js';
import { Http1Pool } from './http1-client.js';
import type { TransportName } from '../metrics.js';
import { dial, type UpstreamAttempt } from '../upstream/dial.js';
import type { ConnectionAgeLimit } from '../peer-tls/connection-age.js';

/** Why an upstream socket never carried a request: the 502's reason. */
export class UpstreamDialError extends Error {
  constructor(
    readonly reason: 'upstream_connect_failed' | 'peer_tls_failed',
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

/** A socket to an endpoint; `transport` and `label` say which attempt connected. */
export class UpstreamSocket extends VsockSocket {
  transport: TransportName;
  label: string;
  /** Made secure (peer TLS) when it connected: only such a connection has an age to follow. */
  secured = false;

  constructor(attempts: readonly UpstreamAttempt[]) {
    super({ remoteCid: 0, remotePort: 0 });
    // An upstream that ends its side (an idle keep-alive timeout) is done: closing ours takes it out of its pool, as net.Socket does without allowHalfOpen.
    this.once('end', () => this.destroy());
    const first = attempts[0]!;
    this.transport = first.transport;
    this.label = first.label;
    const handle = dial(attempts, {
      done: (outcome) => {
        this.transport = outcome.attempt.transport;
        this.label = outcome.attempt.label;
        this.secured = outcome.attempt.secure !== undefined;
        if (outcome.kind === 'connected') this.connected(outcome.fd, outcome.attempt.preamble);
        else if (outcome.kind === 'connect_failed')
          this.destroy(new UpstreamDialError('upstream_connect_failed', outcome.code, `upstream connect to ${outcome.attempt.label} failed (${outcome.code})`));
        else this.destroy(new UpstreamDialError('peer_tls_failed', outcome.reason, `peer TLS with ${outcome.attempt.label} refused (${outcome.reason}): ${outcome.detail}`));
      },
    });
    this.connectingBy(() => handle.abort());
  }
}

/** A multiplexed h2c session to one endpoint and the socket under it. */
export interface Http2Upstream {
  session: http2.ClientHttp2Session;
  socket: UpstreamSocket;
  /** Set when the socket failed before the session could be used (a connect failure). */
  dialError?: UpstreamDialError;
}

export class UpstreamPools {
  private readonly http1Pools = new Map<string, Http1Pool>();
  private readonly sessions = new Map<string, Http2Upstream>();

  /** `ageLimit`: peer_tls.max_connection_age, followed by the pooled TLS connections (null: none). */
  constructor(private readonly ageLimit: ConnectionAgeLimit | null = null) {}

  /** The keep-alive connections for `key`; `attempts` opens each new one. */
  http1(key: string, attempts: () => UpstreamAttempt[]): Http1Pool {
    let pool = this.http1Pools.get(key);
    if (pool === undefined) {
      pool = new Http1Pool(
        () => new UpstreamSocket(attempts()),
        (socket, aged) => this.followAge(socket, aged),
      );
      this.http1Pools.set(key, pool);
    }
    return pool;
  }

  /** Calls `aged` at a secured socket's age deadline (never, without peer_tls.max_connection_age); also the h2c frame forwarder's pool's. */
  followAge(socket: UpstreamSocket, aged: () => void): void {
    const limit = this.ageLimit;
    if (limit === null) return;
    socket.once('connect', () => {
      if (socket.secured) socket.once('close', limit.retire(aged));
    });
  }

  /** The open h2c session for `key`, or a new one; a session that closes or is told to go away is forgotten. */
  session(key: string, attempts: () => UpstreamAttempt[]): Http2Upstream {
    const open = this.sessions.get(key);
    if (open && !open.session.closed && !open.session.destroyed) return open;
    const socket = new UpstreamSocket(attempts());
    const upstream: Http2Upstream = { socket, session: http2Module().connect('http://upstream', { createConnection: () => socket as never }) };
    socket.once('error', (err) => {
      if (err instanceof UpstreamDialError) upstream.dialError = err;
    });
    const forget = (): void => {
      if (this.sessions.get(key) === upstream) this.sessions.delete(key);
    };
    upstream.session.on('error', forget);
    upstream.session.on('goaway', forget);
    upstream.session.on('close', forget);
    this.followAge(socket, () => {
      forget();
      // close(): GOAWAY, the streams in flight finish, then the session and its socket close.
      upstream.session.close();
    });
    this.sessions.set(key, upstream);
    return upstream;
  }

  /** Closes every connection now (stop). */
  destroy(): void {
    for (const pool of this.http1Pools.values()) pool.destroy();
    for (const { session } of this.sessions.values()) session.destroy();
    this.http1Pools.clear();
    this.sessions.clear();
  }
}
