// PROTOTYPE: HTTP/2 (h2c prior knowledge) forwarded frame by frame. A client
// connection's HEADERS are decoded (HPACK), routed by the host, re-encoded
// toward one pooled upstream h2c connection per endpoint with the stream id
// mapped; DATA goes on as slices; the answer's HEADERS/trailers are decoded
// and re-encoded for the client. Not yet: send-side flow control, retries,
// per-try timeouts, max_connection_age, rapid-reset accounting.

import type { Duplex } from 'node:stream';
import { hopByHop } from '../headers.js';
import { UpstreamDialError, UpstreamSocket } from '../upstream-pool.js';
import type { UpstreamAttempt } from '../../upstream/dial.js';
import { HpackDecoder, HpackError, encodeHeaderBlock, type HeaderField } from './hpack.js';
import {
  CANCEL, COMPRESSION_ERROR, CONTINUATION, DATA, DEFAULT_MAX_FRAME_SIZE, ENHANCE_YOUR_CALM, FLAG_ACK, FLAG_END_HEADERS, FLAG_END_STREAM, FRAME_SIZE_ERROR,
  FrameReader, GOAWAY, H2ConnectionError, HEADERS, INTERNAL_ERROR, NO_ERROR, PING, PREFACE, PRIORITY, PROTOCOL_ERROR, PUSH_PROMISE, REFUSED_STREAM, RST_STREAM,
  SETTINGS, SETTINGS_ENABLE_PUSH, SETTINGS_INITIAL_WINDOW_SIZE, SETTINGS_MAX_CONCURRENT_STREAMS, SETTINGS_MAX_FRAME_SIZE, SETTINGS_MAX_HEADER_LIST_SIZE,
  STREAM_CLOSED, WINDOW_UPDATE, frame, frameHeader, goawayFrame, headerFrames, rstStreamFrame, settingsFrame, unpad, windowUpdateFrame,
} from './frames.js';

const MAX_HEADER_LIST = 65536;
/** A header block (HEADERS and its CONTINUATIONs) may be this long at most, in this many frames. */
const MAX_HEADER_BLOCK = 2 * MAX_HEADER_LIST;
const MAX_CONTINUATIONS = 64;
const MAX_CONCURRENT = 1000;
const STREAM_WINDOW = 1 << 20;
const CONNECTION_WINDOW = 1 << 30;

/** Frames queued on one connection, written together once per tick. */
class FrameOutput {
  private queue: Buffer[] = [];
  private scheduled = false;
  constructor(private readonly socket: Duplex) {}
  push(buf: Buffer): void {
    this.queue.push(buf);
    if (!this.scheduled) {
      this.scheduled = true;
      process.nextTick(this.flush);
    }
  }
  readonly flush = (): void => {
    this.scheduled = false;
    const q = this.queue;
    this.queue = [];
    if (q.length === 0 || this.socket.destroyed) return;
    this.socket.write(q.length === 1 ? q[0]! : Buffer.concat(q));
  };
}

/** Receive-side flow control: credit given back in batches. */
class Credit {
  private owed = 0;
  constructor(private readonly window: number) {}
  /** The increment to send now, or 0. */
  take(n: number): number {
    this.owed += n;
    if (this.owed < this.window / 2) return 0;
    const give = this.owed;
    this.owed = 0;
    return give;
  }
}

type HeaderBlock = { streamId: number; flags: number; parts: Buffer[]; size: number };

/** Collects a HEADERS frame's block and its CONTINUATIONs, bounded; decode once complete. */
function blockFrame(block: HeaderBlock | null, type: number, flags: number, streamId: number, payload: Buffer): HeaderBlock {
  let b = block;
  if (type === HEADERS) b = { streamId, flags, parts: [unpad(HEADERS, flags, payload)], size: 0 };
  else {
    if (b === null || b.streamId !== streamId) throw new H2ConnectionError(PROTOCOL_ERROR, 'CONTINUATION without its HEADERS');
    b.parts.push(payload);
    if (b.parts.length > MAX_CONTINUATIONS) throw new H2ConnectionError(ENHANCE_YOUR_CALM, `header block in more than ${MAX_CONTINUATIONS} frames`);
  }
  b.size += b.parts[b.parts.length - 1]!.length;
  if (b.size > MAX_HEADER_BLOCK) throw new H2ConnectionError(ENHANCE_YOUR_CALM, `header block past ${MAX_HEADER_BLOCK} octets`);
  return b;
}

