import test from 'ava';
import { WriteSlots } from '../../xds/control-plane/write-slots.js';

const HOUR = 3_600_000;

test('at most `limit` slots are out; the rest wait and are woken in arrival order as slots come back', (t) => {
  const slots = new WriteSlots({ limit: 2, holdMs: HOUR });
  const woken: string[] = [];
  const a = slots.take(() => woken.push('a'));
  const b = slots.take(() => woken.push('b'));
  t.not(a, null);
  t.not(b, null);
  const c = (): void => {
    woken.push('c');
    t.not(slots.take(c), null, 'c gets the freed slot');
  };
  const d = (): void => {
    woken.push('d');
    t.not(slots.take(d), null, 'd gets the next one');
  };
  t.is(slots.take(c), null);
  t.is(slots.take(d), null);
  t.is(slots.inFlight, 2);
  t.is(slots.queued, 2);
  a!();
  t.deepEqual(woken, ['c']);
  a!();
  t.deepEqual(woken, ['c'], 'a second release of the same slot frees nothing');
  b!();
  t.deepEqual(woken, ['c', 'd']);
  t.is(slots.inFlight, 2);
  t.is(slots.queued, 0);
});

test('a waiter that takes no slot when woken passes it on to the next one', (t) => {
  const slots = new WriteSlots({ limit: 1, holdMs: HOUR });
  const first = slots.take(() => {});
  const woken: string[] = [];
  t.is(
    slots.take(() => woken.push('idle')),
    null,
  );
  const busy = (): void => {
    woken.push('busy');
    slots.take(busy);
  };
  t.is(slots.take(busy), null);
  first!();
  t.deepEqual(woken, ['idle', 'busy']);
  t.is(slots.inFlight, 1);
});

test('a waiter forgotten (its stream ended) is not woken', (t) => {
  const slots = new WriteSlots({ limit: 1, holdMs: HOUR });
  const first = slots.take(() => {});
  const woken: string[] = [];
  const gone = (): void => {
    woken.push('gone');
  };
  t.is(slots.take(gone), null);
  slots.forget(gone);
  first!();
  t.deepEqual(woken, []);
  t.is(slots.inFlight, 0);
});

test('a slot whose write never completes comes back after holdMs', async (t) => {
  const slots = new WriteSlots({ limit: 1, holdMs: 20 });
  t.not(
    slots.take(() => {}),
    null,
  );
  // The slot's timer is unref'ed (it keeps no server alive): this one keeps the test's process up meanwhile.
  const keepAlive = setInterval(() => {}, 1_000);
  await new Promise<void>((resolve) => {
    t.is(slots.take(resolve), null);
  });
  clearInterval(keepAlive);
  t.is(slots.inFlight, 0, 'the held slot was given back, the waiter woken');
});
