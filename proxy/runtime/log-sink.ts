// The log sink: the one writer of a process's stdout, through which the
// operational and the access logger both write. The native core relays on
// the event loop, so a log write must never wait on the log reader (a
// journald or container-runtime stall used to freeze every connection):
// - No synchronous write. A LogWriter writes asynchronously, one chunk at a
//   time, whole lines only, so lines of the two logs never interleave.
// - Bounded. Lines wait in memory up to `capacityBytes`; access lines are
//   taken only while less than `accessBytes` is buffered, operational lines
//   until the buffer is full, so the access log is dropped first. A line that
//   does not fit is dropped and counted per log.
// - An overflow episode (from the first drop until the buffer is back under
//   `resumeBytes`) writes one warning when it starts and one summary with the
//   counts when it ends, not a line per drop; these two bypass the bound.
// - Access lines are batched: written once `batchBytes` gather or `batchMs`
//   after the first; an operational line or a flush writes all that waits.

import { systemClock, type CancelTimer, type Clock } from './clock.js';

export type LogKind = 'access' | 'operational';

export interface LogWriter {
  /** Writes `chunk` (whole lines), then calls `done`; the sink never calls it again before `done`. */
  write(chunk: string, done: (err: Error | null) => void): void;
}

export type OverflowNotice =
  | { kind: 'started'; capacityBytes: number; accessBytes: number }
  | { kind: 'ended'; dropped: Record<LogKind, number>; durationMs: number };

export interface LogSinkLimits {
  /** Bytes buffered at most (lines waiting plus the write in flight). */
  capacityBytes: number;
  /** Access lines are dropped once this much is buffered. */
  accessBytes: number;
  /** An overflow episode ends when a write leaves no more than this buffered. */
  resumeBytes: number;
  /** Access lines gathered before they are written. */
  batchBytes: number;
  /** Longest an access line waits for a batch. */
  batchMs: number;
  /** Bytes per write (a longer single line is written alone). */
  maxWriteBytes: number;
}

const MiB = 1024 * 1024;

export const LOG_SINK_LIMITS: LogSinkLimits = {
  capacityBytes: 4 * MiB,
  accessBytes: 2 * MiB,
  resumeBytes: 1 * MiB,
  batchBytes: 8 * 1024,
  batchMs: 1_000,
  maxWriteBytes: 64 * 1024,
};

export interface LogSinkOptions {
  writer: LogWriter;
  /** The line (newline included) telling that an overflow episode started or ended. */
  notice: (event: OverflowNotice) => string;
  /** A write failed (the reader closed stdout, say); its lines are dropped and counted. */
  onWriteError?: (err: Error) => void;
  limits?: Partial<LogSinkLimits>;
  clock?: Clock;
}

/** What pino writes to: one line per write; flush(cb) calls back once every line written so far is out. */
export interface SinkStream {
  write(line: string): void;
  /** `lines` whole lines in one chunk (a batch of access lines): taken, dropped and counted as `lines` writes of each would be. */
  writeLines(chunk: string, lines: number): void;
  flush(cb?: (err?: Error) => void): void;
}

interface Entry {
  /** One line, or several (writeLines). */
  line: string;
  bytes: number;
  lines: number;
  kind: LogKind | 'notice';
}

interface InFlight {
  bytes: number;
  lines: number;
  kinds: Record<LogKind, number>;
}

/** Entries taken from the front of the queue before it is compacted (amortised O(1) per line). */
const COMPACT_AFTER = 4096;

export class LogSink {
  private readonly limits: LogSinkLimits;
  private readonly clock: Clock;
  private queue: Entry[] = [];
  private head = 0;
  private queuedBytes = 0;
  private inFlight: InFlight | undefined;
  /** Write what waits without waiting for a batch (an operational line, a flush, the batch timer). */
  private urgent = false;
  private cancelBatch: CancelTimer | undefined;
  private enqueued = 0;
  private settled = 0;
  private waiters: Array<{ upTo: number; cb: () => void }> = [];
  private episode: { startedAt: number; dropped: Record<LogKind, number> } | undefined;
  private readonly droppedLines: Record<LogKind, number> = { access: 0, operational: 0 };

  constructor(private readonly options: LogSinkOptions) {
    this.limits = { ...LOG_SINK_LIMITS, ...options.limits };
    this.clock = options.clock ?? systemClock;
  }

  /** Lines dropped so far, per log (never reset: a Prometheus counter). */
  get dropped(): Readonly<Record<LogKind, number>> {
    return { ...this.droppedLines };
  }

