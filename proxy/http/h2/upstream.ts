// One pooled h2c connection to an endpoint on the frame-level forwarder:
// calls' requests sent on streams of its own numbering, within the
// endpoint's SETTINGS_MAX_CONCURRENT_STREAMS and windows; its answers, its
// resets and its GOAWAY passed back to the calls.

import type { HeaderField } from './hpack.js';
import { encodeHeaderBlock } from './hpack.js';
import {
  CANCEL, DATA, FLAG_END_STREAM, FRAME_SIZE_ERROR, GOAWAY, H2ConnectionError, NO_ERROR, PREFACE, PROTOCOL_ERROR, PUSH_PROMISE, REFUSED_STREAM, RST_STREAM,
  SETTINGS_ENABLE_PUSH, SETTINGS_INITIAL_WINDOW_SIZE, SETTINGS_MAX_HEADER_LIST_SIZE, goawayFrame, headerFrames, rstStreamFrame, settingsFrame, windowUpdateFrame,
} from './frames.js';
import { UpstreamDialError, UpstreamSocket } from '../upstream-pool.js';
import type { UpstreamAttempt } from '../../upstream/dial.js';
import type { Call } from './call.js';
import type { RetryCause } from '../retry.js';
import { CONNECTION_WINDOW, H2Connection, MAX_HEADER_LIST, STREAM_WINDOW } from './connection.js';

/** One pooled h2c connection to an endpoint. */
export class UpstreamH2 extends H2Connection {
  readonly socket: UpstreamSocket;
  private readonly calls = new Map<number, Call>();
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
      const cause: RetryCause = this.dialError !== undefined ? { kind: 'connect_failure' } : { kind: 'reset' };
      for (const call of [...this.calls.values()]) call.upstreamFailed(why, cause);
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
    call?.upstreamFailed(`upstream_stream_error: ${reason}`, { kind: 'reset' });
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

  protected override maxConcurrentStreams(n: number): void {
    this.peerMaxConcurrent = n;
    this.learnedMaxConcurrent(n);
  }

  protected onHeaderBlock(streamId: number, flags: number, fields: HeaderField[], oversize: boolean): void {
    const call = this.calls.get(streamId);
    if (call === undefined) return;
    if (oversize) {
      this.reset(streamId, CANCEL);
      call.upstreamFailed('upstream_header_list_too_large');
    } else call.responseHeaders(fields, (flags & FLAG_END_STREAM) !== 0);
  }

  protected onStreamFrame(type: number, flags: number, streamId: number, payload: Buffer): void {
    switch (type) {
      case DATA: {
        const call = this.calls.get(streamId);
        if (call === undefined) {
          this.discardData(streamId, payload);
          return;
        }
        const data = this.receiveData(streamId, flags, payload);
        if (data !== null && !call.responseData(data, (flags & FLAG_END_STREAM) !== 0)) this.consumed(streamId, data.length);
        return;
      }
      case RST_STREAM: {
        if (payload.length !== 4) throw new H2ConnectionError(FRAME_SIZE_ERROR, 'RST_STREAM not 4 octets');
        const call = this.calls.get(streamId);
        this.dropQueued(streamId);
        this.calls.delete(streamId);
        if (payload.readUInt32BE(0) === REFUSED_STREAM) call?.upstreamFailed('upstream_refused_stream', { kind: 'refused_stream' });
        else call?.upstreamFailed('upstream_reset', { kind: 'reset' });
        return;
      }
      case GOAWAY: {
        if (payload.length < 8) throw new H2ConnectionError(FRAME_SIZE_ERROR, 'GOAWAY under 8 octets');
        this.retire();
        const last = payload.readUInt32BE(0) & 0x7fffffff;
        for (const [id, call] of [...this.calls]) if (id > last) call.upstreamFailed('upstream_refused_stream', { kind: 'refused_stream' });
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
