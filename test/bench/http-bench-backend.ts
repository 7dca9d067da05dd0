// The gRPC app of the HTTP benchmark (a child of http-bench.ts): an h2c
// server answering every unary call at once with an empty message and
// `grpc-status: 0` trailers, on node:http2 without grpc-js so that the app
// costs as little as it can in Node. Port on argv[2]; prints "ready" when
// it listens. Not a test.

import http2 from 'node:http2';

/** One empty gRPC message: not compressed, length 0. */
const EMPTY_MESSAGE = Buffer.alloc(5);

const server = http2.createServer({ settings: { maxConcurrentStreams: 1000 } });
server.on('stream', (stream) => {
  stream.on('error', () => {});
  // The request message is read and dropped; the answer goes once it has arrived, as a unary handler's would.
  stream.resume();
  stream.once('end', () => {
    if (stream.destroyed) return;
    stream.respond({ ':status': 200, 'content-type': 'application/grpc' }, { waitForTrailers: true });
    stream.once('wantTrailers', () => stream.sendTrailers({ 'grpc-status': '0' }));
    stream.end(EMPTY_MESSAGE);
  });
});
server.listen(Number(process.argv[2]), '127.0.0.1', () => process.stdout.write('{"msg":"ready"}\n'));
process.once('SIGTERM', () => process.exit(0));
