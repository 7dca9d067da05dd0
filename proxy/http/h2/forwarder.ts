// HTTP/2 (h2c prior knowledge) forwarded frame by frame. A client
// connection's HEADERS are decoded (HPACK), routed by the host, re-encoded
// toward one pooled upstream h2c connection per endpoint with the stream id
// mapped; DATA goes on as slices; the answer's HEADERS/trailers are decoded
// and re-encoded for the client. Not yet: send-side flow control, retries,
// per-try timeouts. Pooled connections go away at max_connection_age. Flow control both ways (flow.ts):
// DATA goes to a peer within its windows, the rest waits per stream, and a
// peer's credit comes back only once its DATA has gone on, so what waits is
// bounded by the windows we give.

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
import { H2StreamError, ReceiveWindows, SendWindows, type SendPiece } from './flow.js';
import { checkRequest, checkTrailers, type H2Request } from './request-check.js';
import { ResetBudget } from './reset-budget.js';

const MAX_HEADER_LIST = 65536;
/** A header block (HEADERS and its CONTINUATIONs) may be this long at most, in this many frames. */
const MAX_HEADER_BLOCK = 2 * MAX_HEADER_LIST;
const MAX_CONTINUATIONS = 64;
const MAX_CONCURRENT = 1000;
const STREAM_WINDOW = 1 << 20;
const CONNECTION_WINDOW = 1 << 30;
/** Streams a client may cancel (or have refused) at once, and per second after (rapid reset, CVE-2023-44487). */
const RESET_BURST = 200;
const RESETS_PER_SECOND = 100;

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

export type { H2Request } from './request-check.js';

/** One client stream and the upstream stream it is forwarded on. */
export class Call {
  up: UpstreamH2 | undefined;
  upStreamId = 0;
  status = 0;
  reason: string | undefined;
  private responded = false;
  private requestEnded = false;
  private closed = false;
  /** The request's content-length (-1: none) and the body octets seen. */
  contentLength = -1;
  private bodySeen = 0;
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

  /** Counts request body octets against content-length: the reason they disagree, or undefined. */
  countBody(n: number, end: boolean): string | undefined {
    this.bodySeen += n;
    if (this.contentLength < 0) return undefined;
    if (this.bodySeen > this.contentLength || (end && this.bodySeen !== this.contentLength)) return `content-length ${this.contentLength}, DATA ${this.bodySeen}${end ? '' : '+'}`;
    return undefined;
  }

  get ended(): boolean {
    return this.closed;
  }

  requestData(data: Buffer, end: boolean): void {
    if (end) this.requestEnded = true;
    // Data with nowhere to go is consumed here: the client's credit comes back.
    if (this.up === undefined || this.closed || !this.up.data(this.upStreamId, data, end)) this.requestSent(data.length);
  }

  requestTrailers(fields: HeaderField[]): void {
    this.requestEnded = true;
    if (this.up !== undefined && !this.closed) this.up.headers(this.upStreamId, fields, true);
  }

  /** `n` octets of the request went upstream (or were dropped): the client may send as much again. */
  requestSent(n: number): void {
    this.down.consumed(this.streamId, n);
  }

