// HTTP/1.1 requests to an upstream on pooled keep-alive connections, without
// Node's http client (ClientRequest, Agent and IncomingMessage cost more of
// a proxied request than anything else of ours): the request head goes out
// as one string, the response is parsed by the llhttp binding Node's own http
// client uses (HTTPParser of node:_http_common: the same strictness), and its
// head and body are handed on as they come. One exchange at a time per
// connection; a connection goes back to its pool when its response has ended,
// the request was sent whole and the upstream keeps it alive.

import { HTTPParser } from './llhttp.js';
import type { UpstreamSocket } from './upstream-pool.js';

/** What goes upstream: `headers` as they are sent; `chunked`: the body is framed in chunks (its length unknown: the client sent it chunked). */
export interface Http1RequestHead {
  method: string;
  path: string;
  headers: Readonly<Record<string, string | string[]>>;
  chunked: boolean;
  /** It asks to switch protocols (its headers carry Connection: upgrade and Upgrade): a 101 hands the connection to handlers.upgraded. */
  upgrade?: boolean;
}

export interface Http1Handlers {
  /** The response head: status, reason phrase and the header lines as received (name, value, name, value, …). 1xx answers are not passed on. */
  response(status: number, message: string, rawHeaders: string[]): void;
  body(chunk: Buffer): void;
  /** The response ended whole. */
  end(): void;
  /** The exchange failed before its response ended: the dial's UpstreamDialError, a reset, or an answer that is not HTTP/1.x. */
  error(err: Error): void;
  /** Once, when the exchange is over (ended, failed or destroyed). */
  close(): void;
  /**
   * Set: every byte the upstream sent for this exchange as read (head and
   * body, framing included), handed on after the parser saw it (so after
   * response() of a head in it, and before end() of a response that ends in it).
   */
  raw?: (chunk: Buffer) => void;
  /**
   * The upstream switched protocols (101) as the request asked: the
   * connection is the caller's from now on (out of the pool), with `rest`,
   * the bytes read after the 101's head. Instead of response(), body() and end().
   */
  upgraded?: (message: string, rawHeaders: string[], socket: UpstreamSocket, rest: Buffer) => void;
}

/** An upstream that ended or reset the connection before its response ended. */
export class UpstreamResetError extends Error {
  readonly code = 'ECONNRESET';
}

/** One request and its response on a pooled connection. */
export class Http1Exchange {
  /** Set when it is over; nothing is passed on after. */
  done = false;
  /** The request was sent whole (end()). */
  sent = false;

  constructor(
    readonly connection: Http1Connection,
    readonly handlers: Http1Handlers,
    readonly head: boolean,
    private readonly chunked: boolean,
    /** It may switch protocols (a 101 to an upgrade request). */
    readonly upgrade: boolean,
  ) {}

  get socket(): UpstreamSocket {
    return this.connection.socket;
  }

  /** A piece of the request body; false: wait for onDrain. */
  write(chunk: Buffer): boolean {
    if (this.done || chunk.length === 0) return true;
    const { socket } = this.connection;
    if (!this.chunked) return socket.write(chunk);
    socket.cork();
    socket.write(`${chunk.length.toString(16)}\r\n`, 'latin1');
    socket.write(chunk);
    const more = socket.write('\r\n', 'latin1');
    socket.uncork();
    return more;
  }

  /** The request is whole. */
  end(): void {
    if (this.sent) return;
    this.sent = true;
    if (this.chunked && !this.done) this.connection.socket.write('0\r\n\r\n', 'latin1');
    this.connection.requestSent(this);
  }

  onDrain(resume: () => void): void {
    this.connection.socket.once('drain', resume);
  }

  /** Stops the response's bytes until resume() (backpressure from the client). */
  pause(): void {
    if (!this.done) this.connection.socket.pause();
  }

  resume(): void {
    if (!this.done) this.connection.socket.resume();
  }

  /** Abandons the exchange: its connection is closed (it may be in the middle of a response). */
  destroy(): void {
    if (this.done) return;
    this.done = true;
    this.connection.socket.destroy();
    this.handlers.close();
  }

  /** Ends the exchange with `err` (once). */
  fail(err: Error): void {
    if (this.done) return;
    this.done = true;
    this.handlers.error(err);
    this.handlers.close();
  }
}

/** A keep-alive connection to one upstream and its response parser. */
export class Http1Connection {
  private readonly parser = new HTTPParser();
  private exchange: Http1Exchange | null = null;
  /** Header lines of a head that came in several reads. */
  private pendingHeaders: string[] = [];
  /** The answer being parsed is a 1xx: its end is not the response's. */
  private informational = false;
  private keepAlive = false;
  private failure: Error | undefined;
  /** The raw exchange whose bytes are being parsed, and the one whose response ended in them (its end waits for its bytes). */
  private rawExchange: Http1Exchange | null = null;
  private completed: Http1Exchange | null = null;
  /** Another message began after the raw exchange's answer ended, in the same read. */
  private overrun = false;
  /** False once it must take no further request (retired, or the upstream closes it). */
  reusable = true;
  /** The exchange whose 101 was read in the read being parsed, and that 101's head: the connection becomes its tunnel. */
  private switching: { exchange: Http1Exchange; message: string; lines: string[] } | null = null;
  /** Handed over as a tunnel after a 101: no HTTP of ours any more. */
  private tunneled = false;

