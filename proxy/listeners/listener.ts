// What every listener shares: binding its servers, tracking its connections,
// and the three shutdown verbs (drain, then abort what is left; or stop now).

import net from 'node:net';
import type { Logger } from '../log.js';
import type { ProxyMetrics } from '../metrics.js';

export interface BoundAddress {
  address: string;
  port: number;
}

/** One accepted connection, from accept until both of its sides are closed. */
export interface TrackedConnection {
  /** Closes the connection now (drain timeout, stop). */
  abort(): void;
}

export interface ListenerContext {
  logger: Logger;
  metrics: ProxyMetrics;
  nodeId: string;
}

export abstract class Listener {
  private readonly servers: net.Server[] = [];
  protected readonly connections = new Set<TrackedConnection>();
  private idleWaiters: Array<() => void> = [];
  protected draining = false;
  private bound: BoundAddress[] = [];

  constructor(
    readonly name: string,
    private readonly bindAddresses: string[],
    private readonly port: number,
    protected readonly context: ListenerContext,
  ) {}

  protected abstract onConnection(socket: net.Socket): void;

  /** Binds every address. With port 0 the first bind picks the port and the others reuse it. */
  async start(): Promise<void> {
    let port = this.port;
    try {
      for (const address of this.bindAddresses) {
        const server = net.createServer({ allowHalfOpen: true, pauseOnConnect: true, noDelay: true }, (socket) => {
          if (this.draining) {
            this.context.metrics.refused.inc({ listener: this.name, reason: 'draining' });
            socket.destroy();
            return;
          }
          this.onConnection(socket);
        });
        await new Promise<void>((resolve, reject) => {
          server.once('error', reject);
          server.listen({ host: address, port, backlog: 4096 }, () => {
            server.off('error', reject);
            resolve();
          });
        });
        server.on('error', (err) => this.context.logger.error({ listener: this.name, err }, 'listener error'));
        this.servers.push(server);
        const info = server.address() as net.AddressInfo;
        port = info.port;
        this.bound.push({ address: info.address, port: info.port });
      }
    } catch (err) {
      await this.closeServers();
      throw listenError(this.name, err as NodeJS.ErrnoException);
    }
  }

  /** Where this listener accepts connections (ports resolved when configured as 0). */
  addresses(): BoundAddress[] {
    return [...this.bound];
  }

  get activeConnections(): number {
    return this.connections.size;
  }

  protected track(connection: TrackedConnection): void {
    this.connections.add(connection);
  }

  protected untrack(connection: TrackedConnection): void {
    this.connections.delete(connection);
    if (this.connections.size === 0 && this.idleWaiters.length > 0) {
      const waiters = this.idleWaiters;
      this.idleWaiters = [];
      for (const w of waiters) w();
    }
  }

  /** Stops accepting; resolves when every open connection has finished on its own. */
  async drain(): Promise<void> {
    this.draining = true;
    await this.closeServers();
    if (this.connections.size === 0) return;
    await new Promise<void>((resolve) => this.idleWaiters.push(resolve));
  }

  /** Closes whatever connections are still open (after a drain timeout). */
  abortConnections(): void {
    for (const c of [...this.connections]) c.abort();
  }

  /** Stops accepting and closes every connection now. */
  async stop(): Promise<void> {
    this.draining = true;
    const closing = this.closeServers();
    this.abortConnections();
    await closing;
  }

  private async closeServers(): Promise<void> {
    const servers = this.servers.splice(0);
    await Promise.all(servers.map((s) => new Promise<void>((resolve) => s.close(() => resolve()))));
  }
}

function listenError(listener: string, err: NodeJS.ErrnoException): Error {
  const hint = err.code === 'EADDRINUSE' ? ' (another process holds the port)' : err.code === 'EACCES' ? ' (ports below 1024 need privileges)' : '';
  const wrapped = new Error(`listener "${listener}": cannot listen on ${err.message.replace(/^listen \w+: /, '')}${hint}`) as NodeJS.ErrnoException;
  if (err.code !== undefined) wrapped.code = err.code;
  return wrapped;
}
