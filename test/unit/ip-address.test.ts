// IPv4/IPv6 text <-> bytes: parsing of every textual form, RFC 5952 formatting, and
// properties checked against an independent oracle (the WHATWG URL host parser).

import test, { type ExecutionContext } from 'ava';
import fc from 'fast-check';
import { isIPv6 } from 'node:net';
import { formatIPv4, formatIPv6, parseIPv4, parseIPv6 } from '../../proxy/runtime/ip-address.js';

const SEED = 0x1bad5eed;

/** Runs a fast-check property and records one ava assertion with the counterexample, if any. */
function holds<Ts extends [unknown, ...unknown[]]>(t: ExecutionContext, property: fc.IProperty<Ts>, params: fc.Parameters<Ts> = {}): void {
  const details = fc.check(property, { seed: SEED, ...params });
  t.false(details.failed, fc.defaultReportMessage(details) ?? 'property failed');
}

/** Sixteen bytes from eight 16-bit groups, written out by hand in the tests. */
function groups(...g: number[]): Uint8Array {
  if (g.length !== 8) throw new Error('eight groups expected');
  const bytes = new Uint8Array(16);
  g.forEach((v, i) => {
    bytes[2 * i] = v >> 8;
    bytes[2 * i + 1] = v & 0xff;
  });
  return bytes;
}

/** The WHATWG URL parser's canonical text of an IPv6 address (hex groups only, never dotted). */
function urlCanonical(text: string): string {
  return new URL(`http://[${text}]/`).hostname.slice(1, -1);
}

/** RFC 5952 text computed without our code: URL canonicalization, plus the dotted IPv4-mapped tail. */
function rfc5952Oracle(bytes: Uint8Array): string {
  const mapped = bytes.subarray(0, 10).every((b) => b === 0) && bytes[10] === 0xff && bytes[11] === 0xff;
  if (mapped) return `::ffff:${bytes[12]}.${bytes[13]}.${bytes[14]}.${bytes[15]}`;
  const full: string[] = [];
  for (let i = 0; i < 16; i += 2) full.push(((bytes[i]! << 8) | bytes[i + 1]!).toString(16));
  return urlCanonical(full.join(':'));
}

const bytes16 = fc.uint8Array({ minLength: 16, maxLength: 16 });
/** Addresses rich in zero groups, so that every compression case (runs, ties, ends) comes up. */
const zeroHeavyBytes = fc
  .array(fc.oneof(fc.constant(0), fc.constant(0), fc.constant(1), fc.constant(0xffff), fc.integer({ min: 0, max: 0xffff })), { minLength: 8, maxLength: 8 })
  .map((g) => groups(...g));
const anyIPv6Bytes = fc.oneof(bytes16, zeroHeavyBytes);

// ---- IPv4 ----

test('parseIPv4 gives the four bytes of a dotted quad', (t) => {
  t.deepEqual(parseIPv4('127.0.0.1'), Uint8Array.from([127, 0, 0, 1]));
});

test('parseIPv4 handles the all-zero and all-ones addresses', (t) => {
  t.deepEqual(parseIPv4('0.0.0.0'), Uint8Array.from([0, 0, 0, 0]));
  t.deepEqual(parseIPv4('255.255.255.255'), Uint8Array.from([255, 255, 255, 255]));
});

test('parseIPv4 returns undefined for anything that is not a dotted quad', (t) => {
  for (const text of ['', '1.2.3', '1.2.3.4.5', '256.0.0.1', '1.2.3.-1', '01.2.3.4', '0x1.2.3.4', 'a.b.c.d', ' 1.2.3.4', '1.2.3.4 ', '1.2.3.4\n', '::1', '::ffff:1.2.3.4', 'localhost', '1..2.3']) {
    t.is(parseIPv4(text), undefined, JSON.stringify(text));
  }
});

test('formatIPv4 writes four bytes as a dotted quad', (t) => {
  t.is(formatIPv4(Uint8Array.from([10, 0, 0, 2])), '10.0.0.2');
  t.is(formatIPv4(Uint8Array.from([255, 0, 255, 0])), '255.0.255.0');
});

test('formatIPv4 reads only the first four bytes of its input', (t) => {
  t.is(formatIPv4(Uint8Array.from([9, 1, 2, 3, 4, 9]).subarray(1)), '1.2.3.4');
});

test('any IPv4 address survives text -> bytes -> text unchanged', (t) => {
  holds(t, fc.property(fc.ipV4(), (text) => formatIPv4(parseIPv4(text)!) === text));
});

test('any four bytes survive bytes -> text -> bytes unchanged', (t) => {
  holds(
    t,
    fc.property(fc.uint8Array({ minLength: 4, maxLength: 4 }), (bytes) => {
      const back = parseIPv4(formatIPv4(bytes));
      return back !== undefined && Buffer.from(back).equals(bytes);
    }),
  );
});

