// Forward-proxy listener: apps that honour HTTPS_PROXY/HTTP_PROXY send
// `CONNECT web.mesh:443`; the host names a cluster, and the tunnel goes
// through that cluster's outbound path (the same resolution, transport
// decision, PROXY v2 header and native relay as an outbound listener: one
// unbound OutboundListener per cluster does it). The client hears
// `200 Connection established` only once the upstream is up. A plain request
// (`GET http://web.mesh/a`, what HTTP_PROXY clients send) is routed request by
// request like an HTTP listener's: one unbound HttpOutboundListener takes the
// connection, with a route table of every reachable service
// (forward-proxy-routes.ts). Clusters are looked up when asked for, so those
// the control plane pushes later are reachable too.

import { lookup } from 'node:dns/promises';
import type { ForwardProxyListenerConfig } from '../config/types.js';
import { LISTENER_DEFAULTS, outboundListenerConfig } from '../config/listener-defaults.js';
import { formatAddress } from '../runtime/log.js';
import { ipFamily, native, type SocketHost } from '../native/index.js';
import type { Cluster } from '../upstream/cluster.js';
import { HttpOutboundListener } from '../http/listener.js';
import type { RouteConfig } from '../http/route-table.js';
import { Listener, ipBinds, type ListenerContext } from './listener.js';
import { OutboundListener, type OutboundListenerOptions, type Tunnel } from './outbound.js';
import { readPreamble, type PreambleDecode } from './preamble.js';
import { ProxiedConnection } from './proxied-connection.js';
import { CONNECTION_ESTABLISHED, decodeProxyRequest, meshClusterName, proxyReply, type ProxyRequest } from './proxy-request.js';
import { isLoopbackAddress } from '../runtime/loopback.js';

type Src = { address: string; port: number };

/** What a forward proxy reaches: the sidecar's clusters (its file's and the control plane's) and the routes of plain requests. */
export interface ForwardProxyTargets {
  /** Cluster `name`, or undefined. */
  get(name: string): Cluster | undefined;
  /** The route configuration plain requests are routed by (the same object until something changes). */
  routes(): RouteConfig;
}

export class ForwardProxyListener extends Listener {
  /** By cluster name: each cluster's outbound path, bound to no address, made on its first tunnel for the cluster it was made for. */
  private readonly tunnels = new Map<string, { cluster: Cluster; path: OutboundListener }>();
  /** Plain requests, routed one by one. */
  private readonly http: HttpOutboundListener;

  constructor(
    readonly config: ForwardProxyListenerConfig,
    private readonly targets: ForwardProxyTargets,
    context: ListenerContext,
    private readonly options: OutboundListenerOptions,
  ) {
    super(config.name, ipBinds(config.addresses), config.port, context, config.maxConnections);
    const routes = targets.routes();
    this.http = new HttpOutboundListener(outboundListenerConfig({ name: config.name, addresses: [], port: 0, cluster: '', idleTimeoutMs: config.idleTimeoutMs, http: { routes } }), routes, targets, context, options);
  }

  private get paths(): Listener[] {
    return [this.http, ...[...this.tunnels.values()].map((t) => t.path)];
  }

  override async start(): Promise<void> {
    await super.start();
    await this.http.start();
  }

  override get activeConnections(): number {
    return super.activeConnections + this.paths.reduce((n, r) => n + r.activeConnections, 0);
  }

  override async drain(): Promise<void> {
    await Promise.all([super.drain(), ...this.paths.map((r) => r.drain())]);
  }

  override abortConnections(): void {
    super.abortConnections();
    for (const path of this.paths) path.abortConnections();
  }

  override async stop(): Promise<void> {
    await super.stop();
    for (const path of this.paths) await path.stop();
  }

