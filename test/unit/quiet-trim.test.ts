import test from 'ava';
import { QUIET_TRIM_POLICY, QUIET_TRIM_START, afterSettle, quietTrimStep, type QuietTrimState } from '../../proxy/runtime/quiet-trim.js';

const policy = { busyUtilization: 0.25, quietUtilization: 0.05, quietSamples: 2, minSpacingMs: 2_000, maxPauseShare: 0.05 };
const idle: QuietTrimState = { burst: false, quiet: 0, notBeforeMs: undefined };

/** Feeds one sample per second from `fromMs`; returns the times a trim ran and the last state. */
function run(state: QuietTrimState, samples: number[], fromMs = 0): { trims: number[]; state: QuietTrimState } {
  const trims: number[] = [];
  samples.forEach((u, i) => {
    const now = fromMs + i * 1_000;
    const step = quietTrimStep(state, u, now, policy);
    state = step.state;
    if (step.trim) trims.push(now);
  });
  return { trims, state };
}

test('starting up counts as a burst: the first quiet seconds after it trim once', (t) => {
  t.true(QUIET_TRIM_START.burst);
  t.deepEqual(run(QUIET_TRIM_START, [0, 0, 0, 0, 0]).trims, [1_000]);
});

test('an idle process never trims', (t) => {
  t.deepEqual(run(idle, Array(100).fill(0.01)).trims, []);
});

test('a burst, then quiet: one trim after quietSamples quiet samples, none after', (t) => {
  t.deepEqual(run(idle, [0.9, 0.9, 0.01, 0.01, 0.01, 0.01]).trims, [3_000]);
});

test('never while busy, and a middling sample starts the quiet count again', (t) => {
  t.deepEqual(run(idle, [0.9, 0.01, 0.1, 0.01, 0.3, 0.01, 0.01]).trims, [6_000]);
  t.deepEqual(run(idle, Array(50).fill(0.9)).trims, []);
});

test('a burst without the quiet after it does not trim', (t) => {
  t.deepEqual(run(idle, [0.9, 0.01, 0.9, 0.01, 0.9]).trims, []);
});

test('bursts closer together than minSpacingMs: the later burst waits for it', (t) => {
  // burst, quiet (settle at 2 s, the next not before 4 s), burst at 3 s, quiet at 4 s and 5 s: settle at 5 s.
  t.deepEqual(run(idle, [0.9, 0.01, 0.01, 0.9, 0.01, 0.01, 0.01]).trims, [2_000, 5_000]);
  // A burst at 3 s with one quiet sample after it: no second settle (two are needed).
  t.deepEqual(run(idle, [0.9, 0.01, 0.01, 0.9, 0.01]).trims, [2_000]);
});

test('after a settle the next waits its pause divided by maxPauseShare (settles pause the loop at most 5 % of the time)', (t) => {
  const settled = afterSettle({ burst: false, quiet: 0, notBeforeMs: 4_000 }, 2_300, 300, policy);
  t.is(settled.notBeforeMs, 2_300 + 6_000);
  // A burst right after waits until then: quiet from 3 s, no settle until 8.3 s, then at the first quiet sample after it.
  const samples = [0.9, ...Array(10).fill(0.01)];
  t.deepEqual(run(settled, samples, 2_000).trims, [9_000]);
  // A short pause never brings the next settle closer than minSpacingMs.
  t.is(afterSettle({ burst: false, quiet: 0, notBeforeMs: 4_000 }, 2_010, 10, policy).notBeforeMs, 4_000);
});

test('the burst is remembered across a trim only when it came after it', (t) => {
  const after = run(idle, [0.9, 0.01, 0.01]);
  t.deepEqual(after.trims, [2_000]);
  t.false(after.state.burst);
  t.is(after.state.notBeforeMs, 2_000 + policy.minSpacingMs);
});

test('the default policy: a busy second is at least a quarter of the loop, quiet at most 5 %, two quiet seconds, settles at least 2 s apart and pausing the loop at most 5 % of the time', (t) => {
  t.deepEqual(QUIET_TRIM_POLICY, policy);
  t.false(quietTrimStep(idle, 0.24, 0).state.burst);
  t.true(quietTrimStep(idle, 0.25, 0).state.burst);
});
