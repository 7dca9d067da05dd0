// A log destination for tests: every JSON line a logger writes, parsed.

import { Writable } from 'node:stream';

export interface LogLine {
  level: string;
  msg: string;
  [key: string]: unknown;
}

export class LogCapture extends Writable {
  readonly lines: LogLine[] = [];
  override _write(chunk: Buffer, _encoding: BufferEncoding, done: () => void): void {
    for (const line of chunk.toString('utf8').split('\n')) if (line) this.lines.push(JSON.parse(line) as LogLine);
    done();
  }
  access(): LogLine[] {
    return this.lines.filter((l) => l.log === 'access');
  }
  withReason(reason: string): LogLine[] {
    return this.lines.filter((l) => l.reason === reason);
  }
}
