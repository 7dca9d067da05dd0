// The client side of an HTTP/1.1 listener without Node's http server: the
// connection's bytes are read as they come and parsed by the llhttp binding
// Node's own server uses (HTTPParser of node:_http_common, strict, no
// lenient flags: the same 400s), each request handed on with its head as
// received; the answers go back in request order, a later answer held until
// the earlier ones are written. No IncomingMessage, ServerResponse or
// Readable per request.

import { STATUS_CODES } from 'node:http';
import type { VsockSocket } from '../native/vsock.js';
import { HTTPParser, methods } from './llhttp.js';
import { sharedHttp1Deadlines, type DeadlineWatched, type Http1Deadlines, type ReadPhase } from './http1-deadlines.js';

/** Node's http server's default: a request head of at most 16 KiB (its time limits: http1-deadlines.ts). */
const MAX_HEADER_SIZE = 16 * 1024;
/** Requests of one connection waiting for their answers before it reads no further (pipelining). */
const MAX_QUEUED = 32;
/** Bytes of a later answer held while an earlier one is written, above which its writer is asked to wait (as a socket's high-water mark asks). */
export const HELD_HIGH_WATER = 64 * 1024;

/** One request as received: its head, and its body as it comes. */
export class Http1ServerRequest {
  /** Lower-case names; repeated ones joined as Node's IncomingMessage does. */
  readonly headers: Record<string, string | string[]> = {};
  /** The answer is written whole. */
  answered = false;
  /** The connection ends after the answer. */
  closeAfter = false;
  /** The answer's bytes held while an earlier answer is still being written, and how many. */
  held: Buffer[] | null = null;
  heldBytes = 0;
  /** Its writer, told to wait by write(), resumes once the answer comes first and its held bytes are written. */
  waiting: (() => void) | null = null;
  private readonly bodyIn = new Inflow();
  private closeHandlers: Array<() => void> = [];
  /** An upgrade request's: the client's bytes after its head (the protocol it switches to). */
  private tunnelIn: Inflow | null = null;

  constructor(
    readonly connection: Http1ServerConnection,
    readonly method: string,
    readonly url: string,
    readonly versionMinor: number,
    rawHeaders: string[],
    /** The client's connection may carry on after this request (HTTP/1.1 without Connection: close, or HTTP/1.0 with keep-alive). */
    readonly keepAlive: boolean,
    /** It asks to switch protocols (Connection: upgrade): nothing after it is parsed as HTTP; its handler may carry the connection on as a tunnel (readTunnel()). */
    readonly upgrade = false,
  ) {
    for (let i = 0; i < rawHeaders.length; i += 2) {
      const name = rawHeaders[i]!.toLowerCase();
      const value = rawHeaders[i + 1]!;
      const had = this.headers[name];
      if (had === undefined) this.headers[name] = name === 'set-cookie' ? [value] : value;
      else if (Array.isArray(had)) had.push(value);
      else this.headers[name] = name === 'cookie' ? `${had}; ${value}` : `${had}, ${value}`;
    }
  }

  /** Set when its body has come whole. */
  get complete(): boolean {
    return this.bodyIn.ended;
  }

  /** Body bytes from the parser (a slice of the read: copied when held). */
  body(chunk: Buffer): void {
    this.bodyIn.push(chunk);
  }

  end(): void {
    this.bodyIn.end();
  }

  /** Takes the body as it comes (what came already first), then its end. */
  read(onBody: (chunk: Buffer) => void, onEnd: () => void): void {
    this.bodyIn.read(onBody, onEnd);
  }

  /** Bytes the client sent after the head of this upgrade request: held, the client's connection waiting, until readTunnel(). */
  tunnelBytes(chunk: Buffer): void {
    if ((this.tunnelIn ??= new Inflow()).push(chunk)) this.connection.socket.pause();
  }

  /** Its handler carries the connection on as a tunnel (readTunnel() was called). */
  get tunnelling(): boolean {
    return this.tunnelIn?.reading === true;
  }

  /** The client ended its side of the tunnel. */
  tunnelEnd(): void {
    (this.tunnelIn ??= new Inflow()).end();
  }