  /** The outbound path of the cluster `host` names, made on first use (undefined: no such cluster, or one a tunnel cannot reach). */
  private tunnel(host: string): OutboundListener | undefined {
    const name = meshClusterName(host);
    const cluster = this.targets.get(name);
    // A transparent cluster's destination is the redirected one; a tunnel has none.
    if (cluster === undefined || cluster.settings.resolve?.kind === 'original_dst') return undefined;
    const made = this.tunnels.get(name);
    if (made?.cluster === cluster) return made.path;
    const path = new OutboundListener(outboundListenerConfig({ name: this.config.name, addresses: [], port: 0, cluster: name, idleTimeoutMs: this.config.idleTimeoutMs }), cluster, this.context, this.options);
    // Bound to nothing: starting it only subscribes it to the resolver's moves.
    void path.start();
    this.tunnels.set(name, { cluster, path });
    // A cluster pushed again is a new object: the path made for the old one goes once its tunnels end.
    if (made !== undefined) void made.path.drain().then(() => made.path.stop());
    return path;
  }

  protected onConnection(fd: number, peerHost: SocketHost, peerPort: number): void {
    const src = { address: String(peerHost), port: peerPort };
    if (!isLoopbackAddress(src.address)) {
      // No answer: a client from elsewhere learns nothing of the mesh.
      this.count('not_loopback');
      this.context.metrics.refused.inc({ listener: this.name, reason: 'not_loopback' });
      this.context.refusals.warn({ listener: this.name, src: formatAddress(src.address, src.port), reason: 'not_loopback' }, 'refused: a forward proxy serves loopback clients only');
      native.reset(fd);
      return;
    }
    const { maxHeaderBytes, headerTimeoutMs } = this.config;
    readPreamble(
      fd,
      {
        maxBytes: maxHeaderBytes,
        timeoutMs: headerTimeoutMs,
        what: 'HTTP request head',
        decode: (bytes) => withHead(decodeProxyRequest(bytes, maxHeaderBytes), bytes),
        track: (c) => this.track(c),
        untrack: (c) => this.untrack(c),
      },
      (result) => {
        if (result.ok) this.onRequest(fd, src, result.value, result.early);
        else if (result.code === 'aborted' || result.code === 'truncated' || result.code === 'peer_error') this.refuse(fd, src, 'bad_request', result.code, result.detail, null);
        else if (result.code === 'timeout') this.refuse(fd, src, 'bad_request', 'timeout', result.detail, proxyReply(408, 'Request Timeout', 'timeout', `vsockmesh: ${result.detail}`));
        else this.refuse(fd, src, 'bad_request', result.code, result.detail, proxyReply(400, 'Bad Request', result.code, `vsockmesh: ${result.detail}`));
      },
    );
  }

  private onRequest(fd: number, src: Src, request: ProxyRequest & { head: Buffer }, early: Buffer | null): void {
    const target = formatAddress(request.host, request.port);
    if (this.draining) {
      // The head finished after a drain began: no new tunnel (the drain may already have found the cluster's path idle).
      this.refuse(fd, src, 'draining', 'draining', 'the listener is draining', proxyReply(503, 'Service Unavailable', 'draining', 'vsockmesh: the proxy is draining'));
      return;
    }
    if (request.kind === 'absolute') {
      if (this.targets.get(meshClusterName(request.host)) === undefined) {
        const message = `vsockmesh: ${target} names no cluster of this sidecar (plain requests go to mesh services only)`;
        this.refuse(fd, src, 'unknown_destination', 'unknown_destination', message, proxyReply(403, 'Forbidden', 'unknown_destination', message));
        return;
      }
      this.count('http');
      this.http.setRoutes(this.targets.routes());
      // The HTTP listener reads the request again, head first: it routes this one and whatever follows on the connection.
      this.http.adopt(fd, src, early === null ? request.head : Buffer.concat([request.head, early]));
      return;
    }
    const path = this.tunnel(request.host);
    if (path !== undefined) {
      this.count('cluster');
      path.adopt(fd, src, this.tunnelAnswers(early));
      return;
    }
    if (this.config.passThrough) {
      this.count('pass_through');
      this.passThrough(fd, src, request.host, request.port, early);
      return;
    }
    const message = `vsockmesh: ${target} names no cluster of this sidecar (and pass_through is off)`;
    this.refuse(fd, src, 'unknown_destination', 'unknown_destination', message, proxyReply(403, 'Forbidden', 'unknown_destination', message));
  }

