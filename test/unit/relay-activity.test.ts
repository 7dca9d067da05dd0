// ProxyMetrics.relayActivity: the relayed connections' count and one number
// that moves whenever one opens or closes or bytes move (the memory settle's
// look at the data path, runtime/settle-memory.ts).

import test from 'ava';
import { ProxyMetrics, type LiveBytes } from '../../proxy/metrics.js';

test('relay activity moves on open, on bytes relayed and on close, and not otherwise', (t) => {
  const metrics = new ProxyMetrics();
  const stats = metrics.connectionStats({ listener: 'out', direction: 'outbound', cluster: 'c', transport: 'tcp' });
  const start = metrics.relayActivity();
  t.deepEqual(start, { open: 0, activity: 0 });
  const live: LiveBytes = { bytesToUpstream: 0, bytesToDownstream: 0 };
  stats.opened(live);
  const opened = metrics.relayActivity();
  t.is(opened.open, 1);
  t.true(opened.activity > start.activity);
  t.deepEqual(metrics.relayActivity(), opened, 'nothing moved');
  live.bytesToDownstream = 10;
  const moved = metrics.relayActivity();
  t.true(moved.activity > opened.activity);
  stats.closed(live, { bytesToUpstream: 0, bytesToDownstream: 10 });
  const closed = metrics.relayActivity();
  t.is(closed.open, 0);
  t.true(closed.activity > moved.activity, 'a close with no new bytes still moves it');
});

test('relay activity sums every label set', (t) => {
  const metrics = new ProxyMetrics();
  metrics.connectionStats({ listener: 'a', direction: 'outbound', cluster: 'c', transport: 'tcp' }).opened({ bytesToUpstream: 1, bytesToDownstream: 0 });
  metrics.connectionStats({ listener: 'b', direction: 'inbound', cluster: 'c', transport: 'tcp' }).opened({ bytesToUpstream: 0, bytesToDownstream: 0 });
  t.is(metrics.relayActivity().open, 2);
});
