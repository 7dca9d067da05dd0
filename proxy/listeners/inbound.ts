// Inbound listener: peers (other sidecars, or any PROXY v2 sender such as
// HAProxy) connect here. Each connection must start with a PROXY v2 header,
// read within a size limit and a deadline; its destination port must be one
// the config declares. Anything else is refused: never an open proxy.

import type net from 'node:net';
import type { InboundListenerConfig, InboundPortConfig } from '../config/types.js';
import { formatAddress } from '../log.js';
import type { ConnectionStats } from '../metrics.js';
import { TLV, decodeProxyHeader, tlvText, type ProxyHeader } from '../proxy-protocol.js';
import { connectTcp } from '../upstream/connect.js';
import { Listener, type ListenerContext, type TrackedConnection } from './listener.js';
import { ProxiedConnection } from './proxied-connection.js';

export interface InboundListenerOptions {
  accessLog: boolean;
}

export type HeaderRefusal =
  | 'header_timeout'
  | 'header_truncated'
  | 'not_proxy_v2'
  | 'proxy_v1_unsupported'
  | 'bad_version'
  | 'bad_command'
  | 'bad_family'
  | 'too_large'
  | 'short_address_block'
  | 'bad_tlv'
  | 'bad_crc32c';

export class InboundListener extends Listener {
  private readonly ports: Map<number, InboundPortConfig>;
  private readonly stats = new Map<number, ConnectionStats>();

  constructor(
    readonly config: InboundListenerConfig,
    context: ListenerContext,
    private readonly options: InboundListenerOptions,
  ) {
    super(config.name, config.addresses, config.port, context);
    this.ports = new Map(config.ports.map((p) => [p.port, p]));
    for (const p of config.ports) {
      this.stats.set(p.port, context.metrics.connectionStats({ listener: config.name, direction: 'inbound', cluster: inboundCluster(p.port), transport: 'tcp' }));
    }
  }

  protected onConnection(peer: net.Socket): void {
    const src = formatAddress(peer.remoteAddress, peer.remotePort);
    const { maxHeaderBytes, headerTimeoutMs } = this.config;
    let buffered: Buffer = Buffer.alloc(0);
    let settled = false;
    const pendingHeader: TrackedConnection = { abort: () => settle(() => peer.destroy()) };
    this.track(pendingHeader);

    const settle = (then: () => void): void => {
      if (settled) return;
      settled = true;
      clearTimeout(deadline);
      peer.off('data', onData);
      peer.off('end', onEnd);
      peer.off('error', onError);
      this.untrack(pendingHeader);
      then();
    };
    const refuse = (reason: HeaderRefusal, detail: string): void =>
      settle(() => {
        this.context.metrics.headerErrors.inc({ listener: this.name, reason });
        this.context.logger.warn({ listener: this.name, src, reason, detail }, `refused: ${detail}`);
        peer.destroy();
      });
    const onData = (chunk: Buffer): void => {
      buffered = buffered.length === 0 ? chunk : Buffer.concat([buffered, chunk]);
      const result = decodeProxyHeader(buffered, { maxLength: maxHeaderBytes });
      if (result.kind === 'incomplete') return;
      if (result.kind === 'invalid') {
        refuse(result.code, result.reason);
        return;
      }
      const rest = buffered.subarray(result.length);
      settle(() => {
        peer.pause();
        if (rest.length > 0) peer.unshift(rest);
        this.route(peer, src, result.header);
      });
    };
    const onEnd = (): void =>
      refuse('header_truncated', buffered.length === 0 ? 'peer closed before sending a PROXY v2 header' : `peer closed after ${buffered.length} bytes of an incomplete PROXY v2 header`);
    const onError = (err: NodeJS.ErrnoException): void =>
      settle(() => {
        this.context.logger.debug({ listener: this.name, src, code: err.code }, 'peer error before the header was read');
        peer.destroy();
      });
    const deadline = setTimeout(
      () => refuse('header_timeout', `no complete PROXY v2 header within ${headerTimeoutMs}ms (${buffered.length} bytes received)`),
      headerTimeoutMs,
    );
    peer.on('data', onData);
    peer.on('end', onEnd);
    peer.on('error', onError);
    peer.resume();
  }

  private route(peer: net.Socket, src: string, header: ProxyHeader): void {
    const { logger, metrics } = this.context;
    if (header.command === 'local') {
      // A health check from the sending proxy itself: nothing to relay.
      logger.debug({ listener: this.name, src }, 'PROXY LOCAL (health check); closing');
      peer.end();
      peer.on('error', () => peer.destroy());
      return;
    }
    const { addresses } = header;
    if (addresses.family !== 'inet' && addresses.family !== 'inet6') {
      metrics.refused.inc({ listener: this.name, reason: 'no_destination' });
      logger.warn({ listener: this.name, src, reason: 'no_destination', family: addresses.family }, `refused: PROXY header has no IP destination (family ${addresses.family})`);
      peer.destroy();
      return;
    }
    const dstPort = addresses.destination.port;
    const declared = this.ports.get(dstPort);
    const origin = {
      src: formatAddress(addresses.source.address, addresses.source.port),
      dst: formatAddress(addresses.destination.address, dstPort),
      peer: src,
      ...optional('source_vm', tlvText(header, TLV.VSOCKMESH_SOURCE_VM)),
      ...optional('authority', tlvText(header, TLV.AUTHORITY)),
    };
    if (declared === undefined) {
      metrics.refused.inc({ listener: this.name, reason: 'undeclared_port' });
      logger.warn({ listener: this.name, ...origin, reason: 'undeclared_port' }, `refused: destination port ${dstPort} is not declared on this listener`);
      peer.destroy();
      return;
    }
    const { target } = declared;
    const connection = new ProxiedConnection({
      downstream: peer,
      stats: this.stats.get(dstPort)!,
      metrics,
      logger,
      accessLog: this.options.accessLog,
      idleTimeoutMs: this.config.idleTimeoutMs,
      fields: {
        listener: this.name,
        direction: 'inbound',
        cluster: inboundCluster(dstPort),
        transport: 'tcp',
        upstream: formatAddress(target.address, target.port),
        ...origin,
      },
      onClosed: (c) => this.untrack(c),
    });
    this.track(connection);
    connection.connect((done) => connectTcp(target.address, target.port, this.config.connectTimeoutMs, done));
  }
}

/** Cluster label of inbound traffic to a local port, in Envoy's spirit (`inbound|7000`). */
export function inboundCluster(port: number): string {
  return `inbound|${port}`;
}

function optional(key: string, value: string | undefined): Record<string, string> {
  return value === undefined ? {} : { [key]: value };
}
