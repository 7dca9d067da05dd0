// The rapid-reset budget (CVE-2023-44487): a burst of cancelled streams is
// allowed, then only the refill rate; tokens never pile up past the burst,
// and a clock going back gives nothing.

import test from 'ava';
import { ResetBudget } from '../../proxy/http/h2/reset-budget.js';

test('a burst is allowed at once, the next spend at the same instant is not', (t) => {
  const b = new ResetBudget(5, 10, 1000);
  for (let i = 0; i < 5; i++) t.true(b.spend(1000));
  t.false(b.spend(1000));
});

test('tokens come back at the rate per second, not past the burst', (t) => {
  const b = new ResetBudget(5, 10, 0);
  for (let i = 0; i < 5; i++) b.spend(0);
  t.false(b.spend(50), 'half a token at 50 ms');
  t.true(b.spend(100), 'one token at 100 ms');
  t.false(b.spend(100));
  // An hour idle fills only up to the burst.
  let ok = 0;
  while (b.spend(3_600_000)) ok++;
  t.is(ok, 5);
});

test('a steady rate under the refill never runs out; one above it does', (t) => {
  const under = new ResetBudget(5, 10, 0);
  for (let ms = 0; ms < 60_000; ms += 101) t.true(under.spend(ms));
  const over = new ResetBudget(5, 10, 0);
  let refused = false;
  for (let ms = 0; ms < 60_000 && !refused; ms += 50) refused = !over.spend(ms);
  t.true(refused);
});

test('a clock going back gives no token', (t) => {
  const b = new ResetBudget(1, 10, 10_000);
  t.true(b.spend(10_000));
  t.false(b.spend(5_000));
  t.false(b.spend(10_000));
});
