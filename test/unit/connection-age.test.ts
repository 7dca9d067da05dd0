// peer_tls.max_connection_age: each connection's deadline within ±10 % of the
// age, and what happens past it (cut once quiet, or when the grace is over).

import test from 'ava';
import { AGE_JITTER, QUIET_MS, ageDeadlineMs, ageStep } from '../../proxy/peer-tls/connection-age.js';

const AGE = 30 * 60_000;

test('the deadline spans the age ±10 %: the lowest draw 90 %, the highest just under 110 %, the middle the age itself', (t) => {
  t.is(AGE_JITTER, 0.1);
  t.is(ageDeadlineMs(AGE, 0), 0.9 * AGE);
  t.is(ageDeadlineMs(AGE, 0.5), AGE);
  t.true(ageDeadlineMs(AGE, 0.999999) < 1.1 * AGE);
  t.true(ageDeadlineMs(AGE, 0.999999) > 1.099 * AGE);
});

test('deadlines of connections opened together are spread over the whole jitter window', (t) => {
  const draws = Array.from({ length: 1_000 }, (_, i) => ageDeadlineMs(AGE, i / 1_000));
  t.is(new Set(draws).size, 1_000, 'no two draws end together');
  t.true(draws.every((d) => d >= 0.9 * AGE && d < 1.1 * AGE));
  t.true(Math.max(...draws) - Math.min(...draws) > 0.19 * AGE);
});

test('a deadline is whole milliseconds, even for an age that does not divide', (t) => {
  t.true(Number.isInteger(ageDeadlineMs(1_001, 0.37)));
});

test('at the deadline (first look) a connection is given a quiet period to show whether it is idle', (t) => {
  t.deepEqual(ageStep(0, 30_000, null), { kind: 'look_again', inMs: QUIET_MS });
});

test('a connection that moved no byte since the last look is cut', (t) => {
  t.deepEqual(ageStep(QUIET_MS, 30_000, false), { kind: 'cut' });
});

test('a busy connection is looked at again, never later than the end of its grace', (t) => {
  t.deepEqual(ageStep(QUIET_MS, 30_000, true), { kind: 'look_again', inMs: QUIET_MS });
  t.deepEqual(ageStep(29_600, 30_000, true), { kind: 'look_again', inMs: 400 });
});

test('a busy connection is cut once its grace is over', (t) => {
  t.deepEqual(ageStep(30_000, 30_000, true), { kind: 'cut' });
  t.deepEqual(ageStep(45_000, 30_000, true), { kind: 'cut' });
});

test('grace 0: cut at the age, busy or not', (t) => {
  t.deepEqual(ageStep(0, 0, null), { kind: 'cut' });
  t.deepEqual(ageStep(3, 0, true), { kind: 'cut' });
});
