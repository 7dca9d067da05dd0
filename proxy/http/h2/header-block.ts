// A header block as it arrives: a HEADERS frame and its CONTINUATIONs,
// collected within bounds (octets and frames), decoded once complete.

import { HpackDecoder, HpackError, type HeaderField } from './hpack.js';
import { COMPRESSION_ERROR, ENHANCE_YOUR_CALM, H2ConnectionError, HEADERS, PROTOCOL_ERROR, unpad } from './frames.js';

export const MAX_HEADER_LIST = 65536;
/** A header block (HEADERS and its CONTINUATIONs) may be this long at most, in this many frames. */
const MAX_HEADER_BLOCK = 2 * MAX_HEADER_LIST;
const MAX_CONTINUATIONS = 64;

export type HeaderBlock = { streamId: number; flags: number; parts: Buffer[]; size: number };

/** Collects a HEADERS frame's block and its CONTINUATIONs, bounded; decode once complete. */
export function blockFrame(block: HeaderBlock | null, type: number, flags: number, streamId: number, payload: Buffer): HeaderBlock {
  let b = block;
  if (type === HEADERS) b = { streamId, flags, parts: [unpad(HEADERS, flags, payload)], size: 0 };
  else {
    if (b === null || b.streamId !== streamId) throw new H2ConnectionError(PROTOCOL_ERROR, 'CONTINUATION without its HEADERS');
    b.parts.push(payload);
    if (b.parts.length > MAX_CONTINUATIONS) throw new H2ConnectionError(ENHANCE_YOUR_CALM, `header block in more than ${MAX_CONTINUATIONS} frames`);
  }
  b.size += b.parts[b.parts.length - 1]!.length;
  if (b.size > MAX_HEADER_BLOCK) throw new H2ConnectionError(ENHANCE_YOUR_CALM, `header block past ${MAX_HEADER_BLOCK} octets`);
  return b;
}

export function decodeBlock(decoder: HpackDecoder, block: HeaderBlock): { fields: HeaderField[]; oversize: boolean } {
  try {
    return decoder.decode(block.parts.length === 1 ? block.parts[0]! : Buffer.concat(block.parts));
  } catch (err) {
    if (err instanceof HpackError) throw new H2ConnectionError(COMPRESSION_ERROR, `HPACK: ${err.message}`);
    throw err;
  }
}
