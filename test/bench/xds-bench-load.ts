// The bench side of the xDS benchmarks' load processes (xds-bench-child.ts,
// driven over stdin/stdout JSON lines), and what the benchmarks sample of the
// processes they measure (RSS, CPU). Not a test.

import { spawn, type ChildProcess } from 'node:child_process';
import path from 'node:path';
import { VmManagerClient } from '../../xds/vm-manager/client.js';
import { ROOT, cpuSeconds, log, machineBusySeconds, onCleanup, onJsonLines, rssKiB, sleep, type LogLine } from './bench-common.js';
import { nowMs } from './xds-bench-lib.js';

const CHILD = path.join(ROOT, 'test/bench/xds-bench-child.ts');

export interface LoadChild {
  child: ChildProcess;
  pid: number;
  /** Its last progress event (every 2 s): clients that have ACKed all four types, streams that ended. */
  progress: { synced: number; errors: number };
  send(cmd: Record<string, unknown>): void;
  next(match: (e: LogLine) => boolean, what: string, timeoutMs: number): Promise<LogLine>;
  stop(): Promise<void>;
}

/** Load processes still running: killed if the bench exits before stopping them (one exit listener for all, however many there are). */
const running = new Set<number>();
process.on('exit', () => {
  for (const pid of running) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // gone
    }
  }
});

export function startLoadChild(options: Record<string, unknown>): LoadChild {
  const child = spawn(process.execPath, ['--import', 'tsx', CHILD, JSON.stringify(options)], { stdio: ['pipe', 'pipe', 'pipe'] });
  const pid = child.pid!;
  running.add(pid);
  let stderr = '';
  child.stderr!.setEncoding('utf8').on('data', (c: string) => {
    stderr = (stderr + c).slice(-8192);
    for (const line of c.split('\n')) if (line.trim() !== '') process.stderr.write(`  ${line}\n`);
  });
  const queue: LogLine[] = [];
  const progress = { synced: 0, errors: 0 };
  const waiters = new Set<() => void>();
  let exited = false;
  onJsonLines(child.stdout!, (lines) => {
    for (const e of lines) {
      if (e.event === 'stream_error') log(`load process: stream of ${String(e.node)} ended: ${String(e.message)}`);
      if (e.event === 'fatal') log(`load process failed: ${String(e.message)}`);
      if (e.event === 'progress') {
        progress.synced = Number(e.synced);
        progress.errors = Number(e.errors);
        continue;
      }
      queue.push(e);
    }
    for (const w of [...waiters]) w();
  });
  const closed = new Promise<void>((resolve) =>
    child.once('close', () => {
      exited = true;
      running.delete(pid);
      for (const w of [...waiters]) w();
      resolve();
    }),
  );
  const next = (match: (e: LogLine) => boolean, what: string, timeoutMs: number): Promise<LogLine> =>
    new Promise((resolve, reject) => {
      const check = (): void => {
        const i = queue.findIndex(match);
        if (i >= 0) {
          const [e] = queue.splice(i, 1);
          done(() => resolve(e!));
        } else if (exited) done(() => reject(new Error(`load process exited (${child.exitCode ?? child.signalCode}) before ${what}\nstderr:\n${stderr}`)));
      };
      const timer = setTimeout(() => done(() => reject(new Error(`timed out waiting for ${what} from the load process\nstderr:\n${stderr}`))), timeoutMs);
      const done = (then: () => void): void => {
        clearTimeout(timer);
        waiters.delete(check);
        then();
      };
      waiters.add(check);
      check();
    });
  const stop = async (): Promise<void> => {
    if (exited) return;
    child.stdin!.end(`${JSON.stringify({ cmd: 'exit' })}\n`);
    const t = setTimeout(() => child.kill('SIGKILL'), 10_000);
    await closed;
    clearTimeout(t);
  };
  onCleanup(stop);
  return { child, pid, progress, send: (cmd) => child.stdin!.write(`${JSON.stringify(cmd)}\n`), next, stop };
}

