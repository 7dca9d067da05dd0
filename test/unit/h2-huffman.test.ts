// HPACK's Huffman code (RFC 7541 5.2, Appendix B): the canonical codes made
// from the lengths, the strings of Appendix C both ways, every symbol, random
// strings, and each way a string is malformed.

import test, { type ExecutionContext } from 'ava';
import fc from 'fast-check';
import { HUFFMAN_CODES, HuffmanError, huffmanDecode, huffmanEncode, huffmanLength } from '../../proxy/http/h2/huffman.js';
import { HUFFMAN_LENGTHS } from '../../proxy/http/h2/huffman-table.js';

const SEED = 0x1bad5eed;

function holds<Ts extends [unknown, ...unknown[]]>(t: ExecutionContext, property: fc.IProperty<Ts>, params: fc.Parameters<Ts> = {}): void {
  const details = fc.check(property, { seed: SEED, ...params });
  t.false(details.failed, fc.defaultReportMessage(details) ?? 'property failed');
}

/** The Huffman-encoded strings of RFC 7541 Appendix C.4 and C.6. */
const APPENDIX_C: ReadonlyArray<readonly [string, string]> = [
  ['www.example.com', 'f1e3c2e5f23a6ba0ab90f4ff'],
  ['no-cache', 'a8eb10649cbf'],
  ['custom-key', '25a849e95ba97d7f'],
  ['custom-value', '25a849e95bb8e8b4bf'],
  ['302', '6402'],
  ['307', '640eff'],
  ['private', 'aec3771a4b'],
  ['Mon, 21 Oct 2013 20:13:21 GMT', 'd07abe941054d444a8200595040b8166e082a62d1bff'],
  ['Mon, 21 Oct 2013 20:13:22 GMT', 'd07abe941054d444a8200595040b8166e084a62d1bff'],
  ['https://www.example.com', '9d29ad171863c78f0b97c8e9ae82ae43d3'],
  ['gzip', '9bd9ab'],
  ['foo=ASDJKHQKBZXOQWEOPIUAXQWEOIU; max-age=3600; version=1', '94e7821dd7f2e6c7b335dfdfcd5b3960d5af27087f3672c1ab270fb5291f9587316065c003ed4ee5b1063d5007'],
];

test('the codes made from the lengths are the RFC 7541 Appendix B codes (first, last, each length edge, EOS)', (t) => {
  t.is(HUFFMAN_LENGTHS.length, 257);
  const rows: ReadonlyArray<readonly [number, number, number]> = [
    [0, 0x1ff8, 13],
    [1, 0x7fffd8, 23],
    [10, 0x3ffffffc, 30],
    [32, 0x14, 6],
    [48, 0x0, 5],
    [97, 0x3, 5],
    [116, 0x9, 5],
    [58, 0x5c, 7],
    [38, 0xf8, 8],
    [33, 0x3f8, 10],
    [39, 0x7fa, 11],
    [35, 0xffa, 12],
    [92, 0x7fff0, 19],
    [192, 0x3ffffe0, 26],
    [200, 0x3ffffe2, 26],
    [254, 0x7fffff0, 27],
    [255, 0x3ffffee, 26],
    [256, 0x3fffffff, 30],
  ];
  for (const [symbol, code, length] of rows) {
    t.is(HUFFMAN_CODES[symbol], code, `code of ${symbol}`);
    t.is(HUFFMAN_LENGTHS[symbol], length, `length of ${symbol}`);
  }
});

test('the code is prefix-free and complete (Kraft sum exactly 1)', (t) => {
  let sum = 0;
  for (const length of HUFFMAN_LENGTHS) sum += 2 ** -length;
  t.is(sum, 1);
  const seen = new Set<string>();
  for (let s = 0; s < 257; s++) seen.add(HUFFMAN_CODES[s]!.toString(2).padStart(HUFFMAN_LENGTHS[s]!, '0'));
  t.is(seen.size, 257);
  const codes = [...seen];
  t.false(codes.some((a) => codes.some((b) => a !== b && b.startsWith(a))));
});

test('the strings of RFC 7541 Appendix C decode and encode to the RFC octets', (t) => {
  for (const [text, hex] of APPENDIX_C) {
    t.is(huffmanDecode(Buffer.from(hex, 'hex')).toString('latin1'), text, text);
    t.is(huffmanEncode(Buffer.from(text, 'latin1')).toString('hex'), hex, text);
    t.is(huffmanLength(Buffer.from(text, 'latin1')), hex.length / 2, text);
  }
});

test('every octet 0-255, alone and all in a row, goes through encode and decode unchanged', (t) => {
  for (let b = 0; b < 256; b++) t.deepEqual(huffmanDecode(huffmanEncode(Buffer.from([b]))), Buffer.from([b]), `octet ${b}`);
  const all = Buffer.from(Array.from({ length: 256 }, (_, i) => 255 - i));
  t.deepEqual(huffmanDecode(huffmanEncode(all)), all);
});

test('random octet strings go through encode and decode unchanged', (t) => {
  holds(
    t,
    fc.property(fc.uint8Array({ maxLength: 300 }), (bytes) => huffmanDecode(huffmanEncode(bytes)).equals(Buffer.from(bytes))),
    { numRuns: 500 },
  );
});

test('the empty string is no octets both ways', (t) => {
  t.is(huffmanEncode(Buffer.alloc(0)).length, 0);
  t.is(huffmanDecode(Buffer.alloc(0)).length, 0);
});

test('malformed strings are refused: EOS, padding of 8 bits or more, padding not all ones', (t) => {
  // EOS (30 ones) then two ones of padding.
  t.throws(() => huffmanDecode(Buffer.from('ffffffff', 'hex')), { instanceOf: HuffmanError, message: /EOS/ });
  // 'a' (00011) then 3 ones of padding, then a whole octet of ones: 11 bits of padding.
  t.deepEqual(huffmanDecode(Buffer.from('1f', 'hex')), Buffer.from('a'));
  t.throws(() => huffmanDecode(Buffer.from('1fff', 'hex')), { instanceOf: HuffmanError, message: /longer than 7 bits/ });
  // A whole octet of ones alone: 8 bits of padding.
  t.throws(() => huffmanDecode(Buffer.from('ff', 'hex')), { instanceOf: HuffmanError, message: /longer than 7 bits/ });
  // 'a' then 000: padding with zeros ('0' is 00000: five would be a symbol).
  t.throws(() => huffmanDecode(Buffer.from('18', 'hex')), { instanceOf: HuffmanError, message: /EOS prefix/ });
  // 'a' then 110.
  t.throws(() => huffmanDecode(Buffer.from('1e', 'hex')), { instanceOf: HuffmanError, message: /EOS prefix/ });
});

test('decoding stops at the length bound, not after', (t) => {
  const ten = huffmanEncode(Buffer.from('0123456789'));
  t.is(huffmanDecode(ten, 10).toString(), '0123456789');
  t.throws(() => huffmanDecode(ten, 9), { instanceOf: HuffmanError, message: /longer than 9 octets/ });
});
