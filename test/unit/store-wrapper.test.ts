import test from 'ava';
import { MemoryStore } from '../../xds/store/memory-store.js';
import { endingWatches } from '../helpers/ending-store.js';
import { laggingWatches } from '../helpers/lagging-store.js';

// A commit through a test's store wrapper is the wrapped store's own: the store lists it at the new revision.
for (const [name, wrap] of [
  ['lagging', (memory: MemoryStore) => laggingWatches(memory).store],
  ['ending', (memory: MemoryStore) => endingWatches(memory).store],
] as const) {
  test(`a commit through the ${name} wrapper lands on the store it wraps`, async (t) => {
    const memory = new MemoryStore();
    const wrapped = wrap(memory);
    const committed = await wrapped.commit({ puts: [{ key: '/t/a', value: '1' }] });
    const listed = await memory.list('/t/');
    t.deepEqual(
      listed.records.map((r) => [r.key, r.value]),
      [['/t/a', '1']],
    );
    t.true(committed.ok);
    t.is(listed.revision, committed.revision);
    t.is((await wrapped.list('/t/')).revision, listed.revision);
  });
}
