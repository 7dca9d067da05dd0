// An HTTP/2 request body as the retries of its request need it. It goes to
// the current attempt as it arrives (a gRPC stream's messages are never held
// back, or a call that waits for an answer before it ends its side would
// hang), and a copy is kept while the body stays within
// MAX_REPLAY_BODY_BYTES, so that another attempt can be sent it from the
// start. A body that grows past that is streamed on once and can no longer
// be retried, as an HTTP/1.1 body over the bound never is.

import type { Readable, Writable } from 'node:stream';
import { MAX_REPLAY_BODY_BYTES } from './retry.js';

export class ReplayBody {
  private readonly held: Buffer[] = [];
  private heldBytes = 0;
  private received = 0;
  private kept: boolean;
  private target: Writable | undefined;

  /** `keep`: whether to keep a copy at all (a route that may retry). */
  constructor(
    private readonly source: Readable,
    keep: boolean,
  ) {
    this.kept = keep;
    source.on('data', (chunk: Buffer) => {
      this.received += chunk.length;
      if (this.kept) {
        this.heldBytes += chunk.length;
        this.kept = this.heldBytes <= MAX_REPLAY_BODY_BYTES;
        if (this.kept) this.held.push(chunk);
        else this.held.length = 0;
      }
      const to = this.target;
      if (to !== undefined && !to.write(chunk)) {
        source.pause();
        to.once('drain', () => source.resume());
      }
    });
    source.once('end', () => this.target?.end());
  }

  /** Everything read so far is held: another attempt can be sent the body from the start. */
  get replayable(): boolean {
    return this.kept;
  }

  /** The body is over and had no byte: an attempt's headers can end the request. */
  get endedEmpty(): boolean {
    return this.source.readableEnded && this.received === 0;
  }

  /** Sends the body to `to`, an attempt's request: what was held, then the rest as it comes. */
  sendTo(to: Writable): void {
    this.target = to;
    if (to.writableEnded) return;
    for (const chunk of this.held) to.write(chunk);
    if (this.source.readableEnded) to.end();
    // The last attempt may have paused the body waiting for a drain that will never come.
    else this.source.resume();
  }
}