  constructor(
    readonly socket: UpstreamSocket,
    private readonly idle: (connection: Http1Connection) => void,
    private readonly gone: (connection: Http1Connection) => void,
  ) {
    const parser = this.parser;
    parser.initialize(HTTPParser.RESPONSE, this, 0, 0);
    parser[HTTPParser.kOnHeaders] = (headers: string[]) => {
      this.pendingHeaders.push(...headers);
    };
    parser[HTTPParser.kOnHeadersComplete] = (
      _major: number,
      _minor: number,
      headers: string[] | undefined,
      _method: unknown,
      _url: unknown,
      status: number,
      message: string,
      upgrade: boolean,
      keepAlive: boolean,
    ) => this.onHead(headers, status, message, upgrade, keepAlive);
    parser[HTTPParser.kOnBody] = (chunk: Buffer) => {
      const exchange = this.exchange;
      if (exchange !== null && !exchange.done) exchange.handlers.body(chunk);
    };
    parser[HTTPParser.kOnMessageComplete] = () => this.onComplete();
    parser[HTTPParser.kOnMessageBegin] = () => {
      if (this.completed !== null) this.overrun = true;
    };
    const onData = (chunk: Buffer): void => {
      const raw = this.exchange?.handlers.raw;
      if (raw !== undefined) this.rawExchange = this.exchange;
      let result: number | Error;
      try {
        result = parser.execute(chunk);
      } catch (err) {
        // A handler threw (the parser calls them from execute): this exchange fails, the process goes on.
        result = err instanceof Error ? err : new Error(String(err));
      }
      if (result instanceof Error) {
        // A raw exchange whose answer ended in this read is failed with the read: none of it was handed on.
        const ended = this.completed;
        this.rawExchange = this.completed = null;
        this.overrun = false;
        socket.destroy(result);
        ended?.fail(result);
        return;
      }
      if (this.switching !== null) {
        socket.off('data', onData);
        this.switchOver(chunk.subarray(result));
        return;
      }
      if (raw === undefined) return;
      const exchange = this.rawExchange!;
      this.rawExchange = null;
      if (this.overrun) {
        // Bytes after the answer in the same read: the read cannot pass as it is, and the upstream does not speak HTTP as asked.
        this.overrun = false;
        this.completed = null;
        exchange.fail(new UpstreamResetError('upstream sent bytes after its answer'));
        socket.destroy();
        return;
      }
      if (!exchange.done) raw(chunk);
      if (this.completed === exchange) {
        this.completed = null;
        this.completeExchange(exchange);
      }
    };
    socket.on('data', onData);
    socket.on('error', (err) => {
      this.failure ??= err;
    });
    socket.once('close', () => this.onClose());
  }

  /** Sends the request head (and `body`, the whole body if known now) on this idle connection. */
  start(head: Http1RequestHead, handlers: Http1Handlers, body: Buffer | null): Http1Exchange {
    const exchange = new Http1Exchange(this, handlers, head.method === 'HEAD', head.chunked, head.upgrade === true);
    this.exchange = exchange;
    let text = `${head.method} ${head.path} HTTP/1.1\r\n`;
    const { headers } = head;
    for (const name in headers) {
      const value = headers[name]!;
      if (typeof value === 'string') text += `${name}: ${value}\r\n`;
      else for (const one of value) text += `${name}: ${one}\r\n`;
    }
    text += head.chunked ? 'transfer-encoding: chunked\r\n\r\n' : '\r\n';
    if (body === null || body.length === 0) this.socket.write(text, 'latin1');
    else {
      // Head and body in one write.
      this.socket.cork();
      this.socket.write(text, 'latin1');
      this.socket.write(body);
      this.socket.uncork();
    }
    if (body !== null) exchange.end();
    return exchange;
  }

  /** No further request (peer_tls.max_connection_age): closed now if idle, else once its response is done. */
  retire(): void {
    this.reusable = false;
    if (this.exchange === null && !this.tunneled) this.socket.end();
  }

  /** The request of `exchange` is sent whole: if its response is done too, the connection is free. */
  requestSent(exchange: Http1Exchange): void {
    if (this.exchange === exchange && exchange.done) this.release();
  }

