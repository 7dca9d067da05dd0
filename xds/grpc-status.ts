// Errors and gRPC statuses, both ways, in one place: a server answers a
// VsockmeshError with the status of its code (anything else is INTERNAL), and
// a client turns a failed call into a CallError carrying the status name.

import * as grpc from '@grpc/grpc-js';
import { errorCode, type ErrorCode } from '../proxy/runtime/errors.js';
import { CallError } from './call-error.js';

export interface CallStatus {
  code: grpc.status;
  details: string;
}

/** The status a server answers `err` with. */
export function statusOf(err: unknown): CallStatus {
  const code = errorCode(err);
  if (code === undefined) return { code: grpc.status.INTERNAL, details: `internal error: ${err instanceof Error ? err.message : String(err)}` };
  return { code: grpc.status[code], details: (err as Error).message };
}

/** The status name of a status number (UNKNOWN for a number gRPC does not define). */
export function statusName(code: grpc.status): ErrorCode | 'OK' {
  return (grpc.status[code] as ErrorCode | 'OK' | undefined) ?? 'UNKNOWN';
}

/** A unary call with a deadline `timeoutMs` from now; a failure rejects with callError's CallError. */
export function unaryCall<Res>(timeoutMs: number, start: (options: { deadline: Date }, cb: (err: grpc.ServiceError | null, res?: Res) => void) => void): Promise<Res> {
  return new Promise((resolve, reject) => {
    start({ deadline: new Date(Date.now() + timeoutMs) }, (err, res) => (err ? reject(callError(err)) : resolve(res as Res)));
  });
}

/** A failed call as the client's caller sees it. */
export function callError(err: grpc.ServiceError): CallError {
  const name = statusName(err.code);
  // A failed call never carries OK; a status that says so anyway is not one we understand.
  return new CallError(name === 'OK' ? 'UNKNOWN' : name, err.details || err.message, answeredByServer(err));
}

/**
 * Who a failed call's status comes from: a status the server sent arrives with
 * its response headers (content-type at least, in the trailers of an
 * error-only answer); one grpc-js makes up locally (no connection, a deadline
 * that passed with no answer) carries no metadata at all, except the count of
 * attempts grpc-js adds itself after retries (RETRY_UNAVAILABLE).
 */
function answeredByServer(err: grpc.ServiceError): boolean {
  return err.metadata !== undefined && Object.keys(err.metadata.getMap()).some((key) => key !== 'grpc-previous-rpc-attempts');
}
