// The store contract (xds/store/store.ts) held against all three stores:
// memory, file and a real etcd started for each test (test/helpers/etcd.ts).
// Compare-and-swap on a record's mod revision, watch from a revision,
// compaction answering OUT_OF_RANGE, a lease that is not kept alive deleting
// its record, and (file, etcd) a restart of the store keeping every
// acknowledged change and its revisions.

import test, { type ExecutionContext } from 'ava';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { EtcdStore } from '../../xds/store/etcd-store.js';
import { FileStore } from '../../xds/store/file-store.js';
import { MemoryStore } from '../../xds/store/memory-store.js';
import type { Store, StoreEvent } from '../../xds/store/store.js';
import { startEtcd } from '../helpers/etcd.js';
import { waitFor } from '../helpers/apps.js';

interface Subject {
  store: Store;
  /** Closes the store (and for etcd restarts the server), then opens it again on the same data. */
  reopen?: () => Promise<Store>;
}

const kinds: Record<string, (t: ExecutionContext) => Promise<Subject>> = {
  memory: async () => ({ store: new MemoryStore() }),
  file: async (t) => {
    const dir = await mkdtemp(join(tmpdir(), 'vsockmesh-store-'));
    t.teardown(() => rm(dir, { recursive: true, force: true }));
    const path = join(dir, 'store.json');
    return { store: await FileStore.open(path), reopen: () => FileStore.open(path) };
  },
  etcd: async (t) => {
    const etcd = await startEtcd(t);
    return {
      store: new EtcdStore({ endpoints: [etcd.endpoint], transport: { insecure: true } }),
      reopen: async () => {
        await etcd.restart();
        return new EtcdStore({ endpoints: [etcd.endpoint], transport: { insecure: true } });
      },
    };
  },
};

/** Every event a watch delivers, and the error that ended it. */
function collect(store: Store, prefix: string, after: number) {
  const seen: { events: StoreEvent[]; batches: number; error?: Error } = { events: [], batches: 0 };
  const watch = store.watch(prefix, after, {
    onEvents: (events) => {
      seen.batches++;
      seen.events.push(...events);
    },
    onError: (err) => {
      seen.error = err;
    },
  });
  return { seen, watch };
}

const describe = (e: StoreEvent): string => (e.type === 'put' ? `put ${e.record.key}=${e.record.value}@${e.revision}` : `delete ${e.key}@${e.revision}`);