  /** How a cluster's outbound path answers the client: 200 once up, 503 when no way to reach the cluster, 502 when the upstream failed. */
  private tunnelAnswers(early: Buffer | null): Tunnel {
    return {
      greeting: CONNECTION_ESTABLISHED,
      early,
      refuse: (fd, reason, message) => answerAndClose(fd, proxyReply(503, 'Service Unavailable', reason, `vsockmesh: ${message}`)),
      failed: (fd, code) => answerAndClose(fd, proxyReply(502, 'Bad Gateway', 'upstream_connect_failed', `vsockmesh: upstream connect failed (${code})`)),
    };
  }

  /** pass_through: a direct TCP connection to what the client named, outside the mesh. */
  private passThrough(fd: number, src: Src, host: string, port: number, early: Buffer | null): void {
    const failed = (code: string): void => answerAndClose(fd, proxyReply(502, 'Bad Gateway', 'upstream_connect_failed', `vsockmesh: connect to ${formatAddress(host, port)} failed (${code})`));
    this.whilePending(
      fd,
      lookup(host).then(
        (found) => found.address,
        (err: NodeJS.ErrnoException) => ({ code: err.code ?? 'ENOTFOUND' }),
      ),
      (address) => {
        if (typeof address !== 'string') {
          this.context.refusals.warn({ listener: this.name, src: formatAddress(src.address, src.port), reason: 'upstream_connect_failed', code: address.code }, `pass-through: ${host} does not resolve (${address.code})`);
          failed(address.code);
          return;
        }
        const labels = { listener: this.name, direction: 'outbound', cluster: 'pass_through', transport: 'tcp' } as const;
        const connection: ProxiedConnection = new ProxiedConnection({
          downstreamFd: fd,
          statsFor: () => this.context.metrics.connectionStats(labels),
          metrics: this.context.metrics,
          refusals: this.context.refusals,
          accessLogger: this.options.accessLog ? this.context.accessLogger : null,
          idleTimeoutMs: this.config.idleTimeoutMs,
          greeting: CONNECTION_ESTABLISHED,
          failDownstream: (_fd, code) => failed(code),
          fields: { ...labels, src: formatAddress(src.address, src.port), dst: formatAddress(address, port), upstream: formatAddress(address, port) },
          onClosed: (c) => this.untrack(c),
        });
        this.track(connection);
        const target = { family: ipFamily(address), host: address, port, connectTimeoutMs: LISTENER_DEFAULTS.connectTimeoutMs };
        connection.connect([{ transport: 'tcp', target, label: formatAddress(address, port), preamble: null }], early);
      },
    );
  }

  /** A request head answered here: counted, logged with its reason, answered (or just closed when the client is gone). */
  private refuse(fd: number, src: Src, outcome: string, reason: string, detail: string, reply: Buffer | null): void {
    this.count(outcome);
    this.context.metrics.refused.inc({ listener: this.name, reason });
    this.context.refusals.warn({ listener: this.name, src: formatAddress(src.address, src.port), reason }, `refused: ${detail}`);
    if (reply === null) native.close(fd);
    else answerAndClose(fd, reply);
  }

  private count(outcome: string): void {
    this.context.metrics.forwardProxyRequests.inc({ listener: this.name, outcome });
  }
}

/** A decoded head with its bytes (a plain request is read again by the HTTP listener). */
function withHead(decoded: PreambleDecode<ProxyRequest>, bytes: Buffer): PreambleDecode<ProxyRequest & { head: Buffer }> {
  return decoded.kind === 'done' ? { ...decoded, value: { ...decoded.value, head: Buffer.from(bytes.subarray(0, decoded.length)) } } : decoded;
}

/** Writes a short answer and closes; it fits the socket's send buffer, so the write completes at once in practice. */
function answerAndClose(fd: number, reply: Buffer): void {
  let closed = false;
  const close = (): void => {
    if (closed) return;
    closed = true;
    native.close(fd);
  };
  try {
    native.duplexOpen(fd, () => undefined, close);
    if (native.duplexWrite(fd, reply)) close();
  } catch {
    close();
  }
}