function decodeBlock(decoder: HpackDecoder, block: HeaderBlock): { fields: HeaderField[]; oversize: boolean } {
  try {
    return decoder.decode(block.parts.length === 1 ? block.parts[0]! : Buffer.concat(block.parts));
  } catch (err) {
    if (err instanceof HpackError) throw new H2ConnectionError(COMPRESSION_ERROR, `HPACK: ${err.message}`);
    throw err;
  }
}

export interface H2Request {
  method: string;
  scheme: string;
  authority: string;
  path: string;
  /** Regular headers by name: repeats joined (`cookie` with "; "). */
  headers: Record<string, string>;
  endStream: boolean;
}

/** One client stream and the upstream stream it is forwarded on. */
export class Call {
  up: UpstreamH2 | undefined;
  upStreamId = 0;
  status = 0;
  reason: string | undefined;
  private responded = false;
  private requestEnded = false;
  private closed = false;
  /** Set by the host: the call's end (its metrics and access line). */
  onEnd: () => void = () => {};

  constructor(
    readonly down: DownstreamH2,
    readonly streamId: number,
  ) {}

  /** Sends the request on `up`. */
  attach(up: UpstreamH2, fields: HeaderField[], endStream: boolean): void {
    this.up = up;
    this.requestEnded = endStream;
    this.upStreamId = up.open(this, fields, endStream);
  }

  requestData(data: Buffer, end: boolean): void {
    if (end) this.requestEnded = true;
    if (this.up !== undefined && !this.closed) this.up.data(this.upStreamId, data, end);
  }

  requestTrailers(fields: HeaderField[]): void {
    this.requestEnded = true;
    if (this.up !== undefined && !this.closed) this.up.headers(this.upStreamId, fields, true);
  }

  clientReset(): void {
    this.up?.reset(this.upStreamId, CANCEL);
    this.reason ??= 'downstream_reset';
    this.close();
  }

  responseHeaders(fields: HeaderField[], end: boolean): void {
    if (this.closed) return;
    if (!this.responded) {
      const status = Number(fields.find(([n]) => n === ':status')?.[1] ?? 0);
      // An informational answer goes on; the final one follows.
      if (status >= 200) {
        this.responded = true;
        this.status = status;
      }
    }
    this.down.sendHeaders(this.streamId, fields.some(([n]) => hopByHop(n)) ? fields.filter(([n]) => !hopByHop(n)) : fields, end);
    if (end) this.responseEnded();
  }

  responseData(data: Buffer, end: boolean): void {
    if (this.closed) return;
    this.down.sendData(this.streamId, data, end);
    if (end) this.responseEnded();
  }

  private responseEnded(): void {
    // The answer is whole: a client still sending is told to stop (RFC 9113 8.1).
    if (!this.requestEnded) this.down.sendReset(this.streamId, NO_ERROR);
    this.close();
  }

  /** The upstream stream ended without an answer end: `refused` (REFUSED_STREAM, GOAWAY past it), reset, or its connection gone. */
  upstreamFailed(why: string): void {
    if (this.closed) return;
    if (this.responded) {
      this.reason ??= why;
      this.down.sendReset(this.streamId, INTERNAL_ERROR);
      this.close();
    } else this.answer(502, why);
  }

  /** The sidecar's own answer. */
  answer(status: number, reason: string): void {
    if (this.closed) return;
    this.reason ??= reason;
    if (this.responded) {
      this.down.sendReset(this.streamId, INTERNAL_ERROR);
      this.close();
      return;
    }
    this.up?.reset(this.upStreamId, CANCEL);
    this.status = status;
    this.responded = true;
    this.down.sendHeaders(this.streamId, [[':status', String(status)], ['x-vsockmesh-reason', reason], ['content-type', 'text/plain']], false);
    this.down.sendData(this.streamId, Buffer.from(`${reason}\n`), true);
    this.responseEnded();
  }

