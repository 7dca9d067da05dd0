// What a sidecar and a host relay share: listeners, the admin endpoint,
// metrics and logs, and the lifecycle (start, drain, stop).

import { AdminServer } from './runtime/admin.js';
import type { LogLevel, OverloadSettings, SocketAddress } from './config/types.js';
import { Admission } from './overload/admission.js';
import type { BoundAddress, Listener, ListenerContext } from './listeners/listener.js';
import { createAccessLogger, createLogger, type Logger } from './runtime/log.js';
import { ProxyMetrics } from './metrics.js';
import { OverloadMonitor } from './overload/monitor.js';
import { RefusalLog } from './runtime/refusal-log.js';
import { settledWithin } from './runtime/within.js';
import type { IdentityDescription, RenewingSource } from './identity/renewing-source.js';

export type ServerState = 'new' | 'starting' | 'serving' | 'draining' | 'drained' | 'stopped';

export interface ServerOptions {
  logger?: Logger;
  /** Where access-log lines go; default: `logger` when given, else a buffered stdout logger. */
  accessLogger?: Logger;
  /** Add Node process metrics (CPU, memory, event loop) to /stats; on for the CLI. */
  processMetrics?: boolean;
  /**
   * What POST /drain does. Default: drain in place (the server stays up,
   * /ready 503). The CLI drains, stops and exits so its supervisor starts a
   * fresh process.
   */
  onAdminDrain?: () => Promise<void>;
  /** The process's SPIFFE identity, kept current (proxy/cmd makes it from the config's identity section). */
  identity?: RenewingSource;
  /** What the composition root made for this server and it closes when it stops (e.g. the identity files its control-plane clients poll). */
  owned?: Array<{ close(): void }>;
  /** Told each time the server has applied a control-plane change (work that leaves garbage behind); the CLI settles the process's memory once quiet (runtime/settle-memory.ts). */
  onConfigApplied?: () => void;
}

export interface ServerBasics {
  nodeId: string;
  admin: SocketAddress | null;
  logLevel: LogLevel;
  drainTimeoutMs: number;
  overload: OverloadSettings;
}

export interface DrainResult {
  /** Connections closed by the drain timeout rather than by their own end. */
  aborted: number;
  durationMs: number;
}

export abstract class ProxyServer {
  readonly logger: Logger;
  readonly accessLogger: Logger;
  readonly metrics: ProxyMetrics;
  protected readonly context: ListenerContext;
  protected readonly listeners: Listener[] = [];
  /** Free descriptors and memory: while overloaded, new connections are shed and /ready fails. */
  readonly overload: OverloadMonitor;
  private readonly admin: AdminServer | undefined;
  /** Obtained before the listeners start: a process with an identity section serves once it has its certificate. */
  readonly identity: RenewingSource | undefined;
  private readonly owned: Array<{ close(): void }>;
  private currentState: ServerState = 'new';
  private draining: Promise<DrainResult> | undefined;

  constructor(
    private readonly basics: ServerBasics,
    options: ServerOptions,
  ) {
    this.logger = options.logger ?? createLogger({ level: basics.logLevel });
    this.accessLogger = options.accessLogger ?? options.logger ?? createAccessLogger({ level: basics.logLevel });
    this.metrics = new ProxyMetrics({ processMetrics: options.processMetrics ?? false });
    const { overload } = basics;
    this.overload = new OverloadMonitor({ thresholds: { minFreeFds: overload.minFreeFds, maxMemoryBytes: overload.maxMemoryBytes }, intervalMs: overload.checkIntervalMs, logger: this.logger });
    this.metrics.addOverload(this.overload);
    this.identity = options.identity;
    this.owned = options.owned ?? [];
    if (this.identity) this.metrics.addIdentity(this.identity);
    const admission = new Admission(overload.maxConnections, this.overload);
    this.context = { logger: this.logger, accessLogger: this.accessLogger, metrics: this.metrics, nodeId: basics.nodeId, admission, refusals: new RefusalLog(this.logger) };
    if (basics.admin) {
      const serving = (): boolean => this.currentState === 'serving';
      this.admin = new AdminServer(
        {
          isReady: () => serving() && !this.overload.overloaded,
          state: () => (serving() && this.overload.overloaded ? `overloaded: ${this.overload.describe()}` : this.currentState),
          renderStats: () => this.metrics.render(),
          statsContentType: this.metrics.registry.contentType,
          configDump: () => this.configDump(),
          drain:
            options.onAdminDrain ??
            (async () => {
              await this.drain();
            }),
        },
        this.logger,
      );
    }
  }

  /** The effective configuration with bound addresses (GET /config_dump). */
  abstract configDump(): unknown;

  /** The identity and its chain for /config_dump (never the key). */
  protected identityDump(): IdentityDescription | null {
    return this.identity?.describe() ?? null;
  }

  /** Starts the control-plane clients that run from the start (e.g. the resolver's Watch): after the identity they authenticate with, before the listeners. */
  protected startClients(): void {}

  get state(): ServerState {
    return this.currentState;
  }

  async start(): Promise<void> {
    if (this.currentState !== 'new') throw new Error(`cannot start from state ${this.currentState}`);
    this.currentState = 'starting';
    this.overload.start();
    try {
      if (this.identity) {
        await this.identity.start();
        this.logger.info({ spiffe_id: this.identity.current().spiffeId, not_after: this.identity.current().notAfter.toISOString() }, 'identity obtained');
      }
      this.startClients();
      for (const listener of this.listeners) {
        await listener.start();
        this.logger.info({ listener: listener.name, addresses: listener.addresses() }, 'listener started');
      }
      if (this.admin && this.basics.admin) {
        const a = await this.admin.start(this.basics.admin.address, this.basics.admin.port);
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
   * The data path as the settle's look sees it (runtime/settle-memory.ts):
   * a number that moves whenever a relayed connection opens or closes or
   * bytes move, JavaScript's (ProxyMetrics.relayActivity) and the core's warm
   * ones (Listener.warmActivity); null while an open connection is one it
   * cannot see (HTTP, connecting, a warm one reading its header).
   */
  relayActivity(): number | null {
    let { open, activity } = this.metrics.relayActivity();
    for (const l of this.listeners) {
      const warm = l.warmActivity();
      open += warm.open;
      activity += warm.activity;
    }
    return open === this.activeConnections ? activity : null;
  }

  protected boundListeners(): Array<{ name: string; bound: BoundAddress[] }> {
    return this.listeners.map((l) => ({ name: l.name, bound: l.addresses() }));
  }

  /**
   * Stops accepting, lets open connections finish for up to `timeoutMs`, then
   * closes the rest. The admin endpoint stays up (ready = 503) until stop().
   */
  drain(timeoutMs = this.basics.drainTimeoutMs): Promise<DrainResult> {
    if (this.draining) return this.draining;
    this.currentState = 'draining';
    this.metrics.drains.inc();
    const startedAt = performance.now();
    this.logger.info({ open_connections: this.activeConnections, timeout_ms: timeoutMs }, 'draining: listeners closed, waiting for open connections');
    this.draining = (async () => {
      const finished = Promise.all(this.listeners.map((l) => l.drain()));
      const timedOut = !(await settledWithin(finished, timeoutMs));
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
    this.overload.stop();
    this.identity?.stop();
    for (const resource of this.owned) resource.close();
    await Promise.all(this.listeners.map((l) => l.stop()));
    await this.admin?.stop();
    this.context.refusals.flush();
    this.accessLogger.flush();
    this.logger.flush();
  }
}
