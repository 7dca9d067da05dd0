// Access lines for a batch of finished connections (a warm listener's
// records, read once per loop turn): each line exactly as logAccess writes
// it, made from text pieces the caller keeps per decision instead of an
// object per connection, and the batch written with one write.

import { infoLineStart, logInfoLine, writeInfoLines, type Logger } from '../runtime/log.js';
import { ACCESS_LINE_MESSAGE } from './proxied-connection.js';

/** `,"key":value` for each of `fields`, in order: a piece of an access line, made once and reused. */
export function accessMembers(fields: Readonly<Record<string, unknown>>): string {
  const body = JSON.stringify(fields);
  return body.length > 2 ? `,${body.slice(1, -1)}` : '';
}

/** `,"key":"value"`, or nothing when the value is undefined. */
export function textMember(key: string, value: string | undefined): string {
  return value === undefined ? '' : `,"${key}":${JSON.stringify(value)}`;
}

const MESSAGE_MEMBER = `,"msg":${JSON.stringify(ACCESS_LINE_MESSAGE)}}\n`;

export class AccessLines {
  private chunk = '';
  private count = 0;

  constructor(private readonly logger: Logger) {}

  /**
   * One connection's line. `members`: its fields' members (accessMembers,
   * textMember), `"log":"access"` first, as logAccess's fields are; then the
   * result as logAccess adds it.
   */
  add(members: string, bytesToUpstream: number, bytesToDownstream: number, durationMs: number, outcome: string, errorCode: string | undefined): void {
    const text = `${members},"bytes_to_upstream":${bytesToUpstream},"bytes_to_downstream":${bytesToDownstream},"duration_ms":${Math.round(durationMs)},"outcome":${JSON.stringify(outcome)}${textMember('error_code', errorCode)}`;
    const start = infoLineStart(this.logger);
    if (start === null) return;
    if (start === undefined) {
      // A logger made elsewhere (a child, a test's): through pino, line by line.
      logInfoLine(this.logger, JSON.parse(`{${text.slice(1)}}`) as Record<string, unknown>, ACCESS_LINE_MESSAGE);
      return;
    }
    this.chunk += `${start}${text}${MESSAGE_MEMBER}`;
    this.count++;
  }

  /** Writes the lines added since the last end(), with one write. */
  end(): void {
    if (this.count === 0) return;
    const chunk = this.chunk;
    const count = this.count;
    this.chunk = '';
    this.count = 0;
    writeInfoLines(this.logger, chunk, count);
  }
}

/** An access line's members before `key` (`"log":"access"` first, as logAccess writes it, then `fields`' before `key`) and after it, `key` itself left out: for a line whose `key` varies per connection. */
export function membersAround(fields: Readonly<Record<string, unknown>>, key: string): [string, string] {
  const before: Record<string, unknown> = { log: 'access' };
  const after: Record<string, unknown> = {};
  let seen = false;
  for (const [k, v] of Object.entries(fields)) {
    if (k === key) seen = true;
    else (seen ? after : before)[k] = v;
  }
  if (!seen) throw new Error(`membersAround: no ${key} member`);
  return [accessMembers(before), accessMembers(after)];
}
