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

test('slots are bounded in bytes too: what would go beyond the budget waits, in order, and one response larger than the budget goes alone', (t) => {
  const slots = new WriteSlots({ limit: 10, bytes: 100, holdMs: HOUR });
  const a = slots.take(() => {}, 60);
  t.not(a, null);
  const woken: string[] = [];
  let big: (() => void) | null = null;
  const bigWake = (): void => {
    woken.push('big');
    big = slots.take(bigWake, 250);
  };
  let small: (() => void) | null = null;
  const smallWake = (): void => {
    woken.push('small');
    small = slots.take(smallWake, 10);
  };
  t.is(slots.take(bigWake, 250), null, 'beyond the budget while another response is in flight');
  t.is(slots.take(smallWake, 10), null, 'fits, but waits behind the one that came first');
  t.is(slots.bytesInFlight, 60);
  t.is(slots.queued, 2);
  a!();
  t.deepEqual(woken, ['big', 'small'], 'nothing in flight: the big one goes alone; the small one, woken next, waits again');
  t.not(big, null);
  t.is(small, null);
  t.is(slots.bytesInFlight, 250);
  t.is(slots.queued, 1);
  big!();
  t.deepEqual(woken, ['big', 'small', 'small']);
  t.not(small, null);
  t.is(slots.bytesInFlight, 10);
  t.is(slots.queued, 0);
});

test('a woken waiter still too big for the bytes left keeps its place at the head', (t) => {
  const slots = new WriteSlots({ limit: 10, bytes: 100, holdMs: HOUR });
  const a = slots.take(() => {}, 50);
  const b = slots.take(() => {}, 50);
  const woken: string[] = [];
  const bigWake = (): void => {
    woken.push('big');
    slots.take(bigWake, 80);
  };
  const laterWake = (): void => {
    woken.push('later');
    slots.take(laterWake, 10);
  };
  t.is(slots.take(bigWake, 80), null);
  t.is(slots.take(laterWake, 10), null);
  a!();
  t.deepEqual(woken, ['big'], 'woken, refused again (50 + 80 > 100), and the one behind it is not woken');
  t.is(slots.queued, 2);
  t.is(slots.take(() => {}, 1), null, 'a newcomer waits behind them');
  b!();
  t.deepEqual(woken, ['big', 'big', 'later'], 'the big one again first, it fits now, and so does the one behind it');
  t.is(slots.bytesInFlight, 90);
});
