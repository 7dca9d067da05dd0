import test from 'ava';
import { Counter, Registry } from '../../proxy/runtime/prom-client.js';
import { CounterTally, ProxyMetrics } from '../../proxy/metrics.js';

test('CounterTally: counts per label set reach the counter when it is collected, each count once, alongside direct inc()s', async (t) => {
  const tally = new CounterTally(['listener', 'route'] as const);
  const counter = new Counter({
    name: 'tally_test_total',
    help: 'test',
    labelNames: ['listener', 'route'],
    registers: [new Registry()],
    collect() {
      tally.flushInto(this);
    },
  });
  const value = async (listener: string, route: string): Promise<number | undefined> =>
    (await counter.get()).values.find((v) => v.labels.listener === listener && v.labels.route === route)?.value;
  tally.add(['a', 'x']);
  tally.add(['a', 'x']);
  tally.add(['a', 'y']);
  tally.add(['b', 'x']);
  counter.inc({ listener: 'a', route: 'x' });
  t.is(await value('a', 'x'), 3);
  t.is(await value('a', 'y'), 1);
  t.is(await value('b', 'x'), 1, 'same last value under another first value: its own label set');
  t.is(await value('a', 'x'), 3, 'a second collect adds nothing new');
  tally.add(['a', 'x']);
  t.is(await value('a', 'x'), 4);
  t.is(await value('b', 'y'), undefined);
});

test('ProxyMetrics: HTTP requests and transport decisions counted by countHttpRequest and countDecision show in the scrape', async (t) => {
  const metrics = new ProxyMetrics({ processMetrics: false });
  metrics.countHttpRequest('out', 'web/0', 'c', '2xx', 'tcp');
  metrics.countHttpRequest('out', 'web/0', 'c', '2xx', 'tcp');
  metrics.countHttpRequest('out', '', '', '4xx', 'none');
  metrics.countDecision('out', 'c', 'same_hypervisor');
  const text = await metrics.registry.metrics();
  t.regex(text, /vsockmesh_http_requests_total\{listener="out",route="web\/0",cluster="c",status_class="2xx",transport="tcp"\} 2/);
  t.regex(text, /vsockmesh_http_requests_total\{listener="out",route="",cluster="",status_class="4xx",transport="none"\} 1/);
  t.regex(text, /vsockmesh_transport_decisions_total\{listener="out",cluster="c",reason="same_hypervisor"\} 1/);
});
