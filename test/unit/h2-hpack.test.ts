// HPACK (RFC 7541): every example of Appendix C decoded with the dynamic table
// they leave, the bounds (table size, header list size, integers, strings),
// each malformed block refused, and the encoder's blocks read back.

import test, { type ExecutionContext } from 'ava';
import fc from 'fast-check';
import { HpackDecoder, HpackError, STATIC_TABLE, encodeHeaderBlock, type HeaderField } from '../../proxy/http/h2/hpack.js';

const SEED = 0x1bad5eed;

function holds<Ts extends [unknown, ...unknown[]]>(t: ExecutionContext, property: fc.IProperty<Ts>, params: fc.Parameters<Ts> = {}): void {
  const details = fc.check(property, { seed: SEED, ...params });
  t.false(details.failed, fc.defaultReportMessage(details) ?? 'property failed');
}

const hex = (s: string): Buffer => Buffer.from(s.replace(/\s+/g, ''), 'hex');

/** Decodes each block in turn on one decoder: its fields and the table after it, as the RFC lists them. */
function sequence(t: ExecutionContext, decoder: HpackDecoder, steps: ReadonlyArray<{ block: string; fields: HeaderField[]; table: HeaderField[]; size: number }>): void {
  for (const [i, step] of steps.entries()) {
    const { fields, oversize } = decoder.decode(hex(step.block));
    t.deepEqual(fields, step.fields, `block ${i + 1}`);
    t.false(oversize);
    t.deepEqual(decoder.table.entries, step.table, `table after block ${i + 1}`);
    t.is(decoder.table.size, step.size, `size after block ${i + 1}`);
  }
}

const REQUEST_1: HeaderField[] = [[':method', 'GET'], [':scheme', 'http'], [':path', '/'], [':authority', 'www.example.com']];
const REQUEST_2: HeaderField[] = [...REQUEST_1, ['cache-control', 'no-cache']];
const REQUEST_3: HeaderField[] = [[':method', 'GET'], [':scheme', 'https'], [':path', '/index.html'], [':authority', 'www.example.com'], ['custom-key', 'custom-value']];
const TABLES_C3: HeaderField[][] = [
  [[':authority', 'www.example.com']],
  [['cache-control', 'no-cache'], [':authority', 'www.example.com']],
  [['custom-key', 'custom-value'], ['cache-control', 'no-cache'], [':authority', 'www.example.com']],
];

const DATE_1 = 'Mon, 21 Oct 2013 20:13:21 GMT';
const DATE_2 = 'Mon, 21 Oct 2013 20:13:22 GMT';
const COOKIE = 'foo=ASDJKHQKBZXOQWEOPIUAXQWEOIU; max-age=3600; version=1';
const RESPONSE_1: HeaderField[] = [[':status', '302'], ['cache-control', 'private'], ['date', DATE_1], ['location', 'https://www.example.com']];
const RESPONSE_2: HeaderField[] = [[':status', '307'], ['cache-control', 'private'], ['date', DATE_1], ['location', 'https://www.example.com']];
const RESPONSE_3: HeaderField[] = [[':status', '200'], ['cache-control', 'private'], ['date', DATE_2], ['location', 'https://www.example.com'], ['content-encoding', 'gzip'], ['set-cookie', COOKIE]];
const TABLES_C5: HeaderField[][] = [
  [['location', 'https://www.example.com'], ['date', DATE_1], ['cache-control', 'private'], [':status', '302']],
  [[':status', '307'], ['location', 'https://www.example.com'], ['date', DATE_1], ['cache-control', 'private']],
  [['set-cookie', COOKIE], ['content-encoding', 'gzip'], ['date', DATE_2]],
];

test('the static table is RFC 7541 Appendix A: 61 entries', (t) => {
  t.is(STATIC_TABLE.length, 61);
  t.deepEqual(STATIC_TABLE[0], [':authority', '']);
  t.deepEqual(STATIC_TABLE[7], [':status', '200']);
  t.deepEqual(STATIC_TABLE[15], ['accept-encoding', 'gzip, deflate']);
  t.deepEqual(STATIC_TABLE[60], ['www-authenticate', '']);
});

test('C.1: integers with a 5-bit prefix, below it and past it (as table size updates)', (t) => {
  const d = new HpackDecoder(4096);
  d.decode(hex('2a'));
  t.is(d.table.capacity, 10);
  d.decode(hex('3f9a0a'));
  t.is(d.table.capacity, 1337);
  t.is(encodeHeaderBlock([], 10).toString('hex'), '2a');
  t.is(encodeHeaderBlock([], 1337).toString('hex'), '3f9a0a');
});