  private onHead(headers: string[] | undefined, status: number, message: string, upgrade: boolean, keepAlive: boolean): number {
    const exchange = this.exchange;
    const lines = headers ?? this.pendingHeaders;
    this.pendingHeaders = [];
    if (exchange !== null && upgrade && status === 101 && exchange.upgrade && exchange.handlers.upgraded !== undefined) {
      // Its end is no response's: the bytes after this head are the new protocol's (switchOver(), once execute returns).
      this.switching = { exchange, message, lines };
      this.exchange = null;
      this.reusable = false;
      return 2;
    }
    if (exchange === null || upgrade) {
      // An answer nobody asked for, or a switch of protocol: not ours to carry on.
      this.socket.destroy(new UpstreamResetError(exchange === null ? 'upstream answered no request' : 'upstream switched protocols'));
      return 1;
    }
    if (status < 200) {
      this.informational = true;
      return 0;
    }
    this.keepAlive = keepAlive;
    if (!exchange.done) exchange.handlers.response(status, message, lines);
    // A response to HEAD has a length but no body.
    return exchange.head ? 1 : 0;
  }

  private onComplete(): void {
    // Trailers (after a chunked body) are not passed on; they must not pass for the next head's first lines.
    this.pendingHeaders = [];
    if (this.informational) {
      this.informational = false;
      return;
    }
    const exchange = this.exchange;
    if (exchange === null) return;
    if (!this.keepAlive) this.reusable = false;
    if (exchange === this.rawExchange) {
      // Its end waits for its bytes to be handed on; bytes after it in this read are no answer of it.
      this.completed = exchange;
      this.exchange = null;
      return;
    }
    this.completeExchange(exchange);
  }

  private completeExchange(exchange: Http1Exchange): void {
    const wasDone = exchange.done;
    exchange.done = true;
    if (!wasDone) {
      exchange.handlers.end();
      exchange.handlers.close();
    }
    if (exchange.sent) this.release();
    else {
      // Answered before the request was sent whole: the rest of it would be taken for the next request's.
      this.reusable = false;
      this.socket.destroy();
    }
  }

  /** After a 101: the socket and the bytes read after its head go to the exchange's caller; the parser reads no more. */
  private switchOver(rest: Buffer): void {
    const { exchange, message, lines } = this.switching!;
    this.switching = null;
    this.rawExchange = this.completed = null;
    this.overrun = false;
    this.tunneled = true;
    if (exchange.done) {
      this.socket.destroy();
      return;
    }
    exchange.done = true;
    exchange.handlers.upgraded!(message, lines, this.socket, rest);
    exchange.handlers.close();
  }

  /** The exchange is over on both sides: back to the pool, or closed. */
  private release(): void {
    this.exchange = null;
    if (!this.reusable || this.socket.destroyed) {
      this.socket.destroy();
      return;
    }
    this.socket.resume();
    this.idle(this);
  }

  private onClose(): void {
    this.reusable = false;
    const exchange = this.exchange;
    // A body that ends with the connection ends now.
    if (exchange !== null && !exchange.done && this.failure === undefined) this.parser.finish();
    if (exchange !== null && !exchange.done) exchange.fail(this.failure ?? new UpstreamResetError('upstream closed the connection before its response ended'));
    this.exchange = null;
    this.gone(this);
    // Freed once the stack that may still be in execute() has unwound, as Node's http does.
    setImmediate(() => this.parser.close());
  }
}

/** The keep-alive connections to one endpoint over one transport plan; `open` makes a new one. */
export class Http1Pool {
  private readonly idle: Http1Connection[] = [];
  private readonly all = new Set<Http1Connection>();

  /** `open`: a new socket to the endpoint; `followAge`: calls `aged` when the socket must take no further request. */
  constructor(
    private readonly open: () => UpstreamSocket,
    private readonly followAge: (socket: UpstreamSocket, aged: () => void) => void,
  ) {}

  /**
   * Sends a request on an idle connection, or a new one. `body`: the whole
   * body (sent with the head), or null to send it with write() and end().
   */
  request(head: Http1RequestHead, handlers: Http1Handlers, body: Buffer | null): Http1Exchange {
    let connection = this.idle.pop();
    while (connection !== undefined && (!connection.reusable || connection.socket.destroyed)) connection = this.idle.pop();
    connection ??= this.connect();
    return connection.start(head, handlers, body);
  }

  private connect(): Http1Connection {
    const socket = this.open();
    const connection = new Http1Connection(
      socket,
      (c) => this.idle.push(c),
      (c) => {
        this.all.delete(c);
        this.leaveIdle(c);
      },
    );
    this.all.add(connection);
    this.followAge(socket, () => {
      this.leaveIdle(connection);
      connection.retire();
    });
    return connection;
  }

  private leaveIdle(connection: Http1Connection): void {
    const at = this.idle.indexOf(connection);
    if (at >= 0) this.idle.splice(at, 1);
  }

  /** Closes every connection now. */
  destroy(): void {
    for (const connection of this.all) connection.socket.destroy();
    this.all.clear();
    this.idle.length = 0;
  }
}
