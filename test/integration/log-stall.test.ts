// A log reader that stops reading must not stall the data path (issue 10): the
// sidecar (the compiled CLI) writes its logs to a pipe this test stops reading,
// so the kernel's pipe buffer fills, while a client measures round trips
// through the sidecar and another process opens connections: junk that is
// refused (a log line each, sampled) and echo connections (two access lines each).
//
// The bound is the issue's: no round trip above 100 ms (the old synchronous
// writes froze every connection for 18 s). This box is shared and often
// saturated, where a process can wait hundreds of milliseconds for a CPU with
// no fault of its own, so each round trip counts less the time the threads of
// the sidecar and of the measuring process spent waiting for one (the kernel's
// schedstat; test/fixtures/echo-app.mjs); a frozen event loop sleeps in write()
// and waits for no CPU. Both figures are logged.

import test, { type ExecutionContext } from 'ava';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { readdirSync } from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { waitFor } from '../helpers/apps.js';
import { startCli, writeConfig, type CliProcess } from '../helpers/cli.js';
import { freePort } from '../helpers/haproxy.js';

const STALL_MS = 20_000;
/** The bound: the old synchronous log writes froze every connection for 18-19 s. */
const MAX_ROUND_TRIP_MS = 100;
const LOAD = fileURLToPath(new URL('../fixtures/connection-load.mjs', import.meta.url));
const ECHO_APP = fileURLToPath(new URL('../fixtures/echo-app.mjs', import.meta.url));

/** [ms after the first round trip, round trip ms, of which the sidecar and the client waited for a CPU]. */
type RoundTrip = [number, number, number];

interface RoundTrips {
  count: number;
  errors: number;
  /** The 5 longest, less their CPU wait. */
  slowest: RoundTrip[];
  /** The 5 longest as measured. */
  slowestRaw: RoundTrip[];
}

/**
 * This box is shared and often loaded (tens of runnable processes on two
 * cores): the sidecar and the echo app, which measures, run at a higher
 * priority and the load generator at a lower one, so that the round trips
 * measure the sidecar rather than the scheduler. Not root: left as is.
 */
function setNice(pid: number, nice: number): void {
  try {
    // Nice values are per thread on Linux: every thread the process has so far (later ones inherit).
    for (const tid of readdirSync(`/proc/${pid}/task`)) os.setPriority(Number(tid), nice);
  } catch {
    // EACCES, or the process is gone: measured at the normal priority
  }
}

interface Sidecar {
  proc: CliProcess;
  outbound: number;
  inbound: number;
  admin: number;
}

/** outbound listener -> inbound listener (PROXY v2 hop) -> echo app, access log on. */
async function startSidecar(t: ExecutionContext, app: { port: number }, warmPath = false): Promise<Sidecar> {
  const inbound = await freePort();
  const config = await writeConfig({
    node: { id: 'vm-a' },
    admin: { port: 0 },
    drain_timeout: '1s',
    log: { level: 'info', access_log: true },
    listeners: [
      { kind: 'inbound', name: 'in', addresses: ['127.0.0.1'], port: inbound, ports: [app.port], warm_path: warmPath },
      { kind: 'outbound', name: 'out', port: 0, cluster: 'echo' },
    ],
    clusters: [{ name: 'echo', endpoints: [{ address: '127.0.0.1', port: app.port, peer: { address: '127.0.0.1', port: inbound } }] }],
  });
  const proc = startCli(['sidecar', '-c', config.path]);
  setNice(proc.child.pid!, -20);
  t.teardown(async () => {
    proc.child.stdout!.resume();
    proc.kill('SIGKILL');
    await proc.exited;
    await config.cleanup();
  });
  const serving = await proc.waitForLine((l) => l.msg === 'sidecar ready', 'sidecar ready', 30_000);
  const out = await proc.waitForLine((l) => l.msg === 'listener started' && l.listener === 'out', 'outbound listener');
  return { proc, inbound, outbound: (out.addresses as Array<{ port: number }>)[0]!.port, admin: (serving.admin as { port: number }).port };
}

/** GET /stats within `timeoutMs`, or null. */
function stats(port: number, timeoutMs: number): Promise<string | null> {
  return new Promise((resolve) => {
    const req = http.get({ host: '127.0.0.1', port, path: '/stats', agent: false, timeout: timeoutMs }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => (body += d));
      res.on('end', () => resolve(res.statusCode === 200 ? body : null));
    });
    req.on('timeout', () => req.destroy());
    req.on('error', () => resolve(null));
  });
}

