// HTTP outbound listener: a local app speaks HTTP/1.1 or h2c (HTTP/2 with
// prior knowledge, what gRPC uses) to 127.0.0.1:PORT; each REQUEST is routed
// (route-table.ts) to a cluster and sent to one of its endpoints in turn, so
// the calls of one client connection spread over the backends. Upstream
// connections are pooled per endpoint (upstream-pool.ts) and opened like L4
// ones (upstream/connector.ts, upstream/dial.ts). HTTP/1.1 is served by our
// own server side (http1-server.ts: the connection's bytes parsed by llhttp,
// no http.Server) and client (http1-client.ts), and an answer goes back byte
// for byte when it may (http1-answer.ts); h2c frame by frame (h2/, the
// default) or by Node's http2 (`h2c: node`; TLS h2 and upgrades always: the
// core's accepted socket handed to it as a Duplex).

import type http from 'node:http';
import type http2 from 'node:http2';
import { randomUUID } from './request-id.js';
import type { OutboundListenerConfig } from '../config/types.js';
import { formatAddress, logInfoLine } from '../runtime/log.js';
import type { SocketHost } from '../native/index.js';
import { VsockSocket } from '../native/vsock.js';
import type { Cluster } from '../upstream/cluster.js';
import type { UpstreamEndpoint } from '../upstream/endpoint.js';
import { UpstreamConnector, type UpstreamPlan } from '../upstream/connector.js';
import { describeHop, type Selection } from '../upstream/select.js';
import { Listener, ipBinds, type ListenerContext, type TrackedConnection } from '../listeners/listener.js';
import type { OriginalDestinationRoute, OutboundListenerOptions } from '../listeners/outbound.js';
import { RouteTable, type RouteConfig } from './route-table.js';
import { httpAccessFields } from './access-fields.js';
import { UpstreamDialError, UpstreamPools, type Http2Upstream } from './upstream-pool.js';
import type { Http1Exchange, Http1RequestHead } from './http1-client.js';
import { ReplayBody } from './replay-body.js';
import { Http1ServerConnection, type Http1ServerRequest } from './http1-server.js';
import { Http1Deadlines } from './http1-deadlines.js';
import { NO_DEADLINE, RouteDeadlines, type RouteDeadline } from './route-deadlines.js';
import { tunnel } from './http1-tunnel.js';

import { http2Module } from './http2-module.js';
import { forwardedHeaders, hopByHop, type ForwardedMode } from './headers.js';
import { answerHead, bodyFraming, switchingHead, tunnelsUpgrade, type BodyFraming } from './http1-answer.js';
import { LISTENER_DEFAULTS } from '../config/listener-defaults.js';
import { H2_PREFACE } from './inspector.js';
import { DownstreamH2, type H2Request } from './h2/downstream.js';
import type { Call } from './h2/call.js';
import { UpstreamH2Pool } from './h2/upstream-pool.js';
import { MAX_REPLAY_BODY_BYTES, RetryBudget, causeLabel, mayRetry, type AttemptFacts, type RetryCause, type RetryPolicy } from './retry.js';

const CRLF = Buffer.from('\r\n', 'latin1');

/** The header that says why the sidecar answered itself. */
export const REASON_HEADER = 'x-vsockmesh-reason';

type Src = { address: string; port: number };

/** The clusters a listener's routes may name, looked up per request (a pushed route may name a cluster that came later). */
export interface ClusterLookup {
  get(name: string): Cluster | undefined;
}

/** A client connection's facts: who it is, and (captured connections) where it was headed. */
interface Downstream {
  src: Src;
  fallback?: OriginalDestinationRoute | undefined;
}

/** The route label of captured requests no virtual host matched: they go where the connection was headed. */
export const ORIGINAL_DESTINATION_ROUTE = 'original_destination';

/** Where one request goes, or the answer the sidecar gives itself. */
type Target = RoutedTarget | { ok: false; status: number; reason: string; detail?: string; route: string; cluster: string };

type RoutedTarget = { ok: true; route: string; cluster: string; timeoutMs: number; retry: RetryPolicy | undefined; key: string; endpoint: UpstreamEndpoint; attempts: () => ReturnType<UpstreamConnector['attempts']> };

/** One request's attempts: the first target, the current one, and what the access line says of them. */
interface Attempts {
  readonly first: RoutedTarget;
  current: RoutedTarget;
  readonly method: string;
  readonly downstream: Downstream;
  readonly budget: RetryBudget;
  /** Attempts sent so far. */
  count: number;
  /** Retries granted by the budget (given back when the request ends). */
  retries: number;
  budgetExhausted: boolean;
}

/** What one request's access-log line and metrics say. */
interface RequestRecord {
  protocol: 'http/1.1' | 'h2';
  src: Src;
  method: string;
  authority: string;
  path: string;
  requestId: string;
  startedAt: number;
}

