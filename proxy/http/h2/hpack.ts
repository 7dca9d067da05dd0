// HPACK (RFC 7541): a decoder with its dynamic table, for the header blocks a
// peer sends, bounded by our SETTINGS (table size, header list size); and a
// stateless encoder (literals without indexing, names from the static table
// where it has them), so a peer's table settings never matter to what we
// send. Header names and values are octets: strings here are latin1. Pure.

import { HuffmanError, huffmanDecode } from './huffman.js';

export type HeaderField = readonly [name: string, value: string];

/** RFC 7541 Appendix A. Index i + 1 is STATIC_TABLE[i]. */
export const STATIC_TABLE: readonly HeaderField[] = [
  [':authority', ''], [':method', 'GET'], [':method', 'POST'], [':path', '/'], [':path', '/index.html'],
  [':scheme', 'http'], [':scheme', 'https'], [':status', '200'], [':status', '204'], [':status', '206'],
  [':status', '304'], [':status', '400'], [':status', '404'], [':status', '500'], ['accept-charset', ''],
  ['accept-encoding', 'gzip, deflate'], ['accept-language', ''], ['accept-ranges', ''], ['accept', ''],
  ['access-control-allow-origin', ''], ['age', ''], ['allow', ''], ['authorization', ''], ['cache-control', ''],
  ['content-disposition', ''], ['content-encoding', ''], ['content-language', ''], ['content-length', ''],
  ['content-location', ''], ['content-range', ''], ['content-type', ''], ['cookie', ''], ['date', ''], ['etag', ''],
  ['expect', ''], ['expires', ''], ['from', ''], ['host', ''], ['if-match', ''], ['if-modified-since', ''],
  ['if-none-match', ''], ['if-range', ''], ['if-unmodified-since', ''], ['last-modified', ''], ['link', ''],
  ['location', ''], ['max-forwards', ''], ['proxy-authenticate', ''], ['proxy-authorization', ''], ['range', ''],
  ['referer', ''], ['refresh', ''], ['retry-after', ''], ['server', ''], ['set-cookie', ''],
  ['strict-transport-security', ''], ['transfer-encoding', ''], ['user-agent', ''], ['vary', ''], ['via', ''],
  ['www-authenticate', ''],
];

/** The per-entry overhead of RFC 7541 4.1. */
const ENTRY_OVERHEAD = 32;

/** Integers past this are refused: no length or index in a bounded block comes near it. */
const MAX_INTEGER = 2 ** 28;

/** A header block that cannot be decoded: a connection error (COMPRESSION_ERROR, RFC 9113 4.3). */
export class HpackError extends Error {}

export interface DecodedBlock {
  fields: HeaderField[];
  /** The block's header list (RFC 9113 6.5.2: names, values, 32 per field) passed the decoder's bound: `fields` stops short of it. */
  oversize: boolean;
}

export class HpackDecoder {
  /** Newest last. */
  private readonly entries: HeaderField[] = [];
  private size = 0;
  private capacity: number;

  /**
   * `maxTableSize`: our SETTINGS_HEADER_TABLE_SIZE, the most the peer may set
   * the table to; `maxHeaderListSize`: our SETTINGS_MAX_HEADER_LIST_SIZE.
   */
  constructor(
    private readonly maxTableSize = 4096,
    private readonly maxHeaderListSize = 65536,
  ) {
    this.capacity = maxTableSize;
  }

  /** The dynamic table's size (RFC 7541 4.1) and entries, newest first (tests, config dumps). */
  get table(): { size: number; capacity: number; entries: HeaderField[] } {
    return { size: this.size, capacity: this.capacity, entries: [...this.entries].reverse() };
  }