function dropped(body: string | null, log: 'access' | 'operational'): number {
  const m = body?.match(new RegExp(`^vsockmesh_log_dropped_total\\{log="${log}"\\} (\\d+)$`, 'm'));
  return m ? Number(m[1]) : -1;
}

/** Runs test/fixtures/connection-load.mjs; resolves with its report. */
function load(loads: string[], overMs: number): Promise<Record<string, { done: number; failed: number }>> {
  const child = spawn(process.execPath, [LOAD, ...loads, '--over', String(overMs)], { stdio: ['ignore', 'pipe', 'inherit'] });
  setNice(child.pid!, 10);
  let out = '';
  child.stdout.setEncoding('utf8').on('data', (d: string) => (out += d));
  return new Promise((resolve, reject) =>
    child.on('exit', (code) => (code === 0 ? resolve(JSON.parse(out) as Record<string, { done: number; failed: number }>) : reject(new Error(`load exited ${code}`)))),
  );
}

/** test/fixtures/echo-app.mjs: the echo app, and the client that measures round trips through the sidecar to it. */
async function startEchoApp(t: ExecutionContext): Promise<{ port: number; measure(outbound: number, sidecarPid: number): Promise<void>; stop(): Promise<RoundTrips> }> {
  const child = spawn(process.execPath, [ECHO_APP], { stdio: ['pipe', 'pipe', 'inherit'] });
  setNice(child.pid!, -20);
  const exited = new Promise<void>((resolve) => child.on('exit', () => resolve()));
  t.teardown(async () => {
    child.kill('SIGKILL');
    await exited;
  });
  const replies: Array<Record<string, unknown>> = [];
  let notify = (): void => {};
  createInterface({ input: child.stdout }).on('line', (line) => {
    replies.push(JSON.parse(line) as Record<string, unknown>);
    notify();
  });
  const reply = (key: string): Promise<Record<string, unknown>> =>
    new Promise((resolve, reject) => {
      const check = (): void => {
        const found = replies.find((r) => key in r);
        if (found) resolve(found);
      };
      notify = check;
      check();
      void exited.then(() => reject(new Error(`echo-app.mjs exited before answering ${key}`)));
    });
  const { echo } = (await reply('echo')) as { echo: number };
  return {
    port: echo,
    async measure(outbound, sidecarPid) {
      child.stdin.write(`measure ${outbound} ${sidecarPid}\n`);
      await reply('ready');
    },
    async stop() {
      child.stdin.write('stop\n');
      return (await reply('count')) as unknown as RoundTrips;
    },
  };
}