for (const [kind, open] of Object.entries(kinds)) {
  // Without etcd (bash .ci/deps installs it) the etcd tests fail, saying so: they never skip.
  const storeTest = (title: string, body: (t: ExecutionContext, subject: Subject) => Promise<void>): void => {
    const full = `${kind}: ${title}`;
    test(full, async (t) => {
      const subject = await open(t);
      t.teardown(() => subject.store.close());
      await body(t, subject);
    });
  };

  storeTest('compare-and-swap on the mod revision: a stale revision changes nothing', async (t, { store }) => {
    const created = await store.commit({ checks: [{ key: 'svc/web', modRevision: 0 }], puts: [{ key: 'svc/web', value: 'v1' }] });
    t.true(created.ok);
    t.false((await store.commit({ checks: [{ key: 'svc/web', modRevision: 0 }], puts: [{ key: 'svc/web', value: 'again' }] })).ok, 'create-only fails once it exists');
    const first = await store.get('svc/web');
    t.like(first, { value: 'v1', modRevision: created.revision, createRevision: created.revision });

    // Two writers read revision r; one wins, the other's check fails and changes nothing.
    const [a, b] = await Promise.all([
      store.commit({ checks: [{ key: 'svc/web', modRevision: created.revision }], puts: [{ key: 'svc/web', value: 'from-a' }] }),
      store.commit({ checks: [{ key: 'svc/web', modRevision: created.revision }], puts: [{ key: 'svc/web', value: 'from-b' }] }),
    ]);
    t.is([a, b].filter((r) => r.ok).length, 1, 'exactly one wins');
    const winner = a.ok ? a : b;
    t.true(winner.revision > created.revision);
    t.like(await store.get('svc/web'), { value: a.ok ? 'from-a' : 'from-b', modRevision: winner.revision, createRevision: created.revision });
    t.false((await store.commit({ checks: [{ key: 'svc/web', modRevision: created.revision }], deletes: ['svc/web'] })).ok, 'a stale delete fails');
    t.truthy(await store.get('svc/web'));
    const deleted = await store.commit({ checks: [{ key: 'svc/web', modRevision: winner.revision }], deletes: ['svc/web'] });
    t.true(deleted.ok);
    t.is(await store.get('svc/web'), undefined);
    const listed = await store.list('svc/');
    t.deepEqual(listed.records, []);
    t.is(listed.revision, deleted.revision);
  });

  storeTest('a prefix check: a put under the prefix after the revision fails the transaction, a delete or a put elsewhere does not', async (t, { store }) => {
    const r1 = await store.commit({ puts: [{ key: 'reg/a', value: '1' }, { key: 'reg/b', value: '1' }] });
    await store.commit({ puts: [{ key: 'other/x', value: 'x' }], deletes: ['reg/b'] });
    const ok = await store.commit({ checks: [{ prefix: 'reg/', notModifiedAfter: r1.revision }], puts: [{ key: 'reg/c', value: '1' }] });
    t.true(ok.ok, 'only a delete and a put under another prefix came after r1');
    const stale = await store.commit({ checks: [{ prefix: 'reg/', notModifiedAfter: r1.revision }], puts: [{ key: 'reg/d', value: '1' }] });
    t.false(stale.ok, 'reg/c was put after r1');
    t.is(await store.get('reg/d'), undefined, 'nothing of it applied');
    t.true((await store.commit({ checks: [{ prefix: 'reg/', notModifiedAfter: ok.revision }], puts: [{ key: 'reg/d', value: '1' }] })).ok);
  });

  storeTest('hasHistoryAfter: true up to the current revision and beyond, false once compacted', async (t, { store }) => {
    const r1 = await store.commit({ puts: [{ key: 'svc/a', value: '1' }] });
    const r2 = await store.commit({ puts: [{ key: 'svc/a', value: '2' }] });
    const r3 = await store.commit({ puts: [{ key: 'svc/a', value: '3' }] });
    t.true(await store.hasHistoryAfter(r1.revision));
    await store.compact(r3.revision);
    t.false(await store.hasHistoryAfter(r1.revision), 'revisions after r1 are compacted');
    t.is(await store.hasHistoryAfter(r2.revision), await hasWatch(store, r2.revision), 'answers as a watch would');
    t.true(await store.hasHistoryAfter(r3.revision));
    t.true(await store.hasHistoryAfter(r3.revision + 5), 'a revision not reached yet is waited for, not compacted');
  });

  storeTest('watch from a revision: every later change under the prefix, in order, one transaction per call, then new ones', async (t, { store }) => {
    const r1 = await store.commit({ puts: [{ key: 'svc/a', value: '1' }] });
    await store.commit({ puts: [{ key: 'svc/b', value: '2' }, { key: 'other/x', value: 'x' }] });
    await store.commit({ puts: [{ key: 'svc/a', value: '3' }], deletes: ['svc/b'] });
    const { seen, watch } = collect(store, 'svc/', r1.revision);
    t.teardown(() => watch.cancel());
    await waitFor(() => seen.events.length >= 3, 'the three changes after r1', 10_000);
    const r4 = await store.commit({ puts: [{ key: 'svc/c', value: '4' }] });
    await waitFor(() => seen.events.length >= 4, 'the new change', 10_000);
    t.deepEqual(seen.events.map(describe), [`put svc/b=2@${r1.revision + 1}`, `delete svc/b@${r1.revision + 2}`, `put svc/a=3@${r1.revision + 2}`, `put svc/c=4@${r4.revision}`]);
    t.is(seen.batches, 3, 'one call per transaction');
    t.is(seen.error, undefined);
  });

  storeTest('compaction: a watch from before it gets OUT_OF_RANGE; from after it, the changes', async (t, { store }) => {
    const r1 = await store.commit({ puts: [{ key: 'svc/a', value: '1' }] });
    await store.commit({ puts: [{ key: 'svc/a', value: '2' }] });
    const r3 = await store.commit({ puts: [{ key: 'svc/a', value: '3' }] });
    await store.compact(r3.revision);
    const old = collect(store, 'svc/', r1.revision);
    t.teardown(() => old.watch.cancel());
    await waitFor(() => old.seen.error !== undefined, 'OUT_OF_RANGE', 10_000);
    t.is((old.seen.error as Error & { code?: string }).code, 'OUT_OF_RANGE');
    t.regex(old.seen.error!.message, /compacted/);
    t.deepEqual(old.seen.events, [], 'nothing before the error');
    const fresh = collect(store, 'svc/', r3.revision);
    t.teardown(() => fresh.watch.cancel());
    const r4 = await store.commit({ puts: [{ key: 'svc/a', value: '4' }] });
    await waitFor(() => fresh.seen.events.length >= 1, 'the change after compaction', 10_000);
    t.deepEqual(fresh.seen.events.map(describe), [`put svc/a=4@${r4.revision}`]);
    t.like(await store.get('svc/a'), { value: '4' }, 'compaction keeps the current records');
  });

  storeTest('a lease not kept alive deletes its record (a watched delete); one kept alive keeps it', async (t, { store }) => {
    const lease = await store.grantLease(1_000);
    const kept = await store.grantLease(1_000);
    const put = await store.commit({ puts: [{ key: 'vm/a', value: 'leased', lease }, { key: 'vm/kept', value: 'kept', lease: kept }, { key: 'vm/b', value: 'no lease' }] });
    t.like(await store.get('vm/a'), { lease });
    const { seen, watch } = collect(store, 'vm/', put.revision);
    t.teardown(() => watch.cancel());
    const keeping = setInterval(() => void store.keepAlive(kept).catch(() => undefined), 250);
    t.teardown(() => clearInterval(keeping));
    await waitFor(() => seen.events.length >= 1, 'the lease expiry', 20_000);
    t.deepEqual(
      seen.events.map((e) => `${e.type} ${e.type === 'put' ? e.record.key : e.key}`),
      ['delete vm/a'],
    );
    t.is(await store.get('vm/a'), undefined);
    t.like(await store.get('vm/b'), { value: 'no lease', lease: '' });
    t.like(await store.get('vm/kept'), { value: 'kept' }, 'kept alive');
    t.false(await store.keepAlive(lease), 'the expired lease is gone');
    t.true(await store.keepAlive(kept));
    await store.revokeLease(kept);
    t.is(await store.get('vm/kept'), undefined, 'revoking deletes at once');
    await t.throwsAsync(store.commit({ puts: [{ key: 'vm/c', value: 'x', lease }] }), { message: /lease/ });
  });

  if (kind !== 'memory') {
    storeTest('a restart of the store keeps every acknowledged change, its revisions and the epoch', async (t, subject) => {
      const { store } = subject;
      const epoch = await store.epoch();
      await store.commit({ puts: [{ key: 'svc/a', value: '1' }] });
      const last = await store.commit({ puts: [{ key: 'svc/b', value: '2' }] });
      const before = await store.list('svc/');
      await store.close();
      const again = await subject.reopen!();
      t.teardown(() => again.close());
      t.is(await again.epoch(), epoch);
      const after = await waitForList(again, 'svc/');
      t.deepEqual(after.records, before.records);
      t.is(after.revision, last.revision);
      const next = await again.commit({ checks: [{ key: 'svc/b', modRevision: last.revision }], puts: [{ key: 'svc/b', value: '3' }] });
      t.true(next.ok, 'a CAS on a revision read before the restart still holds');
      t.is(next.revision, last.revision + 1);
      // A watch from the last revision before the restart sees what came after.
      const { seen, watch } = collect(again, 'svc/', last.revision);
      t.teardown(() => watch.cancel());
      await waitFor(() => seen.events.length >= 1, 'the change after the restart', 10_000);
      t.deepEqual(seen.events.map(describe), [`put svc/b=3@${next.revision}`]);
    });
  }
}