  private close(): void {
    if (this.closed) return;
    this.closed = true;
    this.down.forget(this.streamId);
    this.up?.forget(this.upStreamId);
    this.onEnd();
  }
}

export interface DownstreamHost {
  /** A new request: route it, then `call.attach` or `call.answer`. */
  start(call: Call, request: H2Request): void;
  /** A connection error sent as GOAWAY (logged by the host). */
  protocolError(code: number, reason: string): void;
}

/** A client's h2c connection (the preface still unread). */
export class DownstreamH2 {
  private readonly reader: FrameReader;
  private readonly out: FrameOutput;
  private readonly decoder = new HpackDecoder(4096, MAX_HEADER_LIST);
  private readonly calls = new Map<number, Call>();
  private readonly credit = new Credit(CONNECTION_WINDOW);
  private block: HeaderBlock | null = null;
  private lastStreamId = 0;
  private prefaceLeft = PREFACE.length;
  private peerMaxFrame = DEFAULT_MAX_FRAME_SIZE;
  private draining = false;

  constructor(
    private readonly socket: Duplex,
    private readonly host: DownstreamHost,
  ) {
    this.out = new FrameOutput(socket);
    this.reader = new FrameReader((type, flags, id, payload) => this.onFrame(type, flags, id, payload));
    this.out.push(
      settingsFrame([
        [SETTINGS_MAX_CONCURRENT_STREAMS, MAX_CONCURRENT],
        [SETTINGS_INITIAL_WINDOW_SIZE, STREAM_WINDOW],
        [SETTINGS_MAX_HEADER_LIST_SIZE, MAX_HEADER_LIST],
      ]),
    );
    this.out.push(windowUpdateFrame(0, CONNECTION_WINDOW - 65535));
    socket.on('data', (chunk: Buffer) => this.onData(chunk));
    socket.once('close', () => {
      for (const call of [...this.calls.values()]) call.clientReset();
    });
  }

  /** GOAWAY: no new stream; the connection ends once its calls have. */
  drain(): void {
    if (this.draining) return;
    this.draining = true;
    this.out.push(goawayFrame(this.lastStreamId, NO_ERROR));
    if (this.calls.size === 0) this.endSoon();
  }

  private endSoon(): void {
    process.nextTick(() => {
      this.out.flush();
      this.socket.end();
    });
  }

  private onData(chunk: Buffer): void {
    try {
      let bytes = chunk;
      if (this.prefaceLeft > 0) {
        const n = Math.min(this.prefaceLeft, bytes.length);
        const at = PREFACE.length - this.prefaceLeft;
        if (!bytes.subarray(0, n).equals(PREFACE.subarray(at, at + n))) throw new H2ConnectionError(PROTOCOL_ERROR, 'no connection preface');
        this.prefaceLeft -= n;
        bytes = bytes.subarray(n);
        if (bytes.length === 0) return;
      }
      this.reader.push(bytes);
    } catch (err) {
      if (!(err instanceof H2ConnectionError)) throw err;
      this.host.protocolError(err.code, err.message);
      this.out.push(goawayFrame(this.lastStreamId, err.code, err.message));
      this.out.flush();
      this.socket.end();
      this.socket.pause();
    }
  }

