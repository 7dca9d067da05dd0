// HPACK's Huffman code (RFC 7541 5.2, Appendix B): decoding of the strings
// clients send Huffman-encoded, and encoding. Pure.

import { HUFFMAN_LENGTHS } from './huffman-table.js';

const EOS = 256;

/** Each symbol's code, right-aligned (canonical: by length, then by symbol). */
export const HUFFMAN_CODES: readonly number[] = (() => {
  const codes = new Array<number>(HUFFMAN_LENGTHS.length).fill(0);
  const order = HUFFMAN_LENGTHS.map((length, symbol) => ({ length, symbol })).sort((a, b) => a.length - b.length || a.symbol - b.symbol);
  let code = 0;
  let length = order[0]!.length;
  for (const entry of order) {
    code *= 2 ** (entry.length - length);
    length = entry.length;
    codes[entry.symbol] = code;
    code++;
  }
  return codes;
})();

/**
 * The decoding tree: node n's children at 2n (bit 0) and 2n+1 (bit 1); a
 * positive entry is the child node, a negative one the leaf -(symbol + 1).
 */
const TREE: Int32Array = (() => {
  const tree = new Int32Array(2 * 512);
  let nodes = 1;
  for (let symbol = 0; symbol < HUFFMAN_LENGTHS.length; symbol++) {
    const length = HUFFMAN_LENGTHS[symbol]!;
    const code = HUFFMAN_CODES[symbol]!;
    let node = 0;
    for (let i = length - 1; i > 0; i--) {
      const slot = 2 * node + (Math.floor(code / 2 ** i) & 1);
      if (tree[slot] === 0) tree[slot] = nodes++;
      node = tree[slot]!;
    }
    tree[2 * node + (code & 1)] = -(symbol + 1);
  }
  return tree;
})();

export class HuffmanError extends Error {}

/**
 * The octets that `input` encodes. Throws HuffmanError on the EOS symbol, on
 * padding longer than 7 bits or not all ones (RFC 7541 5.2), or when the
 * output would pass `maxLength` octets.
 */
export function huffmanDecode(input: Uint8Array, maxLength = Infinity): Buffer {
  // Every code is at least 5 bits: the output is at most 8/5 of the input.
  const out = Buffer.allocUnsafe(Math.min(Math.ceil((input.length * 8) / 5), maxLength === Infinity ? Number.MAX_SAFE_INTEGER : maxLength + 1));
  let n = 0;
  let node = 0;
  // Bits read since the last symbol, and whether all were ones (valid padding).
  let pending = 0;
  let ones = true;
  for (let i = 0; i < input.length; i++) {
    const byte = input[i]!;
    for (let bit = 7; bit >= 0; bit--) {
      const b = (byte >> bit) & 1;
      const next = TREE[2 * node + b]!;
      pending++;
      ones &&= b === 1;
      if (next < 0) {
        const symbol = -next - 1;
        if (symbol === EOS) throw new HuffmanError('Huffman string holds EOS');
        if (n >= maxLength) throw new HuffmanError(`Huffman string longer than ${maxLength} octets`);
        out[n++] = symbol;
        node = 0;
        pending = 0;
        ones = true;
      } else node = next;
    }
  }
  if (pending > 7) throw new HuffmanError('Huffman padding longer than 7 bits');
  if (!ones) throw new HuffmanError('Huffman padding not the EOS prefix');
  return out.subarray(0, n);
}

/** The length in octets of `input` Huffman-encoded. */
export function huffmanLength(input: Uint8Array): number {
  let bits = 0;
  for (let i = 0; i < input.length; i++) bits += HUFFMAN_LENGTHS[input[i]!]!;
  return Math.ceil(bits / 8);
}

/** `input` Huffman-encoded, padded with the EOS prefix. */
export function huffmanEncode(input: Uint8Array): Buffer {
  const out = Buffer.alloc(huffmanLength(input));
  let n = 0;
  // Bits not yet written, in `acc`'s low `held` bits (held < 8 between symbols; a code is at most 30 bits).
  let acc = 0;
  let held = 0;
  for (let i = 0; i < input.length; i++) {
    const symbol = input[i]!;
    const length = HUFFMAN_LENGTHS[symbol]!;
    const code = HUFFMAN_CODES[symbol]!;
    // acc * 2^length + code stays below 2^38: exact in a double.
    acc = acc * 2 ** length + code;
    held += length;
    while (held >= 8) {
      held -= 8;
      out[n++] = Math.floor(acc / 2 ** held) & 0xff;
    }
    acc %= 2 ** held;
  }
  if (held > 0) out[n] = ((acc << (8 - held)) | (0xff >> held)) & 0xff;
  return out;
}
