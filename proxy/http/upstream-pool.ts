// Upstream connections of an HTTP listener, kept alive per endpoint and
// transport plan: an http.Agent (HTTP/1.1) or one multiplexed HTTP/2 session
// (h2c) per key. Their sockets are opened by upstream/dial.ts with the
// attempts of upstream/connector.ts, so a request reaches an endpoint the way
// an L4 connection does (vsock or TCP, PROXY v2 header first); Node's http
// and http2 run on the core's socket through createConnection.

import http from 'node:http';
import http2 from 'node:http2';
import { VsockSocket } from '../native/vsock.js';
import type { TransportName } from '../metrics.js';
import { dial, type UpstreamAttempt } from '../upstream/dial.js';

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
  private readonly agents = new Map<string, http.Agent>();
  private readonly sessions = new Map<string, Http2Upstream>();

  /** The keep-alive agent for `key`; `attempts` opens each new connection. */
  agent(key: string, attempts: () => UpstreamAttempt[]): http.Agent {
    let agent = this.agents.get(key);
    if (agent === undefined) {
      agent = new http.Agent({ keepAlive: true });
      agent.createConnection = () => new UpstreamSocket(attempts()) as unknown as ReturnType<http.Agent['createConnection']>;
      this.agents.set(key, agent);
    }
    return agent;
  }

  /** The open h2c session for `key`, or a new one; a session that closes or is told to go away is forgotten. */
  session(key: string, attempts: () => UpstreamAttempt[]): Http2Upstream {
    const open = this.sessions.get(key);
    if (open && !open.session.closed && !open.session.destroyed) return open;
    const socket = new UpstreamSocket(attempts());
    const upstream: Http2Upstream = { socket, session: http2.connect('http://upstream', { createConnection: () => socket as never }) };
    socket.once('error', (err) => {
      if (err instanceof UpstreamDialError) upstream.dialError = err;
    });
    const forget = (): void => {
      if (this.sessions.get(key) === upstream) this.sessions.delete(key);
    };
    upstream.session.on('error', forget);
    upstream.session.on('goaway', forget);
    upstream.session.on('close', forget);
    this.sessions.set(key, upstream);
    return upstream;
  }

  /** Closes every connection now (stop). */
  destroy(): void {
    for (const agent of this.agents.values()) agent.destroy();
    for (const { session } of this.sessions.values()) session.destroy();
    this.agents.clear();
    this.sessions.clear();
  }
}