  /** An upgrade request switched protocols: takes the client's bytes after its head as they come (what came already first), then its end. */
  readTunnel(onData: (chunk: Buffer) => void, onEnd: () => void): void {
    const tunnel = (this.tunnelIn ??= new Inflow());
    tunnel.read(onData, onEnd);
    if (!tunnel.ended) this.connection.socket.resume();
  }

  /** The body is read and dropped. */
  discardBody(): void {
    this.read(noop, noop);
  }

  /** Bytes of the answer: written now if it is first in line, else held. False: write no more until whenWritable()'s callback. */
  write(data: Buffer | string): boolean {
    return this.connection.writeAnswer(this, typeof data === 'string' ? Buffer.from(data, 'latin1') : data);
  }

  /** After write() said false: `resume` runs once more bytes may be written (the socket drained, or a held answer came first and was written). */
  whenWritable(resume: () => void): void {
    this.connection.whenWritable(this, resume);
  }

  /** The answer is whole; `close`: the connection ends after it. */
  finish(close: boolean): void {
    if (this.answered) return;
    if (close) this.closeAfter = true;
    this.answered = true;
    this.connection.answerDone(this);
  }

  /** A whole answer made here: `status`, `headers`, and a short text body. */
  answer(status: number, headers: Record<string, string>, body: string, close: boolean): void {
    const keepAlive = this.keepAlive && !close;
    this.write(answerText(status, headers, this.method === 'HEAD' ? null : body, keepAlive, this.versionMinor));
    this.finish(!keepAlive);
  }

  /** `handler` runs once, when the answer is written whole or the connection closed first. */
  onClose(handler: () => void): void {
    this.closeHandlers.push(handler);
  }

  closed(): void {
    const handlers = this.closeHandlers;
    this.closeHandlers = [];
    for (const h of handlers) h();
  }
}

function noop(): void {}

/** Bytes that may come before their reader: held (copied: they may be slices of a read) until read(), then handed on as they come, then their end. */
class Inflow {
  ended = false;
  private onData: ((chunk: Buffer) => void) | null = null;
  private onEnd: (() => void) | null = null;
  private early: Buffer[] | null = null;

  get reading(): boolean {
    return this.onData !== null;
  }

  /** True: held (nothing reads them yet). */
  push(chunk: Buffer): boolean {
    if (this.onData !== null) {
      this.onData(chunk);
      return false;
    }
    (this.early ??= []).push(Buffer.from(chunk));
    return true;
  }

  end(): void {
    this.ended = true;
    if (this.onData !== null) this.onEnd?.();
  }

  read(onData: (chunk: Buffer) => void, onEnd: () => void): void {
    this.onData = onData;
    this.onEnd = onEnd;
    const early = this.early;
    this.early = null;
    if (early !== null) for (const c of early) onData(c);
    if (this.ended) onEnd();
  }
}

/** A whole answer's bytes: status line, headers, length, Connection, body. */
export function answerText(status: number, headers: Record<string, string>, body: string | null, keepAlive: boolean, versionMinor: number): string {
  let text = `HTTP/1.1 ${status} ${STATUS_CODES[status] ?? ''}\r\n`;
  for (const name in headers) text += `${name}: ${headers[name]!}\r\n`;
  text += `content-length: ${Buffer.byteLength(body ?? '')}\r\n`;
  if (!keepAlive) text += 'connection: close\r\n';
  else if (versionMinor === 0) text += 'connection: keep-alive\r\n';
  return `${text}\r\n${body ?? ''}`;
}

/** The answer to a request that is not HTTP as this listener takes it (Node's http server's). */
function refusal(code: string | undefined): string {
  const status = code === 'HPE_HEADER_OVERFLOW' ? '431 Request Header Fields Too Large' : code === 'HPE_CHUNK_EXTENSIONS_OVERFLOW' ? '413 Payload Too Large' : code === 'ERR_HTTP_REQUEST_TIMEOUT' ? '408 Request Timeout' : '400 Bad Request';
  return `HTTP/1.1 ${status}\r\nConnection: close\r\n\r\n`;
}

