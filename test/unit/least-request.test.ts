import test from 'ava';
import { pickLeastRequest } from '../../proxy/upstream/least-request.js';

const seq = (...values: number[]) => {
  let i = 0;
  return () => values[i++ % values.length]!;
};
const none = () => 0;

test('no endpoint: undefined; one endpoint: that one, whatever its load', (t) => {
  t.is(pickLeastRequest([], none, Math.random), undefined);
  t.is(pickLeastRequest(['a'], () => 99, Math.random), 'a');
});

test('of the two drawn, the one with fewer active requests wins', (t) => {
  const active = new Map([['a', 5], ['b', 1], ['c', 3]]);
  const load = (e: string) => active.get(e)!;
  t.is(pickLeastRequest(['a', 'b', 'c'], load, seq(0, 0)), 'b', 'draws a then b');
  t.is(pickLeastRequest(['a', 'b', 'c'], load, seq(0, 0.99)), 'c', 'draws a then c');
  t.is(pickLeastRequest(['a', 'b', 'c'], load, seq(0.99, 0)), 'c', 'draws c then a: c has fewer');
});

test('a tie goes to the first drawn', (t) => {
  t.is(pickLeastRequest(['a', 'b'], none, seq(0, 0)), 'a');
  t.is(pickLeastRequest(['a', 'b'], none, seq(0.9, 0)), 'b');
});

test('the two draws are always distinct, even when the second number repeats the first', (t) => {
  const endpoints = ['a', 'b', 'c', 'd'];
  for (const r1 of [0, 0.25, 0.5, 0.75, 0.999999]) {
    for (const r2 of [0, 0.33, 0.66, 0.999999]) {
      const drawn: string[] = [];
      pickLeastRequest(endpoints, (e) => (drawn.push(e), 0), seq(r1, r2));
      t.is(new Set(drawn).size, 2, `${r1} ${r2}: ${drawn.join(',')}`);
    }
  }
});

test('the busiest endpoint is never picked when there are more than one, and over many draws the idle ones share the load', (t) => {
  const endpoints = ['busy', 'x', 'y'];
  const counts = new Map<string, number>();
  let state = 1;
  const random = () => ((state = (state * 48271) % 2147483647) / 2147483647);
  for (let i = 0; i < 3000; i++) {
    const e = pickLeastRequest(endpoints, (name) => (name === 'busy' ? 10 : 0), random)!;
    counts.set(e, (counts.get(e) ?? 0) + 1);
  }
  t.is(counts.get('busy'), undefined);
  t.true(counts.get('x')! > 1000 && counts.get('y')! > 1000, JSON.stringify([...counts]));
});
