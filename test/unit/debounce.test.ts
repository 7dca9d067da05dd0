// The Debouncer with a clock the test moves: bursts coalesce, long bursts run
// at most every maxMs, runs never overlap, errors go to onError.

import test from 'ava';
import { Debouncer } from '../../xds/control-plane/debounce.js';
import { FakeClock } from '../helpers/fake-clock.js';

/** Moves the clock 1 ms at a time, letting the debouncer's promises settle after each step. */
async function advance(clock: FakeClock, ms: number): Promise<void> {
  for (let i = 0; i < ms; i++) {
    clock.advance(1);
    await new Promise((resolve) => setImmediate(resolve));
  }
}

test('debouncer: a burst runs once after the quiet time, a long burst at most every maxMs', async (t) => {
  const clock = new FakeClock();
  const runs: number[] = [];
  const d = new Debouncer(() => void runs.push(clock.now()), { quietMs: 100, maxMs: 1000, clock });
  d.trigger();
  await advance(clock, 50);
  d.trigger();
  await advance(clock, 99);
  t.deepEqual(runs, []);
  await advance(clock, 1);
  t.deepEqual(runs, [150]);
  // Triggers every 50 ms for 2.5 s: runs at the max interval, then once after the last.
  runs.length = 0;
  for (let i = 0; i < 50; i++) {
    d.trigger();
    await advance(clock, 50);
  }
  await advance(clock, 200);
  t.deepEqual(runs, [1150, 2150, 2700], 'bursts from 150 and 1150 run at their max; the last after the quiet time');
  t.false(d.pending);
  d.close();
  t.is(clock.pending, 0, 'closed: no timer left');
});

test('debouncer: runs never overlap; triggers during a run and errors are handled', async (t) => {
  const clock = new FakeClock();
  let release!: () => void;
  let active = 0;
  let maxActive = 0;
  const errors: unknown[] = [];
  let fail = false;
  const d = new Debouncer(
    async () => {
      active++;
      maxActive = Math.max(maxActive, active);
      await new Promise<void>((resolve) => (release = resolve));
      active--;
      if (fail) throw new Error('rebuild failed');
    },
    { quietMs: 10, maxMs: 100, clock, onError: (err) => errors.push(err) },
  );
  d.trigger();
  await advance(clock, 10);
  t.is(d.runs, 1);
  d.trigger();
  await advance(clock, 50);
  t.is(d.runs, 1, 'no second run while the first is in progress');
  fail = true;
  release();
  await new Promise((resolve) => setImmediate(resolve));
  await advance(clock, 10);
  t.is(d.runs, 2);
  t.is(maxActive, 1);
  release();
  await d.flush();
  t.is((errors[0] as Error).message, 'rebuild failed');
  d.trigger();
  t.true(d.pending);
  const flushed = d.flush();
  release();
  await flushed;
  t.is(d.runs, 3, 'flush runs a pending burst at once');
  d.close();
  d.trigger();
  await advance(clock, 1000);
  t.is(d.runs, 3, 'closed: triggers are ignored');
});
