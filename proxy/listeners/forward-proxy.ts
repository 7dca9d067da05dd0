// Forward-proxy listener: apps that honour HTTPS_PROXY/HTTP_PROXY send
// `CONNECT web.mesh:443`; the host names a cluster, and the tunnel goes
// through that cluster's outbound path (the same resolution, transport
// decision, PROXY v2 header and native relay as an outbound listener: one
// unbound OutboundListener per cluster does it). The client hears
// `200 Connection established` only once the upstream is up.

import { lookup } from 'node:dns/promises';
import type { ForwardProxyListenerConfig } from '../config/types.js';
import { LISTENER_DEFAULTS, outboundListenerConfig } from '../config/listener-defaults.js';
import { formatAddress } from '../runtime/log.js';
import { ipFamily, native, type SocketHost } from '../native/index.js';
import type { Cluster } from '../upstream/cluster.js';
import { Listener, ipBinds, type ListenerContext } from './listener.js';
import { OutboundListener, type OutboundListenerOptions, type Tunnel } from './outbound.js';
import { readPreamble } from './preamble.js';
import { ProxiedConnection } from './proxied-connection.js';
import { CONNECTION_ESTABLISHED, decodeProxyRequest, meshClusterName, proxyReply, type ProxyRequest } from './proxy-request.js';
import { isLoopbackAddress } from '../runtime/loopback.js';

type Src = { address: string; port: number };

export class ForwardProxyListener extends Listener {
  /** By cluster name: each cluster's outbound path, bound to no address. */
  private readonly routes = new Map<string, OutboundListener>();

  constructor(
    readonly config: ForwardProxyListenerConfig,
    clusters: Iterable<Cluster>,
    context: ListenerContext,
    private readonly options: OutboundListenerOptions,
  ) {
    super(config.name, ipBinds(config.addresses), config.port, context, config.maxConnections);
    for (const cluster of clusters) {
      // A transparent cluster's destination is the redirected one; a tunnel has none.
      if (cluster.settings.resolve?.kind === 'original_dst') continue;
      const route = outboundListenerConfig({ name: config.name, addresses: [], port: 0, cluster: cluster.name, idleTimeoutMs: config.idleTimeoutMs });
      this.routes.set(cluster.name, new OutboundListener(route, cluster, context, options));
    }
  }

  override async start(): Promise<void> {
    await super.start();
    for (const route of this.routes.values()) await route.start();
  }

  override get activeConnections(): number {
    return super.activeConnections + [...this.routes.values()].reduce((n, r) => n + r.activeConnections, 0);
  }

  override async drain(): Promise<void> {
    await Promise.all([super.drain(), ...[...this.routes.values()].map((r) => r.drain())]);
  }

  override abortConnections(): void {
    super.abortConnections();
    for (const route of this.routes.values()) route.abortConnections();
  }

  override async stop(): Promise<void> {
    await super.stop();
    for (const route of this.routes.values()) await route.stop();
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
        decode: (bytes) => decodeProxyRequest(bytes, maxHeaderBytes),
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

  private onRequest(fd: number, src: Src, request: ProxyRequest, early: Buffer | null): void {
    const target = formatAddress(request.host, request.port);
    if (this.draining) {
      // The head finished after a drain began: no new tunnel (the drain may already have found the cluster's path idle).
      this.refuse(fd, src, 'draining', 'draining', 'the listener is draining', proxyReply(503, 'Service Unavailable', 'draining', 'vsockmesh: the proxy is draining'));
      return;
    }
    if (request.kind === 'absolute') {
      const message = `vsockmesh: plain requests through the proxy (${request.method} http://${target}${request.path}) are not served yet; use CONNECT (curl --proxytunnel, HTTPS_PROXY)`;
      this.refuse(fd, src, 'not_implemented', 'absolute_uri_not_implemented', message, proxyReply(501, 'Not Implemented', 'absolute_uri_not_implemented', message));
      return;
    }
    const route = this.routes.get(meshClusterName(request.host));
    if (route !== undefined) {
      this.count('cluster');
      route.adopt(fd, src, this.tunnel(early));
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
  private tunnel(early: Buffer | null): Tunnel {
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