  /**
   * The fields of one complete header block (HEADERS and its CONTINUATIONs).
   * A block past the header list bound is still decoded to its end (the
   * dynamic table must follow the peer's), its fields past the bound dropped.
   * Throws HpackError on anything malformed.
   */
  decode(block: Uint8Array): DecodedBlock {
    const fields: HeaderField[] = [];
    let listSize = 0;
    let oversize = false;
    let pos = 0;
    let fieldSeen = false;
    const integer = (prefixBits: number): number => {
      const mask = (1 << prefixBits) - 1;
      let value = block[pos++]! & mask;
      if (value < mask) return value;
      let shift = 0;
      for (;;) {
        if (pos >= block.length) throw new HpackError('integer truncated');
        const b = block[pos++]!;
        value += (b & 0x7f) * 2 ** shift;
        shift += 7;
        // Past 2^28 in value or in octets (zero continuations pad nothing a real encoder sends).
        if (value > MAX_INTEGER || shift > 28) throw new HpackError('integer too large');
        if ((b & 0x80) === 0) return value;
      }
    };
    const string = (): string => {
      if (pos >= block.length) throw new HpackError('string truncated');
      const huffman = (block[pos]! & 0x80) !== 0;
      const length = integer(7);
      if (length > block.length - pos) throw new HpackError('string longer than its block');
      const raw = block.subarray(pos, pos + length);
      pos += length;
      if (!huffman) return Buffer.from(raw.buffer, raw.byteOffset, raw.length).toString('latin1');
      try {
        return huffmanDecode(raw, this.maxHeaderListSize).toString('latin1');
      } catch (err) {
        if (err instanceof HuffmanError) throw new HpackError(err.message);
        throw err;
      }
    };
    const indexed = (index: number): HeaderField => {
      if (index === 0) throw new HpackError('index 0');
      if (index <= STATIC_TABLE.length) return STATIC_TABLE[index - 1]!;
      const dynamic = index - STATIC_TABLE.length;
      if (dynamic > this.entries.length) throw new HpackError(`index ${index} past the table`);
      return this.entries[this.entries.length - dynamic]!;
    };
    const emit = (name: string, value: string): void => {
      listSize += name.length + value.length + ENTRY_OVERHEAD;
      if (listSize > this.maxHeaderListSize) oversize = true;
      else fields.push([name, value]);
    };
    while (pos < block.length) {
      const b = block[pos]!;
      if (b & 0x80) {
        // Indexed field (6.1).
        const [name, value] = indexed(integer(7));
        emit(name, value);
        fieldSeen = true;
      } else if (b & 0x40) {
        // Literal with incremental indexing (6.2.1).
        const index = integer(6);
        const name = index === 0 ? string() : indexed(index)[0];
        const value = string();
        this.add(name, value);
        emit(name, value);
        fieldSeen = true;
      } else if (b & 0x20) {
        // Dynamic table size update (6.3): only before the block's first field (RFC 7541 4.2).
        if (fieldSeen) throw new HpackError('table size update after a field');
        const size = integer(5);
        if (size > this.maxTableSize) throw new HpackError(`table size ${size} past the ${this.maxTableSize} allowed`);
        this.capacity = size;
        this.evict(0);
      } else {
        // Literal without indexing (6.2.2) or never indexed (6.2.3).
        const index = integer(4);
        const name = index === 0 ? string() : indexed(index)[0];
        emit(name, string());
        fieldSeen = true;
      }
    }
    return { fields, oversize };
  }

  private add(name: string, value: string): void {
    const size = name.length + value.length + ENTRY_OVERHEAD;
    // An entry larger than the table empties it and is not added (RFC 7541 4.4).
    this.evict(size);
    if (size <= this.capacity) {
      this.entries.push([name, value]);
      this.size += size;
    }
  }

  /** Evicts the oldest entries until `room` more fits (or the table is empty). */
  private evict(room: number): void {
    let drop = 0;
    while (this.size + room > this.capacity && drop < this.entries.length) {
      const [name, value] = this.entries[drop++]!;
      this.size -= name.length + value.length + ENTRY_OVERHEAD;
    }
    if (drop > 0) this.entries.splice(0, drop);
  }
}

/** Static table index by name (its first entry with the name). */
const STATIC_NAME_INDEX = new Map<string, number>();
STATIC_TABLE.forEach(([name], i) => {
  if (!STATIC_NAME_INDEX.has(name)) STATIC_NAME_INDEX.set(name, i + 1);
});

