// HTTP/2 frames (RFC 9113 4, 6): the frame header read from a byte stream
// with every length bounded, and frames written. Pure but for the reader's
// buffered bytes.

export { H2_PREFACE as PREFACE } from '../inspector.js';

export const FRAME_HEADER_LENGTH = 9;

export const DATA = 0x0;
export const HEADERS = 0x1;
export const PRIORITY = 0x2;
export const RST_STREAM = 0x3;
export const SETTINGS = 0x4;
export const PUSH_PROMISE = 0x5;
export const PING = 0x6;
export const GOAWAY = 0x7;
export const WINDOW_UPDATE = 0x8;
export const CONTINUATION = 0x9;

export const FLAG_END_STREAM = 0x1;
export const FLAG_ACK = 0x1;
export const FLAG_END_HEADERS = 0x4;
export const FLAG_PADDED = 0x8;
export const FLAG_PRIORITY = 0x20;

export const SETTINGS_HEADER_TABLE_SIZE = 0x1;
export const SETTINGS_ENABLE_PUSH = 0x2;
export const SETTINGS_MAX_CONCURRENT_STREAMS = 0x3;
export const SETTINGS_INITIAL_WINDOW_SIZE = 0x4;
export const SETTINGS_MAX_FRAME_SIZE = 0x5;
export const SETTINGS_MAX_HEADER_LIST_SIZE = 0x6;

export const NO_ERROR = 0x0;
export const PROTOCOL_ERROR = 0x1;
export const INTERNAL_ERROR = 0x2;
export const FLOW_CONTROL_ERROR = 0x3;
export const STREAM_CLOSED = 0x5;
export const FRAME_SIZE_ERROR = 0x6;
export const REFUSED_STREAM = 0x7;
export const CANCEL = 0x8;
export const COMPRESSION_ERROR = 0x9;
export const ENHANCE_YOUR_CALM = 0xb;

export const DEFAULT_MAX_FRAME_SIZE = 16384;

/** A connection error: the GOAWAY code and the reason logged. */
export class H2ConnectionError extends Error {
  constructor(
    readonly code: number,
    message: string,
  ) {
    super(message);
  }
}

export type FrameHandler = (type: number, flags: number, streamId: number, payload: Buffer) => void;

/**
 * Frames out of the bytes of a connection, in order. A frame longer than
 * `maxFrameSize` (our SETTINGS_MAX_FRAME_SIZE) is a FRAME_SIZE_ERROR: at most
 * one frame's bytes are ever held.
 */
export class FrameReader {
  private held: Buffer | null = null;

  constructor(
    private readonly onFrame: FrameHandler,
    private readonly maxFrameSize = DEFAULT_MAX_FRAME_SIZE,
  ) {}

  /** Reads `chunk`; throws H2ConnectionError on a frame past the bound (and from onFrame). */
  push(chunk: Buffer): void {
    const buf = this.held === null ? chunk : Buffer.concat([this.held, chunk]);
    this.held = null;
    let pos = 0;
    while (buf.length - pos >= FRAME_HEADER_LENGTH) {
      const length = (buf[pos]! << 16) | (buf[pos + 1]! << 8) | buf[pos + 2]!;
      if (length > this.maxFrameSize) throw new H2ConnectionError(FRAME_SIZE_ERROR, `frame of ${length} octets past the ${this.maxFrameSize} allowed`);
      if (buf.length - pos < FRAME_HEADER_LENGTH + length) break;
      const type = buf[pos + 3]!;
      const flags = buf[pos + 4]!;
      const streamId = buf.readUInt32BE(pos + 5) & 0x7fffffff;
      const start = pos + FRAME_HEADER_LENGTH;
      pos = start + length;
      this.onFrame(type, flags, streamId, buf.subarray(start, pos));
    }
    if (pos < buf.length) {
      // The start of a frame: copied when small, so a large chunk is not kept for a few bytes of it.
      const rest = buf.subarray(pos);
      this.held = rest.length < 1024 ? Buffer.from(rest) : rest;
    }
  }
}

