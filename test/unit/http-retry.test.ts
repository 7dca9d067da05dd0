import test from 'ava';
import { MAX_REPLAY_BODY_BYTES, RetryBudget, causeLabel, mayRetry, type AttemptFacts, type RetryPolicy } from '../../proxy/http/retry.js';

const policy: RetryPolicy = { attempts: 3, connectFailure: true, reset: true, statuses: [503, 502] };
const facts = (over: Partial<AttemptFacts> = {}): AttemptFacts => ({ attempt: 1, method: 'GET', replayable: true, responseStarted: false, cause: { kind: 'status', status: 503 }, ...over });

test('no policy, or attempts used up: no retry', (t) => {
  t.false(mayRetry(undefined, facts()));
  t.false(mayRetry({ ...policy, attempts: 1 }, facts()));
  t.true(mayRetry(policy, facts({ attempt: 2 })));
  t.false(mayRetry(policy, facts({ attempt: 3 })));
});

test('only the causes the policy lists are retried', (t) => {
  t.true(mayRetry(policy, facts({ cause: { kind: 'status', status: 502 } })));
  t.false(mayRetry(policy, facts({ cause: { kind: 'status', status: 500 } })));
  t.false(mayRetry({ ...policy, connectFailure: false }, facts({ cause: { kind: 'connect_failure' } })));
  t.false(mayRetry({ ...policy, reset: false }, facts({ cause: { kind: 'reset' } })));
  t.true(mayRetry(policy, facts({ cause: { kind: 'reset' } })));
});

test('idempotent methods are retried after a status or a reset, others only after a connect failure', (t) => {
  for (const method of ['GET', 'HEAD', 'OPTIONS', 'PUT', 'DELETE', 'get']) t.true(mayRetry(policy, facts({ method })), method);
  for (const method of ['POST', 'PATCH', 'CONNECT', 'TRACE']) {
    t.false(mayRetry(policy, facts({ method })), method);
    t.false(mayRetry(policy, facts({ method, cause: { kind: 'reset' } })), method);
    t.true(mayRetry(policy, facts({ method, cause: { kind: 'connect_failure' } })), method);
  }
});

test('a body not held whole, or a response already started, is never retried', (t) => {
  t.false(mayRetry(policy, facts({ replayable: false, cause: { kind: 'connect_failure' } })));
  t.false(mayRetry(policy, facts({ responseStarted: true, cause: { kind: 'reset' } })));
  t.is(MAX_REPLAY_BODY_BYTES, 65_536);
});

test('cause labels: connect_failure, reset or the status', (t) => {
  t.deepEqual([causeLabel({ kind: 'connect_failure' }), causeLabel({ kind: 'reset' }), causeLabel({ kind: 'status', status: 503 })], ['connect_failure', 'reset', '503']);
});

test('the budget allows the minimum concurrency even with few requests, then a share of the active ones', (t) => {
  const budget = new RetryBudget(20, 3);
  budget.requestStarted();
  t.deepEqual([budget.tryRetry(), budget.tryRetry(), budget.tryRetry(), budget.tryRetry()], [true, true, true, false]);
  for (let i = 0; i < 24; i++) budget.requestStarted();
  // 25 active: 20 % is 5.
  t.deepEqual([budget.tryRetry(), budget.tryRetry(), budget.tryRetry()], [true, true, false]);
});

test('a request that ends gives its retries back', (t) => {
  const budget = new RetryBudget(20, 1);
  budget.requestStarted();
  budget.requestStarted();
  t.true(budget.tryRetry());
  t.false(budget.tryRetry());
  budget.requestEnded(1);
  t.true(budget.tryRetry());
});

test('a per-try timeout is retried as a reset: when the policy lists reset, for an idempotent method only', (t) => {
  const cause = { kind: 'per_try_timeout' } as const;
  t.true(mayRetry(policy, facts({ cause })));
  t.false(mayRetry({ ...policy, reset: false }, facts({ cause })));
  t.false(mayRetry(policy, facts({ cause, method: 'POST' })));
  t.false(mayRetry(policy, facts({ cause, responseStarted: true })));
  t.is(causeLabel(cause), 'per_try_timeout');
});

test('a refused HTTP/2 stream is retried under `reset` for any method, as nothing was processed', (t) => {
  const cause = { kind: 'refused_stream' } as const;
  for (const method of ['GET', 'POST', 'PATCH']) t.true(mayRetry(policy, facts({ cause, method })), method);
  t.false(mayRetry({ ...policy, reset: false }, facts({ cause, method: 'POST' })));
  t.false(mayRetry(policy, facts({ cause, replayable: false })));
  t.false(mayRetry(policy, facts({ cause, attempt: 3 })));
  t.is(causeLabel(cause), 'refused_stream');
});
