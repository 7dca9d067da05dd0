// HTTP/2 flow control (RFC 9113 5.2, 6.9), pure: what may be sent to a peer
// within its connection and stream windows (the rest queued per stream, in
// order, END_STREAM and trailers after the data before them), and what credit
// to give back to a peer once its DATA has gone on. No I/O: the caller writes
// the pieces returned and the increments asked for.

import { FLOW_CONTROL_ERROR, H2ConnectionError, PROTOCOL_ERROR } from './frames.js';

export const DEFAULT_WINDOW = 65535;
export const MAX_WINDOW = 0x7fffffff;

/** A stream-level flow-control failure: the stream is reset with `code`, the connection lives. */
export class H2StreamError extends Error {
  constructor(
    readonly streamId: number,
    readonly code: number,
    message: string,
  ) {
    super(message);
    this.name = 'H2StreamError';
  }
}

/** One DATA frame to write now (`data` may be empty with `end`), or `then` to run at this point of the stream's order. */
export type SendPiece = { streamId: number; data: Buffer; end: boolean; then?: () => void };

type Outgoing = { window: number; queue: Array<{ data: Buffer; end: boolean; then?: () => void }>; queued: number };

/** Send side: the peer's windows, the data waiting for them. */
export class SendWindows {
  private connection = DEFAULT_WINDOW;
  private initial = DEFAULT_WINDOW;
  private maxFrame = 16384;
  private readonly streams = new Map<number, Outgoing>();
  /** Streams with something queued, in the order they began waiting. */
  private readonly blocked = new Set<number>();

  get connectionWindow(): number {
    return this.connection;
  }

  /** Octets waiting on `streamId` (0 when none or unknown). */
  queued(streamId: number): number {
    return this.streams.get(streamId)?.queued ?? 0;
  }

  window(streamId: number): number | undefined {
    return this.streams.get(streamId)?.window;
  }

  open(streamId: number): void {
    this.streams.set(streamId, { window: this.initial, queue: [], queued: 0 });
  }

  has(streamId: number): boolean {
    return this.streams.has(streamId);
  }

  /** The stream is gone: what it had queued is dropped. Returns the octets dropped (their credit is the caller's to give back). */
  close(streamId: number): number {
    const s = this.streams.get(streamId);
    this.streams.delete(streamId);
    this.blocked.delete(streamId);
    return s?.queued ?? 0;
  }

  setMaxFrame(size: number): void {
    this.maxFrame = size;
  }

  /** Data (possibly empty, possibly ending the stream) to send on an open stream: what goes now. */
  send(streamId: number, data: Buffer, end: boolean): SendPiece[] {
    const s = this.streams.get(streamId);
    if (s === undefined) return [];
    s.queue.push({ data, end });
    s.queued += data.length;
    const out: SendPiece[] = [];
    this.drain(streamId, s, out);
    return out;
  }

  /** `then` runs once everything queued before it on the stream has gone (now, when nothing waits or the stream is unknown). */
  after(streamId: number, then: () => void): SendPiece[] {
    const s = this.streams.get(streamId);
    if (s === undefined) return [{ streamId, data: EMPTY, end: false, then }];
    s.queue.push({ data: EMPTY, end: false, then });
    const out: SendPiece[] = [];
    this.drain(streamId, s, out);
    return out;
  }

  /** A WINDOW_UPDATE from the peer. Throws H2ConnectionError (stream 0) or H2StreamError. */
  update(streamId: number, increment: number): SendPiece[] {
    if (increment === 0) {
      if (streamId === 0) throw new H2ConnectionError(PROTOCOL_ERROR, 'WINDOW_UPDATE of 0 on the connection');
      throw new H2StreamError(streamId, PROTOCOL_ERROR, 'WINDOW_UPDATE of 0');
    }
    const out: SendPiece[] = [];
    if (streamId === 0) {
      if (this.connection + increment > MAX_WINDOW) throw new H2ConnectionError(FLOW_CONTROL_ERROR, 'connection window past 2^31-1');
      this.connection += increment;
      this.drainBlocked(out);
      return out;
    }
    const s = this.streams.get(streamId);
    if (s === undefined) return out;
    if (s.window + increment > MAX_WINDOW) throw new H2StreamError(streamId, FLOW_CONTROL_ERROR, 'stream window past 2^31-1');
    s.window += increment;
    this.drain(streamId, s, out);
    return out;
  }

