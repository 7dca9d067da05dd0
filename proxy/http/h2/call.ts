// One client stream of the frame-level h2c forwarder and the upstream
// stream it is forwarded on: the request's body counted against its
// content-length, the answer passed back (hop-by-hop fields dropped), the
// sidecar's own answer when there is none, each side's credit given back
// once the other has taken its data.

import { hopByHop } from '../headers.js';
import type { HeaderField } from './hpack.js';
import { CANCEL, INTERNAL_ERROR, NO_ERROR } from './frames.js';
import type { DownstreamH2 } from './downstream.js';
import type { UpstreamH2 } from './upstream.js';

/** One client stream and the upstream stream it is forwarded on. */
export class Call {
  up: UpstreamH2 | undefined;
  upStreamId = 0;
  status = 0;
  reason: string | undefined;
  private responded = false;
  private requestEnded = false;
  private closed = false;
  /** The request's content-length (-1: none) and the body octets seen. */
  contentLength = -1;
  private bodySeen = 0;
  /** Set by the host: the call's end (its metrics and access line). */
  onEnd: () => void = () => {};

  constructor(
    readonly down: DownstreamH2,
    readonly streamId: number,
  ) {}

  /** Sends the request on `up`. */
  attach(up: UpstreamH2, fields: HeaderField[], endStream: boolean): void {
    this.up = up;
    this.requestEnded = endStream;
    this.upStreamId = up.open(this, fields, endStream);
  }

  /** Counts request body octets against content-length: the reason they disagree, or undefined. */
  countBody(n: number, end: boolean): string | undefined {
    this.bodySeen += n;
    if (this.contentLength < 0) return undefined;
    if (this.bodySeen > this.contentLength || (end && this.bodySeen !== this.contentLength)) return `content-length ${this.contentLength}, DATA ${this.bodySeen}${end ? '' : '+'}`;
    return undefined;
  }

  get ended(): boolean {
    return this.closed;
  }

  requestData(data: Buffer, end: boolean): void {
    if (end) this.requestEnded = true;
    // Data with nowhere to go is consumed here: the client's credit comes back.
    if (this.up === undefined || this.closed || !this.up.data(this.upStreamId, data, end)) this.requestSent(data.length);
  }

  requestTrailers(fields: HeaderField[]): void {
    this.requestEnded = true;
    if (this.up !== undefined && !this.closed) this.up.headers(this.upStreamId, fields, true);
  }

  /** `n` octets of the request went upstream (or were dropped): the client may send as much again. */
  requestSent(n: number): void {
    this.down.consumed(this.streamId, n);
  }

  /** `n` octets of the answer went to the client (or were dropped): the upstream may send as much again. */
  responseSent(n: number): void {
    if (this.up === undefined) return;
    this.up.consumed(this.upStreamId, n);
  }

  clientReset(): void {
    this.up?.reset(this.upStreamId, CANCEL);
    this.reason ??= 'downstream_reset';
    this.close();
  }

  responseHeaders(fields: HeaderField[], end: boolean): void {
    if (this.closed) return;
    if (!this.responded) {
      const status = Number(fields.find(([n]) => n === ':status')?.[1] ?? 0);
      // An informational answer goes on; the final one follows.
      if (status >= 200) {
        this.responded = true;
        this.status = status;
      }
    }
    this.down.sendHeaders(this.streamId, fields.some(([n]) => hopByHop(n)) ? fields.filter(([n]) => !hopByHop(n)) : fields, end);
    if (end) this.responseEnded();
  }

  /** Answer data; false when the call is gone (its credit is the caller's to give back). */
  responseData(data: Buffer, end: boolean): boolean {
    if (this.closed) return false;
    this.down.sendData(this.streamId, data, end);
    if (end) this.responseEnded();
    return true;
  }

  private responseEnded(): void {
    // The answer is whole: a client still sending is told to stop (RFC 9113 8.1),
    // and the upstream stream, half open on its side, is closed.
    if (!this.requestEnded) {
      this.down.sendReset(this.streamId, NO_ERROR);
      this.up?.reset(this.upStreamId, CANCEL);
    }
    this.close();
  }

  /** The upstream stream ended without an answer end: `refused` (REFUSED_STREAM, GOAWAY past it), reset, or its connection gone. */
  upstreamFailed(why: string): void {
    if (this.closed) return;
    if (this.responded) {
      this.reason ??= why;
      this.down.sendReset(this.streamId, INTERNAL_ERROR);
      this.close();
    } else this.answer(502, why);
  }

  /** The sidecar's own answer. */
  answer(status: number, reason: string): void {
    if (this.closed) return;
    this.reason ??= reason;
    if (this.responded) {
      this.down.sendReset(this.streamId, INTERNAL_ERROR);
      this.up?.reset(this.upStreamId, CANCEL);
      this.close();
      return;
    }
    this.up?.reset(this.upStreamId, CANCEL);
    this.status = status;
    this.responded = true;
    this.down.sendHeaders(this.streamId, [[':status', String(status)], ['x-vsockmesh-reason', reason], ['content-type', 'text/plain']], false);
    this.down.sendData(this.streamId, Buffer.from(`${reason}\n`), true);
    this.responseEnded();
  }

  private close(): void {
    if (this.closed) return;
    this.closed = true;
    this.down.forget(this.streamId);
    this.up?.forget(this.upStreamId);
    this.onEnd();
  }
}
