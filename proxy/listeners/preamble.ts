// Reading what a connection must send before anything is relayed (a PROXY v2
// header, a host-relay header): within a size limit and a deadline, judged by
// a pure decoder as bytes arrive. The listener tracks the connection meanwhile,
// so a drain or stop can close it.

import { native } from '../native/index.js';
import type { TrackedConnection } from './listener.js';

export type PreambleDecode<T> =
  /** `needed`: total bytes the decoder wants before it can judge again (optional). */
  | { kind: 'incomplete'; needed?: number }
  | { kind: 'done'; value: T; length: number }
  | { kind: 'invalid'; code: string; reason: string };

export interface PreambleOptions<T> {
  /** Largest first read; later reads ask only for what `needed` says is missing. */
  maxBytes: number;
  timeoutMs: number;
  /** e.g. "PROXY v2 header", for refusal messages. */
  what: string;
  decode: (bytes: Buffer) => PreambleDecode<T>;
  track: (connection: TrackedConnection) => void;
  untrack: (connection: TrackedConnection) => void;
  /** What the native core's warm path read already (a connection it handed over), and how long that took of timeoutMs. */
  handedOver?: HandedOver;
}

/** A connection the warm path's header read handed to JavaScript: its bytes so far, and the time spent. */
export interface HandedOver {
  bytes: Buffer;
  elapsedMs: number;
}

export type PreambleResult<T> =
  /** `early`: bytes that followed the preamble in the same reads; they belong to the stream. */
  | { ok: true; value: T; early: Buffer | null }
  /** code: the decoder's, or timeout / truncated / peer_error / aborted. The caller closes fd (or relays `received`, what was read, as is). */
  | { ok: false; code: string; detail: string; received: Buffer };

export function readPreamble<T>(fd: number, options: PreambleOptions<T>, done: (result: PreambleResult<T>) => void): void {
  let buffered: Buffer = options.handedOver?.bytes ?? Buffer.alloc(0);
  let settled = false;
  const pending: TrackedConnection = {
    abort: () => settle({ ok: false, code: 'aborted', detail: 'closed by drain or stop' }),
  };
  const settle = (outcome: { ok: false; code: string; detail: string } | Extract<PreambleResult<T>, { ok: true }>): void => {
    if (settled) return;
    const result: PreambleResult<T> = outcome.ok ? outcome : { ...outcome, received: buffered };
    settled = true;
    clearTimeout(deadline);
    native.readStop(fd);
    options.untrack(pending);
    done(result);
  };
  const deadline = setTimeout(
    () => settle({ ok: false, code: 'timeout', detail: `no complete ${options.what} within ${options.timeoutMs}ms (${buffered.length} bytes received)` }),
    Math.max(0, options.timeoutMs - (options.handedOver?.elapsedMs ?? 0)),
  );
  options.track(pending);
  /** Judges what is buffered; the next read's maximum while incomplete. */
  const judge = (): number | undefined => {
    const result = options.decode(buffered);
    if (result.kind === 'incomplete') return result.needed !== undefined ? result.needed - buffered.length : undefined;
    if (result.kind === 'invalid') settle({ ok: false, code: result.code, detail: result.reason });
    else settle({ ok: true, value: result.value, early: result.length < buffered.length ? buffered.subarray(result.length) : null });
    return undefined;
  };
  let first = options.maxBytes;
  if (buffered.length > 0) {
    const next = judge();
    if (settled) return;
    first = next ?? Math.max(1, options.maxBytes - buffered.length);
  }
  native.readStart(fd, first, (error, chunk) => {
    if (error !== null) {
      settle({ ok: false, code: 'peer_error', detail: `peer error ${error} before the ${options.what} was read` });
      return;
    }
    if (chunk === null) {
      settle({
        ok: false,
        code: 'truncated',
        detail: buffered.length === 0 ? `peer closed before sending a ${options.what}` : `peer closed after ${buffered.length} bytes of an incomplete ${options.what}`,
      });
      return;
    }
    buffered = buffered.length === 0 ? chunk : Buffer.concat([buffered, chunk]);
    return judge();
  });
}
