// A sidecar process settles its memory once quiet after it is ready
// (runtime/settle-memory.ts, native settleMemory): one "memory settled" line,
// with less RSS after than before.

import test from 'ava';
import { startCli, writeConfig } from '../helpers/cli.js';

test('an idle sidecar settles its memory once after ready, and its RSS goes down', async (t) => {
  const config = await writeConfig({ node: { id: 'vm-a' }, admin: null, listeners: [{ kind: 'outbound', name: 'out', port: 0, cluster: 'c' }], clusters: [{ name: 'c', endpoints: [{ address: '127.0.0.1', port: 9 }] }] });
  t.teardown(config.cleanup);
  const proc = startCli(['sidecar', '-c', config.path, '--log-level', 'debug']);
  t.teardown(() => proc.kill('SIGKILL'));
  await proc.waitForLine((l) => l.msg === 'sidecar ready', 'sidecar ready', 30_000);
  const settled = await proc.waitForLine((l) => l.msg === 'memory settled', 'memory settled', 30_000);
  t.true((settled.rss_after as number) < (settled.rss_before as number), JSON.stringify(settled));
  t.is(proc.lines.filter((l) => l.msg === 'memory settled').length, 1);
});
