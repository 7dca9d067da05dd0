// What every listener shares: binding its sockets (native core), tracking its
// connections, and the shutdown verbs (drain, then abort what is left; or stop now).

import { ipFamily, native, type SocketFamily, type SocketHost } from '../native/index.js';
import { formatAddress, type Logger } from '../runtime/log.js';
import type { ProxyMetrics } from '../metrics.js';
import type { Admission, AdmissionRefusal } from '../overload/admission.js';
import type { RefusalLog } from '../runtime/refusal-log.js';
import type { HandedOver } from './preamble.js';

export interface BoundAddress {
  /** An IP address, or `vsock:CID` for a vsock listener. */
  address: string;
  port: number;
}

/** One socket a listener binds: an IP address, or a vsock CID. */
export interface Bind {
  family: SocketFamily;
  host: SocketHost;
}

/** The binds of a list of IP addresses. */
export function ipBinds(addresses: string[]): Bind[] {
  return addresses.map((address) => ({ family: ipFamily(address), host: address }));
}

function bindLabel(bind: Bind): string {
  return bind.family === 'vsock' ? `vsock:${bind.host === native.VMADDR_CID_ANY ? 'any' : String(bind.host)}` : String(bind.host);
}

/** One accepted connection, from accept until both of its sides are closed. */
export interface TrackedConnection {
  /** Closes the connection now (drain timeout, stop). */
  abort(): void;
}

export interface ListenerContext {
  logger: Logger;
  /** Refusal lines, sampled per (listener, reason); the metrics count every refusal. */
  refusals: RefusalLog;
  /** One line per connection (buffered). */
  accessLogger: Logger;
  metrics: ProxyMetrics;
  nodeId: string;
  /** The server's connection limits and overload state, shared by its listeners. */
  admission: Admission;
}

/** Tries at a port for every address of a listener configured with port 0 (the first bind picks it). */
export const PORT_ZERO_ATTEMPTS = 8;

type BindError = NodeJS.ErrnoException & { port?: number };

/**
 * Binds every address at `port`; with port 0 the first bind picks the port and
 * the others reuse it. That port may be taken on another address (by any
 * socket there, a client's ephemeral port too): then every bind is undone and
 * a new port tried, up to PORT_ZERO_ATTEMPTS times. Any other failure undoes
 * the binds and is thrown with the port it was at (`port` on the error).
 */
export function bindAll(binds: Bind[], port: number, listen: (bind: Bind, port: number) => [number, number], close: (fd: number) => void): Array<{ fd: number; bound: BoundAddress }> {
  for (let attempt = 1; ; attempt++) {
    const done: Array<{ fd: number; bound: BoundAddress }> = [];
    let at = port;
    try {
      for (const bind of binds) {
        const [fd, boundPort] = listen(bind, at);
        done.push({ fd, bound: { address: bindLabel(bind), port: boundPort } });
        at = boundPort;
      }
      return done;
    } catch (err) {
      for (const { fd } of done) close(fd);
      const e = err as BindError;
      if (port === 0 && e.code === 'EADDRINUSE' && done.length > 0 && attempt < PORT_ZERO_ATTEMPTS) continue;
      e.port = at;
      throw e;
    }
  }
}

/** The counters a listener shares with the native core's warm path (warm.c): [JS's open connections, the core's, max_connections (-1: none), warm accepts on (1/0)]. */
export const WARM_JS_OPEN = 0;
export const WARM_CORE_OPEN = 1;
const WARM_MAX = 2;
export const WARM_ENABLED = 3;
/** Fields per connection in native.warmList: relay id, destination port, label, header, peer host, peer port. */
export const WARM_LIST_FIELDS = 6;

export abstract class Listener {
  private listenFds: number[] = [];
  protected readonly connections = new Set<TrackedConnection>();
  /** Shared with the core (warm.c): both count against max_connections through it. */
  protected readonly counters = new Int32Array(4);
  private idleWaiters: Array<() => void> = [];
  protected draining = false;
  private bound: BoundAddress[] = [];

