// A unary call whose HTTP/2 stream ended before any response header is tried
// again. grpc-js reports that ending as INTERNAL "Received RST_STREAM with code
// 0 (Call ended without gRPC status)": a replica shutting down can end a stream
// that way (seen once in ~3,000 calls through a restart, grpc/grpc-node#2569),
// and grpc-js's own retry policy (RETRY_UNAVAILABLE) cannot tell it from a
// server's INTERNAL answer, which must not be retried. A server that sent its
// response headers has answered: that call is never tried again. Streaming
// calls are left alone (their callers reconnect and resume).

import * as grpc from '@grpc/grpc-js';

/** How many more times one call is tried. */
export const UNANSWERED_RETRIES = 2;

/** The attempt ended with an HTTP/2 NO_ERROR reset before the server sent a response header. */
export function unanswered(status: grpc.StatusObject, sawResponseHeaders: boolean): boolean {
  return !sawResponseHeaders && status.code === grpc.status.INTERNAL && status.details.startsWith('Received RST_STREAM with code 0');
}

export const retryUnanswered: grpc.Interceptor = (options, nextCall) => {
  const method = options.method_definition;
  if (method.requestStream || method.responseStream) return new grpc.InterceptingCall(nextCall(options));
  let request: unknown;
  let metadata: grpc.Metadata | undefined;
  let retry: ReturnType<grpc.NextCall> | undefined;
  let cancelled = false;
  let retries = 0;
  return new grpc.InterceptingCall(nextCall(options), {
    start(md, listener, next) {
      metadata = md.clone();
      const tryAgain = (previous: grpc.StatusObject): void => {
        retries++;
        let headers = false;
        let call: ReturnType<grpc.NextCall>;
        try {
          call = nextCall(options);
        } catch {
          // The client was closed meanwhile: the caller hears how its call ended.
          listener.onReceiveStatus(previous);
          return;
        }
        retry = call;
        call.start(metadata!.clone(), {
          onReceiveMetadata: (m) => {
            headers = true;
            listener.onReceiveMetadata(m);
          },
          onReceiveMessage: (message) => listener.onReceiveMessage(message),
          onReceiveStatus: (status) => (!cancelled && retries < UNANSWERED_RETRIES && unanswered(status, headers) ? tryAgain(status) : listener.onReceiveStatus(status)),
        });
        call.sendMessage(request);
        call.halfClose();
      };
      let headers = false;
      next(md, {
        onReceiveMetadata: (m, pass) => {
          headers = true;
          pass(m);
        },
        onReceiveMessage: (message, pass) => pass(message),
        onReceiveStatus: (status, pass) => (!cancelled && unanswered(status, headers) ? tryAgain(status) : pass(status)),
      });
    },
    sendMessage(message, next) {
      request = message;
      next(message);
    },
    cancel(next) {
      cancelled = true;
      retry?.cancelWithStatus(grpc.status.CANCELLED, 'Cancelled on client');
      next();
    },
  });
};
