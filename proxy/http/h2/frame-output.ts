// Frames queued on one HTTP/2 connection, written together once per tick.

import type { Duplex } from 'node:stream';

export class FrameOutput {
  private queue: Buffer[] = [];
  private scheduled = false;
  constructor(private readonly socket: Duplex) {}
  push(buf: Buffer): void {
    this.queue.push(buf);
    if (!this.scheduled) {
      this.scheduled = true;
      process.nextTick(this.flush);
    }
  }
  readonly flush = (): void => {
    this.scheduled = false;
    const q = this.queue;
    this.queue = [];
    if (q.length === 0 || this.socket.destroyed) return;
    this.socket.write(q.length === 1 ? q[0]! : Buffer.concat(q));
  };
}