/** Whether a watch from `after` starts (true) or gets OUT_OF_RANGE (false). */
async function hasWatch(store: Store, after: number): Promise<boolean> {
  const probe = collect(store, 'svc/', after);
  const put = await store.commit({ puts: [{ key: 'svc/probe', value: String(after) }] });
  await waitFor(() => probe.seen.error !== undefined || probe.seen.events.some((e) => e.revision === put.revision), 'the watch to start or fail', 10_000);
  probe.watch.cancel();
  return probe.seen.error === undefined;
}

test('etcd: a watch survives an etcd restart, resuming from its last revision: no event lost or repeated', async (t) => {
  const etcd = await startEtcd(t);
  const store = new EtcdStore({ endpoints: [etcd.endpoint], transport: { insecure: true } });
  t.teardown(() => store.close());
  const first = await store.commit({ puts: [{ key: 'svc/a', value: '1' }] });
  const { seen, watch } = collect(store, 'svc/', 0);
  t.teardown(() => watch.cancel());
  await waitFor(() => seen.events.length >= 1, 'the first change', 10_000);
  await etcd.restart();
  const acknowledged: number[] = [first.revision];
  for (let i = 2; i <= 6; i++) acknowledged.push((await retryUnavailable(() => store.commit({ puts: [{ key: 'svc/a', value: String(i) }] }))).revision);
  await waitFor(() => seen.events.length >= 6, 'every change after the restart', 20_000);
  t.deepEqual(
    seen.events.map((e) => e.revision),
    acknowledged,
    'each acknowledged change once, in order',
  );
  t.is(seen.error, undefined);
});

/** A call retried while etcd is coming back (calls made meanwhile get UNAVAILABLE, and were not applied). */
async function retryUnavailable<T>(call: () => Promise<T>): Promise<T> {
  const deadline = Date.now() + 20_000;
  for (;;) {
    try {
      return await call();
    } catch (err) {
      if ((err as { code?: string }).code !== 'UNAVAILABLE' || Date.now() > deadline) throw err;
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
  }
}

/** The first list a restarted store answers (etcd may take a moment to take requests again). */
async function waitForList(store: Store, prefix: string): Promise<Awaited<ReturnType<Store['list']>>> {
  const deadline = Date.now() + 20_000;
  for (;;) {
    try {
      return await store.list(prefix);
    } catch (err) {
      if (Date.now() > deadline) throw err;
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
  }
}