const stalledReader = test.macro(async (t, warmPath: boolean) => {
  const app = await startEchoApp(t);
  const sidecar = await startSidecar(t, app, warmPath);
  await app.measure(sidecar.outbound, sidecar.proc.child.pid!);

  sidecar.proc.child.stdout!.pause();
  const stallStarted = performance.now();
  // 3,000 refused junk connections and 4,000 echo connections (8,000 access lines, about 2.9 MB: more than the 2 MiB the access log may buffer) over 15 s.
  let loadDone = false;
  const loaded = load([`junk:${sidecar.inbound}:3000`, `echo:${sidecar.outbound}:4000`], 15_000).finally(() => (loadDone = true));
  /** /stats answer times during the stall (null: no answer within 5 s). */
  const adminTimes: Array<number | null> = [];
  // At least STALL_MS, and until the access log overflowed (lines dropped): the niced load may write its 2.9 MB far slower
  // than over 15 s on a busy machine, and a stall that ends first tests nothing. Once the load is done it has all been written.
  let overflowed = false;
  while (performance.now() - stallStarted < STALL_MS || (!overflowed && !loadDone)) {
    const asked = performance.now();
    const body = await stats(sidecar.admin, 5_000);
    adminTimes.push(body === null ? null : performance.now() - asked);
    overflowed ||= dropped(body, 'access') > 0;
    await new Promise((r) => setTimeout(r, 1_000));
  }
  sidecar.proc.child.stdout!.resume();
  const report = await loaded;
  const trips = await app.stop();
  const [, ms, waited] = trips.slowest[0]!;
  t.log(`round trips: ${trips.count}; slowest less CPU wait [ms after the first, ms, of which CPU wait]: ${JSON.stringify(trips.slowest)}; slowest as measured: ${JSON.stringify(trips.slowestRaw)}`);
  t.log(`/stats during the stall: ${JSON.stringify(adminTimes.map((a) => (a === null ? null : Math.round(a))))} ms`);
  t.true(ms - waited <= MAX_ROUND_TRIP_MS, `no round trip above ${MAX_ROUND_TRIP_MS} ms besides waiting for a CPU (the slowest: ${ms} ms, ${waited} ms of it waiting for a CPU)`);
  t.true(trips.count >= STALL_MS / 100, `round trips went on the whole time (${trips.count})`);
  t.is(trips.errors, 0);
  t.false(adminTimes.includes(null), 'the admin endpoint answered every time during the stall');
  t.deepEqual(report, { junk: { done: 3_000, failed: 0 }, echo: { done: 4_000, failed: 0 } }, 'every junk connection was refused and closed, every echo connection served');

  const ended = await sidecar.proc.waitForLine((l) => l.reason === 'log_overflow_ended', 'the overflow summary', 30_000);
  const after = await stats(sidecar.admin, 5_000);
  t.log(`dropped: access ${dropped(after, 'access')}, operational ${dropped(after, 'operational')}`);
  // Lines are dropped only while the buffer is full, which only a stalled reader makes it: the pipe was full.
  t.true(dropped(after, 'access') > 0, 'access lines were dropped while the reader stalled');
  t.is(dropped(after, 'operational'), 0, 'the access log went first');
  t.like(ended, { dropped_access: dropped(after, 'access'), dropped_operational: 0 });

  sidecar.proc.kill('SIGTERM');
  t.deepEqual(await sidecar.proc.exited, { code: 0, signal: null });
  if (!sidecar.proc.child.stdout!.closed) await once(sidecar.proc.child.stdout!, 'close');
  const output = sidecar.proc.stdout().split('\n');
  t.is(output.pop(), '', 'the output ends with a whole line');
  t.deepEqual(
    output.filter((l) => {
      try {
        JSON.parse(l);
        return false;
      } catch {
        return true;
      }
    }),
    [],
    'every line is whole JSON',
  );
  const lines = sidecar.proc.lines;
  t.is(lines.filter((l) => l.reason === 'log_overflow').length, 1, 'one warning for the episode');
  const junk = lines.filter((l) => l.reason === 'not_proxy_v2');
  t.true(junk.length < 100, `junk refusals are sampled (${junk.length} lines)`);
  t.is(junk.length + junk.reduce((n, l) => n + Number(l.suppressed ?? 0), 0), 3_000, 'every refusal is written or counted in a line');
});

test.serial('a log reader that stops reading for 20 s does not stall connections or the admin endpoint; the dropped lines are counted', stalledReader, false);
// The inbound hop replayed by the core (its records become access lines in JavaScript, written asynchronously as the others).
test.serial('the same with the inbound warm path: a stalled log reader does not stall replayed connections', stalledReader, true);

test.serial('a process whose log reader stalls still exits on SIGTERM, after a bounded wait for its logs', async (t) => {
  const sidecar = await startSidecar(t, await startEchoApp(t));
  sidecar.proc.child.stdout!.pause();
  // 8,000 access lines (about 2.9 MB) into a pipe nobody reads: once the load is done, however slowly it ran on a busy
  // machine, more than the 2 MiB the access log may buffer was written, and lines were dropped.
  await load([`echo:${sidecar.outbound}:4000`], 4_000);
  await waitFor(async () => dropped(await stats(sidecar.admin, 5_000), 'access') > 0, 'lines dropped (stdout full)', 30_000);
  const signalled = performance.now();
  sidecar.proc.kill('SIGTERM');
  const exited = await Promise.race([sidecar.proc.exited, new Promise<null>((r) => setTimeout(() => r(null), 15_000).unref())]);
  t.deepEqual(exited, { code: 0, signal: null }, 'exited while stdout was still not read');
  t.log(`exit ${(performance.now() - signalled).toFixed(0)} ms after SIGTERM`);
  await t.notThrowsAsync(
    waitFor(() => /log lines not written within \d+ ms \(stdout not read\); exiting without them/.test(sidecar.proc.stderr()), 'the exit saying why it did not wait'),
  );
});
