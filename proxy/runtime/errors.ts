// One base error for every role: a stable `code` that callers branch on (by
// class or by code, never by the shape of an object), as undici's UND_ERR_*
// codes. The codes are gRPC's status names, because most of these errors end
// up as a gRPC status (xds/grpc-status.ts maps them, in one place) and a
// client's failed call comes back as one.

export type ErrorCode =
  | 'CANCELLED'
  | 'UNKNOWN'
  | 'INVALID_ARGUMENT'
  | 'DEADLINE_EXCEEDED'
  | 'NOT_FOUND'
  | 'ALREADY_EXISTS'
  | 'PERMISSION_DENIED'
  | 'RESOURCE_EXHAUSTED'
  | 'FAILED_PRECONDITION'
  | 'ABORTED'
  | 'OUT_OF_RANGE'
  | 'UNIMPLEMENTED'
  | 'INTERNAL'
  | 'UNAVAILABLE'
  | 'DATA_LOSS'
  | 'UNAUTHENTICATED';

export class VsockmeshError extends Error {
  constructor(
    readonly code: ErrorCode,
    message: string,
    options?: ErrorOptions,
  ) {
    super(message, options);
    this.name = new.target.name;
  }
}

/** Something looked up by name or id does not exist. */
export class NotFoundError extends VsockmeshError {
  constructor(
    /** What was looked for, e.g. `VM "web-1"`. */
    readonly what: string,
    message = `${what} not found`,
  ) {
    super('NOT_FOUND', message);
  }
}

/** The code of a VsockmeshError; undefined for anything else (an unexpected error). */
export function errorCode(err: unknown): ErrorCode | undefined {
  return err instanceof VsockmeshError ? err.code : undefined;
}