export class HttpOutboundListener extends Listener {
  private table: RouteTable;
  /** By cluster name, with the cluster it was made for (a cluster removed and pushed again is another object). */
  private readonly connectors = new Map<string, { cluster: Cluster; connector: UpstreamConnector }>();
  private readonly pools: UpstreamPools;
  private readonly budgets = new Map<string, RetryBudget>();
  /** By selection (planOf): the transport plan and pool key of an endpoint's current selection. */
  private readonly plans = new WeakMap<Selection, { cluster: string; key: string; plan: UpstreamPlan }>();
  private readonly forwarded: ForwardedMode;
  /** Requests in flight per endpoint, for lb_policy: least_request. */
  private readonly activeRequests = new WeakMap<UpstreamEndpoint, number>();
  private readonly http2 = http2Module().createServer();
  private readonly sessions = new Set<http2.ServerHttp2Session>();
  /** HTTP/1.1 connections by their requests in flight: a drain closes those with none, and the others after their response. */
  private readonly http1Connections = new Map<VsockSocket, number>();
  /** The 408 deadlines of its HTTP/1.1 connections, checked from one interval. */
  private readonly http1Deadlines = new Http1Deadlines();
  /** Its requests' route timeouts (504 route_timeout), one timer per timeout value. */
  private readonly routeDeadlines = new RouteDeadlines();
  private readonly sources = new WeakMap<object, Downstream>();
  /** The client of the connection being handed to the HTTP/2 server ('session' follows at once). */
  private handingOver: Downstream = { src: { address: '', port: 0 } };

  constructor(
    readonly config: OutboundListenerConfig,
    routes: RouteConfig,
    private readonly clusters: ClusterLookup,
    context: ListenerContext,
    private readonly options: OutboundListenerOptions,
  ) {
    super(config.name, ipBinds(config.addresses), config.port, context, config.maxConnections);
    this.table = new RouteTable(routes);
    this.pools = new UpstreamPools(options.peerTls?.ageLimit ?? null);
    this.forwarded = config.forwarded ?? LISTENER_DEFAULTS.forwarded;
    this.h2cFrames = (config.h2c ?? LISTENER_DEFAULTS.h2c) === 'frames';
    this.http2.on('session', (session) => {
      this.sources.set(session, this.handingOver);
      this.sessions.add(session);
      session.once('close', () => this.sessions.delete(session));
      if (this.draining) session.close();
    });
    this.http2.on('stream', (stream, headers) => this.onHttp2Stream(stream, headers));
  }

  /** The route configuration this listener serves (config_dump). */
  get routes(): RouteConfig {
    return this.table.config;
  }

  /** A new route configuration (RDS): requests from now on are routed by it; connections and requests in flight carry on. */
  setRoutes(routes: RouteConfig): void {
    if (routes === this.table.config) return;
    this.table = new RouteTable(routes);
  }

  protected onConnection(fd: number, peerHost: SocketHost, peerPort: number): void {
    this.adopt(fd, { address: String(peerHost), port: peerPort }, null);
  }

  /**
   * A connection accepted here, or handed over with the bytes already read
   * from it (`early`: by a forward proxy, or by a capture listener that found
   * it speaks HTTP); `fallback`, where requests go that no virtual host
   * matches (captured connections). Owns `fd` from here on.
   */
  adopt(fd: number, src: Src, early: Buffer | null, fallback?: OriginalDestinationRoute): void {
    const socket = new VsockSocket({ fd, remoteCid: 0, remotePort: src.port });
    const tracked: TrackedConnection = { abort: () => socket.destroy() };
    this.track(tracked);
    socket.once('close', () => this.untrack(tracked));
    socket.on('error', () => socket.destroy());
    socket.setTimeout(this.config.idleTimeoutMs, () => socket.destroy());
    const downstream = { src, fallback };
    this.sources.set(socket, downstream);
    if (early !== null) socket.unshift(early);
    this.sniff(socket, downstream);
  }

  /** HTTP/2 with prior knowledge starts with the connection preface; anything else is HTTP/1.x. */
  private sniff(socket: VsockSocket, downstream: Downstream): void {
    let seen = Buffer.alloc(0);
    // A client that leaves before saying which protocol it speaks: nothing will end our side (the socket allows half-open).
    const onEnd = (): void => void socket.destroy();
    socket.once('end', onEnd);
    const onData = (chunk: Buffer): void => {
      seen = Buffer.concat([seen, chunk]);
      const n = Math.min(seen.length, H2_PREFACE.length);
      const h2 = seen.subarray(0, n).equals(H2_PREFACE.subarray(0, n));
      if (h2 && seen.length < H2_PREFACE.length) return;
      socket.off('data', onData);
      socket.off('end', onEnd);
      socket.pause();
      socket.unshift(seen);
      this.handingOver = downstream;
      if (h2 && this.h2cFrames) this.adoptFrames(socket, downstream);
      else if (h2) this.http2.emit('connection', socket);
      else {
        this.http1Connections.set(socket, 0);
        socket.once('close', () => this.http1Connections.delete(socket));
        new Http1ServerConnection(socket, (request) => this.onHttp1Request(request, downstream), this.http1Deadlines);
      }
      socket.resume();
    };
    socket.on('data', onData);
  }

