// Structured logs (pino, JSON lines on stdout). Access-log lines carry
// `"log":"access"`; refusals and errors carry a `reason`.

import { pino, type Logger } from 'pino';
import type { LogLevel } from './config/types.js';

export type { Logger };

export interface LoggerOptions {
  level: LogLevel;
  /** Where lines go; default stdout, written asynchronously in batches. */
  destination?: NodeJS.WritableStream | number;
  name?: string;
}

export function createLogger(options: LoggerOptions): Logger {
  const destination =
    typeof options.destination === 'object'
      ? options.destination
      : pino.destination({ dest: options.destination ?? 1, sync: false });
  return pino(
    {
      level: options.level,
      base: options.name === undefined ? null : { name: options.name },
      timestamp: pino.stdTimeFunctions.isoTime,
      formatters: { level: (label) => ({ level: label }) },
      redact: { paths: ['*.password', '*.token', '*.secret', '*.authorization'], censor: '[redacted]' },
    },
    destination,
  );
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
