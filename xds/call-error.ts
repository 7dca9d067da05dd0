// What a client of our gRPC APIs (the VM manager, the config API) rejects
// with when a call fails. No gRPC import here: `vsockmesh ctl` recognises it
// without loading gRPC until a command runs (xds/grpc-status.ts makes them).

import { VsockmeshError, type ErrorCode } from '../proxy/runtime/errors.js';

export class CallError extends VsockmeshError {
  constructor(
    /** The gRPC status name, e.g. UNAVAILABLE. */
    code: ErrorCode,
    /** The status message: the server's own when `answered`. */
    readonly details: string,
    /** The server answered with this status (false: it was not reached, or did not answer in time). */
    readonly answered = false,
  ) {
    super(code, `${code}: ${details}`);
  }
}
