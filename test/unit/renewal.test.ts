import test from 'ava';
import { MIN_RETRY_MS, RENEW_FROM, RENEW_TO, renewalDelay, renewalTime, retryDelay } from '../../proxy/identity/renewal.js';

const HOUR = 3_600_000;
const day = { notBefore: 1_000 * HOUR, notAfter: 1_024 * HOUR };

test('renewal comes at 50 % of the lifetime with random 0 and just under 70 % with random near 1', (t) => {
  t.is(renewalTime(day, 0), day.notBefore + 12 * HOUR);
  t.is(renewalTime(day, 0.5), day.notBefore + 14.4 * HOUR);
  const late = renewalTime(day, 0.999999);
  t.true(late < day.notBefore + 16.8 * HOUR && late > day.notBefore + 16.79 * HOUR, String(late - day.notBefore));
});

test('every random value lands between 50 % and 70 % of the lifetime', (t) => {
  const lifetime = day.notAfter - day.notBefore;
  for (let i = 0; i <= 1000; i++) {
    const at = renewalTime(day, i / 1001);
    t.true(at >= day.notBefore + RENEW_FROM * lifetime && at <= day.notBefore + RENEW_TO * lifetime, `random ${i / 1001}`);
  }
});

test('random values outside [0, 1) are clamped, not trusted', (t) => {
  t.is(renewalTime(day, -5), renewalTime(day, 0));
  t.is(renewalTime(day, 7), day.notBefore + 0.7 * 24 * HOUR);
  t.is(renewalTime(day, Number.NaN), renewalTime(day, 0));
});

test('the delay counts from now and is 0 once renewal is due or the certificate has expired', (t) => {
  t.is(renewalDelay(day, day.notBefore, () => 0), 12 * HOUR);
  t.is(renewalDelay(day, day.notBefore + 11 * HOUR, () => 0), HOUR);
  t.is(renewalDelay(day, day.notBefore + 13 * HOUR, () => 0), 0);
  t.is(renewalDelay(day, day.notAfter + HOUR, () => 0.5), 0);
});

test('a certificate with no lifetime (notAfter not after notBefore) is renewed at once', (t) => {
  t.is(renewalDelay({ notBefore: 10, notAfter: 10 }, 10, () => 0.3), 0);
  t.is(renewalDelay({ notBefore: 10, notAfter: 5 }, 10, () => 0.3), 0);
});

test('the jitter spreads a fleet: 1,000 sidecars issued at once renew over the whole 20 % window', (t) => {
  let seed = 42;
  const random = () => ((seed = (seed * 1_103_515_245 + 12_345) % 2 ** 31) / 2 ** 31);
  const delays = Array.from({ length: 1000 }, () => renewalDelay(day, day.notBefore, random));
  const spread = Math.max(...delays) - Math.min(...delays);
  t.true(spread > 0.19 * 24 * HOUR, `spread ${spread / HOUR} h`);
});

test('a failed renewal is retried after the backoff while that leaves time before the expiry', (t) => {
  t.is(retryDelay(4_000, 100_000, 50_000), 4_000);
  t.is(retryDelay(1_000, 100_000, 97_000), 1_000);
});

test('a backoff that would reach past halfway to the expiry is cut there, so a returning control plane is tried in time', (t) => {
  t.is(retryDelay(60_000, 100_000, 90_000), 5_000);
  t.is(retryDelay(8_000, 100_000, 90_000), 5_000);
  // Repeated failures approach the expiry in halves, never reaching it before MIN_RETRY_MS.
  let now = 90_000;
  const waits: number[] = [];
  while (now < 100_000) {
    const wait = retryDelay(60_000, 100_000, now);
    waits.push(wait);
    now += wait;
  }
  t.true(waits.every((w, i) => i === 0 || w <= waits[i - 1]!), waits.join(','));
  t.true(waits.at(-1)! <= MIN_RETRY_MS);
});

test('never under MIN_RETRY_MS before the expiry, and the plain backoff once the certificate has expired', (t) => {
  t.is(retryDelay(60_000, 100_000, 99_900), MIN_RETRY_MS);
  t.is(retryDelay(100, 100_000, 99_900), 100);
  t.is(retryDelay(60_000, 100_000, 100_000), 60_000);
  t.is(retryDelay(60_000, 100_000, 120_000), 60_000);
});
