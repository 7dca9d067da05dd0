// The HTTP/2 frame codec and HPACK (proxy/http/h2/) against Node's http2
// (nghttp2) as a real peer on loopback, both ways: what a Node client sends
// (Huffman strings, its dynamic table across requests, a header block split
// into CONTINUATIONs) decodes to the headers it was given, and the blocks our
// encoder writes are read by Node as what we meant, answers and trailers too.

import test from 'ava';
import http2 from 'node:http2';
import net from 'node:net';
import type { AddressInfo } from 'node:net';
import { CONTINUATION, DATA, FLAG_ACK, FLAG_END_HEADERS, FLAG_END_STREAM, FrameReader, HEADERS, PREFACE, SETTINGS, frame, frameHeader, headerFrames, settingsFrame } from '../../proxy/http/h2/frames.js';
import { HpackDecoder, encodeHeaderBlock, type HeaderField } from '../../proxy/http/h2/hpack.js';

type Block = { streamId: number; endStream: boolean; fields: HeaderField[]; frames: number };

/** Reads frames off `socket` (after `skip` octets), decoding header blocks with one decoder; DATA and SETTINGS reported too. */
function frameLog(socket: net.Socket, skip: number, maxFrameSize = 16384): { blocks: Block[]; data: Array<{ streamId: number; payload: string; end: boolean }>; settings: number; next: (n: number) => Promise<void> } {
  const decoder = new HpackDecoder(4096, 1 << 20);
  const log = { blocks: [] as Block[], data: [] as Array<{ streamId: number; payload: string; end: boolean }>, settings: 0, next: (_n: number) => Promise.resolve() };
  const waiters: Array<{ n: number; resolve: () => void }> = [];
  const check = (): void => {
    for (const w of [...waiters]) if (log.blocks.length >= w.n) {
      waiters.splice(waiters.indexOf(w), 1);
      w.resolve();
    }
  };
  log.next = (n) => new Promise<void>((resolve) => {
    waiters.push({ n, resolve });
    check();
  });
  let parts: Buffer[] = [];
  let open: { streamId: number; endStream: boolean } | undefined;
  const reader = new FrameReader((type, flags, streamId, payload) => {
    if (type === SETTINGS && !(flags & FLAG_ACK)) {
      log.settings++;
      socket.write(frame(SETTINGS, FLAG_ACK, 0));
    }
    if (type === DATA) log.data.push({ streamId, payload: payload.toString('latin1'), end: (flags & FLAG_END_STREAM) !== 0 });
    if (type === HEADERS) {
      open = { streamId, endStream: (flags & FLAG_END_STREAM) !== 0 };
      parts = [];
    }
    if (type === HEADERS || type === CONTINUATION) {
      parts.push(payload);
      if (flags & FLAG_END_HEADERS) {
        log.blocks.push({ ...open!, fields: decoder.decode(Buffer.concat(parts)).fields, frames: parts.length });
        check();
      }
    }
  }, maxFrameSize);
  let skipped = 0;
  socket.on('data', (chunk: Buffer) => {
    let bytes = chunk;
    if (skipped < skip) {
      const n = Math.min(skip - skipped, bytes.length);
      skipped += n;
      bytes = bytes.subarray(n);
    }
    if (bytes.length > 0) reader.push(bytes);
  });
  return log;
}

const regular = (fields: HeaderField[]): HeaderField[] => fields.filter(([n]) => !n.startsWith(':'));