// ---- IPv6 parsing ----

test('parseIPv6 reads the full eight-group form', (t) => {
  t.deepEqual(parseIPv6('2001:0db8:0000:0000:0000:ff00:0042:8329'), groups(0x2001, 0xdb8, 0, 0, 0, 0xff00, 0x42, 0x8329));
});

test('parseIPv6 reads "::" as the unspecified address', (t) => {
  t.deepEqual(parseIPv6('::'), new Uint8Array(16));
});

test('parseIPv6 reads "::" at the start, in the middle and at the end', (t) => {
  t.deepEqual(parseIPv6('::1'), groups(0, 0, 0, 0, 0, 0, 0, 1));
  t.deepEqual(parseIPv6('2001:db8::ff00:42:8329'), groups(0x2001, 0xdb8, 0, 0, 0, 0xff00, 0x42, 0x8329));
  t.deepEqual(parseIPv6('fe80::'), groups(0xfe80, 0, 0, 0, 0, 0, 0, 0));
});

test('parseIPv6 accepts "::" standing for a single zero group', (t) => {
  t.deepEqual(parseIPv6('1:2:3::5:6:7:8'), groups(1, 2, 3, 0, 5, 6, 7, 8));
  t.deepEqual(parseIPv6('::2:3:4:5:6:7:8'), groups(0, 2, 3, 4, 5, 6, 7, 8));
  t.deepEqual(parseIPv6('1:2:3:4:5:6:7::'), groups(1, 2, 3, 4, 5, 6, 7, 0));
});

test('parseIPv6 is case-insensitive and accepts leading zeros in groups', (t) => {
  t.deepEqual(parseIPv6('2001:DB8:0:0:0:0:0:ABCD'), groups(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0xabcd));
  t.deepEqual(parseIPv6('0001:0002::000a'), groups(1, 2, 0, 0, 0, 0, 0, 0xa));
});

test('parseIPv6 reads an embedded IPv4 tail into the last two groups', (t) => {
  t.deepEqual(parseIPv6('::ffff:192.0.2.1'), groups(0, 0, 0, 0, 0, 0xffff, 0xc000, 0x0201));
  t.deepEqual(parseIPv6('64:ff9b::192.0.2.33'), groups(0x64, 0xff9b, 0, 0, 0, 0, 0xc000, 0x0221));
  t.deepEqual(parseIPv6('1:2:3:4:5:6:10.0.0.2'), groups(1, 2, 3, 4, 5, 6, 0x0a00, 0x0002));
  t.deepEqual(parseIPv6('::1.2.3.4'), groups(0, 0, 0, 0, 0, 0, 0x0102, 0x0304));
});

test('parseIPv6 strips a zone id', (t) => {
  t.deepEqual(parseIPv6('fe80::1%eth0'), groups(0xfe80, 0, 0, 0, 0, 0, 0, 1));
  t.deepEqual(parseIPv6('fe80::abcd%2'), groups(0xfe80, 0, 0, 0, 0, 0, 0, 0xabcd));
});

test('parseIPv6 returns undefined for an empty zone id', (t) => {
  t.is(parseIPv6('fe80::1%'), undefined);
  t.is(parseIPv6('%eth0'), undefined);
});

test('parseIPv6 returns undefined for strings that are not IPv6 addresses', (t) => {
  const bad = [
    '',
    ':',
    ':::',
    '1::2::3',
    '12345::',
    'g::1',
    '1:2:3:4:5:6:7',
    '1:2:3:4:5:6:7:8:9',
    '1:2:3:4:5:6:7:8::',
    '::1:2:3:4:5:6:7:8',
    '1:2:3:4:5:6:7:1.2.3.4',
    '::1.2.3',
    '::256.0.0.1',
    '::ffff:01.2.3.4',
    '1.2.3.4',
    '[::1]',
    ' ::1',
    '::1 ',
    'localhost',
  ];
  for (const text of bad) t.is(parseIPv6(text), undefined, JSON.stringify(text));
});

test('parseIPv6 agrees with the URL parser on every address fast-check generates', (t) => {
  holds(
    t,
    fc.property(fc.ipV6(), (text) => {
      const bytes = parseIPv6(text);
      // The oracle turns our bytes back into text without our formatter; URL compares the values.
      return bytes !== undefined && urlCanonical(rfc5952Oracle(bytes)) === urlCanonical(text);
    }),
    { numRuns: 300 },
  );
});

// ---- IPv6 formatting (RFC 5952) ----

test('formatIPv6 writes hex digits in lower case', (t) => {
  t.is(formatIPv6(groups(0x2001, 0xdb8, 0xabcd, 0xef01, 1, 2, 3, 0xff)), '2001:db8:abcd:ef01:1:2:3:ff');
});

