// Who a failed gRPC call's status comes from: the server, which answered (its
// message is what to show), or grpc-js itself, which could not reach it (no
// connection, or a deadline that passed with no answer).

import type * as grpc from '@grpc/grpc-js';

/**
 * A status the server sent arrives with its response headers (content-type
 * at least, in the trailers of an error-only answer); one grpc-js makes up
 * locally carries no metadata at all.
 */
export function answeredByServer(err: grpc.ServiceError): boolean {
  return err.metadata !== undefined && Object.keys(err.metadata.getMap()).length > 0;
}