  private onFrame(type: number, flags: number, streamId: number, payload: Buffer): void {
    if (this.block !== null && type !== CONTINUATION) throw new H2ConnectionError(PROTOCOL_ERROR, 'frame inside a header block');
    switch (type) {
      case DATA: {
        if (streamId === 0) throw new H2ConnectionError(PROTOCOL_ERROR, 'DATA on stream 0');
        const give = this.credit.take(payload.length);
        if (give > 0) this.out.push(windowUpdateFrame(0, give));
        const call = this.calls.get(streamId);
        if (call === undefined) {
          if (streamId > this.lastStreamId) throw new H2ConnectionError(PROTOCOL_ERROR, 'DATA on an idle stream');
          this.out.push(rstStreamFrame(streamId, STREAM_CLOSED));
          return;
        }
        call.requestData(unpad(DATA, flags, payload), (flags & FLAG_END_STREAM) !== 0);
        return;
      }
      case HEADERS:
      case CONTINUATION:
        if (type === HEADERS && (streamId === 0 || streamId % 2 === 0)) throw new H2ConnectionError(PROTOCOL_ERROR, `HEADERS on stream ${streamId}`);
        this.block = blockFrame(this.block, type, flags, streamId, payload);
        if ((this.block.flags & FLAG_END_HEADERS) !== 0 || (flags & FLAG_END_HEADERS) !== 0) {
          const block = this.block;
          this.block = null;
          this.onHeaderBlock(block);
        }
        return;
      case PRIORITY:
        if (payload.length !== 5) throw new H2ConnectionError(FRAME_SIZE_ERROR, 'PRIORITY not 5 octets');
        return;
      case RST_STREAM:
        if (payload.length !== 4) throw new H2ConnectionError(FRAME_SIZE_ERROR, 'RST_STREAM not 4 octets');
        if (streamId === 0 || streamId > this.lastStreamId) throw new H2ConnectionError(PROTOCOL_ERROR, 'RST_STREAM on an idle stream');
        this.calls.get(streamId)?.clientReset();
        return;
      case SETTINGS:
        if (streamId !== 0) throw new H2ConnectionError(PROTOCOL_ERROR, 'SETTINGS on a stream');
        if (flags & FLAG_ACK) return;
        if (payload.length % 6 !== 0) throw new H2ConnectionError(FRAME_SIZE_ERROR, 'SETTINGS not a multiple of 6 octets');
        for (let i = 0; i < payload.length; i += 6) {
          const id = payload.readUInt16BE(i);
          const value = payload.readUInt32BE(i + 2);
          if (id === SETTINGS_MAX_FRAME_SIZE) {
            if (value < DEFAULT_MAX_FRAME_SIZE || value > 0xffffff) throw new H2ConnectionError(PROTOCOL_ERROR, 'bad SETTINGS_MAX_FRAME_SIZE');
            this.peerMaxFrame = value;
          }
        }
        this.out.push(frame(SETTINGS, FLAG_ACK, 0));
        return;
      case PING:
        if (payload.length !== 8) throw new H2ConnectionError(FRAME_SIZE_ERROR, 'PING not 8 octets');
        if (!(flags & FLAG_ACK)) this.out.push(frame(PING, FLAG_ACK, 0, payload));
        return;
      case GOAWAY:
      case WINDOW_UPDATE:
        return;
      case PUSH_PROMISE:
        throw new H2ConnectionError(PROTOCOL_ERROR, 'PUSH_PROMISE from a client');
      default:
        return;
    }
  }

  private onHeaderBlock(block: HeaderBlock): void {
    const { fields, oversize } = decodeBlock(this.decoder, block);
    const { streamId, flags } = block;
    const endStream = (flags & FLAG_END_STREAM) !== 0;
    const open = this.calls.get(streamId);
    if (open !== undefined) {
      if (!endStream) throw new H2ConnectionError(PROTOCOL_ERROR, 'trailers without END_STREAM');
      open.requestTrailers(fields);
      return;
    }
    if (streamId <= this.lastStreamId) throw new H2ConnectionError(PROTOCOL_ERROR, `HEADERS on closed stream ${streamId}`);
    this.lastStreamId = streamId;
    if (this.draining || this.calls.size >= MAX_CONCURRENT) {
      this.out.push(rstStreamFrame(streamId, REFUSED_STREAM));
      return;
    }
    const request: H2Request = { method: '', scheme: '', authority: '', path: '', headers: {}, endStream };
    let malformed = false;
    for (const [name, value] of fields) {
      if (name.charCodeAt(0) === 0x3a) {
        if (name === ':method') request.method = value;
        else if (name === ':path') request.path = value;
        else if (name === ':authority') request.authority = value;
        else if (name === ':scheme') request.scheme = value;
        else malformed = true;
        continue;
      }
      const had = request.headers[name];
      request.headers[name] = had === undefined ? value : `${had}${name === 'cookie' ? '; ' : ', '}${value}`;
    }
    if (malformed || request.method === '' || request.path === '' || request.scheme === '') {
      this.out.push(rstStreamFrame(streamId, PROTOCOL_ERROR));
      return;
    }
    const call = new Call(this, streamId);
    this.calls.set(streamId, call);
    if (oversize) call.answer(431, 'header_list_too_large');
    else this.host.start(call, request);
  }