test('formatIPv6 drops leading zeros in each group', (t) => {
  t.is(formatIPv6(groups(0x2001, 0x0db8, 0x000a, 0x0100, 1, 2, 3, 4)), '2001:db8:a:100:1:2:3:4');
});

test('formatIPv6 compresses a run of zero groups with "::"', (t) => {
  t.is(formatIPv6(groups(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1)), '2001:db8::1');
});

test('formatIPv6 writes the unspecified address as "::" and loopback as "::1"', (t) => {
  t.is(formatIPv6(new Uint8Array(16)), '::');
  t.is(formatIPv6(groups(0, 0, 0, 0, 0, 0, 0, 1)), '::1');
});

test('formatIPv6 compresses a trailing run of zero groups', (t) => {
  t.is(formatIPv6(groups(0xfe80, 0, 0, 0, 0, 0, 0, 0)), 'fe80::');
});

test('formatIPv6 does not compress a single zero group', (t) => {
  t.is(formatIPv6(groups(0x2001, 0xdb8, 0, 1, 1, 1, 1, 1)), '2001:db8:0:1:1:1:1:1');
  t.is(formatIPv6(groups(1, 2, 3, 4, 5, 6, 7, 0)), '1:2:3:4:5:6:7:0');
  t.is(formatIPv6(groups(0, 2, 3, 4, 5, 6, 7, 8)), '0:2:3:4:5:6:7:8');
});

test('formatIPv6 compresses the longest run of zero groups', (t) => {
  t.is(formatIPv6(groups(0x2001, 0, 0, 1, 0, 0, 0, 1)), '2001:0:0:1::1');
  t.is(formatIPv6(groups(0, 0, 1, 0, 0, 0, 1, 0)), '0:0:1::1:0');
});

test('formatIPv6 compresses the first of two equally long runs', (t) => {
  t.is(formatIPv6(groups(0x2001, 0xdb8, 0, 0, 1, 0, 0, 1)), '2001:db8::1:0:0:1');
  t.is(formatIPv6(groups(1, 0, 0, 1, 0, 0, 1, 1)), '1::1:0:0:1:1');
});

test('formatIPv6 writes an IPv4-mapped address with a dotted tail', (t) => {
  t.is(formatIPv6(groups(0, 0, 0, 0, 0, 0xffff, 0xc000, 0x0201)), '::ffff:192.0.2.1');
  t.is(formatIPv6(groups(0, 0, 0, 0, 0, 0xffff, 0, 0)), '::ffff:0.0.0.0');
});

test('formatIPv6 writes other addresses that end in IPv4-looking groups in hex', (t) => {
  t.is(formatIPv6(groups(0x64, 0xff9b, 0, 0, 0, 0, 0xc000, 0x0221)), '64:ff9b::c000:221');
  t.is(formatIPv6(groups(0, 0, 0, 0, 0, 0, 0x0102, 0x0304)), '::102:304');
  t.is(formatIPv6(groups(0, 0, 0, 0, 1, 0xffff, 0x0102, 0x0304)), '::1:ffff:102:304');
});

test('formatIPv6 reads only sixteen bytes starting at the view offset', (t) => {
  const buf = new Uint8Array(20).fill(0xaa);
  buf.set(groups(0, 0, 0, 0, 0, 0, 0, 1), 2);
  t.is(formatIPv6(buf.subarray(2)), '::1');
});

test('formatIPv6 agrees with an independent RFC 5952 oracle on any sixteen bytes', (t) => {
  holds(
    t,
    fc.property(anyIPv6Bytes, (bytes) => formatIPv6(bytes) === rfc5952Oracle(bytes)),
    { numRuns: 500 },
  );
});

test('formatIPv6 output is always canonical text that Node accepts as IPv6', (t) => {
  holds(
    t,
    fc.property(anyIPv6Bytes, (bytes) => {
      const text = formatIPv6(bytes);
      const hexPart = text.startsWith('::ffff:') && text.includes('.') ? '' : text;
      return (
        isIPv6(text) &&
        text === text.toLowerCase() &&
        text.split('::').length <= 2 &&
        !/(^|:)0[0-9a-f]/.test(hexPart) &&
        !/[0-9a-f]{5}/.test(hexPart)
      );
    }),
    { numRuns: 300 },
  );
});

test('any sixteen bytes survive bytes -> text -> bytes unchanged', (t) => {
  holds(
    t,
    fc.property(anyIPv6Bytes, (bytes) => {
      const back = parseIPv6(formatIPv6(bytes));
      return back !== undefined && Buffer.from(back).equals(bytes);
    }),
    { numRuns: 500 },
  );
});

test('formatting is idempotent: canonical text parses and formats to itself', (t) => {
  holds(
    t,
    fc.property(fc.ipV6(), (text) => {
      const canonical = formatIPv6(parseIPv6(text)!);
      return formatIPv6(parseIPv6(canonical)!) === canonical;
    }),
  );
});
