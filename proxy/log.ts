// Structured logs (pino, JSON lines on stdout). Access-log lines carry
// `"log":"access"`; refusals and errors carry a `reason`.

import { pino, type DestinationStream, type Logger } from 'pino';
import type { LogLevel } from './config/types.js';

export type { Logger };

export interface LoggerOptions {
  level: LogLevel;
  /** Where lines go; default stdout (fd 1), each line written at once. */
  destination?: NodeJS.WritableStream | number;
  name?: string;
}

function build(options: LoggerOptions, destination: DestinationStream): Logger {
  return pino(
    {
      level: options.level,
      base: options.name === undefined ? null : { name: options.name },
      timestamp: pino.stdTimeFunctions.isoTime,
      formatters: { level: (label) => ({ level: label }) },
    },
    destination,
  );
}

/** The operational log: starts, stops, refusals, errors. Written synchronously, line by line. */
export function createLogger(options: LoggerOptions): Logger {
  const destination = typeof options.destination === 'object' ? options.destination : pino.destination({ dest: options.destination ?? 1, sync: true });
  return build(options, destination);
}

/** Access lines are batched: written when 8 KiB gather or every second, whichever comes first. */
export const ACCESS_LOG_FLUSH_MS = 1_000;

/**
 * The access log: one line per connection, so it is on the hot path. Lines
 * are buffered (one write per many connections, no thread hand-off) and
 * flushed every second and on stop.
 */
export function createAccessLogger(options: LoggerOptions): Logger {
  const destination =
    typeof options.destination === 'object'
      ? options.destination
      : pino.destination({ dest: options.destination ?? 1, sync: true, minLength: 8 * 1024, maxWrite: 64 * 1024, periodicFlush: ACCESS_LOG_FLUSH_MS });
  return build(options, destination);
}

/** A logger that drops everything (tests that do not look at logs). */
export function silentLogger(): Logger {
  return pino({ level: 'silent' });
}

/** `host:port`, with brackets for IPv6. */
export function formatAddress(address: string | undefined, port: number | undefined): string {
  if (address === undefined) return '-';
  const host = address.includes(':') ? `[${address}]` : address;
  return port === undefined ? host : `${host}:${port}`;
}