  forget(streamId: number): void {
    this.calls.delete(streamId);
    if (this.draining && this.calls.size === 0) this.endSoon();
  }

  sendHeaders(streamId: number, fields: HeaderField[], end: boolean): void {
    for (const f of headerFrames(streamId, encodeHeaderBlock(fields), end, this.peerMaxFrame)) this.out.push(f);
  }

  sendData(streamId: number, data: Buffer, end: boolean): void {
    this.out.push(frameHeader(DATA, end ? FLAG_END_STREAM : 0, streamId, data.length));
    if (data.length > 0) this.out.push(data);
  }

  sendReset(streamId: number, code: number): void {
    this.out.push(rstStreamFrame(streamId, code));
  }
}

/** One pooled h2c connection to an endpoint. */
export class UpstreamH2 {
  readonly socket: UpstreamSocket;
  private readonly reader: FrameReader;
  private readonly out: FrameOutput;
  private readonly decoder = new HpackDecoder(4096, MAX_HEADER_LIST);
  private readonly calls = new Map<number, Call>();
  private readonly credit = new Credit(CONNECTION_WINDOW);
  private block: HeaderBlock | null = null;
  private nextStreamId = 1;
  private peerMaxFrame = DEFAULT_MAX_FRAME_SIZE;
  usable = true;
  dialError: UpstreamDialError | undefined;

  constructor(
    attempts: UpstreamAttempt[],
    private readonly gone: () => void,
  ) {
    this.socket = new UpstreamSocket(attempts);
    this.out = new FrameOutput(this.socket);
    this.reader = new FrameReader((type, flags, id, payload) => this.onFrame(type, flags, id, payload));
    this.out.push(PREFACE);
    this.out.push(
      settingsFrame([
        [SETTINGS_ENABLE_PUSH, 0],
        [SETTINGS_INITIAL_WINDOW_SIZE, STREAM_WINDOW],
        [SETTINGS_MAX_HEADER_LIST_SIZE, MAX_HEADER_LIST],
      ]),
    );
    this.out.push(windowUpdateFrame(0, CONNECTION_WINDOW - 65535));
    this.socket.on('data', (chunk: Buffer) => {
      try {
        this.reader.push(chunk);
      } catch (err) {
        if (!(err instanceof H2ConnectionError)) throw err;
        this.out.push(goawayFrame(0, err.code, err.message));
        this.out.flush();
        this.socket.destroy();
      }
    });
    this.socket.on('error', (err) => {
      if (err instanceof UpstreamDialError) this.dialError = err;
    });
    this.socket.once('close', () => {
      this.retire();
      const why = this.dialError?.reason ?? 'upstream_reset';
      for (const call of [...this.calls.values()]) call.upstreamFailed(why);
    });
  }

  private retire(): void {
    if (!this.usable) return;
    this.usable = false;
    this.gone();
  }

  open(call: Call, fields: HeaderField[], endStream: boolean): number {
    const id = this.nextStreamId;
    this.nextStreamId += 2;
    if (this.nextStreamId > 0x7fffffff) this.retire();
    this.calls.set(id, call);
    this.headers(id, fields, endStream);
    return id;
  }