/** A frame header for a payload of `length` octets. */
export function frameHeader(type: number, flags: number, streamId: number, length: number): Buffer {
  const out = Buffer.allocUnsafe(FRAME_HEADER_LENGTH);
  out[0] = (length >>> 16) & 0xff;
  out[1] = (length >>> 8) & 0xff;
  out[2] = length & 0xff;
  out[3] = type;
  out[4] = flags;
  out.writeUInt32BE(streamId & 0x7fffffff, 5);
  return out;
}

/** A whole frame. */
export function frame(type: number, flags: number, streamId: number, payload: Buffer = Buffer.alloc(0)): Buffer {
  const out = Buffer.allocUnsafe(FRAME_HEADER_LENGTH + payload.length);
  frameHeader(type, flags, streamId, payload.length).copy(out, 0);
  payload.copy(out, FRAME_HEADER_LENGTH);
  return out;
}

/** A SETTINGS frame of `settings` (identifier, value). */
export function settingsFrame(settings: ReadonlyArray<readonly [number, number]>): Buffer {
  const payload = Buffer.allocUnsafe(6 * settings.length);
  settings.forEach(([id, value], i) => {
    payload.writeUInt16BE(id, 6 * i);
    payload.writeUInt32BE(value, 6 * i + 2);
  });
  return frame(SETTINGS, 0, 0, payload);
}

export function windowUpdateFrame(streamId: number, increment: number): Buffer {
  const payload = Buffer.allocUnsafe(4);
  payload.writeUInt32BE(increment & 0x7fffffff, 0);
  return frame(WINDOW_UPDATE, 0, streamId, payload);
}

export function rstStreamFrame(streamId: number, code: number): Buffer {
  const payload = Buffer.allocUnsafe(4);
  payload.writeUInt32BE(code, 0);
  return frame(RST_STREAM, 0, streamId, payload);
}

export function goawayFrame(lastStreamId: number, code: number, debug = ''): Buffer {
  const payload = Buffer.allocUnsafe(8 + Buffer.byteLength(debug));
  payload.writeUInt32BE(lastStreamId & 0x7fffffff, 0);
  payload.writeUInt32BE(code, 4);
  payload.write(debug, 8);
  return frame(GOAWAY, 0, 0, payload);
}

/** A header block as HEADERS and as many CONTINUATION frames as `maxFrameSize` (the peer's) needs. */
export function headerFrames(streamId: number, block: Buffer, endStream: boolean, maxFrameSize: number): Buffer[] {
  const out: Buffer[] = [];
  let pos = 0;
  do {
    const part = block.subarray(pos, pos + maxFrameSize);
    const last = pos + part.length >= block.length;
    const type = pos === 0 ? HEADERS : CONTINUATION;
    const flags = (last ? FLAG_END_HEADERS : 0) | (pos === 0 && endStream ? FLAG_END_STREAM : 0);
    out.push(frame(type, flags, streamId, part));
    pos += part.length;
  } while (pos < block.length);
  return out;
}

/**
 * A HEADERS or DATA frame's payload without its padding and priority fields
 * (RFC 9113 6.1, 6.2); throws H2ConnectionError when they do not fit.
 */
export function unpad(type: number, flags: number, payload: Buffer): Buffer {
  let start = 0;
  let end = payload.length;
  if (flags & FLAG_PADDED) {
    if (payload.length < 1) throw new H2ConnectionError(PROTOCOL_ERROR, 'padded frame without its pad length');
    const pad = payload[0]!;
    start = 1;
    end -= pad;
  }
  if (type === HEADERS && flags & FLAG_PRIORITY) start += 5;
  if (end < start) throw new H2ConnectionError(PROTOCOL_ERROR, 'padding longer than the frame');
  return payload.subarray(start, end);
}
