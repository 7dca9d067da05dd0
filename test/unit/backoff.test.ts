import test from 'ava';
import { Backoff } from '../../proxy/runtime/backoff.js';

test('delays double up to the cap; reset starts over', (t) => {
  const b = new Backoff({ initialMs: 100, maxMs: 1_000, jitter: 0 });
  t.deepEqual([b.next(), b.next(), b.next(), b.next(), b.next(), b.next()], [100, 200, 400, 800, 1_000, 1_000]);
  b.reset();
  t.is(b.next(), 100);
});

test('jitter spreads each delay by at most the configured share, both ways', (t) => {
  const low = new Backoff({ initialMs: 1_000, maxMs: 1_000, jitter: 0.2, random: () => 0 });
  const high = new Backoff({ initialMs: 1_000, maxMs: 1_000, jitter: 0.2, random: () => 0.999_999 });
  t.is(low.next(), 800);
  t.is(high.next(), 1_200);
});

test('a multiplier other than 2 is honoured', (t) => {
  const b = new Backoff({ initialMs: 10, maxMs: 100, multiplier: 3, jitter: 0 });
  t.deepEqual([b.next(), b.next(), b.next(), b.next()], [10, 30, 90, 100]);
});

test('nonsensical bounds are refused', (t) => {
  t.throws(() => new Backoff({ initialMs: 0, maxMs: 10 }), { instanceOf: RangeError });
  t.throws(() => new Backoff({ initialMs: 100, maxMs: 10 }), { instanceOf: RangeError });
});
