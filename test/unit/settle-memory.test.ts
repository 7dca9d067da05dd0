// MemorySettler: settles once per burst of notes, only after quietMs without a
// note, and only while the data path is idle (otherwise it looks again later).

import test from 'ava';
import { MemorySettler, TrafficWatch, type SettleTimers } from '../../proxy/runtime/settle-memory.js';

/** Timers run by hand: `fire()` runs the pending timer of the shortest delay (the first set among equals). */
function manualTimers(): SettleTimers & { pending(): number; fire(): void; delays: number[] } {
  const timers = new Map<number, { fn: () => void; ms: number }>();
  let next = 0;
  const delays: number[] = [];
  return {
    delays,
    set: (fn, ms) => {
      delays.push(ms);
      timers.set(++next, { fn, ms });
      return next;
    },
    clear: (handle) => void timers.delete(handle as number),
    pending: () => timers.size,
    fire: () => {
      const [id, { fn }] = [...timers].reduce((a, b) => (b[1].ms < a[1].ms ? b : a));
      timers.delete(id);
      fn();
    },
  };
}

test('a note settles once after quietMs; nothing runs before', (t) => {
  const timers = manualTimers();
  let settled = 0;
  const settler = new MemorySettler(() => settled++, () => true, timers, 2_000);
  settler.note();
  t.is(settled, 0);
  t.is(timers.pending(), 1);
  t.deepEqual(timers.delays, [2_000]);
  timers.fire();
  t.is(settled, 1);
  t.is(timers.pending(), 0, 'nothing more is scheduled');
});

test('a burst of notes settles once, quietMs after the last', (t) => {
  const timers = manualTimers();
  let settled = 0;
  const settler = new MemorySettler(() => settled++, () => true, timers, 2_000);
  settler.note();
  settler.note();
  settler.note();
  t.is(timers.pending(), 1, 'each note replaces the pending one');
  timers.fire();
  t.is(settled, 1);
});

test('while connections are open it does not settle and looks again; it settles once idle', (t) => {
  const timers = manualTimers();
  let settled = 0;
  let idle = false;
  const settler = new MemorySettler(() => settled++, () => idle, timers, 2_000);
  settler.note();
  timers.fire();
  t.is(settled, 0);
  t.is(timers.pending(), 1, 'looked again later');
  timers.fire();
  t.is(settled, 0);
  idle = true;
  timers.fire();
  t.is(settled, 1);
  t.is(timers.pending(), 0);
});

// TrafficWatch: traffic notes the settler, at most once per spacingMs; still()
// says whether the data path moved since the last look.

test('traffic watch: no traffic, no note; it keeps looking every quietMs', (t) => {
  const timers = manualTimers();
  let notes = 0;
  const watch = new TrafficWatch(() => 7, () => notes++, timers, 2_000, 30_000);
  watch.start();
  timers.fire();
  timers.fire();
  t.is(notes, 0);
  t.deepEqual(timers.delays, [2_000, 2_000, 2_000]);
});

test('traffic watch: activity since the last look notes once, and the next look waits spacingMs', (t) => {
  const timers = manualTimers();
  let notes = 0;
  let activity = 1;
  const watch = new TrafficWatch(() => activity, () => notes++, timers, 2_000, 30_000);
  watch.start();
  activity = 5;
  timers.fire();
  t.is(notes, 1);
  t.is(timers.delays.at(-1), 30_000);
  activity = 9;
  timers.fire();
  t.is(notes, 2, 'traffic after the spacing notes again');
  timers.fire();
  t.is(notes, 2, 'a look that finds nothing new does not');
  t.is(timers.delays.at(-1), 2_000);
});

test('traffic watch: still() is true only when nothing moved since the last look and every open connection is seen', (t) => {
  const timers = manualTimers();
  let activity: number | null = 3;
  const watch = new TrafficWatch(() => activity, () => {}, timers, 2_000, 30_000);
  watch.start();
  t.true(watch.still());
  activity = 4;
  t.false(watch.still(), 'bytes moved since the last look');
  t.true(watch.still(), 'and not since');
  activity = null;
  t.false(watch.still(), 'an open connection it cannot see');
  t.false(watch.still());
});

test('traffic watch: stop() ends the looks', (t) => {
  const timers = manualTimers();
  const watch = new TrafficWatch(() => 1, () => {}, timers, 2_000, 30_000);
  watch.start();
  watch.stop();
  t.is(timers.pending(), 0);
});

test('settler and traffic watch together: traffic, then quiet with relayed connections open, settles once', (t) => {
  const timers = manualTimers();
  let settled = 0;
  let activity = 0;
  let watch: TrafficWatch | undefined = undefined;
  const settler = new MemorySettler(() => settled++, () => watch!.still(), timers, 2_000);
  watch = new TrafficWatch(() => activity, () => settler.note(), timers, 2_000, 30_000);
  watch.start();
  activity = 100;
  timers.fire(); // the watch's look: moved, notes
  activity = 200;
  timers.fire(); // the settler: moved since the look, looks again
  t.is(settled, 0);
  timers.fire(); // the settler again: nothing moved
  t.is(settled, 1);
  t.is(timers.pending(), 1, 'only the watch looks on');
});
