// An idle sidecar never sets up V8's date cache with ICU's time zone, which
// Date's toISOString and toUTCString do (in Node 20): its log lines' times
// and its admin responses' Date header are made from the getUTC* fields
// (proxy/runtime/utc-time.ts), ~0.9 MiB of an idle sidecar's RSS. A trap
// preloaded into the sidecar (test/fixtures/date-text-trap.mjs) names every
// such call; the control below shows that it sees one.

import test from 'ava';
import { spawnSync } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import http from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { startSidecarCli } from '../helpers/cli.js';

const TRAP = fileURLToPath(new URL('../fixtures/date-text-trap.mjs', import.meta.url));

async function trapFile(t: { teardown(fn: () => Promise<void>): void }): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'vsockmesh-dates-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const file = join(dir, 'calls');
  await writeFile(file, '');
  return file;
}

function getReady(port: number): Promise<{ status: number; date: string | undefined }> {
  return new Promise((resolve, reject) => {
    http.get({ host: '127.0.0.1', port, path: '/ready', agent: false }, (res) => {
      res.resume();
      res.on('end', () => resolve({ status: res.statusCode ?? 0, date: res.headers.date }));
    }).on('error', reject);
  });
}

test('the trap names a call to Date\'s toISOString (control)', async (t) => {
  const file = await trapFile(t);
  const run = spawnSync(process.execPath, ['--import', TRAP, '-e', 'new Date().toISOString()'], { env: { ...process.env, DATE_TRAP_FILE: file } });
  t.is(run.status, 0);
  t.is(await readFile(file, 'utf8'), 'Date.prototype.toISOString\n');
});

test('a started sidecar answering /ready has called no Date text or local-time method; the Date header is still there', async (t) => {
  const file = await trapFile(t);
  const config = { node: { id: 'vm-a' }, admin: { address: '127.0.0.1', port: 0 }, log: { level: 'info', access_log: true }, listeners: [{ kind: 'outbound', name: 'out', port: 0, cluster: 'c' }, { kind: 'inbound', name: 'in', addresses: ['127.0.0.1'], port: 0, ports: [9] }], clusters: [{ name: 'c', endpoints: [{ address: '127.0.0.1', port: 9 }] }] };
  const { proc, admin } = await startSidecarCli(t, config, { wrapper: ['env', `NODE_OPTIONS=--import ${TRAP}`, `DATE_TRAP_FILE=${file}`] });
  const before = Date.now();
  const ready = await getReady(admin);
  t.is(ready.status, 200);
  // IMF-fixdate, the time of the answer (to the second).
  t.regex(ready.date ?? '', /^(Mon|Tue|Wed|Thu|Fri|Sat|Sun), \d\d (Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) \d{4} \d\d:\d\d:\d\d GMT$/);
  t.true(Math.abs(Date.parse(ready.date!) - before) < 60_000);
  // Its log lines (sidecar ready among them) carry ISO times.
  const time = String(proc.lines.find((l) => l.msg === 'sidecar ready')?.time);
  t.is(new Date(time).toISOString(), time);
  t.is(await readFile(file, 'utf8'), '');
});