test('C.2: a literal with indexing enters the table; without indexing, never indexed and indexed ones do not', (t) => {
  const d = new HpackDecoder();
  sequence(t, d, [
    { block: '400a 637573746f6d2d6b6579 0d 637573746f6d2d686561646572', fields: [['custom-key', 'custom-header']], table: [['custom-key', 'custom-header']], size: 55 },
  ]);
  const fresh = new HpackDecoder();
  t.deepEqual(fresh.decode(hex('040c 2f73616d706c652f70617468')).fields, [[':path', '/sample/path']]);
  t.deepEqual(fresh.decode(hex('1008 70617373776f7264 06 736563726574')).fields, [['password', 'secret']]);
  t.deepEqual(fresh.decode(hex('82')).fields, [[':method', 'GET']]);
  t.is(fresh.table.size, 0);
});

test('C.3: three requests without Huffman on one connection, with the table they build', (t) => {
  sequence(t, new HpackDecoder(), [
    { block: '828684410f7777772e6578616d706c652e636f6d', fields: REQUEST_1, table: TABLES_C3[0]!, size: 57 },
    { block: '828684be58086e6f2d6361636865', fields: REQUEST_2, table: TABLES_C3[1]!, size: 110 },
    { block: '828785bf400a637573746f6d2d6b65790c637573746f6d2d76616c7565', fields: REQUEST_3, table: TABLES_C3[2]!, size: 164 },
  ]);
});

test('C.4: the same requests Huffman-encoded', (t) => {
  sequence(t, new HpackDecoder(), [
    { block: '828684418cf1e3c2e5f23a6ba0ab90f4ff', fields: REQUEST_1, table: TABLES_C3[0]!, size: 57 },
    { block: '828684be5886a8eb10649cbf', fields: REQUEST_2, table: TABLES_C3[1]!, size: 110 },
    { block: '828785bf408825a849e95ba97d7f8925a849e95bb8e8b4bf', fields: REQUEST_3, table: TABLES_C3[2]!, size: 164 },
  ]);
});

test('C.5: three responses without Huffman in a 256-octet table, evicting the oldest entries', (t) => {
  sequence(t, new HpackDecoder(256), [
    {
      block:
        '4803333032580770726976617465611d4d6f6e2c203231204f637420323031332032303a31333a323120474d546e1768747470733a2f2f7777772e6578616d706c652e636f6d',
      fields: RESPONSE_1,
      table: TABLES_C5[0]!,
      size: 222,
    },
    { block: '4803333037c1c0bf', fields: RESPONSE_2, table: TABLES_C5[1]!, size: 222 },
    {
      block:
        '88c1611d4d6f6e2c203231204f637420323031332032303a31333a323220474d54c05a04677a69707738666f6f3d4153444a4b48514b425a584f5157454f50495541585157454f49553b206d61782d6167653d333630303b2076657273696f6e3d31',
      fields: RESPONSE_3,
      table: TABLES_C5[2]!,
      size: 215,
    },
  ]);
});

test('C.6: the same responses Huffman-encoded', (t) => {
  sequence(t, new HpackDecoder(256), [
    { block: '488264025885aec3771a4b6196d07abe941054d444a8200595040b8166e082a62d1bff6e919d29ad171863c78f0b97c8e9ae82ae43d3', fields: RESPONSE_1, table: TABLES_C5[0]!, size: 222 },
    { block: '4883640effc1c0bf', fields: RESPONSE_2, table: TABLES_C5[1]!, size: 222 },
    {
      block: '88c16196d07abe941054d444a8200595040b8166e084a62d1bffc05a839bd9ab77ad94e7821dd7f2e6c7b335dfdfcd5b3960d5af27087f3672c1ab270fb5291f9587316065c003ed4ee5b1063d5007',
      fields: RESPONSE_3,
      table: TABLES_C5[2]!,
      size: 215,
    },
  ]);
});

test('a table size update evicts down to the new size; 0 empties the table; an entry larger than the table empties it and is not added', (t) => {
  const d = new HpackDecoder(4096);
  d.decode(hex('828684410f7777772e6578616d706c652e636f6d'));
  d.decode(hex('828684be58086e6f2d6361636865'));
  t.is(d.table.size, 110);
  d.decode(hex('3f22')); // size update to 31 + 34 = 65: only the newest (53) fits
  t.deepEqual(d.table.entries, [['cache-control', 'no-cache']]);
  t.is(d.table.size, 53);
  d.decode(hex('20'));
  t.deepEqual(d.table.entries, []);
  t.is(d.table.size, 0);
  // Capacity 40: 'custom-key: custom-header' (55) does not fit.
  d.decode(hex('3f09'));
  t.is(d.table.capacity, 40);
  const { fields } = d.decode(hex('400a637573746f6d2d6b65790d637573746f6d2d686561646572'));
  t.deepEqual(fields, [['custom-key', 'custom-header']]);
  t.deepEqual(d.table.entries, []);
});

