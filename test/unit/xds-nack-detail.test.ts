// The NACK error_detail: every refused resource named with its reason, in
// order, within a bound however many there are.

import test from 'ava';
import { MAX_NACK_DETAIL, MAX_REFUSAL_DETAIL, nackDetail } from '../../xds/client/nack-detail.js';

const refusal = (name: string, why = 'address.socket_address.port_value: must be 1..65535 (got 0)') => ({ name, error: `listener ${JSON.stringify(name)}: ${why}` });

test('each refusal in order, after the reason about the response as a whole', (t) => {
  t.is(nackDetail([refusal('a'), { name: null, error: 'resources[3]: type_url: must be x' }]), 'listener "a": address.socket_address.port_value: must be 1..65535 (got 0); resources[3]: type_url: must be x');
  t.is(nackDetail([refusal('b', 'cannot listen: EADDRINUSE')], 'node_unknown: kept 2'), 'node_unknown: kept 2; listener "b": cannot listen: EADDRINUSE');
  t.is(nackDetail([], 'node_unknown: kept 0'), 'node_unknown: kept 0');
});

test('one long refusal is clipped so that the others still show', (t) => {
  const detail = nackDetail([refusal('long', 'x'.repeat(10_000)), refusal('short')]);
  const [first, second] = detail.split('; ');
  t.is(first!.length, MAX_REFUSAL_DETAIL);
  t.true(first!.endsWith('…'));
  t.is(second, refusal('short').error);
});

test('thousands of refusals: bounded, and what does not fit is counted and named', (t) => {
  const refused = Array.from({ length: 2_000 }, (_, i) => refusal(`outbound|service-${i}`));
  const detail = nackDetail(refused);
  t.true(detail.length <= MAX_NACK_DETAIL, `${detail.length}`);
  t.true(detail.startsWith(refused[0]!.error));
  const m = /; and (\d+) more refused: "outbound\|service-(\d+)", /.exec(detail);
  t.truthy(m, detail.slice(-300));
  const shown = detail.split('; ').filter((p) => p.startsWith('listener ')).length;
  t.is(Number(m![1]), 2_000 - shown, 'the count covers exactly the refusals not shown');
  t.is(Number(m![2]), shown, 'the names start where the shown refusals stop');
});

test('a small bound still says how many were refused', (t) => {
  const detail = nackDetail([refusal('a'), refusal('b'), { name: null, error: 'resources[2]: bad' }], undefined, 100);
  t.is(detail, '3 refused: "a", "b", (unnamed)');
  t.is(nackDetail([refusal('a'), refusal('b')], 'node_unknown: the listener state names none of ...', 250), 'node_unknown: the listener state names none of ...; and 2 more refused: "a", "b"');
});
