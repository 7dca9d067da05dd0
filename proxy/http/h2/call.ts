// One client stream of the frame-level h2c forwarder and the upstream
// stream it is forwarded on: the request's body counted against its
// content-length, the answer passed back (hop-by-hop fields dropped), the
// sidecar's own answer when there is none, each side's credit given back
// once the other has taken its data. Retries: the host (the listener, with
// the route's retry policy and the cluster's budget) is asked after a failed
// attempt (connect failure, reset or refused stream, per-try timeout, a
// status it retries) while no answer has reached the client, and may send
// the request again on another upstream stream: its header fields, and its
// body and trailers when held whole (a route that may retry keeps a copy up
// to MAX_REPLAY_BODY_BYTES; past that the body is not replayable).

import { hopByHop } from '../headers.js';
import type { HeaderField } from './hpack.js';
import { CANCEL, INTERNAL_ERROR, NO_ERROR } from './frames.js';
import { MAX_REPLAY_BODY_BYTES, type RetryCause } from '../retry.js';
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
  /** Set by the host: after a failed attempt, either sends the request again (`resend`) or answers the call, and says true; false: no retry. */
  retry: (cause: RetryCause) => boolean = () => false;
  /** Set by the host before `attach`: statuses its route retries, the per-try timeout, whether to keep the body for a replay. */
  retryStatuses: readonly number[] = [];
  perTryTimeoutMs: number | undefined;
  keepBody = false;
  private fields: HeaderField[] = [];
  /** The request body held for a replay (while `keepBody` and within MAX_REPLAY_BODY_BYTES), its length, the trailers. */
  private held: Buffer[] = [];
  private heldBytes = 0;
  private received = 0;
  private trailers: HeaderField[] | undefined;
  /** Request octets credited back to the client, and taken by the current attempt's upstream stream (a replay credits only past the first). */
  private credited = 0;
  private attemptSent = 0;
  private perTry: ReturnType<typeof setTimeout> | undefined;

  constructor(
    readonly down: DownstreamH2,
    readonly streamId: number,
  ) {}

  /** Sends the request on `up`. */
  attach(up: UpstreamH2, fields: HeaderField[], endStream: boolean): void {
    this.fields = fields;
    this.requestEnded = endStream;
    this.send(up);
  }

  /** The whole body so far is held (or there is none): another attempt can be sent it from the start. */
  get replayable(): boolean {
    return this.received === 0 || (this.keepBody && this.heldBytes === this.received);
  }

  /** Another attempt on `up`: the last one's stream cancelled, the request sent again with what is held of its body. */
  resend(up: UpstreamH2): void {
    this.dropAttempt();
    this.attemptSent = 0;
    this.send(up);
    const id = this.upStreamId;
    const trailers = this.trailers;
    for (let i = 0; i < this.held.length; i++) up.data(id, this.held[i]!, this.requestEnded && trailers === undefined && i === this.held.length - 1);
    if (trailers !== undefined) up.headers(id, trailers, true);
  }

  private send(up: UpstreamH2): void {
    this.up = up;
    const endStream = this.requestEnded && this.received === 0 && this.trailers === undefined;
    this.upStreamId = up.open(this, this.fields, endStream);
    if (this.perTryTimeoutMs !== undefined) this.perTry = setTimeout(() => this.attemptFailed({ kind: 'per_try_timeout' }, 504, 'per_try_timeout'), this.perTryTimeoutMs);
  }

  /** The current attempt's upstream stream is left: cancelled, forgotten, its per-try timer stopped. */
  private dropAttempt(): void {
    clearTimeout(this.perTry);
    this.perTry = undefined;
    if (this.up === undefined) return;
    this.up.reset(this.upStreamId, CANCEL);
    this.up.forget(this.upStreamId);
  }

  /** An attempt failed before any answer reached the client: retried if the host will, else answered `status`. */
  private attemptFailed(cause: RetryCause, status: number, why: string): void {
    if (this.closed || this.responded) return;
    if (this.retry(cause)) return;
    this.answer(status, why);
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
    this.received += data.length;
    if (this.keepBody && data.length > 0) {
      if (this.heldBytes + data.length <= MAX_REPLAY_BODY_BYTES) {
        this.held.push(Buffer.from(data));
        this.heldBytes += data.length;
      } else {
        this.keepBody = false;
        this.held = [];
      }
    }
    // Data with nowhere to go is consumed here: the client's credit comes back.
    if (this.up === undefined || this.closed || !this.up.data(this.upStreamId, data, end)) this.requestSent(data.length);
  }

  requestTrailers(fields: HeaderField[]): void {
    this.requestEnded = true;
    if (this.keepBody) this.trailers = fields;
    if (this.up !== undefined && !this.closed) this.up.headers(this.upStreamId, fields, true);
  }

  /** `n` octets of the request went upstream (or were dropped): the client may send as much again. */
  requestSent(n: number): void {
    this.attemptSent += n;
    if (this.attemptSent <= this.credited) return;
    this.down.consumed(this.streamId, this.attemptSent - this.credited);
    this.credited = this.attemptSent;
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
        if (this.retryStatuses.includes(status) && this.retry({ kind: 'status', status })) return;
        clearTimeout(this.perTry);
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
  upstreamFailed(why: string, cause?: RetryCause): void {
    if (this.closed) return;
    if (this.responded) {
      this.reason ??= why;
      this.down.sendReset(this.streamId, INTERNAL_ERROR);
      this.close();
    } else if (cause !== undefined) this.attemptFailed(cause, 502, why);
    else this.answer(502, why);
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
    clearTimeout(this.perTry);
    this.down.forget(this.streamId);
    this.up?.forget(this.upStreamId);
    this.onEnd();
  }
}