/** Static table index by name, then value, for the fields it holds whole (`:method: POST`, `:status: 200`, …): looked up by the field's own strings, no key string made per field. */
const STATIC_FIELD_INDEX = new Map<string, Map<string, number>>();
STATIC_TABLE.forEach(([name, value], i) => {
  if (value === '') return;
  let byValue = STATIC_FIELD_INDEX.get(name);
  if (byValue === undefined) STATIC_FIELD_INDEX.set(name, (byValue = new Map()));
  byValue.set(value, i + 1);
});

/** What encodeHeaderBlock's first pass found per field, for its second: a whole field's static index (> 0), minus its name's (< 0), or 0 (a literal name). Reused across calls. */
const fieldCodes: number[] = [];

/**
 * Buffer's own latin1 writer, the one `buf.write(s, pos, 'latin1')` ends in,
 * called without that method's argument and encoding checks (most of the
 * cost of writing a header's short strings).
 */
const latin1Write = (Buffer.prototype as Buffer & { latin1Write?: (this: Buffer, s: string, offset: number) => number }).latin1Write;

function writeLatin1(out: Buffer, s: string, pos: number): number {
  // Not a documented API: a Node without it takes the documented write.
  return latin1Write !== undefined ? latin1Write.call(out, s, pos) : out.write(s, pos, 'latin1');
}

function integerLength(value: number, prefixBits: number): number {
  const max = (1 << prefixBits) - 1;
  if (value < max) return 1;
  let n = 2;
  for (let rest = value - max; rest >= 0x80; rest = Math.floor(rest / 0x80)) n++;
  return n;
}

function writeInteger(out: Buffer, pos: number, value: number, prefixBits: number, firstBits: number): number {
  const max = (1 << prefixBits) - 1;
  if (value < max) {
    out[pos++] = firstBits | value;
    return pos;
  }
  out[pos++] = firstBits | max;
  let rest = value - max;
  while (rest >= 0x80) {
    out[pos++] = (rest % 0x80) | 0x80;
    rest = Math.floor(rest / 0x80);
  }
  out[pos++] = rest;
  return pos;
}

/**
 * A header block of `fields` (names lower-case, as HTTP/2 requires; strings
 * latin1): fields the static table holds whole by index, the others as
 * literals without indexing (plain, not Huffman), their names by static
 * index where it has them. `tableSizeUpdate`: a dynamic table size update
 * to put first (the encoder uses no dynamic table; a peer that lowers
 * SETTINGS_HEADER_TABLE_SIZE is told so by an update to 0).
 */
export function encodeHeaderBlock(fields: Iterable<HeaderField>, tableSizeUpdate?: number): Buffer {
  const list = Array.isArray(fields) ? (fields as HeaderField[]) : [...fields];
  let length = tableSizeUpdate === undefined ? 0 : integerLength(tableSizeUpdate, 5);
  for (let i = 0; i < list.length; i++) {
    const [name, value] = list[i]!;
    const whole = STATIC_FIELD_INDEX.get(name)?.get(value);
    if (whole !== undefined) {
      fieldCodes[i] = whole;
      length += integerLength(whole, 7);
      continue;
    }
    const nameIndex = STATIC_NAME_INDEX.get(name);
    if (nameIndex === undefined) {
      fieldCodes[i] = 0;
      length += 1 + integerLength(name.length, 7) + name.length;
    } else {
      fieldCodes[i] = -nameIndex;
      length += integerLength(nameIndex, 4);
    }
    length += integerLength(value.length, 7) + value.length;
  }
  const out = Buffer.allocUnsafe(length);
  let pos = tableSizeUpdate === undefined ? 0 : writeInteger(out, 0, tableSizeUpdate, 5, 0x20);
  for (let i = 0; i < list.length; i++) {
    const code = fieldCodes[i]!;
    if (code > 0) {
      pos = writeInteger(out, pos, code, 7, 0x80);
      continue;
    }
    const [name, value] = list[i]!;
    if (code === 0) {
      out[pos++] = 0;
      pos = writeInteger(out, pos, name.length, 7, 0);
      pos += writeLatin1(out, name, pos);
    } else pos = writeInteger(out, pos, -code, 4, 0);
    pos = writeInteger(out, pos, value.length, 7, 0);
    pos += writeLatin1(out, value, pos);
  }
  return out;
}
