// Shared by the resolve and VM manager benchmarks (resolve-bench.ts,
// vm-manager-bench.ts): child processes that are always cleaned up, JSON log
// lines from a child's stdout, /proc readings, Prometheus text, statistics,
// the report files under .bench/. Not a test.

import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const ROOT = fileURLToPath(new URL('../..', import.meta.url));
export const CLI = path.join(ROOT, 'dist/proxy/cmd/cli.js');

/** Node flags from the bin's shebang (`#!/usr/bin/env -S node --flag ...`), as production runs it. */
export function shebangNodeFlags(file: string = CLI): string[] {
  let first: string;
  try {
    first = readFileSync(file, 'utf8').split('\n', 1)[0] ?? '';
  } catch {
    return [];
  }
  if (!first.startsWith('#!')) return [];
  const words = first.slice(2).trim().split(/\s+/);
  const node = words.findIndex((w) => w === 'node' || w.endsWith('/node'));
  return node === -1 ? [] : words.slice(node + 1).filter((w) => w.startsWith('-'));
}

/** Node flags for the CLI children: the shebang's, then BENCH_NODE_ARGS (e.g. "--max-semi-space-size=16", later flags win). */
export function cliNodeFlags(): string[] {
  return [...shebangNodeFlags(), ...(process.env.BENCH_NODE_ARGS?.split(' ').filter(Boolean) ?? [])];
}

export function intEnv(name: string, fallback: number): number {
  const raw = process.env[name];
  if (raw === undefined || raw === '') return fallback;
  const n = Number(raw);
  if (!Number.isInteger(n) || n < 1) throw new Error(`${name} must be a positive integer, got "${raw}"`);
  return n;
}

export function log(msg: string): void {
  process.stderr.write(`[bench ${new Date().toISOString().slice(11, 19)}] ${msg}\n`);
}

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

export async function waitUntil(cond: () => boolean | Promise<boolean>, what: string, timeoutMs = 15_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await cond())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(25);
  }
}

// ---- cleanup: every child we start is killed on exit, error or Ctrl-C ---------

const cleanups: Array<() => Promise<void> | void> = [];
const pids = new Set<number>();
let cleaningUp: Promise<void> | undefined;

export function onCleanup(fn: () => Promise<void> | void): void {
  cleanups.push(fn);
}

function cleanup(): Promise<void> {
  cleaningUp ??= (async () => {
    for (const fn of cleanups.splice(0).reverse()) {
      try {
        await fn();
      } catch (err) {
        log(`cleanup: ${(err as Error).message}`);
      }
    }
  })();
  return cleaningUp;
}

process.on('exit', () => {
  for (const p of pids) {
    try {
      process.kill(p, 'SIGKILL');
    } catch {
      // gone
    }
  }
});
for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.once(signal, () => {
    log(`${signal}: stopping everything`);
    const hard = setTimeout(() => process.exit(130), 8_000);
    void cleanup().finally(() => {
      clearTimeout(hard);
      process.exit(130);
    });
  });
}

/** Runs the benchmark's main, reports a failure, always stops every child. */
export async function runBench(main: () => Promise<void>): Promise<void> {
  try {
    await main();
  } catch (err) {
    process.exitCode = 1;
    process.stderr.write(`bench failed: ${(err as Error).stack ?? String(err)}\n`);
  } finally {
    await cleanup();
  }
}

export type LogLine = Record<string, unknown>;

export interface Daemon {
  child: ChildProcess;
  pid: number;
  stderr(): string;
  /** The first stdout JSON line matching (lines already seen included); rejects at exit or timeout. */
  waitForLine(match: (line: LogLine) => boolean, what: string, timeoutMs?: number): Promise<LogLine>;
  stop(): Promise<void>;
}

/**
 * A long-running child, stopped (TERM, then KILL) at cleanup. stdout: 'ignore'
 * (to /dev/null) or 'lines' (JSON lines parsed, only the last 200 kept, the
 * pipe always drained so the child never blocks on it).
 */