test('a Node http2 client: its requests decode to what it sent (Huffman, dynamic table, CONTINUATION), and it reads our answers and trailers', async (t) => {
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const accepted = new Promise<net.Socket>((resolve) => server.once('connection', resolve));
  const client = http2.connect(`http://127.0.0.1:${(server.address() as AddressInfo).port}`);
  client.on('error', () => {});
  const socket = await accepted;
  const log = frameLog(socket, PREFACE.length);
  socket.write(settingsFrame([]));
  const big = 'b'.repeat(30000);
  const sent = [
    { ':method': 'POST', ':path': '/bench.Echo/Unary', 'content-type': 'application/grpc', te: 'trailers', 'x-custom': 'one value', 'grpc-timeout': '1S' },
    { ':method': 'POST', ':path': '/bench.Echo/Unary', 'content-type': 'application/grpc', te: 'trailers', 'x-custom': 'one value', 'grpc-timeout': '1S' },
    { ':method': 'GET', ':path': '/a?b=c', 'x-custom': 'another', 'x-big': big },
  ];
  const answers = sent.map((headers) => {
    const req = client.request(headers, { endStream: true });
    return new Promise<{ headers: http2.IncomingHttpHeaders; trailers: http2.IncomingHttpHeaders; body: string }>((resolve, reject) => {
      let answer: http2.IncomingHttpHeaders = {};
      let trailers: http2.IncomingHttpHeaders = {};
      let body = '';
      req.on('response', (h) => (answer = h));
      req.on('trailers', (h) => (trailers = h));
      req.on('data', (c: Buffer) => (body += c.toString()));
      req.on('end', () => resolve({ headers: answer, trailers, body }));
      req.on('error', reject);
    });
  });
  await log.next(3);
  t.is(log.settings, 1);
  t.deepEqual(log.blocks.map((b) => b.streamId), [1, 3, 5]);
  t.true(log.blocks.every((b) => b.endStream));
  for (const [i, block] of log.blocks.entries()) {
    const want = sent[i]!;
    const got = Object.fromEntries(block.fields);
    t.is(got[':method'], want[':method']);
    t.is(got[':path'], want[':path']);
    t.is(got[':scheme'], 'http');
    t.is(got[':authority'], `127.0.0.1:${(server.address() as AddressInfo).port}`);
    for (const [name, value] of Object.entries(want)) if (!name.startsWith(':')) t.is(got[name], value, name);
  }
  // The 30,000-octet header (22,500 Huffman-encoded) needed CONTINUATION frames (16,384 per frame).
  t.true(log.blocks[2]!.frames > 1);
  for (const block of log.blocks) {
    const answer: HeaderField[] = [[':status', '200'], ['content-type', 'application/grpc'], ['x-echo', String(block.streamId)], ['x-big', 'a'.repeat(17000)]];
    for (const f of headerFrames(block.streamId, encodeHeaderBlock(answer), false, 16384)) socket.write(f);
    socket.write(Buffer.concat([frameHeader(DATA, 0, block.streamId, 5), Buffer.from('hello')]));
    for (const f of headerFrames(block.streamId, encodeHeaderBlock([['grpc-status', '0'], ['grpc-message', 'all \u00e9 well']]), true, 16384)) socket.write(f);
  }
  const got = await Promise.all(answers);
  for (const [i, answer] of got.entries()) {
    t.is(Number(answer.headers[':status']), 200);
    t.is(answer.headers['x-echo'], String(2 * i + 1));
    t.is(answer.headers['x-big'], 'a'.repeat(17000));
    t.is(answer.body, 'hello');
    t.is(answer.trailers['grpc-status'], '0');
    t.is(answer.trailers['grpc-message'], 'all \u00e9 well');
  }
  client.close();
  socket.destroy();
  server.close();
});

test('a Node http2 server: the requests we encode arrive as we meant them, and its answers and trailers decode', async (t) => {
  const server = http2.createServer();
  const seen: http2.IncomingHttpHeaders[] = [];
  server.on('stream', (stream, headers) => {
    seen.push(headers);
    stream.respond({ ':status': 200, 'content-type': 'application/grpc', 'x-served': String(headers[':path']), 'set-cookie': ['a=1', 'b=2'] }, { waitForTrailers: true });
    stream.on('wantTrailers', () => stream.sendTrailers({ 'grpc-status': '0', 'grpc-message': 'ok' }));
    stream.end('body');
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const socket = net.connect((server.address() as AddressInfo).port, '127.0.0.1');
  await new Promise<void>((resolve) => socket.once('connect', resolve));
  const log = frameLog(socket, 0);
  socket.write(Buffer.concat([PREFACE, settingsFrame([])]));
  const requests: HeaderField[][] = [1, 3].map((id) => [
    [':method', 'POST'],
    [':scheme', 'http'],
    [':authority', 'web.mesh'],
    [':path', `/svc/Method${id}`],
    ['content-type', 'application/grpc'],
    ['te', 'trailers'],
    ['x-forwarded-for', '10.0.0.1'],
    ['x-request-id', `id-${id}`],
    ['x-long', 'l'.repeat(300)],
  ]);
  for (const [i, fields] of requests.entries()) for (const f of headerFrames(2 * i + 1, encodeHeaderBlock(fields), true, 16384)) socket.write(f);
  await log.next(4);
  t.is(seen.length, 2);
  for (const [i, fields] of requests.entries()) for (const [name, value] of fields) t.is(seen[i]![name], value, name);
  const answers = log.blocks.filter((b) => !b.endStream);
  const trailers = log.blocks.filter((b) => b.endStream);
  t.deepEqual(answers.map((b) => b.streamId), [1, 3]);
  for (const block of answers) {
    const fields = block.fields.filter(([n]) => n !== 'date');
    t.deepEqual(fields, [[':status', '200'], ['content-type', 'application/grpc'], ['x-served', `/svc/Method${block.streamId}`], ['set-cookie', 'a=1'], ['set-cookie', 'b=2']]);
  }
  for (const block of trailers) t.deepEqual(regular(block.fields), [['grpc-status', '0'], ['grpc-message', 'ok']]);
  t.deepEqual(log.data.filter((d) => d.payload !== '').map((d) => [d.streamId, d.payload]), [[1, 'body'], [3, 'body']]);
  socket.destroy();
  server.close();
});