/**
 * A client connection of an HTTP listener: its requests parsed as they
 * come, each handed to `onRequest` once its head is whole; answers written
 * in request order. What Node's http server checks is checked here the
 * same way: strict parsing (400; 431 for a head over 16 KiB), a Host header
 * on HTTP/1.1 (400), Expect (100 Continue at once, 417 for anything else),
 * a head and a request whole in time (408: http1-deadlines.ts). Nothing
 * after an upgrade request is parsed: the client's bytes after its head go to
 * the request (readTunnel()), for its handler to carry on or drop (the
 * connection closed after a plain answer); CONNECT closes the connection (a
 * forward proxy takes it before it gets here).
 */
export class Http1ServerConnection implements DeadlineWatched {
  private readonly parser = new HTTPParser();
  private pendingHeaders: string[] = [];
  private current: Http1ServerRequest | null = null;
  /** Requests in order whose answers are not written whole yet. */
  private readonly queue: Http1ServerRequest[] = [];
  /** The client ended its side: the connection ends once every answer is written. */
  private ending = false;
  /** Nothing more is parsed (after an error, or an upgrade request). */
  private stopped = false;
  /** The upgrade request that the client's further bytes go to. */
  private tunnel: Http1ServerRequest | null = null;
  private pausedForQueue = false;
  /** The request being read: in its head or its body since the checker's tick `readSince` (408 once overdue). */
  readPhase: ReadPhase = 'idle';
  readSince = 0;

  constructor(
    readonly socket: VsockSocket,
    private readonly onRequest: (request: Http1ServerRequest) => void,
    private readonly deadlines: Http1Deadlines = sharedHttp1Deadlines,
  ) {
    const parser = this.parser;
    parser.initialize(HTTPParser.REQUEST, this, MAX_HEADER_SIZE, 0);
    deadlines.watch(this);
    parser[HTTPParser.kOnMessageBegin] = () => {
      if (this.readPhase !== 'idle') return;
      this.readPhase = 'head';
      this.readSince = deadlines.now;
    };
    parser[HTTPParser.kOnHeaders] = (headers: string[]) => {
      this.pendingHeaders.push(...headers);
    };
    parser[HTTPParser.kOnHeadersComplete] = (
      _major: number,
      minor: number,
      headers: string[] | undefined,
      method: number,
      url: string,
      _status: unknown,
      _message: unknown,
      upgrade: boolean,
      keepAlive: boolean,
    ): number => {
      const lines = headers ?? this.pendingHeaders;
      this.pendingHeaders = [];
      return this.onHead(methods[method] ?? '', url, minor, lines, upgrade, keepAlive);
    };
    parser[HTTPParser.kOnBody] = (chunk: Buffer) => this.current?.body(chunk);
    parser[HTTPParser.kOnMessageComplete] = () => {
      this.readPhase = 'idle';
      const request = this.current;
      this.current = null;
      request?.end();
    };
    socket.on('data', (chunk: Buffer) => {
      if (this.tunnel !== null) return this.tunnel.tunnelBytes(chunk);
      if (this.stopped) return;
      let result: number | Error;
      try {
        result = parser.execute(chunk);
      } catch (err) {
        result = err instanceof Error ? err : new Error(String(err));
      }
      if (result instanceof Error) this.refuse((result as { code?: string }).code);
      else {
        // The parser stops after an upgrade request's head (set by execute's callbacks): what follows it in the read is the tunnel's.
        const tunnel = this.tunnel as Http1ServerRequest | null;
        if (tunnel !== null && result < chunk.length) tunnel.tunnelBytes(chunk.subarray(result));
      }
    });
    socket.once('end', () => {
      this.ending = true;
      this.tunnel?.tunnelEnd();
      if (this.queue.length === 0) socket.end();
    });
    socket.once('close', () => {
      this.stopped = true;
      this.readPhase = 'idle';
      deadlines.unwatch(this);
      for (const request of this.queue.splice(0)) request.closed();
      // Freed once the stack that may still be in execute() has unwound, as Node's http does.
      setImmediate(() => parser.close());
    });
  }

