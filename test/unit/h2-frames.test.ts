// HTTP/2 frames (RFC 9113 4, 6): frames read from bytes however they are
// chunked, the length bound enforced before a payload is waited for, the
// frames written octet by octet, header blocks split into CONTINUATIONs, and
// padding and priority fields taken off (or refused when they do not fit).

import test from 'ava';
import {
  CONTINUATION, DATA, FLAG_END_HEADERS, FLAG_END_STREAM, FLAG_PADDED, FLAG_PRIORITY, FRAME_SIZE_ERROR, FrameReader, GOAWAY, H2ConnectionError, HEADERS,
  PROTOCOL_ERROR, RST_STREAM, SETTINGS, WINDOW_UPDATE, frame, frameHeader, goawayFrame, headerFrames, rstStreamFrame, settingsFrame, unpad, windowUpdateFrame,
} from '../../proxy/http/h2/frames.js';

type Read = [type: number, flags: number, streamId: number, payload: string];

function reader(maxFrameSize?: number): { frames: Read[]; reader: FrameReader } {
  const frames: Read[] = [];
  return { frames, reader: new FrameReader((type, flags, id, payload) => frames.push([type, flags, id, payload.toString('hex')]), maxFrameSize) };
}

const three = Buffer.concat([frame(HEADERS, FLAG_END_HEADERS, 1, Buffer.from('abc')), frame(DATA, FLAG_END_STREAM, 1, Buffer.alloc(0)), frame(WINDOW_UPDATE, 0, 0, Buffer.from('0000ffff', 'hex'))]);
const expected: Read[] = [
  [HEADERS, FLAG_END_HEADERS, 1, '616263'],
  [DATA, FLAG_END_STREAM, 1, ''],
  [WINDOW_UPDATE, 0, 0, '0000ffff'],
];

test('frames in one chunk are read in order', (t) => {
  const r = reader();
  r.reader.push(three);
  t.deepEqual(r.frames, expected);
});

test('frames split at every octet boundary, and fed one octet at a time, read the same', (t) => {
  for (let cut = 0; cut <= three.length; cut++) {
    const r = reader();
    r.reader.push(three.subarray(0, cut));
    r.reader.push(three.subarray(cut));
    t.deepEqual(r.frames, expected, `cut at ${cut}`);
  }
  const r = reader();
  for (const b of three) r.reader.push(Buffer.from([b]));
  t.deepEqual(r.frames, expected);
});

test('the reserved bit of the stream id is ignored (RFC 9113 4.1)', (t) => {
  const r = reader();
  const f = frame(DATA, 0, 3, Buffer.from('x'));
  f[5]! |= 0x80;
  r.reader.push(f);
  t.deepEqual(r.frames, [[DATA, 0, 3, '78']]);
});

test('a frame past the size bound is refused from its header alone, before its payload arrives', (t) => {
  const r = reader(16384);
  const error = t.throws(() => r.reader.push(frameHeader(DATA, 0, 1, 16385)), { instanceOf: H2ConnectionError, message: /16385 octets past the 16384 allowed/ });
  t.is(error?.code, FRAME_SIZE_ERROR);
  const ok = reader(16384);
  ok.reader.push(frame(DATA, 0, 1, Buffer.alloc(16384)));
  t.is(ok.frames.length, 1);
});

