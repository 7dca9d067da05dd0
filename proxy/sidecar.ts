// The sidecar: outbound and inbound listeners, the admin endpoint, metrics and
// logs, composed with start, drain and stop.

import { AdminServer } from './admin.js';
import type { SidecarConfig } from './config/types.js';
import { InboundListener } from './listeners/inbound.js';
import type { BoundAddress, Listener, ListenerContext } from './listeners/listener.js';
import { OutboundListener } from './listeners/outbound.js';
import { createAccessLogger, createLogger, type Logger } from './log.js';
import { ProxyMetrics } from './metrics.js';
import { Cluster } from './upstream/cluster.js';
import { VsockBreakers } from './upstream/transport.js';

export type SidecarState = 'new' | 'starting' | 'serving' | 'draining' | 'drained' | 'stopped';

export interface SidecarOptions {
  logger?: Logger;
  /** Where access-log lines go; default: `logger` when given, else a buffered stdout logger. */
  accessLogger?: Logger;
  /** Add Node process metrics (CPU, memory, event loop) to /stats; on for the CLI. */
  processMetrics?: boolean;
}

export interface DrainResult {
  /** Connections closed by the drain timeout rather than by their own end. */
  aborted: number;
  durationMs: number;
}

export class Sidecar {
  readonly logger: Logger;
  readonly accessLogger: Logger;
  readonly metrics: ProxyMetrics;
  private readonly listeners: Listener[] = [];
  private readonly admin: AdminServer | undefined;
  private currentState: SidecarState = 'new';
  private draining: Promise<DrainResult> | undefined;

  constructor(
    readonly config: SidecarConfig,
    options: SidecarOptions = {},
  ) {
    this.logger = options.logger ?? createLogger({ level: config.log.level });
    this.accessLogger = options.accessLogger ?? (options.logger ? options.logger : createAccessLogger({ level: config.log.level }));
    this.metrics = new ProxyMetrics({ processMetrics: options.processMetrics ?? false });
    const context: ListenerContext = { logger: this.logger, accessLogger: this.accessLogger, metrics: this.metrics, nodeId: config.node.id };
    const clusters = new Map(config.clusters.map((c) => [c.name, new Cluster(c)]));
    const listenerOptions = { accessLog: config.log.accessLog };
    const outboundOptions = { ...listenerOptions, vsock: config.vsock, breakers: new VsockBreakers(config.vsock.breakerWindowMs) };
    // Inbound first: a sidecar should accept from peers before it sends to them.
    for (const l of config.listeners) if (l.kind === 'inbound') this.listeners.push(new InboundListener(l, context, listenerOptions));
    for (const l of config.listeners) {
      if (l.kind !== 'outbound') continue;
      const cluster = clusters.get(l.cluster);
      if (cluster === undefined) throw new Error(`listener "${l.name}": unknown cluster "${l.cluster}"`);
      this.listeners.push(new OutboundListener(l, cluster, context, outboundOptions));
    }
    if (config.admin) this.admin = new AdminServer(this.adminTarget(), this.logger);
  }

  get state(): SidecarState {
    return this.currentState;
  }

  async start(): Promise<void> {
    if (this.currentState !== 'new') throw new Error(`sidecar cannot start from state ${this.currentState}`);
    this.currentState = 'starting';
    try {
      for (const listener of this.listeners) {
        await listener.start();
        this.logger.info({ listener: listener.name, addresses: listener.addresses() }, 'listener started');
      }
      if (this.admin && this.config.admin) {
        const a = await this.admin.start(this.config.admin.address, this.config.admin.port);
        this.logger.info({ address: a.address, port: a.port }, 'admin endpoint started');
      }
    } catch (err) {
      await this.stop();
      throw err;
    }
    this.currentState = 'serving';
  }

  /** Bound addresses of a listener by name (ports resolved when configured as 0). */
  listenerAddresses(name: string): BoundAddress[] {
    const listener = this.listeners.find((l) => l.name === name);
    if (!listener) throw new Error(`no listener named "${name}"`);
    return listener.addresses();
  }

  /** The first bound address of a listener: what tests and the demo dial. */
  listenerAddress(name: string): BoundAddress {
    const [first] = this.listenerAddresses(name);
    if (!first) throw new Error(`listener "${name}" is not listening`);
    return first;
  }

  adminAddress(): BoundAddress | undefined {
    const a = this.admin?.address();
    return a && { address: a.address, port: a.port };
  }

  get activeConnections(): number {
    return this.listeners.reduce((n, l) => n + l.activeConnections, 0);
  }

  /**
   * Stops accepting, lets open connections finish for up to `timeoutMs`, then
   * closes the rest. The admin endpoint stays up (ready = 503) until stop().
   */
  drain(timeoutMs = this.config.drainTimeoutMs): Promise<DrainResult> {
    if (this.draining) return this.draining;
    this.currentState = 'draining';
    this.metrics.drains.inc();
    const startedAt = performance.now();
    const open = this.activeConnections;
    this.logger.info({ open_connections: open, timeout_ms: timeoutMs }, 'draining: listeners closed, waiting for open connections');
    this.draining = (async () => {
      const finished = Promise.all(this.listeners.map((l) => l.drain()));
      let timer: NodeJS.Timeout | undefined;
      const timedOut = await Promise.race([
        finished.then(() => false),
        new Promise<boolean>((resolve) => {
          timer = setTimeout(() => resolve(true), timeoutMs);
        }),
      ]);
      clearTimeout(timer);
      let aborted = 0;
      if (timedOut) {
        aborted = this.activeConnections;
        this.logger.warn({ aborted, timeout_ms: timeoutMs }, 'drain timeout: closing the connections still open');
        for (const l of this.listeners) l.abortConnections();
        await finished;
      }
      const durationMs = Math.round(performance.now() - startedAt);
      if (this.currentState === 'draining') this.currentState = 'drained';
      this.logger.info({ aborted, duration_ms: durationMs }, 'drain finished');
      return { aborted, durationMs };
    })();
    return this.draining;
  }

  /** Closes everything now. Safe to call more than once. */
  async stop(): Promise<void> {
    if (this.currentState === 'stopped') return;
    this.currentState = 'stopped';
    await Promise.all(this.listeners.map((l) => l.stop()));
    await this.admin?.stop();
    this.accessLogger.flush();
    this.logger.flush();
  }

  configDump(): unknown {
    return {
      state: this.currentState,
      node: this.config.node,
      vsock: this.config.vsock,
      listeners: this.config.listeners.map((l) => ({
        ...l,
        bound: this.listeners.find((x) => x.name === l.name)?.addresses() ?? [],
      })),
      clusters: this.config.clusters,
      admin: this.adminAddress() ?? null,
      log: this.config.log,
      drainTimeoutMs: this.config.drainTimeoutMs,
    };
  }

  private adminTarget() {
    return {
      isReady: () => this.currentState === 'serving',
      state: () => this.currentState,
      renderStats: () => this.metrics.render(),
      statsContentType: this.metrics.registry.contentType,
      configDump: () => this.configDump(),
      drain: async () => {
        await this.drain();
      },
    };
  }
}