export function startDaemon(cmd: string, args: string[], options: { stdout: 'ignore' | 'lines' }): Daemon {
  const child = spawn(cmd, args, { stdio: ['ignore', options.stdout === 'lines' ? 'pipe' : 'ignore', 'pipe'] });
  let err = '';
  child.stderr!.setEncoding('utf8');
  child.stderr!.on('data', (c: string) => (err = (err + c).slice(-8192)));
  child.on('error', (e) => (err += `\nspawn error: ${e.message}`));
  const recent: LogLine[] = [];
  const waiters = new Set<() => void>();
  if (options.stdout === 'lines') {
    let partial = '';
    child.stdout!.setEncoding('utf8').on('data', (chunk: string) => {
      const parts = (partial + chunk).split('\n');
      partial = parts.pop() ?? '';
      for (const p of parts) {
        if (!p.startsWith('{')) continue;
        try {
          recent.push(JSON.parse(p) as LogLine);
        } catch {
          continue;
        }
        if (recent.length > 200) recent.shift();
      }
      for (const w of waiters) w();
    });
  }
  let done = false;
  const exited = new Promise<void>((resolve) =>
    child.once('close', () => {
      done = true;
      for (const w of waiters) w();
      resolve();
    }),
  );
  const pid = child.pid!;
  pids.add(pid);
  const stop = async (): Promise<void> => {
    if (!done) {
      child.kill('SIGTERM');
      const t = setTimeout(() => child.kill('SIGKILL'), 3_000);
      await exited;
      clearTimeout(t);
    }
    pids.delete(pid);
  };
  cleanups.push(stop);
  const waitForLine = (match: (line: LogLine) => boolean, what: string, timeoutMs = 15_000): Promise<LogLine> =>
    new Promise((resolve, reject) => {
      const finish = (then: () => void): void => {
        clearTimeout(timer);
        waiters.delete(check);
        then();
      };
      const check = (): void => {
        const found = recent.find(match);
        if (found) finish(() => resolve(found));
        else if (done) finish(() => reject(new Error(`${path.basename(cmd)} exited (${child.exitCode ?? child.signalCode}) before ${what}\nstderr:\n${err}`)));
      };
      const timer = setTimeout(() => finish(() => reject(new Error(`timed out waiting for ${what}\nstderr:\n${err}`))), timeoutMs);
      waiters.add(check);
      check();
    });
  return { child, pid, stderr: () => err, waitForLine, stop };
}

/** `vsockmesh vm-manager` as a child (the built CLI, with its shebang's node flags); resolves once it serves (admin port: null with --no-admin). */
export async function startVmManagerCli(args: string[]): Promise<{ daemon: Daemon; port: number; adminPort: number | null }> {
  const daemon = startDaemon(process.execPath, [...cliNodeFlags(), CLI, 'vm-manager', '--listen', '127.0.0.1:0', ...args], { stdout: 'lines' });
  const ready = await daemon.waitForLine((l) => l.msg === 'vm-manager ready', 'vm-manager ready', 30_000);
  const serving = await daemon.waitForLine((l) => l.msg === 'vm-manager serving', 'vm-manager serving');
  const admin = ready.admin as { port?: number } | null;
  return { daemon, port: Number(serving.port), adminPort: admin?.port ?? null };
}

/** Runs a child to completion; stdout and stderr as text. Killed at cleanup if still running. */
export function runChild(cmd: string, args: string[], timeoutMs: number): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    pids.add(child.pid!);
    let stdout = '';
    let stderr = '';
    child.stdout!.setEncoding('utf8').on('data', (c: string) => (stdout += c));
    child.stderr!.setEncoding('utf8').on('data', (c: string) => (stderr += c));
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.once('error', (e) => (stderr += e.message));
    child.once('close', (code) => {
      clearTimeout(timer);
      pids.delete(child.pid!);
      resolve({ code, stdout, stderr });
    });
  });
}

// ---- /proc -------------------------------------------------------------------------

export function rssKiB(pid: number): number {
  try {
    const m = /^VmRSS:\s+(\d+)\s+kB/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) : NaN;
  } catch {
    return NaN;
  }
}

const CLK_TCK = Number(spawnSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).stdout.trim()) || 100;

/** CPU seconds (user + system) one process has used so far. */
export function cpuSeconds(pid: number): number {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    // after "(comm) ": state=0 ... utime=11 stime=12
    return (Number(f[11]) + Number(f[12])) / CLK_TCK;
  } catch {
    return NaN;
  }
}

/** CPU seconds the whole machine has spent busy so far (all CPUs: user, nice, system, irq, softirq; /proc/stat). */
export function machineBusySeconds(): number {
  try {
    const f = readFileSync('/proc/stat', 'utf8').split('\n', 1)[0]!.trim().split(/\s+/).slice(1).map(Number);
    // user nice system idle iowait irq softirq steal ...
    return (f[0]! + f[1]! + f[2]! + f[5]! + f[6]!) / CLK_TCK;
  } catch {
    return NaN;
  }
}