test('frames are written octet by octet as RFC 9113 4.1 lays them out', (t) => {
  t.is(frameHeader(DATA, FLAG_END_STREAM, 0x7fffffff, 0x123456).toString('hex'), '123456' + '00' + '01' + '7fffffff');
  t.is(frame(HEADERS, FLAG_END_HEADERS, 5, Buffer.from('ab')).toString('hex'), '000002' + '01' + '04' + '00000005' + '6162');
  t.is(settingsFrame([[3, 100], [4, 0x10000]]).toString('hex'), '00000c' + '04' + '00' + '00000000' + '000300000064' + '000400010000');
  t.is(settingsFrame([]).toString('hex'), '000000' + '04' + '00' + '00000000');
  t.is(windowUpdateFrame(7, 0x7fffffff).toString('hex'), '000004' + '08' + '00' + '00000007' + '7fffffff');
  t.is(rstStreamFrame(9, 8).toString('hex'), '000004' + '03' + '00' + '00000009' + '00000008');
  t.is(goawayFrame(11, PROTOCOL_ERROR, 'bad').toString('hex'), '00000b' + '07' + '00' + '00000000' + '0000000b' + '00000001' + '626164');
  t.deepEqual([SETTINGS, RST_STREAM, GOAWAY, WINDOW_UPDATE], [4, 3, 7, 8]);
});

test('a header block is one HEADERS frame when it fits, else HEADERS and CONTINUATIONs, END_HEADERS on the last, END_STREAM on the first', (t) => {
  const read = (frames: Buffer[]): Read[] => {
    const r = reader(1 << 24);
    r.reader.push(Buffer.concat(frames));
    return r.frames;
  };
  t.deepEqual(read(headerFrames(1, Buffer.from('abcd'), true, 16384)), [[HEADERS, FLAG_END_HEADERS | FLAG_END_STREAM, 1, '61626364']]);
  t.deepEqual(read(headerFrames(3, Buffer.alloc(0), false, 16384)), [[HEADERS, FLAG_END_HEADERS, 3, '']]);
  t.deepEqual(read(headerFrames(5, Buffer.from('abcd'), true, 2)), [
    [HEADERS, FLAG_END_STREAM, 5, '6162'],
    [CONTINUATION, FLAG_END_HEADERS, 5, '6364'],
  ]);
  t.deepEqual(read(headerFrames(7, Buffer.from('abcde'), false, 2)), [
    [HEADERS, 0, 7, '6162'],
    [CONTINUATION, 0, 7, '6364'],
    [CONTINUATION, FLAG_END_HEADERS, 7, '65'],
  ]);
});

test('padding and the priority fields are taken off HEADERS and DATA payloads', (t) => {
  const hex = (b: Buffer): string => b.toString('hex');
  t.is(hex(unpad(DATA, 0, Buffer.from('abc'))), '616263');
  t.is(hex(unpad(DATA, FLAG_PADDED, Buffer.from('02616263ffff', 'hex'))), '616263');
  t.is(hex(unpad(DATA, FLAG_PADDED, Buffer.from('00', 'hex'))), '');
  // All padding: the pad length octet and 3 of padding, no data.
  t.is(hex(unpad(DATA, FLAG_PADDED, Buffer.from('03616263', 'hex'))), '');
  t.is(hex(unpad(HEADERS, FLAG_PRIORITY, Buffer.from('8000000310616263', 'hex'))), '616263');
  t.is(hex(unpad(HEADERS, FLAG_PRIORITY | FLAG_PADDED, Buffer.from('01800000031061626300', 'hex'))), '616263');
  // PRIORITY means nothing on DATA.
  t.is(hex(unpad(DATA, FLAG_PRIORITY, Buffer.from('abc'))), '616263');
});

test('padding that does not fit its frame is a PROTOCOL_ERROR', (t) => {
  const refused = (type: number, flags: number, payload: string, message: RegExp): void => {
    const error = t.throws(() => unpad(type, flags, Buffer.from(payload, 'hex')), { instanceOf: H2ConnectionError, message });
    t.is(error?.code, PROTOCOL_ERROR);
  };
  refused(DATA, FLAG_PADDED, '', /without its pad length/);
  refused(DATA, FLAG_PADDED, '04616263', /padding longer than the frame/);
  refused(HEADERS, FLAG_PRIORITY, '80000003', /padding longer than the frame/);
  refused(HEADERS, FLAG_PRIORITY | FLAG_PADDED, '0380000003106100', /padding longer than the frame/);
});
