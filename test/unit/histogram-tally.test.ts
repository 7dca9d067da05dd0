import test from 'ava';
import { Histogram, Registry } from '../../proxy/runtime/prom-client.js';
import { HistogramTally, ProxyMetrics } from '../../proxy/metrics.js';

const BUCKETS = [0.001, 0.01, 0.1, 1];

/** A HistogramTally and prom-client's Histogram, each in a registry of its own, given the same observations. */
function pair(): { tally: HistogramTally<'listener' | 'route'>; tallyRegistry: Registry; histogram: Histogram<'listener' | 'route'>; histogramRegistry: Registry } {
  const tallyRegistry = new Registry();
  const histogramRegistry = new Registry();
  const config = { name: 'tally_test_seconds', help: 'test \\ help', labelNames: ['listener', 'route'] as const, buckets: BUCKETS };
  return {
    tally: new HistogramTally({ ...config, registers: [tallyRegistry] }),
    tallyRegistry,
    histogram: new Histogram({ ...config, labelNames: [...config.labelNames], registers: [histogramRegistry] }),
    histogramRegistry,
  };
}

test('HistogramTally: scraped as prom-client\'s Histogram given the same observations (buckets, bounds, above the top, +Inf, sum, count, label sets in order, escaping)', async (t) => {
  const { tally, tallyRegistry, histogram, histogramRegistry } = pair();
  t.is(await tallyRegistry.metrics(), await histogramRegistry.metrics(), 'nothing observed: the same HELP and TYPE lines');
  const observations: Array<[string, string, number]> = [
    ['a', 'x', 0.0004],
    ['a', 'x', 0.001], // on a bound: that bucket
    ['a', 'x', 0.0101],
    ['b', 'x', 0.2],
    ['a', 'y "q"\n', 7], // above every bound: +Inf only; a value to escape
    ['a', 'x', 0.05],
    ['b', 'x', 1],
    ['a', 'x', 0],
  ];
  for (const [listener, route, value] of observations) {
    tally.observe([listener, route], value);
    histogram.observe({ listener, route }, value);
  }
  const text = await tallyRegistry.metrics();
  t.is(text, await histogramRegistry.metrics());
  t.regex(text, /tally_test_seconds_bucket\{le="0.01",listener="a",route="x"\} 3\n/);
  t.regex(text, /tally_test_seconds_bucket\{le="\+Inf",listener="a",route="x"\} 5\n/);
  t.regex(text, /tally_test_seconds_count\{listener="b",route="x"\} 2/);
  t.is(await tallyRegistry.metrics(), text, 'a second scrape says the same (cumulative, nothing taken away)');
  t.deepEqual(await tallyRegistry.getMetricsAsJSON(), await histogramRegistry.getMetricsAsJSON());
});

test('HistogramTally: reset() forgets every label set, as prom-client\'s does; observations after it count from zero', async (t) => {
  const { tally, tallyRegistry, histogram, histogramRegistry } = pair();
  tally.observe(['a', 'x'], 0.5);
  histogram.observe({ listener: 'a', route: 'x' }, 0.5);
  tallyRegistry.resetMetrics();
  histogramRegistry.resetMetrics();
  t.is(await tallyRegistry.metrics(), await histogramRegistry.metrics());
  tally.observe(['b', 'x'], 0.05);
  histogram.observe({ listener: 'b', route: 'x' }, 0.05);
  t.is(await tallyRegistry.metrics(), await histogramRegistry.metrics());
  t.notRegex(await tallyRegistry.metrics(), /listener="a"/);
});

test('ProxyMetrics: the HTTP request duration histogram in the scrape (its name, labels and buckets)', async (t) => {
  const metrics = new ProxyMetrics({ processMetrics: false });
  metrics.httpDuration.observe(['out', 'web/0', 'c'], 0.003);
  const text = await metrics.registry.metrics();
  t.regex(text, /# TYPE vsockmesh_http_request_duration_seconds histogram\n/);
  t.regex(text, /vsockmesh_http_request_duration_seconds_bucket\{le="0.0025",listener="out",route="web\/0",cluster="c"\} 0\n/);
  t.regex(text, /vsockmesh_http_request_duration_seconds_bucket\{le="0.005",listener="out",route="web\/0",cluster="c"\} 1\n/);
  t.regex(text, /vsockmesh_http_request_duration_seconds_bucket\{le="30",listener="out",route="web\/0",cluster="c"\} 1\n/);
  t.regex(text, /vsockmesh_http_request_duration_seconds_sum\{listener="out",route="web\/0",cluster="c"\} 0.003\n/);
  t.regex(text, /vsockmesh_http_request_duration_seconds_count\{listener="out",route="web\/0",cluster="c"\} 1/);
});