test('two size updates at the start of a block are allowed; one after a field, or past our SETTINGS_HEADER_TABLE_SIZE, is refused', (t) => {
  const d = new HpackDecoder(4096);
  d.decode(hex('20 3f9a0a 82'));
  t.is(d.table.capacity, 1337);
  t.throws(() => new HpackDecoder(4096).decode(hex('82 20')), { instanceOf: HpackError, message: /after a field/ });
  t.throws(() => new HpackDecoder(100).decode(hex('3f4a')), { instanceOf: HpackError, message: /table size 105 past the 100 allowed/ });
});

test('malformed blocks are refused: index 0, an index past the table, truncated integers and strings, huge integers, bad Huffman', (t) => {
  const refused = (block: string, message: RegExp): void => {
    t.throws(() => new HpackDecoder().decode(hex(block)), { instanceOf: HpackError, message }, block);
  };
  refused('80', /index 0/);
  refused('be', /index 62 past the table/);
  refused('ff', /integer truncated/);
  refused('ff80', /integer truncated/);
  refused('ffffffffff0f', /integer too large/);
  refused('ff80808080808001', /integer too large/);
  refused('40', /string truncated/);
  refused('4005616263', /string longer than its block/);
  refused('0f', /integer truncated/);
  refused('0f2f', /index 62 past the table/);
  refused('0481ff', /EOS|longer than 7 bits/);
  refused('0083ffffff', /longer than 7 bits/);
  refused('0084ffffffff', /EOS/);
  // A literal name then a value that is cut short.
  refused('00016103', /string longer than its block/);
});

test('a header list past the bound keeps its fields up to the bound, flags the block, and still fills the table', (t) => {
  // Bound 100: ':authority: www.example.com' (57) fits, 'cache-control: no-cache' (53) passes it.
  const d = new HpackDecoder(4096, 100);
  // Both literals with incremental indexing (0x40 | static name index 1 and 24).
  const { fields, oversize } = d.decode(hex('410f7777772e6578616d706c652e636f6d 58086e6f2d6361636865'));
  t.true(oversize);
  t.deepEqual(fields, [[':authority', 'www.example.com']]);
  t.deepEqual(d.table.entries, [['cache-control', 'no-cache'], [':authority', 'www.example.com']]);
  // The next block on the same connection decodes against the table the peer expects.
  t.deepEqual(d.decode(hex('be')).fields, [['cache-control', 'no-cache']]);
});

test('the encoder: whole static fields by index, static names with literal values, other names literal, never Huffman nor indexed', (t) => {
  const block = encodeHeaderBlock([[':method', 'GET'], [':path', '/sample/path'], ['password', 'secret']]);
  t.is(block.toString('hex'), '82' + '040c2f73616d706c652f70617468' + '000870617373776f726406736563726574');
  const d = new HpackDecoder();
  t.deepEqual(d.decode(block).fields, [[':method', 'GET'], [':path', '/sample/path'], ['password', 'secret']]);
  t.is(d.table.size, 0);
  // Static name index past 15 (4-bit prefix): 'content-type' is 31.
  t.is(encodeHeaderBlock([['content-type', 'a']]).toString('hex'), '0f10' + '0161');
  t.is(encodeHeaderBlock([]).length, 0);
});

test('the encoder writes long, empty and non-ASCII (latin1) values that decode unchanged, with a size update first', (t) => {
  const fields: HeaderField[] = [
    [':status', '200'],
    ['x-long', 'v'.repeat(20000)],
    ['x-empty', ''],
    ['x-latin1', '\u00e9\u00ff\u0080'],
    ['grpc-status', '0'],
    ['x-long', 'repeated name'],
  ];
  const block = encodeHeaderBlock(fields, 0);
  t.is(block[0], 0x20);
  t.deepEqual(new HpackDecoder().decode(block).fields, fields);
});

test('random header lists go through the encoder and decoder unchanged', (t) => {
  const name = fc.oneof(fc.constantFrom(...STATIC_TABLE.map(([n]) => n)), fc.stringMatching(/^[a-z0-9-]{1,20}$/));
  const value = fc.oneof(fc.constantFrom(...STATIC_TABLE.map(([, v]) => v)), fc.string({ maxLength: 200, unit: fc.integer({ min: 0, max: 255 }).map((c) => String.fromCharCode(c)) }));
  holds(
    t,
    fc.property(fc.array(fc.tuple(name, value), { maxLength: 30 }), (fields) => {
      const decoded = new HpackDecoder(4096, 1 << 20).decode(encodeHeaderBlock(fields));
      return JSON.stringify(decoded.fields) === JSON.stringify(fields) && !decoded.oversize;
    }),
    { numRuns: 300 },
  );
});
