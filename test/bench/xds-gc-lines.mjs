// A preload for the xDS replicas benchmark (not for production): one JSON line
// per V8 garbage collection on stdout ({"msg":"gc","kind","ms","at"}: kind
// minor, major, incremental or weakcb; at: its start, ms since the epoch), so
// that the bench can say which collections ran during each change. Use:
// BENCH_SETTLES=1 BENCH_NODE_ARGS=--import=./test/bench/xds-gc-lines.mjs
// (xds-replicas-bench.ts).
import { PerformanceObserver, performance } from 'node:perf_hooks';

const KINDS = { 1: 'minor', 2: 'major', 4: 'incremental', 8: 'weakcb' };

new PerformanceObserver((list) => {
  for (const e of list.getEntries()) {
    const kind = KINDS[e.detail?.kind] ?? String(e.detail?.kind);
    process.stdout.write(`{"msg":"gc","kind":"${kind}","ms":${e.duration.toFixed(2)},"at":${(performance.timeOrigin + e.startTime).toFixed(1)}}\n`);
  }
}).observe({ entryTypes: ['gc'] });