  private readonly framePool = new UpstreamH2Pool((socket, aged) => this.pools.followAge(socket, aged));
  private readonly frameConnections = new Set<DownstreamH2>();

  /** The one place h2c (prior knowledge) picks its path: frames (the default) or Node's http2 (config `h2c: node`). */
  private readonly h2cFrames: boolean;

  /** An h2c connection forwarded frame by frame. */
  private adoptFrames(socket: VsockSocket, downstream: Downstream): void {
    const conn = new DownstreamH2(socket, {
      start: (call, request) => this.startFrameCall(call, request, downstream),
      protocolError: (code, reason) => logInfoLine(this.context.accessLogger, { log: 'h2', listener: this.name, src: formatAddress(downstream.src.address, downstream.src.port), code, reason }, 'HTTP/2 connection error'),
      streamError: (stream, code, reason) => logInfoLine(this.context.accessLogger, { log: 'h2', listener: this.name, src: formatAddress(downstream.src.address, downstream.src.port), stream, code, reason }, 'HTTP/2 stream error'),
    });
    this.frameConnections.add(conn);
    socket.once('close', () => this.frameConnections.delete(conn));
    if (this.draining) conn.drain();
  }

  private startFrameCall(call: Call, request: H2Request, downstream: Downstream): void {
    const { src } = downstream;
    const authority = request.authority || request.headers.host || '';
    // A CONNECT (RFC 9113 8.5) has no :path: routed as `/` by its authority, and tunnelled (sent on as a CONNECT, its DATA both ways).
    const connect = request.method === 'CONNECT';
    const record = this.record('h2', src, request.method, authority, connect ? '/' : request.path, request.headers['x-request-id']);
    const target = this.target(record.authority, record.path, request.headers, downstream);
    if (!target.ok) {
      call.onEnd = () => this.finish(record, target, call.status, 'none', null, target.reason);
      call.answer(target.status, target.reason);
      return;
    }
    const policy = target.retry;
    const tries = this.startAttempts(target, request.method, downstream);
    const fwd = forwardedHeaders(request.headers, src.address, record.requestId, { forwarded: this.forwarded, host: record.authority });
    const fields: Array<readonly [string, string]> = connect
      ? [[':method', request.method], [':authority', record.authority]]
      : [[':method', request.method], [':scheme', 'http'], [':authority', record.authority], [':path', record.path]];
    for (const name of Object.keys(fwd)) {
      const v = fwd[name]!;
      if (Array.isArray(v)) for (const x of v) fields.push([name, x]);
      else fields.push([name, v]);
    }
    const deadline = this.routeTimeout(record, target, () => call.answer(504, 'route_timeout'));
    let up = this.framePool.get(target.key, target.attempts);
    let release = this.holdEndpoint(target.endpoint);
    tries.count++;
    if (policy !== undefined) {
      call.keepBody = policy.attempts > 1;
      call.retryStatuses = policy.statuses;
      call.perTryTimeoutMs = policy.perTryTimeoutMs;
      // The same rules and budget as HTTP/1.1 and Node's HTTP/2 (this.retry); an answer has not reached the client when the call asks.
      call.retry = (cause) => {
        const next = this.retry(tries, { replayable: call.replayable, responseStarted: false, cause });
        if (next === undefined) return false;
        if (!next.ok) {
          call.answer(next.status, next.reason);
          return true;
        }
        release();
        tries.count++;
        up = this.framePool.get(next.key, next.attempts);
        release = this.holdEndpoint(next.endpoint);
        call.resend(up);
        return true;
      };
    }
    call.onEnd = () => {
      deadline.cancel();
      release();
      tries.budget.requestEnded(tries.retries);
      this.finish(record, tries.current, call.status, up.socket.transport, up.socket.label, call.reason, tries);
    };
    call.attach(up, fields, request.endStream);
  }

  private downstreamOf(socket: object | null | undefined): Downstream {
    return (socket && this.sources.get(socket)) ?? { src: { address: '', port: 0 } };
  }

  /** Cluster `name`'s connector, made on its first request (undefined: no such cluster). */
  private connector(name: string): UpstreamConnector | undefined {
    const cluster = this.clusters.get(name);
    if (cluster === undefined) return undefined;
    const made = this.connectors.get(name);
    if (made?.cluster === cluster) return made.connector;
    const connector = new UpstreamConnector(this.config.name, cluster, this.context, this.options);
    this.connectors.set(name, { cluster, connector });
    return connector;
  }

