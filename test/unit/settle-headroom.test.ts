import test from 'ava';
import { SETTLE_HEAP_GROWING_PERCENT, startedGrowingPercent, withHeapHeadroom } from '../../proxy/runtime/settle-headroom.js';

test('the settle runs with the headroom set, and the flag is set back after it, its result passed on', (t) => {
  const calls: string[] = [];
  const settle = withHeapHeadroom(
    () => {
      calls.push('settle');
      return { trimmed: true };
    },
    50,
    [],
    (flags) => calls.push(flags),
  );
  t.deepEqual(calls, [], 'nothing is set until a settle runs');
  t.deepEqual(settle(), { trimmed: true });
  t.deepEqual(calls, ['--heap-growing-percent=50', 'settle', '--heap-growing-percent=0']);
});

test('a settle that throws still sets the flag back', (t) => {
  const calls: string[] = [];
  const settle = withHeapHeadroom(
    () => {
      throw new Error('addon gone');
    },
    30,
    [],
    (flags) => calls.push(flags),
  );
  t.throws(settle, { message: 'addon gone' });
  t.deepEqual(calls, ['--heap-growing-percent=30', '--heap-growing-percent=0']);
});

test('the flag goes back to what the process was started with', (t) => {
  const calls: string[] = [];
  withHeapHeadroom(() => undefined, 50, ['--max-semi-space-size=16', '--heap-growing-percent=20'], (flags) => calls.push(flags))();
  t.deepEqual(calls, ['--heap-growing-percent=50', '--heap-growing-percent=20']);
});

test('the started value: V8 spellings, a separate value, the last one wins, bad values ignored', (t) => {
  t.is(startedGrowingPercent([]), 0);
  t.is(startedGrowingPercent(['--heap-growing-percent=40']), 40);
  t.is(startedGrowingPercent(['--heap_growing_percent=15']), 15);
  t.is(startedGrowingPercent(['--heap-growing-percent', '25', '--no-turbofan']), 25);
  t.is(startedGrowingPercent(['--heap-growing-percent=10', '--heap-growing-percent=70']), 70);
  t.is(startedGrowingPercent(['--heap-growing-percent=lots', '--heap-growing-percent=-3']), 0);
  t.is(startedGrowingPercent(['--heap-growing-percentage=9', '--max-heap-growing-percent=9']), 0);
});

test('a headroom that is not a whole percentage is refused', (t) => {
  for (const bad of [0, -10, 2.5, Number.NaN]) t.throws(() => withHeapHeadroom(() => undefined, bad, [], () => undefined), { message: /whole percentage/ });
});

test("V8 takes the flags the settle sets (the process's own setter)", (t) => {
  t.true(SETTLE_HEAP_GROWING_PERCENT > 10);
  let ran = false;
  withHeapHeadroom(() => {
    ran = true;
  })();
  t.true(ran);
});