  /** `n` octets of the answer went to the client (or were dropped): the upstream may send as much again. */
  responseSent(n: number): void {
    if (this.up === undefined) return;
    this.up.consumed(this.upStreamId, n);
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

  /** Answer data; false when the call is gone (its credit is the caller's to give back). */
  responseData(data: Buffer, end: boolean): boolean {
    if (this.closed) return false;
    this.down.sendData(this.streamId, data, end);
    if (end) this.responseEnded();
    return true;
  }

  private responseEnded(): void {
    // The answer is whole: a client still sending is told to stop (RFC 9113 8.1),
    // and the upstream stream, half open on its side, is closed.
    if (!this.requestEnded) {
      this.down.sendReset(this.streamId, NO_ERROR);
      this.up?.reset(this.upStreamId, CANCEL);
    }
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
      this.up?.reset(this.upStreamId, CANCEL);
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

/**
 * What both ends of the forwarder share: queued frame output, the peer's
 * windows (send) and ours (receive), the peer's frame size.
 */
abstract class H2Connection {
  protected readonly out: FrameOutput;
  protected readonly sendWindows = new SendWindows();
  protected readonly receiveWindows = new ReceiveWindows(CONNECTION_WINDOW, STREAM_WINDOW);
  protected peerMaxFrame = DEFAULT_MAX_FRAME_SIZE;

  constructor(socket: Duplex) {
    this.out = new FrameOutput(socket);
  }

  /** The call on this connection's `streamId`, if still there. */
  protected abstract callOf(streamId: number): Call | undefined;
  /** `n` octets went to this peer on `call`: the other side's credit. */
  protected abstract sent(call: Call, n: number): void;
  /** A stream error on `streamId` (flow control): reset it, end its call. */
  protected abstract streamFailed(streamId: number, code: number, reason: string): void;

  protected write(pieces: SendPiece[]): void {
    for (const p of pieces) {
      if (p.then !== undefined) {
        p.then();
        continue;
      }
      this.out.push(frameHeader(DATA, p.end ? FLAG_END_STREAM : 0, p.streamId, p.data.length));
      if (p.data.length > 0) {
        this.out.push(p.data);
        const call = this.callOf(p.streamId);
        if (call !== undefined) this.sent(call, p.data.length);
      }
    }
  }

  /** Data for the peer on `streamId`, within its windows; false when the stream is not open here. */
  protected sendOn(streamId: number, data: Buffer, end: boolean): boolean {
    if (!this.sendWindows.has(streamId)) return false;
    this.write(this.sendWindows.send(streamId, data, end));
    return true;
  }

  /** `then` once what is queued on `streamId` has gone. */
  protected afterQueued(streamId: number, then: () => void): void {
    this.write(this.sendWindows.after(streamId, then));
  }

  /** Drops what waits on `streamId`, giving its credit back on the other side. */
  protected dropQueued(streamId: number): void {
    const n = this.sendWindows.close(streamId);
    const call = this.callOf(streamId);
    if (n > 0 && call !== undefined) this.sent(call, n);
  }

  protected openWindows(streamId: number): void {
    this.sendWindows.open(streamId);
    this.receiveWindows.open(streamId);
  }

  /** `n` octets received from this peer on `streamId` have gone on (or were dropped): credit back. */
  consumed(streamId: number, n: number): void {
    const [connection, stream] = this.receiveWindows.consumed(streamId, n);
    if (connection > 0) this.out.push(windowUpdateFrame(0, connection));
    if (stream > 0) this.out.push(windowUpdateFrame(streamId, stream));
  }

  /** A DATA frame's flow-control part: checked against our windows, padding credited back. The data, or null when its stream failed. */
  protected receiveData(streamId: number, flags: number, payload: Buffer): Buffer | null {
    try {
      this.receiveWindows.received(streamId, payload.length);
    } catch (err) {
      if (!(err instanceof H2StreamError)) throw err;
      this.consumed(streamId, payload.length);
      this.streamFailed(streamId, err.code, err.message);
      return null;
    }
    const data = unpad(DATA, flags, payload);
    if (data.length < payload.length) this.consumed(streamId, payload.length - data.length);
    return data;
  }

  protected windowUpdate(streamId: number, payload: Buffer): void {
    if (payload.length !== 4) throw new H2ConnectionError(FRAME_SIZE_ERROR, 'WINDOW_UPDATE not 4 octets');
    try {
      this.write(this.sendWindows.update(streamId, payload.readUInt32BE(0) & 0x7fffffff));
    } catch (err) {
      if (!(err instanceof H2StreamError)) throw err;
      this.streamFailed(streamId, err.code, err.message);
    }
  }

  /** A peer's SETTINGS (not ACK): frame size and initial window applied, acknowledged. Returns SETTINGS_MAX_CONCURRENT_STREAMS when given. */
  protected settings(streamId: number, payload: Buffer): number | undefined {
    if (streamId !== 0) throw new H2ConnectionError(PROTOCOL_ERROR, 'SETTINGS on a stream');
    if (payload.length % 6 !== 0) throw new H2ConnectionError(FRAME_SIZE_ERROR, 'SETTINGS not a multiple of 6 octets');
    let maxConcurrent: number | undefined;
    for (let i = 0; i < payload.length; i += 6) {
      const id = payload.readUInt16BE(i);
      const value = payload.readUInt32BE(i + 2);
      if (id === SETTINGS_MAX_FRAME_SIZE) {
        if (value < DEFAULT_MAX_FRAME_SIZE || value > 0xffffff) throw new H2ConnectionError(PROTOCOL_ERROR, 'bad SETTINGS_MAX_FRAME_SIZE');
        this.peerMaxFrame = value;
        this.sendWindows.setMaxFrame(value);
      } else if (id === SETTINGS_INITIAL_WINDOW_SIZE) this.write(this.sendWindows.setInitial(value));
      else if (id === SETTINGS_MAX_CONCURRENT_STREAMS) maxConcurrent = value;
    }
    this.out.push(frame(SETTINGS, FLAG_ACK, 0));
    return maxConcurrent;
  }
}

export interface DownstreamHost {
  /** A new request: route it, then `call.attach` or `call.answer`. */
  start(call: Call, request: H2Request): void;
  /** A connection error sent as GOAWAY (logged by the host). */
  protocolError(code: number, reason: string): void;
  /** A stream error sent as RST_STREAM: a malformed request, a flow-control fault (logged by the host). */
  streamError(streamId: number, code: number, reason: string): void;
}

/** A client's h2c connection (the preface still unread). */
export class DownstreamH2 extends H2Connection {
  private readonly reader: FrameReader;
  private readonly decoder = new HpackDecoder(4096, MAX_HEADER_LIST);
  private readonly calls = new Map<number, Call>();
  private block: HeaderBlock | null = null;
  private lastStreamId = 0;
  private prefaceLeft = PREFACE.length;
  private draining = false;
  private readonly resets: ResetBudget;

  constructor(
    private readonly socket: Duplex,
    private readonly host: DownstreamHost,
  ) {
    super(socket);
    this.resets = new ResetBudget(RESET_BURST, RESETS_PER_SECOND, Date.now());
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
      // What waited for this client is dropped, its credit given back upstream.
      for (const [id, call] of [...this.calls]) {
        this.dropQueued(id);
        call.clientReset();
      }
    });
  }

  protected callOf(streamId: number): Call | undefined {
    return this.calls.get(streamId);
  }

  protected sent(call: Call, n: number): void {
    call.responseSent(n);
  }

  protected streamFailed(streamId: number, code: number, reason: string): void {
    this.host.streamError(streamId, code, reason);
    const call = this.calls.get(streamId);
    this.dropQueued(streamId);
    this.out.push(rstStreamFrame(streamId, code));
    call?.clientReset();
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
        const call = this.calls.get(streamId);
        if (call === undefined) {
          if (streamId > this.lastStreamId) throw new H2ConnectionError(PROTOCOL_ERROR, 'DATA on an idle stream');
          this.receiveWindows.received(streamId, payload.length);
          this.consumed(streamId, payload.length);
          this.out.push(rstStreamFrame(streamId, STREAM_CLOSED));
          return;
        }
        const data = this.receiveData(streamId, flags, payload);
        if (data === null) return;
        const end = (flags & FLAG_END_STREAM) !== 0;
        const mismatch = call.countBody(data.length, end);
        if (mismatch !== undefined) {
          this.consumed(streamId, data.length);
          this.streamFailed(streamId, PROTOCOL_ERROR, mismatch);
          return;
        }
        call.requestData(data, end);
        return;
      }
      case HEADERS:
      case CONTINUATION:
        if (type === HEADERS && (streamId === 0 || streamId % 2 === 0)) throw new H2ConnectionError(PROTOCOL_ERROR, `HEADERS on stream ${streamId}`);
        this.block = blockFrame(this.block, type, flags, streamId, payload);
        if ((flags & FLAG_END_HEADERS) !== 0) {
          const block = this.block;
          this.block = null;
          this.onHeaderBlock(block);
        }
        return;
      case PRIORITY:
        if (streamId === 0) throw new H2ConnectionError(PROTOCOL_ERROR, 'PRIORITY on stream 0');
        if (payload.length !== 5) throw new H2ConnectionError(FRAME_SIZE_ERROR, 'PRIORITY not 5 octets');
        return;
      case RST_STREAM: {
        if (payload.length !== 4) throw new H2ConnectionError(FRAME_SIZE_ERROR, 'RST_STREAM not 4 octets');
        if (streamId === 0 || streamId > this.lastStreamId) throw new H2ConnectionError(PROTOCOL_ERROR, 'RST_STREAM on an idle stream');
        const call = this.calls.get(streamId);
        this.dropQueued(streamId);
        if (call === undefined || call.ended) return;
        call.clientReset();
        this.spendReset('streams reset by the client');
        return;
      }
      case SETTINGS:
        if (flags & FLAG_ACK) return;
        this.settings(streamId, payload);
        return;
      case PING:
        if (payload.length !== 8) throw new H2ConnectionError(FRAME_SIZE_ERROR, 'PING not 8 octets');
        if (!(flags & FLAG_ACK)) this.out.push(frame(PING, FLAG_ACK, 0, payload));
        return;
      case WINDOW_UPDATE:
        this.windowUpdate(streamId, payload);
        return;
      case GOAWAY:
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
      const bad = checkTrailers(fields) ?? open.countBody(0, true);
      if (bad !== undefined) this.streamFailed(streamId, PROTOCOL_ERROR, bad);
      else open.requestTrailers(fields);
      return;
    }
    if (streamId <= this.lastStreamId) throw new H2ConnectionError(PROTOCOL_ERROR, `HEADERS on closed stream ${streamId}`);
    this.lastStreamId = streamId;
    if (this.draining || this.calls.size >= MAX_CONCURRENT) {
      this.out.push(rstStreamFrame(streamId, REFUSED_STREAM));
      if (!this.draining) this.spendReset('streams refused');
      return;
    }
    const request = checkRequest(fields, endStream);
    if (typeof request === 'string') {
      this.host.streamError(streamId, PROTOCOL_ERROR, request);
      this.out.push(rstStreamFrame(streamId, PROTOCOL_ERROR));
      return;
    }
    const call = new Call(this, streamId);
    call.contentLength = request.contentLength;
    this.calls.set(streamId, call);
    this.openWindows(streamId);
    if (oversize) call.answer(431, 'header_list_too_large');
    else this.host.start(call, request);
  }

  /** A stream that brought no answer: past the budget, the connection ends (ENHANCE_YOUR_CALM). */
  private spendReset(what: string): void {
    if (!this.resets.spend(Date.now())) throw new H2ConnectionError(ENHANCE_YOUR_CALM, `rapid reset: ${what} past ${RESET_BURST} at once, ${RESETS_PER_SECOND}/s after`);
  }

  /** The call is over: its stream leaves once what it queued for the client has gone. */
  forget(streamId: number): void {
    this.afterQueued(streamId, () => {
      this.sendWindows.close(streamId);
      this.receiveWindows.close(streamId);
      this.calls.delete(streamId);
      if (this.draining && this.calls.size === 0) this.endSoon();
    });
  }

  /** Headers (trailers included) go after the data queued before them. */
  sendHeaders(streamId: number, fields: HeaderField[], end: boolean): void {
    const frames = headerFrames(streamId, encodeHeaderBlock(fields), end, this.peerMaxFrame);
    this.afterQueued(streamId, () => {
      for (const f of frames) this.out.push(f);
    });
  }

  sendData(streamId: number, data: Buffer, end: boolean): void {
    this.sendOn(streamId, data, end);
  }

  /** NO_ERROR goes after the answer queued; any other code ends the stream now, its queue dropped. */
  sendReset(streamId: number, code: number): void {
    if (code === NO_ERROR) {
      this.afterQueued(streamId, () => this.out.push(rstStreamFrame(streamId, code)));
      return;
    }
    this.dropQueued(streamId);
    this.out.push(rstStreamFrame(streamId, code));
  }
}