  /** A routed request's attempts, counted as active in its cluster's retry budget from now until `budget.requestEnded`. */
  private startAttempts(target: RoutedTarget, method: string, downstream: Downstream): Attempts {
    let budget = this.budgets.get(target.cluster);
    if (budget === undefined) {
      budget = new RetryBudget();
      this.budgets.set(target.cluster, budget);
    }
    budget.requestStarted();
    return { first: target, current: target, method, downstream, budget, count: 0, retries: 0, budgetExhausted: false };
  }

  /**
   * After a failed attempt: the target of the next one (the cluster's next
   * endpoint, or the answer to give when there is none), or undefined when
   * the route's policy or the cluster's budget allow no retry. The same rules
   * for HTTP/1.1 and HTTP/2.
   */
  private retry(tries: Attempts, facts: Omit<AttemptFacts, 'attempt' | 'method'>): Target | undefined {
    const { first, downstream } = tries;
    if (!mayRetry(first.retry, { attempt: tries.count, method: tries.method, ...facts })) return undefined;
    if (!tries.budget.tryRetry()) {
      tries.budgetExhausted = true;
      return undefined;
    }
    tries.retries++;
    this.context.metrics.httpRetries.inc({ listener: this.name, route: first.route, cluster: first.cluster, reason: causeLabel(facts.cause) });
    const next = this.endpointTarget(first.route, first.cluster, first.timeoutMs, first.retry, downstream.src, downstream.fallback);
    if (next.ok) tries.current = next;
    return next;
  }

  /** The route, cluster, endpoint and transport plan of one request. */
  private target(authority: string, path: string, headers: http.IncomingHttpHeaders | http2.IncomingHttpHeaders, downstream: Downstream): Target {
    const decision = (downstream.fallback?.routes ?? this.table).route({ authority, path, headers }, Math.random());
    const { src, fallback } = downstream;
    // No route timeout: the connection's own protocol, as at L4, decides how long a request may take.
    if (!decision.ok && decision.reason === 'no_virtual_host' && fallback) return this.endpointTarget(ORIGINAL_DESTINATION_ROUTE, fallback.cluster, 0, undefined, src, fallback);
    if (!decision.ok) return { ok: false, status: 404, reason: decision.reason, route: '', cluster: '' };
    return this.endpointTarget(decision.route, decision.cluster, decision.timeoutMs, decision.retry, src);
  }

  /**
   * The next endpoint of cluster `name` (by its lb_policy) and its transport
   * plan: each attempt of a request asks again. `fallback`: the one endpoint
   * of a captured connection's original destination instead.
   */
  private endpointTarget(route: string, name: string, timeoutMs: number, retry: RetryPolicy | undefined, src: Src, fallback?: OriginalDestinationRoute): Target {
    const cluster = fallback ? undefined : this.clusters.get(name);
    const connector = fallback?.connector ?? this.connector(name);
    const endpoint = fallback?.endpoint ?? cluster?.pick((e) => this.activeRequests.get(e) ?? 0);
    if (connector === undefined || endpoint === undefined) return { ok: false, status: 503, reason: 'no_healthy_endpoint', route, cluster: name };
    const selection = endpoint.decide(this.options.placement.current(), connector.vsockHealth(endpoint.breaker), fallback?.policy ?? this.options.vsock.policy);
    this.context.metrics.countDecision(this.name, name, selection.reason);
    // The access log's transport_reason says why no transport fits the endpoint.
    if (!selection.ok) return { ok: false, status: 503, reason: 'no_healthy_endpoint', detail: selection.reason, route, cluster: name };
    const { key, plan } = this.planOf(name, endpoint, selection);
    return { ok: true, route, cluster: name, timeoutMs, retry, key, endpoint, attempts: () => connector.attempts(plan, src) };
  }

  /**
   * The transport plan of an endpoint's selection and the key of its
   * upstream pool, made once per selection: decide() hands out the same
   * selection (its endpoint's own) while placement, policy and vsock health
   * stay, so most requests make neither again.
   */
  private planOf(cluster: string, endpoint: UpstreamEndpoint, selection: Selection & { ok: true }): { key: string; plan: UpstreamPlan } {
    const made = this.plans.get(selection);
    if (made !== undefined && made.cluster === cluster) return made;
    const { app, vm } = endpoint.facts;
    const plan: UpstreamPlan = { hops: selection.hops, reason: selection.reason, breaker: endpoint.breaker, dst: app ?? { address: '0.0.0.0', port: 0 }, vmId: vm?.vmId ?? null, peerMode: vm?.peerMode };
    // One pool per endpoint and plan: endpoints behind one peer sidecar share its hops but not the destination their header names.
    const key = `${cluster}|${formatAddress(plan.dst.address, plan.dst.port)}|${plan.vmId ?? ''}|${selection.hops.map(describeHop).join(',')}`;
    const entry = { cluster, key, plan };
    this.plans.set(selection, entry);
    return entry;
  }