/**
 * Waits until every one of `loads` has its clients in sync ("synced"), for as
 * long as they make progress: fails only when no more client got in sync for
 * `stallMs` (an initial sync of 10,000 simulated sidecars takes minutes on a
 * quiet 2-core machine and many more on a loaded one: a fixed deadline either
 * cuts a slow run short or waits long for a stuck one). Logs the count every
 * `logEveryMs`. Resolves with how long it took (ms).
 */
export async function waitSynced(loads: readonly LoadChild[], clients: number, stallMs: number, logEveryMs = 30_000): Promise<number> {
  const t = nowMs();
  let done = false;
  const all = Promise.all(loads.map((l) => l.next((e) => e.event === 'synced', 'every sidecar to ACK all four types', 24 * 3_600_000))).finally(() => {
    done = true;
  });
  all.catch(() => {}); // awaited below; a rejection after a stall is not left unhandled
  let best = -1;
  let bestAt = t;
  let loggedAt = t;
  while (!done) {
    await Promise.race([all, sleep(1_000)]);
    if (done) break;
    const synced = loads.reduce((a, l) => a + l.progress.synced, 0);
    const errors = loads.reduce((a, l) => a + l.progress.errors, 0);
    const now = nowMs();
    if (synced > best) {
      best = synced;
      bestAt = now;
    } else if (now - bestAt > stallMs) {
      throw new Error(`initial sync stalled: ${synced}/${clients} sidecars in sync (${errors} streams ended), none more in ${Math.round(stallMs / 1000)} s, ${Math.round((now - t) / 1000)} s after the start`);
    }
    if (now - loggedAt >= logEveryMs) {
      loggedAt = now;
      log(`  initial sync: ${synced}/${clients} sidecars in sync after ${Math.round((now - t) / 1000)} s (${errors} streams ended)`);
    }
  }
  await all;
  return nowMs() - t;
}

/** Samples a process's VmRSS every `everyMs` until stopped; returns the largest (KiB). */
export function rssSampler(pid: number, everyMs = 10): { stop(): number } {
  let max = rssKiB(pid);
  const timer = setInterval(() => {
    const v = rssKiB(pid);
    if (v > max) max = v;
  }, everyMs);
  return {
    stop: () => {
      clearInterval(timer);
      return Math.max(max, rssKiB(pid));
    },
  };
}

/**
 * Calls GetVm every `everyMs` (one at a time) until stopped; returns the
 * slowest call: how long the VM manager API (same process, same event loop)
 * kept a caller waiting.
 */
export function apiProbe(vmm: VmManagerClient, vm: string, everyMs = 25): { stop(): Promise<{ maxMs: number; calls: number }> } {
  let stopped = false;
  let maxMs = 0;
  let calls = 0;
  const loop = (async () => {
    while (!stopped) {
      const t = nowMs();
      await vmm.getVm(vm);
      maxMs = Math.max(maxMs, nowMs() - t);
      calls++;
      await sleep(everyMs);
    }
  })();
  return {
    stop: async () => {
      stopped = true;
      await loop;
      return { maxMs, calls };
    },
  };
}

/** CPU readings around a measured stretch, to tell how busy other processes kept the machine. */
export function cpuMeter(pids: number[]): { stop(): { cpu: number[]; wallS: number; otherCores: number } } {
  const at = nowMs();
  const before = pids.map((pid) => cpuSeconds(pid));
  const self = process.cpuUsage();
  const machine = machineBusySeconds();
  return {
    stop: () => {
      const wallS = (nowMs() - at) / 1000;
      const cpu = pids.map((p, i) => cpuSeconds(p) - before[i]!);
      const own = process.cpuUsage(self);
      const ours = cpu.reduce((a, b) => a + b, 0) + (own.user + own.system) / 1e6;
      return { cpu, wallS, otherCores: Math.max(0, (machineBusySeconds() - machine - ours) / wallS) };
    },
  };
}