  constructor(
    readonly name: string,
    private readonly binds: Bind[],
    private readonly port: number,
    protected readonly context: ListenerContext,
    /** Connections this listener keeps open at once; null: only the server's limits apply. */
    private readonly maxConnections: number | null = null,
  ) {
    this.counters[WARM_MAX] = maxConnections ?? -1;
  }

  /** Open connections: JavaScript's and the warm path's (header phase included). */
  private get openConnections(): number {
    return this.connections.size + this.counters[WARM_CORE_OPEN]!;
  }

  /** A new connection; the listener owns `fd` from here on. */
  protected abstract onConnection(fd: number, peerHost: SocketHost, peerPort: number, handedOver?: HandedOver): void;

  /** Binds every address (bindAll). */
  async start(): Promise<void> {
    const onConnection = (fd: number, host: SocketHost, peerPort: number): void => {
      if (this.draining) {
        this.context.metrics.refused.inc({ listener: this.name, reason: 'draining' });
        this.context.refusals.warn({ listener: this.name, reason: 'draining' }, 'refused: the listener is draining');
        native.close(fd);
        return;
      }
      const refusal = this.context.admission.refusal(this.name, this.openConnections, this.maxConnections);
      if (refusal) {
        this.refuseAtAccept(fd, host, peerPort, refusal);
        return;
      }
      this.onConnection(fd, host, peerPort);
    };
    try {
      for (const { fd, bound } of bindAll(this.binds, this.port, (bind, port) => native.listen(bind.family, bind.host, port, 4096, onConnection), (fd) => native.close(fd))) {
        this.listenFds.push(fd);
        this.bound.push(bound);
      }
    } catch (err) {
      throw listenError(this.name, this.binds.map(bindLabel), (err as BindError).port ?? this.port, err as NodeJS.ErrnoException);
    }
  }

  /** The listening sockets (the warm path takes their accepts). */
  protected listening(): readonly number[] {
    return this.listenFds;
  }

  /**
   * A connection the core's warm path accepted and handed over (a miss, a
   * header it does not take): admitted as at accept (it was counted against
   * the listener's limit meanwhile; a drain since does not refuse it, as a
   * connection reading its header is not refused by one).
   */
  protected handedOver(fd: number, host: SocketHost, peerPort: number, bytes: Buffer, elapsedMs: number): void {
    const refusal = this.context.admission.refusal(this.name, this.openConnections, this.maxConnections);
    if (refusal) {
      this.refuseAtAccept(fd, host, peerPort, refusal);
      return;
    }
    this.onConnection(fd, host, peerPort, { bytes, elapsedMs });
  }

  /** A warm connection finished (its record was read): a drain may be over. */
  protected warmClosed(): void {
    this.idleCheck();
  }

  /** Connections the warm path finished (their records read): tests tell a replay from the slow path by it. */
  warmFinishedCount = 0;

  /**
   * Closes the core's warm connections (a stop, a drain's deadline): the
   * relaying ones by their relay (their records say aborted), then those not
   * relaying yet (warmClose: one still connecting is recorded as
   * ProxiedConnection.abort logs it, one reading its header goes without a
   * record); every record is read before it returns.
   */
  protected abortWarm(): void {
    const id = this.warmId();
    if (id === null) return;
    const listed = native.warmList(id);
    for (let i = 0; i < listed.length; i += WARM_LIST_FIELDS) native.relayAbort(listed[i] as number);
    native.warmClose(id);
  }

  /** The warm path's listener id in the core while it is on (the subclass's). */
  protected warmId(): number | null {
    return null;
  }

