// MemorySettler: settles once per burst of notes, only after quietMs without a
// note, and only while the data path is idle (otherwise it looks again later).

import test from 'ava';
import { MemorySettler, type SettleTimers } from '../../proxy/runtime/settle-memory.js';

/** Timers run by hand: `fire()` runs the one pending timer. */
function manualTimers(): SettleTimers & { pending(): number; fire(): void; delays: number[] } {
  const timers = new Map<number, () => void>();
  let next = 0;
  const delays: number[] = [];
  return {
    delays,
    set: (fn, ms) => {
      delays.push(ms);
      timers.set(++next, fn);
      return next;
    },
    clear: (handle) => void timers.delete(handle as number),
    pending: () => timers.size,
    fire: () => {
      const [[id, fn]] = [...timers];
      timers.delete(id!);
      fn!();
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
