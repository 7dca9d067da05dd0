// An HTTP/1.1 upgrade (WebSocket) carried on after the upstream's 101: the
// client's bytes after its request's head go to the upstream connection that
// switched protocols, and the upstream's back through the request's answer
// (in request order, with its backpressure): L4 through the same upstream
// connection. Each side's end is passed on (half-close); a reset of either
// side closes both.

import type { Http1ServerRequest } from './http1-server.js';
import type { UpstreamSocket } from './upstream-pool.js';

/** Carries `request`'s connection on through `upstream`; `rest`: the upstream's bytes read after its 101's head. */
export function tunnel(request: Http1ServerRequest, upstream: UpstreamSocket, rest: Buffer): void {
  const client = request.connection.socket;
  const toClient = (chunk: Buffer): void => {
    if (!request.write(chunk)) {
      upstream.pause();
      request.whenWritable(() => upstream.resume());
    }
  };
  if (rest.length > 0) toClient(rest);
  upstream.on('data', toClient);
  // The answer ends with the upstream's side: the client's connection is ended once it is written.
  upstream.once('end', () => request.finish(true));
  upstream.once('close', () => {
    if (!request.answered) client.destroy();
  });
  upstream.on('error', () => undefined);
  client.once('close', () => upstream.destroy());
  request.readTunnel(
    (chunk) => {
      if (!upstream.write(chunk)) {
        client.pause();
        upstream.once('drain', () => client.resume());
      }
    },
    () => upstream.end(),
  );
  upstream.resume();
}
