// When the HTTP/1.1 server side's checker finds a request overdue (408):
// counted in whole intervals of its ticks, never early.

import test from 'ava';
import { DEFAULT_HTTP1_TIMEOUTS, overdue } from '../../proxy/http/http1-deadlines.js';

const timeouts = { headersTimeoutMs: 60_000, requestTimeoutMs: 300_000, checkIntervalMs: 1_000 };

test('between requests nothing is overdue, however long the connection waits', (t) => {
  t.false(overdue('idle', 0, 1_000_000, timeouts));
});

test('a head is overdue once its limit has passed in whole intervals since the tick it began in', (t) => {
  // Begun at some time within tick 5: at tick 65 at least 59 intervals have passed, at tick 66 at least 60.
  t.false(overdue('head', 5, 65, timeouts));
  t.true(overdue('head', 5, 66, timeouts));
  t.true(overdue('head', 5, 500, timeouts));
});

test('a body is held to the request limit, not the head one', (t) => {
  t.false(overdue('body', 0, 66, timeouts));
  t.false(overdue('body', 0, 300, timeouts));
  t.true(overdue('body', 0, 301, timeouts));
});

test('never early: even with a zero limit, a phase is overdue only from the tick after the one it began in', (t) => {
  const zero = { headersTimeoutMs: 0, requestTimeoutMs: 0, checkIntervalMs: 10 };
  t.false(overdue('head', 7, 7, zero));
  t.true(overdue('head', 7, 8, zero));
  t.false(overdue('body', 8, 8, zero));
});

test("the defaults are Node's http server's: 60 s for a head, 300 s for a request", (t) => {
  t.is(DEFAULT_HTTP1_TIMEOUTS.headersTimeoutMs, 60_000);
  t.is(DEFAULT_HTTP1_TIMEOUTS.requestTimeoutMs, 300_000);
});