  private onHead(method: string, url: string, minor: number, lines: string[], upgrade: boolean, keepAlive: boolean): number {
    this.readPhase = 'idle';
    if (method === 'CONNECT') {
      this.stopped = true;
      this.socket.destroy();
      return 1;
    }
    this.readPhase = 'body';
    this.readSince = this.deadlines.now;
    const request = new Http1ServerRequest(this, method, url, minor, lines, keepAlive && !upgrade, upgrade);
    this.current = request;
    this.queue.push(request);
    if (this.queue.length >= MAX_QUEUED && !this.pausedForQueue) {
      this.pausedForQueue = true;
      this.socket.pause();
    }
    // The bytes after an upgrade request are no HTTP of ours.
    if (upgrade) this.stopped = true;
    const { headers } = request;
    if (minor === 1 && headers.host === undefined) {
      request.discardBody();
      request.write('HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\n');
      request.finish(true);
      return 0;
    }
    const expect = headers.expect;
    if (minor === 1 && expect !== undefined) {
      if (!/^100-continue$/i.test(String(expect).trim())) {
        request.discardBody();
        request.answer(417, {}, '', false);
        return 0;
      }
      request.write('HTTP/1.1 100 Continue\r\n\r\n');
    }
    if (upgrade) this.tunnel = request;
    this.onRequest(request);
    return 0;
  }

  /** From the checker: the request being read is refused with 408 (a client that sends its head or body too slowly: slowloris). */
  overdue(): void {
    this.refuse('ERR_HTTP_REQUEST_TIMEOUT');
  }

  /** A request that is not HTTP as taken here, or too slow: refused, and the connection closed after it (earlier answers in flight are lost). */
  private refuse(code: string | undefined): void {
    this.stopped = true;
    this.readPhase = 'idle';
    if (this.socket.destroyed) return;
    const answered = this.queue.length === 0 || (this.queue.length === 1 && this.queue[0] === this.current);
    if (answered) this.socket.end(refusal(code), 'latin1');
    // Closed a little later, as Node's server does: a client still sending may otherwise miss the answer.
    setTimeout(() => this.socket.destroy(), answered ? 1000 : 0).unref();
  }

  writeAnswer(request: Http1ServerRequest, data: Buffer): boolean {
    if (this.queue[0] !== request) {
      // Held in memory until the earlier answers are written: bounded by asking the writer to wait.
      (request.held ??= []).push(data);
      request.heldBytes += data.length;
      return request.heldBytes < HELD_HIGH_WATER;
    }
    if (this.socket.destroyed || this.socket.writableEnded) return true;
    return this.socket.write(data);
  }

  whenWritable(request: Http1ServerRequest, resume: () => void): void {
    if (this.queue[0] === request) this.socket.once('drain', resume);
    else request.waiting = resume;
  }

  answerDone(request: Http1ServerRequest): void {
    if (this.queue[0] !== request) return;
    this.queue.shift();
    request.closed();
    if (request.closeAfter) {
      this.stopped = true;
      this.socket.end();
      if (this.tunnel !== null && !this.tunnel.tunnelling) {
        // An upgrade answered as a plain request: the client's bytes after its head are dropped, and read (its end too) so that the connection closes.
        this.tunnel = null;
        this.socket.resume();
      }
      return;
    }
    if (this.pausedForQueue && this.queue.length < MAX_QUEUED) {
      this.pausedForQueue = false;
      this.socket.resume();
    }
    const next = this.queue[0];
    if (next === undefined) {
      if (this.ending || this.stopped) this.socket.end();
      return;
    }
    const held = next.held;
    next.held = null;
    next.heldBytes = 0;
    let flowing = true;
    if (held !== null) for (const data of held) flowing = this.socket.write(data);
    const waiting = next.waiting;
    next.waiting = null;
    if (waiting !== null) {
      if (flowing) waiting();
      else this.socket.once('drain', waiting);
    }
    if (next.answered) {
      next.answered = false;
      next.finish(next.closeAfter);
    }
  }
}