  // ---- HTTP/1.1 ------------------------------------------------------------

  /**
   * One HTTP/1.1 request: routed, its head sent upstream with this hop's
   * headers (with its body, when held for a replay), and the answer's bytes
   * written back to the client as read when they may pass as they are
   * (http1-answer.ts), else its head written again and its body framed.
   */
  private onHttp1Request(req: Http1ServerRequest, downstream: Downstream): void {
    const { src } = downstream;
    const host = req.headers.host;
    const { authority, path } = requestTarget(req.url, typeof host === 'string' ? host : '');
    const record = this.record('http/1.1', src, req.method, authority, path, req.headers['x-request-id']);
    const connection = req.connection.socket;
    this.http1Connections.set(connection, (this.http1Connections.get(connection) ?? 0) + 1);
    let status = 0;
    const answer = (code: number, why: string): void => {
      status = code;
      req.answer(code, { [REASON_HEADER]: why, 'content-type': 'text/plain' }, `${why}\n`, this.draining);
    };
    const target = this.target(record.authority, record.path, req.headers, downstream);
    if (!target.ok) {
      req.onClose(() => {
        this.http1RequestClosed(connection);
        this.finish(record, target, status, 'none', null, target.reason);
      });
      req.discardBody();
      answer(target.status, target.reason);
      return;
    }
    const policy = target.retry;
    const tries = this.startAttempts(target, record.method, downstream);
    let reason: string | undefined;
    let upstream: Http1Exchange | undefined;
    /** How the answer's body goes to the client, once its head has gone (undefined: not yet). */
    let framing: BodyFraming | undefined;
    let keepAlive = false;
    const headers = forwardedHeaders(req.headers, src.address, record.requestId, { forwarded: this.forwarded, host: record.authority });
    // A WebSocket upgrade asks the upstream to switch too (its hop-by-hop Connection and Upgrade again); a 101 makes the connection a tunnel.
    const upgrade = req.upgrade && tunnelsUpgrade(req.headers.upgrade);
    if (upgrade) {
      headers.connection = 'upgrade';
      headers.upgrade = req.headers.upgrade!;
    }
    const head: Http1RequestHead = {
      method: record.method,
      path: record.path,
      headers,
      // A body of unknown length goes on in chunks; hop-by-hop, its Transfer-Encoding is not among the forwarded headers.
      chunked: req.headers['transfer-encoding'] !== undefined,
      upgrade,
    };
    const fail = (code: number, why: string): void => {
      reason ??= why;
      upstream?.destroy();
      if (framing === undefined) answer(code, why);
      else connection.destroy();
    };
    const deadline = this.routeTimeout(record, target, () => fail(504, 'route_timeout'));
    /** Sends the request to the current endpoint; `body`: the whole body held for a replay, or null to stream it once. */
    const send = (body: Buffer | null): void => {
      tries.count++;
      const release = this.holdEndpoint(tries.current.endpoint);
      let perTry: NodeJS.Timeout | undefined;
      /** Sends the request again to the next endpoint if the policy and the cluster's budget allow it. */
      const retried = (cause: RetryCause): boolean => {
        if (reason !== undefined || connection.destroyed) return false;
        const next = this.retry(tries, { replayable: body !== null, responseStarted: framing !== undefined, cause });
        if (next === undefined) return false;
        if (!next.ok) fail(next.status, next.reason);
        else send(body);
        return true;
      };
      /** Answer bytes to the client, with its backpressure on the upstream connection. */
      const toClient = (data: Buffer | string): void => {
        if (!req.write(data)) {
          up.pause();
          req.whenWritable(() => up.resume());
        }
      };
      const up: Http1Exchange = this.pools.http1(tries.current.key, tries.current.attempts).request(
        head,
        {
          response: (code, message, lines) => {
            clearTimeout(perTry);
            if (upstream !== up) return;
            // A retried answer is read to its end (passed on to no one) so that its connection stays in the pool.
            if (policy !== undefined && retried({ kind: 'status', status: code })) return;
            status = code;
            keepAlive = req.keepAlive && !this.draining;
            const bodiless = record.method === 'HEAD' || code === 204 || code === 304;
            framing = bodyFraming(lines, { http11: req.versionMinor === 1, keepAlive, bodiless });
            if (framing !== 'verbatim') toClient(answerHead(code, message, lines, framing, keepAlive));
          },
          raw: (chunk) => {
            if (upstream === up && reason === undefined && framing === 'verbatim') toClient(chunk);
          },
          body: (chunk) => {
            if (upstream !== up || reason !== undefined || framing === 'verbatim') return;
            toClient(framing === 'chunked' ? Buffer.concat([Buffer.from(`${chunk.length.toString(16)}\r\n`, 'latin1'), chunk, CRLF]) : chunk);
          },
          end: () => {
            if (upstream !== up || reason !== undefined) return;
            if (framing === 'chunked') toClient('0\r\n\r\n');
            req.finish(!keepAlive || framing === 'close');
          },
          error: (err) => {
            if (upstream !== up || reason !== undefined) return;
            if (framing !== undefined) return fail(502, 'upstream_reset');
            // A failed dial or peer handshake sent nothing to the app.
            if (retried(err instanceof UpstreamDialError ? { kind: 'connect_failure' } : { kind: 'reset' })) return;
            fail(502, err instanceof UpstreamDialError ? err.reason : 'upstream_reset');
          },
          upgraded: (message, lines, socket, rest) => {
            clearTimeout(perTry);
            if (upstream !== up || reason !== undefined) return void socket.destroy();
            // A tunnel lasts as long as its two sides: the route's timeout was for the answer.
            deadline.cancel();
            status = 101;
            framing = 'close';
            req.write(switchingHead(message, lines));
            tunnel(req, socket, rest);
          },
          close: () => {
            clearTimeout(perTry);
            release();
          },
        },
        body,
      );
      upstream = up;
      // The attempt's own deadline for its response head: abandoned, then retried as a reset would be, or 504.
      if (policy?.perTryTimeoutMs !== undefined && !up.done) {
        perTry = setTimeout(() => {
          if (upstream !== up || reason !== undefined) return;
          up.destroy();
          if (!retried({ kind: 'per_try_timeout' })) fail(504, 'per_try_timeout');
        }, policy.perTryTimeoutMs);
      }
      if (body === null)
        req.read(
          (chunk) => {
            if (!up.write(chunk)) {
              connection.pause();
              up.onDrain(() => connection.resume());
            }
          },
          () => up.end(),
        );
    };
    if (policy !== undefined && policy.attempts > 1 && replayableLength(req.headers) !== undefined) {
      const chunks: Buffer[] = [];
      req.read(
        (c) => chunks.push(c),
        () => {
          if (!connection.destroyed && reason === undefined) send(Buffer.concat(chunks));
        },
      );
    } else send(null);
    req.onClose(() => {
      this.http1RequestClosed(connection);
      deadline.cancel();
      tries.budget.requestEnded(tries.retries);
      if (!req.answered) upstream?.destroy();
      const socket = upstream?.socket;
      this.finish(record, tries.current, status, socket?.transport ?? 'none', socket?.label ?? null, reason, tries);
    });
  }

