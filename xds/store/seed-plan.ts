// Seeding a store (the VM inventory, the mesh file) in transactions etcd
// takes with its default limits (--max-txn-ops 128, --max-request-bytes
// 1.5 MiB), whatever the seed's size: the records to write, split into chunks
// of at most SEED_TXN_OPS operations and SEED_TXN_BYTES bytes. Pure: seed.ts
// claims the seed, commits the chunks and marks it seeded.

/** Operations (compares and requests) in one seeding transaction: half of etcd's default --max-txn-ops. */
export const SEED_TXN_OPS = 64;
/** Key and value bytes in one seeding transaction: a third of etcd's default --max-request-bytes (1.5 MiB). */
export const SEED_TXN_BYTES = 512 * 1024;
/** What an operation costs beyond its key and value (protobuf framing, a lease id). */
const OP_OVERHEAD_BYTES = 32;

/** A record the seed writes; `leaseTtlMs` > 0: put with a store lease of that TTL. */
export interface SeedRecord {
  key: string;
  value: string;
  leaseTtlMs: number;
}

export interface SeedChunkLimits {
  /** Records per chunk (what SEED_TXN_OPS leaves after the chunk's own compares and marker writes). */
  maxRecords: number;
  maxBytes: number;
}

/**
 * The records of `wanted` the store does not hold as they are (`present`:
 * key → value), in the order given, split into chunks within `limits`. A
 * record larger than maxBytes goes alone (the registry's bounds keep records
 * far below it). Always at least one chunk: the last one carries the marker.
 */
export function planSeedChunks(wanted: readonly SeedRecord[], present: ReadonlyMap<string, string>, limits: SeedChunkLimits): SeedRecord[][] {
  if (!Number.isInteger(limits.maxRecords) || limits.maxRecords < 1) throw new RangeError(`maxRecords must be an integer >= 1 (got ${limits.maxRecords})`);
  const chunks: SeedRecord[][] = [[]];
  let bytes = 0;
  for (const record of wanted) {
    if (present.get(record.key) === record.value) continue;
    const size = recordBytes(record);
    const current = chunks.at(-1)!;
    if (current.length > 0 && (current.length >= limits.maxRecords || bytes + size > limits.maxBytes)) {
      chunks.push([record]);
      bytes = size;
      continue;
    }
    current.push(record);
    bytes += size;
  }
  return chunks;
}

/** What a record adds to a transaction's size. */
export function recordBytes(record: SeedRecord): number {
  return Buffer.byteLength(record.key) + Buffer.byteLength(record.value) + OP_OVERHEAD_BYTES;
}
