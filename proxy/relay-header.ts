// The host-relay header: what a guest's sidecar sends first to the relay on
// its hypervisor (vsock CID 2), naming the destination guest. Fixed size and
// strict, so a relay can read exactly 16 bytes and judge them.
//
//   offset 0  4 bytes  magic "VMRH" (0x56 0x4d 0x52 0x48)
//   offset 4  1 byte   version = 1
//   offset 5  3 bytes  reserved, zero
//   offset 8  4 bytes  destination CID, big-endian
//   offset 12 4 bytes  destination port, big-endian
//
// What follows is the stream for the destination (a PROXY v2 header, then the
// app's bytes). The relay does not trust the header for the source: it takes
// the source CID from the kernel.

export const RELAY_HEADER_LENGTH = 16;
const MAGIC = Buffer.from('VMRH', 'latin1');
const VERSION = 1;

export interface RelayDestination {
  cid: number;
  port: number;
}

export type RelayHeaderResult =
  | { kind: 'incomplete' }
  | { kind: 'header'; destination: RelayDestination }
  | { kind: 'invalid'; code: 'bad_magic' | 'bad_version' | 'bad_reserved' | 'bad_destination'; reason: string };

export function encodeRelayHeader(destination: RelayDestination): Buffer {
  const { cid, port } = destination;
  if (!Number.isInteger(cid) || cid < 1 || cid > 0xfffffffe) throw new RangeError(`destination CID ${cid} is out of 1..4294967294`);
  if (!Number.isInteger(port) || port < 1 || port > 0xfffffffe) throw new RangeError(`destination port ${port} is out of 1..4294967294`);
  const out = Buffer.alloc(RELAY_HEADER_LENGTH);
  MAGIC.copy(out, 0);
  out[4] = VERSION;
  out.writeUInt32BE(cid, 8);
  out.writeUInt32BE(port, 12);
  return out;
}

/** Judges the first bytes of a relay connection as soon as they rule a header out. */
export function decodeRelayHeader(buf: Uint8Array): RelayHeaderResult {
  for (let i = 0; i < Math.min(buf.length, MAGIC.length); i++) {
    if (buf[i] !== MAGIC[i]) return { kind: 'invalid', code: 'bad_magic', reason: `byte ${i} does not match the relay header magic "VMRH"` };
  }
  if (buf.length > 4 && buf[4] !== VERSION) return { kind: 'invalid', code: 'bad_version', reason: `relay header version ${buf[4]}, expected ${VERSION}` };
  for (let i = 5; i < Math.min(buf.length, 8); i++) {
    if (buf[i] !== 0) return { kind: 'invalid', code: 'bad_reserved', reason: `reserved byte ${i} is 0x${buf[i]!.toString(16)}, must be zero` };
  }
  if (buf.length < RELAY_HEADER_LENGTH) return { kind: 'incomplete' };
  const view = Buffer.from(buf.buffer, buf.byteOffset, RELAY_HEADER_LENGTH);
  const cid = view.readUInt32BE(8);
  const port = view.readUInt32BE(12);
  if (cid === 0 || cid === 0xffffffff || port === 0 || port === 0xffffffff) {
    return { kind: 'invalid', code: 'bad_destination', reason: `destination ${cid}:${port} is not a connectable vsock address` };
  }
  return { kind: 'header', destination: { cid, port } };
}
