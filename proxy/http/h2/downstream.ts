// A client's h2c connection on the frame-level forwarder: its requests
// checked and handed to the host as calls, their answers written back
// within the client's windows; concurrent streams and rapid resets bounded.

import type { Duplex } from 'node:stream';
import type { HeaderField } from './hpack.js';
import { encodeHeaderBlock } from './hpack.js';
import {
  DATA, ENHANCE_YOUR_CALM, FLAG_END_STREAM, FRAME_SIZE_ERROR, GOAWAY, H2ConnectionError, NO_ERROR, PREFACE, PRIORITY, PROTOCOL_ERROR, PUSH_PROMISE, REFUSED_STREAM, RST_STREAM,
  SETTINGS_INITIAL_WINDOW_SIZE, SETTINGS_MAX_CONCURRENT_STREAMS, SETTINGS_MAX_HEADER_LIST_SIZE, STREAM_CLOSED, goawayFrame, headerFrames, rstStreamFrame, settingsFrame, windowUpdateFrame,
} from './frames.js';
import { checkRequest, checkTrailers, type H2Request } from './request-check.js';
import { ResetBudget } from './reset-budget.js';
import { Call } from './call.js';
import { CONNECTION_WINDOW, H2Connection, MAX_HEADER_LIST, STREAM_WINDOW } from './connection.js';

export type { H2Request } from './request-check.js';

const MAX_CONCURRENT = 1000;
/** Streams a client may cancel (or have refused) at once, and per second after (rapid reset, CVE-2023-44487). */
const RESET_BURST = 200;
const RESETS_PER_SECOND = 100;

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
  private readonly calls = new Map<number, Call>();
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

  protected override headersOn(streamId: number): void {
    if (streamId === 0 || streamId % 2 === 0) throw new H2ConnectionError(PROTOCOL_ERROR, `HEADERS on stream ${streamId}`);
  }

  protected onStreamFrame(type: number, flags: number, streamId: number, payload: Buffer): void {
    switch (type) {
      case DATA: {
        const call = this.calls.get(streamId);
        if (call === undefined) {
          if (streamId > this.lastStreamId) throw new H2ConnectionError(PROTOCOL_ERROR, 'DATA on an idle stream');
          this.discardData(streamId, payload);
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
      case GOAWAY:
        return;
      case PUSH_PROMISE:
        throw new H2ConnectionError(PROTOCOL_ERROR, 'PUSH_PROMISE from a client');
      default:
        return;
    }
  }

  protected onHeaderBlock(streamId: number, flags: number, fields: HeaderField[], oversize: boolean): void {
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