/** One pooled h2c connection to an endpoint. */
export class UpstreamH2 extends H2Connection {
  readonly socket: UpstreamSocket;
  private readonly reader: FrameReader;
  private readonly decoder = new HpackDecoder(4096, MAX_HEADER_LIST);
  private readonly calls = new Map<number, Call>();
  private block: HeaderBlock | null = null;
  private nextStreamId = 1;
  /** The peer's SETTINGS_MAX_CONCURRENT_STREAMS: until its SETTINGS come, what an earlier connection to it said. */
  private peerMaxConcurrent: number;
  usable = true;
  dialError: UpstreamDialError | undefined;

  constructor(
    attempts: UpstreamAttempt[],
    private readonly gone: () => void,
    maxConcurrent: number,
    private readonly learnedMaxConcurrent: (n: number) => void,
  ) {
    const socket = new UpstreamSocket(attempts);
    super(socket);
    this.socket = socket;
    this.peerMaxConcurrent = maxConcurrent;
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

  /** Usable, with a stream to spare under the peer's SETTINGS_MAX_CONCURRENT_STREAMS. */
  get hasRoom(): boolean {
    return this.usable && this.calls.size < this.peerMaxConcurrent;
  }

  protected callOf(streamId: number): Call | undefined {
    return this.calls.get(streamId);
  }

  protected sent(call: Call, n: number): void {
    call.requestSent(n);
  }

  protected streamFailed(streamId: number, code: number, reason: string): void {
    const call = this.calls.get(streamId);
    this.dropQueued(streamId);
    this.out.push(rstStreamFrame(streamId, code));
    call?.upstreamFailed(`upstream_stream_error: ${reason}`);
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
    this.openWindows(id);
    this.headers(id, fields, endStream);
    return id;
  }

  /** Headers (trailers included) go after the data queued before them. */
  headers(streamId: number, fields: HeaderField[], end: boolean): void {
    const frames = headerFrames(streamId, encodeHeaderBlock(fields), end, this.peerMaxFrame);
    this.afterQueued(streamId, () => {
      for (const f of frames) this.out.push(f);
    });
  }

  /** Request data within the upstream's windows; false when the stream is gone. */
  data(streamId: number, data: Buffer, end: boolean): boolean {
    return this.sendOn(streamId, data, end);
  }

  /** No new stream (max_connection_age): GOAWAY, and the connection closes once its calls have ended. */
  goAway(): void {
    if (!this.usable) return;
    this.retire();
    this.out.push(goawayFrame(0, NO_ERROR));
    if (this.calls.size === 0) this.end();
  }

  /** Ends the connection after the frames queued. */
  private end(): void {
    this.out.flush();
    this.socket.end();
  }

  reset(streamId: number, code: number): void {
    if (!this.calls.has(streamId)) return;
    this.dropQueued(streamId);
    this.out.push(rstStreamFrame(streamId, code));
  }

  forget(streamId: number): void {
    this.dropQueued(streamId);
    this.receiveWindows.close(streamId);
    this.calls.delete(streamId);
    if (!this.usable && this.calls.size === 0) this.end();
  }

  destroy(): void {
    this.socket.destroy();
  }

  private onFrame(type: number, flags: number, streamId: number, payload: Buffer): void {
    if (this.block !== null && type !== CONTINUATION) throw new H2ConnectionError(PROTOCOL_ERROR, 'frame inside a header block');
    switch (type) {
      case DATA: {
        if (streamId === 0) throw new H2ConnectionError(PROTOCOL_ERROR, 'DATA on stream 0');
        const call = this.calls.get(streamId);
        if (call === undefined) {
          this.receiveWindows.received(streamId, payload.length);
          this.consumed(streamId, payload.length);
          return;
        }
        const data = this.receiveData(streamId, flags, payload);
        if (data !== null && !call.responseData(data, (flags & FLAG_END_STREAM) !== 0)) this.consumed(streamId, data.length);
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
        this.dropQueued(streamId);
        this.calls.delete(streamId);
        call?.upstreamFailed(payload.readUInt32BE(0) === REFUSED_STREAM ? 'upstream_refused_stream' : 'upstream_reset');
        return;
      }
      case SETTINGS: {
        if (flags & FLAG_ACK) return;
        const maxConcurrent = this.settings(streamId, payload);
        if (maxConcurrent !== undefined) {
          this.peerMaxConcurrent = maxConcurrent;
          this.learnedMaxConcurrent(maxConcurrent);
        }
        return;
      }
      case PING:
        if (payload.length !== 8) throw new H2ConnectionError(FRAME_SIZE_ERROR, 'PING not 8 octets');
        if (!(flags & FLAG_ACK)) this.out.push(frame(PING, FLAG_ACK, 0, payload));
        return;
      case WINDOW_UPDATE:
        this.windowUpdate(streamId, payload);
        return;
      case GOAWAY: {
        if (payload.length < 8) throw new H2ConnectionError(FRAME_SIZE_ERROR, 'GOAWAY under 8 octets');
        this.retire();
        const last = payload.readUInt32BE(0) & 0x7fffffff;
        for (const [id, call] of [...this.calls]) if (id > last) call.upstreamFailed('upstream_refused_stream');
        if (this.calls.size === 0) this.end();
        return;
      }
      case PUSH_PROMISE:
        throw new H2ConnectionError(PROTOCOL_ERROR, 'PUSH_PROMISE though SETTINGS_ENABLE_PUSH is 0');
      default:
        return;
    }
  }
}

/** The pooled upstream connections by endpoint key: more than one when an upstream's SETTINGS_MAX_CONCURRENT_STREAMS is reached. */
export class UpstreamH2Pool {
  private readonly open = new Map<string, UpstreamH2[]>();