  /** One request of an HTTP/1.1 connection done: a draining listener ends the connection once it has none in flight. */
  private http1RequestClosed(connection: VsockSocket): void {
    const left = (this.http1Connections.get(connection) ?? 1) - 1;
    this.http1Connections.set(connection, left);
    if (this.draining && left === 0) connection.end();
  }

  // ---- HTTP/2 (h2c) --------------------------------------------------------

  private onHttp2Stream(stream: http2.ServerHttp2Stream, headers: http2.IncomingHttpHeaders): void {
    const downstream = this.downstreamOf(stream.session);
    const { src } = downstream;
    const method = String(headers[':method'] ?? 'GET');
    const record = this.record('h2', src, method, String(headers[':authority'] ?? headers.host ?? ''), String(headers[':path'] ?? '/'), headers['x-request-id']);
    const target = this.target(record.authority, record.path, headers, downstream);
    let status = 0;
    const respond = (code: number, reason: string): void => {
      status = code;
      if (stream.destroyed || stream.headersSent) {
        stream.close(http2Module().constants.NGHTTP2_INTERNAL_ERROR);
        return;
      }
      stream.respond({ ':status': code, [REASON_HEADER]: reason, 'content-type': 'text/plain' });
      stream.end(`${reason}\n`);
    };
    if (!target.ok) {
      respond(target.status, target.reason);
      stream.resume();
      stream.once('close', () => this.finish(record, target, status, 'none', null, target.reason));
      return;
    }
    const policy = target.retry;
    const tries = this.startAttempts(target, method, downstream);
    // The headers of every attempt: forwardedHeaders' own object, the pseudo-headers added to it (not copied again per attempt).
    const forward: http2.OutgoingHttpHeaders = forwardedHeaders(headers, src.address, record.requestId, { forwarded: this.forwarded, host: record.authority });
    forward[':method'] = method;
    forward[':path'] = record.path;
    forward[':authority'] = record.authority;
    forward[':scheme'] = 'http';
    const body = new ReplayBody(stream, policy !== undefined && policy.attempts > 1);
    let upstream: Http2Upstream | undefined;
    let request: http2.ClientHttp2Stream | undefined;
    let trailers: http2.OutgoingHttpHeaders | undefined;
    let reason: string | undefined;
    const fail = (code: number, why: string): void => {
      reason ??= why;
      request?.close(http2Module().constants.NGHTTP2_CANCEL);
      respond(code, why);
    };
    const deadline = this.routeTimeout(record, target, () => fail(504, 'route_timeout'));
    /** Sends the request to the current endpoint, on its pooled session. */
    const send = (): void => {
      tries.count++;
      const up = this.pools.session(tries.current.key, tries.current.attempts);
      upstream = up;
      const release = this.holdEndpoint(tries.current.endpoint);
      let req: http2.ClientHttp2Stream;
      try {
        req = up.session.request(forward, { endStream: body.endedEmpty });
      } catch {
        // A session that is going away takes no new stream: nothing was sent.
        release();
        if (!retried({ kind: 'refused_stream' })) fail(502, 'upstream_reset');
        return;
      }
      request = req;
      let answered = false;
      const perTry =
        policy?.perTryTimeoutMs === undefined
          ? undefined
          : setTimeout(() => {
              if (request !== req || reason !== undefined) return;
              req.close(http2Module().constants.NGHTTP2_CANCEL);
              if (!retried({ kind: 'per_try_timeout' })) fail(504, 'per_try_timeout');
            }, policy.perTryTimeoutMs);
      req.on('response', (answer) => {
        clearTimeout(perTry);
        if (request !== req || reason !== undefined) return;
        const code = Number(answer[':status'] ?? 502);
        if (retried({ kind: 'status', status: code })) return void req.close(http2Module().constants.NGHTTP2_CANCEL);
        answered = true;
        status = code;
        if (stream.destroyed) return;
        stream.respond(stripHopByHop(answer), { waitForTrailers: true });
        // Only now: body bytes written earlier would make http2 send default headers.
        forwardBody(req, stream);
      });
      req.on('trailers', (t) => {
        if (request === req) trailers = stripHopByHop(t);
      });
      req.on('error', () => {
        if (request === req && answered) fail(502, 'upstream_reset');
      });
      req.on('close', () => {
        clearTimeout(perTry);
        release();
        if (request !== req || reason !== undefined || answered) return;
        // No response head: the session never connected, the upstream refused the stream unprocessed, or it was reset.
        const refused = req.rstCode === http2Module().constants.NGHTTP2_REFUSED_STREAM;
        const cause: RetryCause = up.dialError ? { kind: 'connect_failure' } : refused ? { kind: 'refused_stream' } : { kind: 'reset' };
        if (!retried(cause)) fail(502, up.dialError?.reason ?? 'upstream_reset');
      });
      body.sendTo(req);
    };
    /** Sends the request again to the next endpoint if the policy and the cluster's budget allow it. */
    const retried = (cause: RetryCause): boolean => {
      if (reason !== undefined || stream.destroyed) return false;
      const next = this.retry(tries, { replayable: body.replayable, responseStarted: stream.headersSent, cause });
      if (next === undefined) return false;
      if (!next.ok) fail(next.status, next.reason);
      else send();
      return true;
    };
    // Trailers end the stream (an empty set: an empty DATA frame with END_STREAM). Not close(): its RST_STREAM goes out
    // only on the session's next read, so a client waiting for the end of an answer without trailers hangs. Trailers not
    // in yet: they come before the upstream stream closes.
    const sendTrailers = (): void => {
      if (!stream.destroyed) stream.sendTrailers(trailers ?? {});
    };
    stream.on('wantTrailers', () => {
      if (trailers !== undefined || request === undefined || request.closed) sendTrailers();
      else request.once('close', sendTrailers);
    });
    stream.on('error', () => request?.close(http2Module().constants.NGHTTP2_CANCEL));
    stream.once('close', () => {
      deadline.cancel();
      tries.budget.requestEnded(tries.retries);
      if (request !== undefined && !request.closed) request.close(http2Module().constants.NGHTTP2_CANCEL);
      this.finish(record, tries.current, status, upstream?.socket.transport ?? 'none', upstream?.socket.label ?? null, reason, tries);
    });
    send();
  }

