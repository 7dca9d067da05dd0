// What both ends of the frame-level h2c forwarder share: the frames every
// connection reads alike (a header block collected and decoded, SETTINGS,
// PING, WINDOW_UPDATE), queued frame output, flow control both ways
// (flow.ts: DATA goes to a peer within its windows, the rest waits per
// stream, and a peer's credit comes back only once its DATA has gone on, so
// what waits is bounded by the windows we give), the peer's frame size.
// "Gone on" means taken by this peer's socket: while the socket's write()
// says false, the credit its data would give the other side is held until
// 'drain', so a peer that grants huge windows and reads nothing has at most
// a window's worth per stream piled up in our write buffer, not what the
// other side can send.

import type { Duplex } from 'node:stream';
import { HpackDecoder, type HeaderField } from './hpack.js';
import {
  CONTINUATION, DATA, DEFAULT_MAX_FRAME_SIZE, FLAG_ACK, FLAG_END_HEADERS, FLAG_END_STREAM, FRAME_SIZE_ERROR, FrameReader, H2ConnectionError, HEADERS, PING, PROTOCOL_ERROR,
  SETTINGS, SETTINGS_INITIAL_WINDOW_SIZE, SETTINGS_MAX_CONCURRENT_STREAMS, SETTINGS_MAX_FRAME_SIZE, WINDOW_UPDATE, frame, frameHeader, unpad, windowUpdateFrame,
} from './frames.js';
import { H2StreamError, ReceiveWindows, SendWindows, type SendPiece } from './flow.js';
import { FrameOutput } from './frame-output.js';
import { MAX_HEADER_LIST, blockFrame, decodeBlock, type HeaderBlock } from './header-block.js';
import type { Call } from './call.js';

export { MAX_HEADER_LIST } from './header-block.js';
export const STREAM_WINDOW = 1 << 20;
export const CONNECTION_WINDOW = 1 << 30;

export abstract class H2Connection {
  protected readonly out: FrameOutput;
  protected readonly sendWindows = new SendWindows();
  protected readonly receiveWindows = new ReceiveWindows(CONNECTION_WINDOW, STREAM_WINDOW);
  protected peerMaxFrame = DEFAULT_MAX_FRAME_SIZE;
  protected readonly reader = new FrameReader((type, flags, id, payload) => this.onFrame(type, flags, id, payload));
  private readonly decoder = new HpackDecoder(4096, MAX_HEADER_LIST);
  private block: HeaderBlock | null = null;
  /** Credit owed to the other side for data written here while the socket was full, by call: given on 'drain' (or when the socket closes). */
  private held: Map<Call, number> | null = null;

  constructor(private readonly writeSide: Duplex) {
    this.out = new FrameOutput(writeSide);
    writeSide.on('drain', this.release);
    writeSide.once('close', this.release);
  }

  /** `n` octets went into the socket on `call`: the other side's credit, now or once the socket drains. */
  private credit(call: Call, n: number): void {
    if (this.held === null && !this.writeSide.writableNeedDrain) return this.sent(call, n);
    this.held ??= new Map();
    this.held.set(call, (this.held.get(call) ?? 0) + n);
  }

  private readonly release = (): void => {
    const held = this.held;
    if (held === null) return;
    this.held = null;
    for (const [call, n] of held) this.sent(call, n);
  };

  /** The call on this connection's `streamId`, if still there. */
  protected abstract callOf(streamId: number): Call | undefined;
  /** `n` octets went to this peer on `call`: the other side's credit. */
  protected abstract sent(call: Call, n: number): void;
  /** A stream error on `streamId` (flow control): reset it, end its call. */
  protected abstract streamFailed(streamId: number, code: number, reason: string): void;
  /** A complete header block, decoded (every block is: the dynamic table follows each). */
  protected abstract onHeaderBlock(streamId: number, flags: number, fields: HeaderField[], oversize: boolean): void;
  /** A frame not read alike by both ends: DATA, RST_STREAM, PRIORITY, GOAWAY, PUSH_PROMISE, unknown types. */
  protected abstract onStreamFrame(type: number, flags: number, streamId: number, payload: Buffer): void;
  /** A HEADERS frame opens a block on `streamId`: throws when this end may not receive one there. */
  protected headersOn(_streamId: number): void {}
  /** The peer's SETTINGS_MAX_CONCURRENT_STREAMS. */
  protected maxConcurrentStreams(_n: number): void {}

  /** Every frame read: the prelude both ends share, then the end's own. */
  private onFrame(type: number, flags: number, streamId: number, payload: Buffer): void {
    if (this.block !== null && type !== CONTINUATION) throw new H2ConnectionError(PROTOCOL_ERROR, 'frame inside a header block');
    switch (type) {
      case HEADERS:
      case CONTINUATION:
        if (type === HEADERS) this.headersOn(streamId);
        this.block = blockFrame(this.block, type, flags, streamId, payload);
        if ((flags & FLAG_END_HEADERS) !== 0) {
          const block = this.block;
          this.block = null;
          const { fields, oversize } = decodeBlock(this.decoder, block);
          this.onHeaderBlock(block.streamId, block.flags, fields, oversize);
        }
        return;
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
      case DATA:
        if (streamId === 0) throw new H2ConnectionError(PROTOCOL_ERROR, 'DATA on stream 0');
        this.onStreamFrame(type, flags, streamId, payload);
        return;
      default:
        this.onStreamFrame(type, flags, streamId, payload);
    }
  }

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
        if (call !== undefined) this.credit(call, p.data.length);
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

  /** DATA on a stream with no call here: counted against the connection window, its credit given back at once. */
  protected discardData(streamId: number, payload: Buffer): void {
    this.receiveWindows.received(streamId, payload.length);
    this.consumed(streamId, payload.length);
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

  private windowUpdate(streamId: number, payload: Buffer): void {
    if (payload.length !== 4) throw new H2ConnectionError(FRAME_SIZE_ERROR, 'WINDOW_UPDATE not 4 octets');
    try {
      this.write(this.sendWindows.update(streamId, payload.readUInt32BE(0) & 0x7fffffff));
    } catch (err) {
      if (!(err instanceof H2StreamError)) throw err;
      this.streamFailed(streamId, err.code, err.message);
    }
  }

  /** A peer's SETTINGS (not ACK): frame size and initial window applied, acknowledged; SETTINGS_MAX_CONCURRENT_STREAMS passed on when given. */
  private settings(streamId: number, payload: Buffer): void {
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
    if (maxConcurrent !== undefined) this.maxConcurrentStreams(maxConcurrent);
  }
}