  /** `followAge`: calls `aged` at a connection's max_connection_age (UpstreamPools.followAge); it then goes away. */
  constructor(private readonly followAge: (socket: UpstreamSocket, aged: () => void) => void = () => {}) {}

  /** Each endpoint's last SETTINGS_MAX_CONCURRENT_STREAMS, for its next connection (100, RFC 9113's floor for the advice, until known). */
  private readonly maxConcurrent = new Map<string, number>();
  get(key: string, attempts: () => UpstreamAttempt[]): UpstreamH2 {
    const list = this.open.get(key) ?? [];
    const had = list.find((up) => up.hasRoom);
    if (had !== undefined) return had;
    const up: UpstreamH2 = new UpstreamH2(
      attempts(),
      () => {
        const now = this.open.get(key);
        if (now === undefined) return;
        const left = now.filter((u) => u !== up);
        if (left.length === 0) this.open.delete(key);
        else this.open.set(key, left);
      },
      this.maxConcurrent.get(key) ?? 100,
      (n) => this.maxConcurrent.set(key, n),
    );
    this.followAge(up.socket, () => up.goAway());
    list.push(up);
    this.open.set(key, list);
    return up;
  }
  destroy(): void {
    for (const list of this.open.values()) for (const up of list) up.destroy();
    this.open.clear();
  }
}