// ---- HTTP (admin endpoints) and Prometheus text ----------------------------------------

export function httpGet(port: number, urlPath: string, timeoutMs = 5_000): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = http.get({ host: '127.0.0.1', port, path: urlPath, agent: false }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (body += c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.on('error', reject);
    req.setTimeout(timeoutMs, () => req.destroy(new Error(`GET ${urlPath}: no answer within ${timeoutMs} ms`)));
  });
}

export async function httpReady(port: number): Promise<boolean> {
  try {
    return (await httpGet(port, '/ready', 1_000)).status === 200;
  } catch {
    return false;
  }
}

/** Sum of the samples of `name` whose labels include `labels` (Prometheus text format). */
export function metricSum(text: string, name: string, labels: Record<string, string> = {}): number {
  let sum = 0;
  for (const line of text.split('\n')) {
    if (!line.startsWith(name)) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)/.exec(line);
    if (!m || m[1] !== name) continue;
    const have = new Map<string, string>();
    for (const l of (m[3] ?? '').matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) have.set(l[1]!, l[2]!);
    if (Object.entries(labels).every(([k, v]) => have.get(k) === v)) sum += Number(m[4]);
  }
  return sum;
}

/**
 * A free TCP port on 127.0.0.1 below the kernel's ephemeral range, for a
 * child to bind later: a port from the ephemeral range could be taken in
 * between by any bind to port 0 (a sidecar binds its own listeners that way).
 */
export async function freeFixedPort(): Promise<number> {
  let low = 32768;
  try {
    low = Number(readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8').trim().split(/\s+/)[0]) || low;
  } catch {
    // the default range
  }
  const from = Math.max(1024, low - 20_000);
  for (let attempt = 0; attempt < 200; attempt++) {
    const port = from + Math.floor(Math.random() * (low - from));
    const ok = await new Promise<boolean>((resolve) => {
      const s = net.createServer();
      s.once('error', () => resolve(false));
      s.listen(port, '127.0.0.1', () => s.close(() => resolve(true)));
    });
    if (ok) return port;
  }
  throw new Error(`no free port in ${from}..${low - 1}`);
}

// ---- statistics and formatting -----------------------------------------------------

export function median(values: number[]): number {
  const v = values.filter((x) => Number.isFinite(x));
  if (v.length === 0) return NaN;
  const s = [...v].sort((a, b) => a - b);
  const mid = s.length >> 1;
  return s.length % 2 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
}

/** Nearest-rank percentile (p in 0..100) of unsorted values. */
export function percentile(values: ArrayLike<number>, p: number): number {
  if (values.length === 0) return NaN;
  const s = Float64Array.from(values).sort();
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1))]!;
}

export function fmt(n: number, digits = 0): string {
  if (!Number.isFinite(n)) return 'n/a';
  return n.toLocaleString('en-US', { minimumFractionDigits: digits, maximumFractionDigits: digits });
}

/** A Markdown table; numeric-looking columns after the first are right-aligned. */
export function mdTable(head: string[], rows: string[][]): string {
  return [`| ${head.join(' | ')} |`, `|${head.map((_, i) => (i === 0 ? '---' : '---:')).join('|')}|`, ...rows.map((r) => `| ${r.join(' | ')} |`)].join('\n');
}

export function machineLine(): string {
  const cpus = os.cpus();
  return `${cpus.length} × ${cpus[0]?.model.trim() ?? 'cpu'}, Node ${process.version}, load average (1 min) ${os.loadavg()[0]!.toFixed(2)}`;
}

/** Writes `.bench/<name>-<timestamp>.md` and `.json`; returns the .md path relative to the checkout. */
export function writeReport(name: string, markdown: string, json: unknown): string {
  const dir = path.join(ROOT, '.bench');
  mkdirSync(dir, { recursive: true });
  const stamp = new Date().toISOString().replace(/[:.]/g, '-');
  const md = path.join(dir, `${name}-${stamp}.md`);
  writeFileSync(md, `${markdown}\n`);
  writeFileSync(path.join(dir, `${name}-${stamp}.json`), `${JSON.stringify(json, null, 2)}\n`);
  return path.relative(ROOT, md);
}