  // ---- shared --------------------------------------------------------------

  /** The request's route timeout (from when it began: `record.startedAt`), or none when its route has none. */
  private routeTimeout(record: RequestRecord, target: RoutedTarget, expire: () => void): RouteDeadline {
    return target.timeoutMs > 0 ? this.routeDeadlines.start(record.startedAt, target.timeoutMs, expire) : NO_DEADLINE;
  }

  /** Counts one request in flight at `endpoint`; the function returned ends it (once). */
  private holdEndpoint(endpoint: UpstreamEndpoint): () => void {
    this.activeRequests.set(endpoint, (this.activeRequests.get(endpoint) ?? 0) + 1);
    let held = true;
    return () => {
      if (!held) return;
      held = false;
      this.activeRequests.set(endpoint, (this.activeRequests.get(endpoint) ?? 1) - 1);
    };
  }

  private record(protocol: RequestRecord['protocol'], src: Src, method: string, authority: string, path: string, requestId: string | string[] | undefined): RequestRecord {
    const given = Array.isArray(requestId) ? requestId[0] : requestId;
    return { protocol, src, method, authority, path, requestId: given || randomUUID(), startedAt: performance.now() };
  }

  /** One request done: its metrics and access-log line. */
  private finish(
    record: RequestRecord,
    target: Target,
    status: number,
    transport: string,
    upstream: string | null,
    reason: string | undefined,
    retry: { count: number; budgetExhausted: boolean } = { count: target.ok ? 1 : 0, budgetExhausted: false },
  ): void {
    const seconds = (performance.now() - record.startedAt) / 1000;
    const { route, cluster } = target;
    const statusClass = status >= 100 ? `${Math.floor(status / 100)}xx` : 'none';
    this.context.metrics.countHttpRequest(this.name, route, cluster, statusClass, transport);
    this.context.metrics.httpDuration.observe([this.name, route, cluster], seconds);
    if (!this.options.accessLog) return;
    logInfoLine(
      this.context.accessLogger,
      httpAccessFields({
        listener: this.name,
        protocol: record.protocol,
        src: formatAddress(record.src.address, record.src.port),
        method: record.method,
        authority: record.authority,
        path: record.path,
        status,
        route,
        cluster,
        transport,
        upstream,
        requestId: record.requestId,
        durationMs: Math.round(seconds * 1000),
        attempts: retry.count,
        retryBudgetExhausted: retry.budgetExhausted,
        reason,
        transportReason: target.ok ? undefined : target.detail,
      }),
      'request',
    );
  }

