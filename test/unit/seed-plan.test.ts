// Seeding an inventory in chunks etcd takes with its default limits: which
// records are written, in what order, and how they are split.

import test from 'ava';
import { planSeedChunks, recordBytes, SEED_TXN_BYTES, SEED_TXN_OPS, type SeedRecord } from '../../xds/store/seed-plan.js';

const record = (i: number, valueBytes = 100, leaseTtlMs = 0): SeedRecord => ({ key: `/r/vms/vm-${String(i).padStart(5, '0')}`, value: 'x'.repeat(valueBytes), leaseTtlMs });
const records = (n: number, valueBytes = 100): SeedRecord[] => Array.from({ length: n }, (_, i) => record(i, valueBytes));
const none = new Map<string, string>();
const limits = { maxRecords: 61, maxBytes: SEED_TXN_BYTES };

test('the limits are within etcd defaults (--max-txn-ops 128, --max-request-bytes 1.5 MiB)', (t) => {
  t.true(SEED_TXN_OPS <= 128);
  t.true(SEED_TXN_BYTES < 1.5 * 1024 * 1024);
});

test('an empty inventory is one empty chunk (the one that marks the registry seeded)', (t) => {
  t.deepEqual(planSeedChunks([], none, limits), [[]]);
});

test('records fill chunks of at most maxRecords, in the order given, each record once', (t) => {
  const wanted = records(300);
  const chunks = planSeedChunks(wanted, none, limits);
  t.deepEqual(chunks.map((c) => c.length), [61, 61, 61, 61, 56]);
  t.deepEqual(chunks.flat(), wanted);
});

test('exactly maxRecords records are one chunk; one more is two', (t) => {
  t.deepEqual(planSeedChunks(records(61), none, limits).map((c) => c.length), [61]);
  t.deepEqual(planSeedChunks(records(62), none, limits).map((c) => c.length), [61, 1]);
});

test('a chunk never holds more than maxBytes of records', (t) => {
  const wanted = records(100, 10_000);
  const maxBytes = 50_000;
  const chunks = planSeedChunks(wanted, none, { maxRecords: 61, maxBytes });
  for (const chunk of chunks) t.true(chunk.reduce((n, r) => n + recordBytes(r), 0) <= maxBytes);
  t.deepEqual(chunks.map((c) => c.length), Array.from({ length: 25 }, () => 4));
  t.deepEqual(chunks.flat(), wanted);
});

test('a record larger than maxBytes goes alone in its chunk', (t) => {
  const wanted = [record(0, 10), record(1, 5_000), record(2, 10)];
  t.deepEqual(planSeedChunks(wanted, none, { maxRecords: 61, maxBytes: 1_000 }).map((c) => c.map((r) => r.key)), [['/r/vms/vm-00000'], ['/r/vms/vm-00001'], ['/r/vms/vm-00002']]);
});

test('records the store holds as they are are left out; those absent or different are written', (t) => {
  const wanted = records(5);
  const present = new Map([
    [wanted[0]!.key, wanted[0]!.value],
    [wanted[2]!.key, 'another value'],
    [wanted[4]!.key, wanted[4]!.value],
  ]);
  t.deepEqual(planSeedChunks(wanted, present, limits), [[wanted[1], wanted[2], wanted[3]]]);
});

test('an inventory the store holds whole leaves one empty chunk (to mark it seeded)', (t) => {
  const wanted = records(200);
  t.deepEqual(planSeedChunks(wanted, new Map(wanted.map((r) => [r.key, r.value])), limits), [[]]);
});

test('leased records keep their TTL', (t) => {
  const wanted = [record(0, 10, 30_000), record(1, 10)];
  t.deepEqual(planSeedChunks(wanted, none, limits)[0]!.map((r) => r.leaseTtlMs), [30_000, 0]);
});

test('maxRecords below 1 is refused', (t) => {
  t.throws(() => planSeedChunks(records(1), none, { maxRecords: 0, maxBytes: 1_000 }), { instanceOf: RangeError, message: /maxRecords must be an integer >= 1/ });
});