  headers(streamId: number, fields: HeaderField[], end: boolean): void {
    for (const f of headerFrames(streamId, encodeHeaderBlock(fields), end, this.peerMaxFrame)) this.out.push(f);
  }

  data(streamId: number, data: Buffer, end: boolean): void {
    this.out.push(frameHeader(DATA, end ? FLAG_END_STREAM : 0, streamId, data.length));
    if (data.length > 0) this.out.push(data);
  }

  reset(streamId: number, code: number): void {
    if (this.calls.has(streamId)) this.out.push(rstStreamFrame(streamId, code));
  }

  forget(streamId: number): void {
    this.calls.delete(streamId);
    if (!this.usable && this.calls.size === 0) this.socket.end();
  }

  destroy(): void {
    this.socket.destroy();
  }

  private onFrame(type: number, flags: number, streamId: number, payload: Buffer): void {
    if (this.block !== null && type !== CONTINUATION) throw new H2ConnectionError(PROTOCOL_ERROR, 'frame inside a header block');
    switch (type) {
      case DATA: {
        const give = this.credit.take(payload.length);
        if (give > 0) this.out.push(windowUpdateFrame(0, give));
        this.calls.get(streamId)?.responseData(unpad(DATA, flags, payload), (flags & FLAG_END_STREAM) !== 0);
        return;
      }
      case HEADERS:
      case CONTINUATION:
        this.block = blockFrame(this.block, type, flags, streamId, payload);
        if ((flags & FLAG_END_HEADERS) !== 0) {
          const block = this.block;
          this.block = null;
          // Decoded even for a call gone: the dynamic table follows every block.
          const { fields, oversize } = decodeBlock(this.decoder, block);
          const call = this.calls.get(block.streamId);
          if (call === undefined) return;
          if (oversize) {
            this.reset(block.streamId, CANCEL);
            call.upstreamFailed('upstream_header_list_too_large');
          } else call.responseHeaders(fields, (block.flags & FLAG_END_STREAM) !== 0);
        }
        return;
      case RST_STREAM: {
        if (payload.length !== 4) throw new H2ConnectionError(FRAME_SIZE_ERROR, 'RST_STREAM not 4 octets');
        const call = this.calls.get(streamId);
        this.calls.delete(streamId);
        call?.upstreamFailed(payload.readUInt32BE(0) === REFUSED_STREAM ? 'upstream_refused_stream' : 'upstream_reset');
        return;
      }
      case SETTINGS:
        if (flags & FLAG_ACK) return;
        if (payload.length % 6 !== 0) throw new H2ConnectionError(FRAME_SIZE_ERROR, 'SETTINGS not a multiple of 6 octets');
        for (let i = 0; i < payload.length; i += 6) if (payload.readUInt16BE(i) === SETTINGS_MAX_FRAME_SIZE) this.peerMaxFrame = payload.readUInt32BE(i + 2);
        this.out.push(frame(SETTINGS, FLAG_ACK, 0));
        return;
      case PING:
        if (!(flags & FLAG_ACK)) this.out.push(frame(PING, FLAG_ACK, 0, payload));
        return;
      case GOAWAY: {
        this.retire();
        const last = payload.readUInt32BE(0) & 0x7fffffff;
        for (const [id, call] of [...this.calls]) if (id > last) call.upstreamFailed('upstream_refused_stream');
        if (this.calls.size === 0) this.socket.end();
        return;
      }
      default:
        return;
    }
  }
}

/** The pooled upstream connections by endpoint key. */
export class UpstreamH2Pool {
  private readonly open = new Map<string, UpstreamH2>();
  get(key: string, attempts: () => UpstreamAttempt[]): UpstreamH2 {
    const had = this.open.get(key);
    if (had?.usable) return had;
    const up: UpstreamH2 = new UpstreamH2(attempts(), () => {
      if (this.open.get(key) === up) this.open.delete(key);
    });
    this.open.set(key, up);
    return up;
  }
  destroy(): void {
    for (const up of this.open.values()) up.destroy();
    this.open.clear();
  }
}