  override async drain(): Promise<void> {
    this.draining = true;
    for (const [socket, inFlight] of this.http1Connections) if (inFlight === 0) socket.end();
    for (const session of this.sessions) session.close();
    for (const conn of this.frameConnections) conn.drain();
    await super.drain();
  }

  override async stop(): Promise<void> {
    for (const session of this.sessions) session.destroy();
    this.pools.destroy();
    this.framePool.destroy();
    await super.stop();
  }
}

/**
 * A request's authority and origin-form path. A request through a forward
 * proxy names its target whole (`GET http://web.mesh/a`, RFC 9112 3.2.2): its
 * authority is the URI's, and the path alone goes upstream.
 */
export function requestTarget(url: string, host: string): { authority: string; path: string } {
  // Origin form (`/path`), what nearly every request has: no URI to take apart.
  if (url.charCodeAt(0) === 0x2f) return { authority: host, path: url };
  const match = /^http:\/\/([^/?#]*)([^#]*)/i.exec(url);
  if (match === null) return { authority: host, path: url };
  const rest = match[2]!;
  return { authority: match[1]!, path: rest.startsWith('/') ? rest : `/${rest}` };
}

/** The body length of a request the listener may hold whole to send again (0: none), or undefined: too long or of unknown length (chunked). */
function replayableLength(headers: http.IncomingHttpHeaders): number | undefined {
  if (headers['transfer-encoding'] !== undefined) return undefined;
  const length = Number(headers['content-length'] ?? 0);
  return length <= MAX_REPLAY_BODY_BYTES ? length : undefined;
}

/**
 * An upstream answer's body written on to the client's stream as it comes,
 * with the client's backpressure, then ended (which asks for the trailers).
 * What pipe() does for this one source and destination, without its
 * listeners on both streams set up and taken down again for every call.
 */
function forwardBody(from: http2.ClientHttp2Stream, to: http2.ServerHttp2Stream): void {
  from.on('data', (chunk: Buffer) => {
    if (to.destroyed) return;
    if (!to.write(chunk)) {
      from.pause();
      to.once('drain', () => from.resume());
    }
  });
  from.once('end', () => {
    if (!to.destroyed) to.end();
  });
}

/** `headers` itself when it has no hop-by-hop header (every HTTP/2 answer), else a copy without them (symbol keys too: http2's sensitiveHeaders). */
function stripHopByHop<T extends Record<string, unknown>>(headers: T): T {
  const names = Object.keys(headers);
  if (!names.some(hopByHop)) return headers;
  // Copied key by key, not copied whole then deleted from: a delete turns the object into a slow dictionary.
  const out: Record<string | symbol, unknown> = {};
  for (const name of names) if (!hopByHop(name)) out[name] = headers[name];
  for (const symbol of Object.getOwnPropertySymbols(headers)) out[symbol] = (headers as Record<symbol, unknown>)[symbol];
  return out as T;
}