  /** The peer's SETTINGS_INITIAL_WINDOW_SIZE: every open stream's window moves by the difference (RFC 9113 6.9.2). */
  setInitial(size: number): SendPiece[] {
    if (size > MAX_WINDOW) throw new H2ConnectionError(FLOW_CONTROL_ERROR, 'SETTINGS_INITIAL_WINDOW_SIZE past 2^31-1');
    const delta = size - this.initial;
    this.initial = size;
    for (const s of this.streams.values()) {
      if (s.window + delta > MAX_WINDOW) throw new H2ConnectionError(FLOW_CONTROL_ERROR, 'a stream window past 2^31-1 after SETTINGS_INITIAL_WINDOW_SIZE');
      s.window += delta;
    }
    const out: SendPiece[] = [];
    if (delta > 0) this.drainBlocked(out);
    return out;
  }

  private drainBlocked(out: SendPiece[]): void {
    for (const id of [...this.blocked]) {
      if (this.connection <= 0) return;
      const s = this.streams.get(id);
      if (s !== undefined) this.drain(id, s, out);
    }
  }

  private drain(streamId: number, s: Outgoing, out: SendPiece[]): void {
    while (s.queue.length > 0) {
      const head = s.queue[0]!;
      if (head.then !== undefined) {
        s.queue.shift();
        out.push({ streamId, data: EMPTY, end: false, then: head.then });
        continue;
      }
      if (head.data.length === 0) {
        s.queue.shift();
        if (head.end) out.push({ streamId, data: EMPTY, end: true });
        continue;
      }
      const room = Math.min(s.window, this.connection, this.maxFrame);
      if (room <= 0) break;
      const n = Math.min(room, head.data.length);
      const piece = head.data.subarray(0, n);
      head.data = head.data.subarray(n);
      s.window -= n;
      this.connection -= n;
      s.queued -= n;
      const last = head.data.length === 0;
      if (last) s.queue.shift();
      out.push({ streamId, data: piece, end: last && head.end });
    }
    if (s.queue.length > 0) this.blocked.add(streamId);
    else this.blocked.delete(streamId);
  }
}

const EMPTY = Buffer.alloc(0);

/** Receive side: the windows we gave the peer, checked on every DATA, given back in batches once the data has gone on. */
export class ReceiveWindows {
  private connection: number;
  private connectionOwed = 0;
  private readonly streams = new Map<number, { window: number; owed: number }>();

  constructor(
    /** The connection window we announced (SETTINGS + WINDOW_UPDATE sent at start). */
    private readonly connectionSize: number,
    /** Our SETTINGS_INITIAL_WINDOW_SIZE. */
    private readonly streamSize: number,
  ) {
    this.connection = connectionSize;
  }

  open(streamId: number): void {
    this.streams.set(streamId, { window: this.streamSize, owed: 0 });
  }

  close(streamId: number): void {
    this.streams.delete(streamId);
  }

  /** A DATA frame of `length` octets (padding included) arrived; throws when past a window we gave. */
  received(streamId: number, length: number): void {
    if (length > this.connection) throw new H2ConnectionError(FLOW_CONTROL_ERROR, 'DATA past the connection window');
    this.connection -= length;
    const s = this.streams.get(streamId);
    if (s === undefined) return;
    if (length > s.window) throw new H2StreamError(streamId, FLOW_CONTROL_ERROR, 'DATA past the stream window');
    s.window -= length;
  }

  /**
   * `length` octets received on `streamId` were consumed (sent on, or dropped).
   * Returns the WINDOW_UPDATE increments to send now: [connection, stream] (0: none).
   */
  consumed(streamId: number, length: number): [number, number] {
    if (length === 0) return [0, 0];
    this.connectionOwed += length;
    let conn = 0;
    if (this.connectionOwed >= this.connectionSize / 2) {
      conn = this.connectionOwed;
      this.connection += conn;
      this.connectionOwed = 0;
    }
    const s = this.streams.get(streamId);
    let stream = 0;
    if (s !== undefined) {
      s.owed += length;
      if (s.owed >= this.streamSize / 2) {
        stream = s.owed;
        s.window += stream;
        s.owed = 0;
      }
    }
    return [conn, stream];
  }
}
