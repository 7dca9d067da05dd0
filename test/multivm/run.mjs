#!/usr/bin/env node
// `npm run test:multivm`: the multi-VM suite alone (npm test runs it after the
// host and single-guest suites), ending with the same summary line.
// `npm run bench:multivm` (--bench): the relay benchmark in the same topology;
// `npm run bench:multivm -- --node-start`: how long Node and a sidecar take to start in an inner guest.
// Needs `npm run build` first (the outer guest runs compiled code).

import { runMultiVmSuite } from '../run-tests.mjs';
import { runMultiVmBench } from './bench-host.mjs';

if (process.argv.includes('--bench')) {
  process.exitCode = await runMultiVmBench(process.argv.includes('--node-start') ? 'node-start' : 'bench');
} else {
  const r = await runMultiVmSuite();
  if (r.failures.length > 0) process.stdout.write(`\nfailed:\n${r.failures.map((f) => `  - ${f}`).join('\n')}\n`);
  process.stdout.write(`\nmulti-VM suite (nested QEMU): ${r.passed} passed, ${r.failed} failed, ${r.skipped} skipped\n`);
  process.stdout.write(`${r.passed} passed, ${r.failed} failed, ${r.skipped} skipped\n`);
  process.exitCode = r.failed > 0 ? 1 : 0;
}