  get bufferedBytes(): number {
    return this.queuedBytes + (this.inFlight?.bytes ?? 0);
  }

  stream(kind: LogKind): SinkStream {
    return { write: (line) => this.write(kind, line), writeLines: (chunk, lines) => this.write(kind, chunk, lines), flush: (cb) => this.flush(cb) };
  }

  /** `lines` > 1: `line` holds that many whole lines; when they do not all fit, each is taken or dropped on its own. */
  write(kind: LogKind, line: string, lines = 1): void {
    const bytes = Buffer.byteLength(line);
    if (this.bufferedBytes + bytes > (kind === 'access' ? this.limits.accessBytes : this.limits.capacityBytes)) {
      if (lines > 1) {
        for (const one of line.split('\n').slice(0, -1)) this.write(kind, `${one}\n`);
        return;
      }
      this.drop(kind);
      return;
    }
    this.enqueue({ line, bytes, lines, kind });
    if (kind === 'operational') this.urgent = true;
    this.pump();
  }

  /** Writes what waits now; `cb` once every line accepted so far has been written (or failed). */
  flush(cb?: () => void): void {
    if (cb) {
      if (this.settled === this.enqueued) process.nextTick(cb);
      else this.waiters.push({ upTo: this.enqueued, cb });
    }
    this.urgent = true;
    this.pump();
  }

  private enqueue(entry: Entry): void {
    this.queue.push(entry);
    this.queuedBytes += entry.bytes;
    this.enqueued += entry.lines;
  }

  private drop(kind: LogKind): void {
    this.droppedLines[kind]++;
    if (this.episode === undefined) {
      this.episode = { startedAt: this.clock.now(), dropped: { access: 0, operational: 0 } };
      this.notice({ kind: 'started', capacityBytes: this.limits.capacityBytes, accessBytes: this.limits.accessBytes });
    }
    this.episode.dropped[kind]++;
  }

  private notice(event: OverflowNotice): void {
    const line = this.options.notice(event);
    this.enqueue({ line, bytes: Buffer.byteLength(line), lines: 1, kind: 'notice' });
    this.urgent = true;
    this.pump();
  }

  private pump(): void {
    if (this.inFlight !== undefined || this.head === this.queue.length) return;
    if (!this.urgent && this.queuedBytes < this.limits.batchBytes) {
      this.cancelBatch ??= this.clock.setTimer(() => {
        this.cancelBatch = undefined;
        this.urgent = true;
        this.pump();
      }, this.limits.batchMs);
      return;
    }
    this.cancelBatch?.();
    this.cancelBatch = undefined;
    const lines: string[] = [];
    const inFlight: InFlight = { bytes: 0, lines: 0, kinds: { access: 0, operational: 0 } };
    while (this.head < this.queue.length) {
      const entry = this.queue[this.head]!;
      if (lines.length > 0 && inFlight.bytes + entry.bytes > this.limits.maxWriteBytes) break;
      lines.push(entry.line);
      inFlight.bytes += entry.bytes;
      inFlight.lines += entry.lines;
      if (entry.kind !== 'notice') inFlight.kinds[entry.kind] += entry.lines;
      this.head++;
    }
    this.queuedBytes -= inFlight.bytes;
    if (this.head === this.queue.length) {
      this.queue = [];
      this.head = 0;
      this.urgent = false;
    } else if (this.head >= COMPACT_AFTER && this.head * 2 >= this.queue.length) {
      this.queue = this.queue.slice(this.head);
      this.head = 0;
    }
    this.inFlight = inFlight;
    this.options.writer.write(lines.join(''), (err) => this.written(err));
  }

  private written(err: Error | null): void {
    const done = this.inFlight!;
    this.inFlight = undefined;
    this.settled += done.lines;
    if (err) {
      // Not an overflow: the output is failing, and a warning would go the same way.
      this.droppedLines.access += done.kinds.access;
      this.droppedLines.operational += done.kinds.operational;
      this.options.onWriteError?.(err);
    }
    if (this.episode !== undefined && this.bufferedBytes <= this.limits.resumeBytes) {
      const { startedAt, dropped } = this.episode;
      this.episode = undefined;
      this.notice({ kind: 'ended', dropped, durationMs: Math.round(this.clock.now() - startedAt) });
    }
    while (this.waiters.length > 0 && this.waiters[0]!.upTo <= this.settled) this.waiters.shift()!.cb();
    this.pump();
  }
}
