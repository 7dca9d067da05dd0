// Control-API clients (channelOptions) try a unary call again when its stream
// ended with an HTTP/2 NO_ERROR reset before any response header, as a replica
// shutting down can end it; never a call the server had begun to answer, never
// a streaming call, and at most UNANSWERED_RETRIES times. The server is a raw
// Node HTTP/2 server speaking gRPC's framing, so each ending is made on purpose.

import test from 'ava';
import * as grpc from '@grpc/grpc-js';
import http2 from 'node:http2';
import type { AddressInfo } from 'node:net';
import { channelOptions } from '../../xds/security/transport.js';
import { UNANSWERED_RETRIES } from '../../xds/security/unanswered-retry.js';

type Ending = 'answer' | 'reset_before_headers' | 'reset_after_headers';

const raw = { requestSerialize: (b: Buffer) => b, requestDeserialize: (b: Buffer) => b, responseSerialize: (b: Buffer) => b, responseDeserialize: (b: Buffer) => b };
const service = {
  Echo: { path: '/test.Echo/Echo', requestStream: false, responseStream: false, ...raw },
  Watch: { path: '/test.Echo/Watch', requestStream: false, responseStream: true, ...raw },
};
const EchoClient = grpc.makeGenericClientConstructor(service, 'Echo');

/** A server that ends the n-th request (from 0) as `endings(n)` says, and counts the requests it saw. */
async function server(endings: (n: number) => Ending): Promise<{ address: string; requests: () => number; close: () => Promise<void> }> {
  let seen = 0;
  const h2 = http2.createServer();
  h2.on('stream', (stream) => {
    const ending = endings(seen++);
    stream.on('error', () => undefined);
    stream.resume();
    if (ending === 'reset_before_headers') {
      stream.close(http2.constants.NGHTTP2_NO_ERROR);
      return;
    }
    stream.respond({ ':status': 200, 'content-type': 'application/grpc' }, { waitForTrailers: true });
    if (ending === 'reset_after_headers') {
      setImmediate(() => stream.close(http2.constants.NGHTTP2_NO_ERROR));
      return;
    }
    const payload = Buffer.from('pong');
    const frame = Buffer.alloc(5 + payload.length);
    frame.writeUInt32BE(payload.length, 1);
    payload.copy(frame, 5);
    stream.on('wantTrailers', () => stream.sendTrailers({ 'grpc-status': '0' }));
    stream.end(frame);
  });
  await new Promise<void>((resolve) => h2.listen(0, '127.0.0.1', resolve));
  const sessions = new Set<http2.ServerHttp2Session>();
  h2.on('session', (s) => sessions.add(s));
  return {
    address: `127.0.0.1:${(h2.address() as AddressInfo).port}`,
    requests: () => seen,
    close: async () => {
      for (const s of sessions) s.destroy();
      await new Promise<void>((resolve) => h2.close(() => resolve()));
    },
  };
}

function echo(client: grpc.Client): Promise<{ err: grpc.ServiceError | null; answer?: string }> {
  return new Promise((resolve) => {
    (client as unknown as Record<string, (req: Buffer, o: grpc.CallOptions, cb: (err: grpc.ServiceError | null, res?: Buffer) => void) => void>)['Echo']!(Buffer.from('ping'), { deadline: new Date(Date.now() + 20_000) }, (err, res) => resolve({ err, answer: res?.toString() }));
  });
}

async function withClient<T>(address: string, run: (client: grpc.Client) => Promise<T>): Promise<T> {
  const client = new EchoClient(address, grpc.credentials.createInsecure(), channelOptions({ insecure: true }));
  try {
    return await run(client);
  } finally {
    client.close();
  }
}

test('a unary call whose stream was reset before any response header is answered by the next attempt', async (t) => {
  const s = await server((n) => (n === 0 ? 'reset_before_headers' : 'answer'));
  t.teardown(() => s.close());
  const { err, answer } = await withClient(s.address, echo);
  t.is(err, null);
  t.is(answer, 'pong');
  t.is(s.requests(), 2);
});

test('a call the server had begun to answer (response headers sent) is not tried again', async (t) => {
  const s = await server((n) => (n === 0 ? 'reset_after_headers' : 'answer'));
  t.teardown(() => s.close());
  const { err } = await withClient(s.address, echo);
  t.is(err?.code, grpc.status.INTERNAL);
  t.is(s.requests(), 1);
});

test(`a call never answered is tried ${UNANSWERED_RETRIES} more times, then fails with grpc-js's status`, async (t) => {
  const s = await server(() => 'reset_before_headers');
  t.teardown(() => s.close());
  const { err } = await withClient(s.address, echo);
  t.is(err?.code, grpc.status.INTERNAL);
  t.regex(err?.details ?? '', /RST_STREAM with code 0/);
  t.is(s.requests(), 1 + UNANSWERED_RETRIES);
});

test('a streaming call reset before any header is not tried again (its caller resumes)', async (t) => {
  const s = await server((n) => (n === 0 ? 'reset_before_headers' : 'answer'));
  t.teardown(() => s.close());
  const status = await withClient(s.address, (client) => {
    const call = (client as unknown as Record<string, (req: Buffer, o: grpc.CallOptions) => grpc.ClientReadableStream<Buffer>>)['Watch']!(Buffer.from('ping'), { deadline: new Date(Date.now() + 20_000) });
    call.on('data', () => undefined);
    call.on('error', () => undefined);
    return new Promise<grpc.StatusObject>((resolve) => call.on('status', resolve));
  });
  t.is(status.code, grpc.status.INTERNAL);
  t.is(s.requests(), 1);
});