  /**
   * The core's warm connections as the settle's look at the data path
   * (runtime/settle-memory.ts) sees them: how many are relaying, and a
   * number that grows whenever one starts relaying or finishes or bytes
   * move. Fewer open than the core holds: one is reading its header or
   * connecting, which the look cannot see (as the slow path's connecting ones).
   */
  warmActivity(): { open: number; activity: number } {
    const id = this.warmId();
    const finished = 2 * this.warmFinishedCount;
    if (id === null) return { open: 0, activity: finished };
    // Each relaying one counts 1 and its bytes (warmMoved: no header copied, as warmList would).
    const [relaying, moved] = native.warmMoved(id);
    return { open: relaying, activity: finished + relaying + moved };
  }

  /** Where this listener accepts connections (ports resolved when configured as 0). */
  addresses(): BoundAddress[] {
    return [...this.bound];
  }

  get activeConnections(): number {
    return this.openConnections;
  }

  protected track(connection: TrackedConnection): void {
    if (this.connections.has(connection)) return;
    this.connections.add(connection);
    this.counters[WARM_JS_OPEN] = this.connections.size;
    this.context.admission.opened();
  }

  protected untrack(connection: TrackedConnection): void {
    if (!this.connections.delete(connection)) return;
    this.counters[WARM_JS_OPEN] = this.connections.size;
    this.context.admission.closed();
    this.idleCheck();
  }

  private idleCheck(): void {
    if (this.openConnections === 0 && this.idleWaiters.length > 0) {
      const waiters = this.idleWaiters;
      this.idleWaiters = [];
      for (const w of waiters) w();
    }
  }
  /**
   * Holds an accepted fd while `work` (a VM manager query, say) is pending:
   * the fd is tracked so a stop closes it, and `then` runs only if it was not.
   */
  protected whilePending<T>(fd: number, work: Promise<T>, then: (value: T) => void): void {
    let aborted = false;
    const pending: TrackedConnection = {
      abort: () => {
        aborted = true;
        this.untrack(pending);
        native.close(fd);
      },
    };
    this.track(pending);
    void work.then((value) => {
      if (aborted) return;
      this.untrack(pending);
      then(value);
    });
  }


  /**
   * A connection over a limit, or shed while overloaded: counted, logged, and
   * reset at once (the client sees ECONNRESET rather than a silent close).
   * Every such refusal goes through here.
   */
  private refuseAtAccept(fd: number, peerHost: SocketHost, peerPort: number, refusal: AdmissionRefusal): void {
    this.context.metrics.refused.inc({ listener: this.name, reason: refusal.reason });
    const src = typeof peerHost === 'number' ? `vsock:${peerHost}:${peerPort}` : formatAddress(peerHost, peerPort);
    this.context.refusals.warn({ listener: this.name, src, reason: refusal.reason }, refusal.message);
    native.reset(fd);
  }

  /** Stops accepting; resolves when every open connection has finished on its own. */
  async drain(): Promise<void> {
    this.draining = true;
    this.closeListeners();
    if (this.openConnections === 0) return;
    await new Promise<void>((resolve) => this.idleWaiters.push(resolve));
  }

  /** Closes whatever connections are still open (after a drain timeout). */
  abortConnections(): void {
    for (const c of [...this.connections]) c.abort();
  }

  /** Stops accepting and closes every connection now. */
  async stop(): Promise<void> {
    this.draining = true;
    this.closeListeners();
    this.abortConnections();
  }

  private closeListeners(): void {
    for (const fd of this.listenFds.splice(0)) native.close(fd);
  }
}

function listenError(listener: string, addresses: string[], port: number, err: NodeJS.ErrnoException): Error {
  const hint = err.code === 'EADDRINUSE' ? ' (another process holds the port)' : err.code === 'EACCES' ? ' (ports below 1024 need privileges)' : '';
  const wrapped = new Error(
    `listener "${listener}": cannot listen on ${addresses.join(', ')} port ${port}: ${err.code ?? ''} ${err.message.replace(/^listen: /, '')}${hint}`,
  ) as NodeJS.ErrnoException;
  if (err.code !== undefined) wrapped.code = err.code;
  return wrapped;
}
