// Structured logs (pino, JSON lines on stdout). Access-log lines carry
// `"log":"access"`; refusals and errors carry a `reason`.
//
// Both loggers of a process write stdout through one LogSink
// (proxy/runtime/log-sink.ts): asynchronous, bounded (access lines dropped
// first), counted in vsockmesh_log_dropped_total, so a stalled log reader never
// blocks the event loop the native core relays on. Tests and the demo pass
// their own destination streams instead.

import { pino, type DestinationStream, type Logger } from 'pino';
import { stdoutWriter } from './log-output.js';
import { LogSink, type LogKind, type OverflowNotice, type SinkStream } from './log-sink.js';
import { isoTime } from './utc-time.js';

export type LogLevel = 'fatal' | 'error' | 'warn' | 'info' | 'debug' | 'trace' | 'silent';

export type { Logger };

export interface LoggerOptions {
  level: LogLevel;
  /** Where lines go; default stdout through the process's log sink. */
  destination?: NodeJS.WritableStream | DestinationStream;
  name?: string;
}

/** The loggers build() made: where their lines go, and their base fields as pino writes them after `time`. */
const lineWriters = new WeakMap<Logger, { destination: DestinationStream; base: string }>();

function build(options: LoggerOptions, destination: DestinationStream): Logger {
  const logger = pino(
    {
      level: options.level,
      base: options.name === undefined ? null : { name: options.name },
      // pino's stdTimeFunctions.isoTime, but made without Date's toISOString (utc-time.ts).
      timestamp: () => `,"time":"${isoNow()}"`,
      formatters: { level: (label) => ({ level: label }) },
    },
    destination,
  );
  // A multistream wants each line's level set first, by pino.
  if (!(pino.symbols.needsMetadataGsym in destination)) lineWriters.set(logger, { destination, base: options.name === undefined ? '' : `,"name":${JSON.stringify(options.name)}` });
  return logger;
}

/**
 * `logger.info(fields, msg)` for a line per request or connection: the same JSON line pino
 * writes, but made by one JSON.stringify of `fields` instead of pino's
 * serialisation key by key (a third of an HTTP request's own allocation).
 * A logger made elsewhere (a child, a test's) logs through pino.
 */
export function logInfoLine(logger: Logger, fields: Readonly<Record<string, unknown>>, msg: string): void {
  const writer = lineWriters.get(logger);
  if (writer === undefined) return void logger.info(fields, msg);
  if (!logger.isLevelEnabled('info')) return;
  const body = JSON.stringify(fields);
  const fieldsPart = body.length > 2 ? `,${body.slice(1, -1)}` : '';
  writer.destination.write(`{"level":"info","time":"${isoNow()}"${writer.base}${fieldsPart},"msg":${JSON.stringify(msg)}}\n`);
}

/**
 * Lines as logInfoLine writes them, made by the caller for a batch (a warm
 * listener's finished connections) and written with one write
 * (writeInfoLines): a line's text before its fields, the time now; each line
 * then continues with its fields' members and `"msg"`. Undefined when the
 * logger is not one build() made (log each line with logInfoLine), null
 * when it logs no info.
 */
export function infoLineStart(logger: Logger): string | null | undefined {
  const writer = lineWriters.get(logger);
  if (writer === undefined) return undefined;
  if (!logger.isLevelEnabled('info')) return null;
  return `{"level":"info","time":"${isoNow()}"${writer.base}`;
}

/** `lines` whole lines made with infoLineStart, in one write (the log sink takes and counts them as lines). */
export function writeInfoLines(logger: Logger, chunk: string, lines: number): void {
  const destination = lineWriters.get(logger)?.destination as (DestinationStream & Partial<SinkStream>) | undefined;
  if (destination?.writeLines !== undefined) destination.writeLines(chunk, lines);
  else destination?.write(chunk);
}

let isoMs = -1;
let iso = '';

/** The time now as pino's isoTime writes it (isoTime); made once per millisecond (a busy listener logs several lines in one). */
function isoNow(): string {
  const now = Date.now();
  if (now !== isoMs) {
    isoMs = now;
    iso = isoTime(now);
  }
  return iso;
}

/** The operational log: starts, stops, refusals, errors. Each line is written at once (asynchronously). */
export function createLogger(options: LoggerOptions): Logger {
  return build(options, options.destination ?? stdoutSink().stream('operational'));
}

/**
 * The access log: one line per connection, so it is on the hot path. Lines
 * are batched (written when 8 KiB gather or after a second, whichever comes
 * first: one write per many connections) and are the first dropped when
 * stdout does not keep up.
 */
export function createAccessLogger(options: LoggerOptions): Logger {
  return build(options, options.destination ?? stdoutSink().stream('access'));
}

/** A logger that drops everything (tests that do not look at logs). */
export function silentLogger(): Logger {
  return pino({ level: 'silent' });
}

let sink: LogSink | undefined;

/** The process's stdout sink, made on first use. */
function stdoutSink(): LogSink {
  sink ??= new LogSink({ writer: stdoutWriter(), notice: overflowLine, onWriteError: reportWriteError });
  return sink;
}

/** Lines the stdout sink dropped, per log (zero while nothing logs to stdout). */
export function logLinesDropped(): Readonly<Record<LogKind, number>> {
  return sink?.dropped ?? { access: 0, operational: 0 };
}

/** The overflow warning and summary, formatted like pino's lines. */
function overflowLine(event: OverflowNotice): string {
  const time = new Date().toISOString();
  const line =
    event.kind === 'started'
      ? {
          level: 'warn',
          time,
          reason: 'log_overflow',
          buffer_bytes: event.capacityBytes,
          access_bytes: event.accessBytes,
          msg: 'log output is not keeping up (stdout not read): dropping access lines, then operational lines, until it catches up; counted in vsockmesh_log_dropped_total',
        }
      : {
          level: 'warn',
          time,
          reason: 'log_overflow_ended',
          dropped_access: event.dropped.access,
          dropped_operational: event.dropped.operational,
          duration_ms: event.durationMs,
          msg: `log output caught up: ${event.dropped.access} access and ${event.dropped.operational} operational lines were dropped over ${event.durationMs} ms`,
        };
  return `${JSON.stringify(line)}\n`;
}

const reportedWriteErrors = new Set<string>();

/** Once per error code, on stderr: the log itself is what fails. */
function reportWriteError(err: NodeJS.ErrnoException): void {
  const code = err.code ?? err.message;
  if (reportedWriteErrors.has(code)) return;
  reportedWriteErrors.add(code);
  process.stderr.write(`vsockmesh: cannot write logs to stdout (${code}): dropping log lines, counted in vsockmesh_log_dropped_total\n`);
}

/** `host:port`, with brackets for IPv6. */
export function formatAddress(address: string | undefined, port: number | undefined): string {
  if (address === undefined) return '-';
  const host = address.includes(':') ? `[${address}]` : address;
  return port === undefined ? host : `${host}:${port}`;
}
