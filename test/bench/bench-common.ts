// What every benchmark shares (tcp, vsock, resolve, VM manager, xDS): child
// processes that are always cleaned up (process groups too, for forking
// peers such as socat), JSON log lines from a child's stdout, /proc readings,
// the load generators (iperf3, wrk) and the workloads the proxy benchmarks run
// through each chain, Prometheus text, statistics, the report files under
// .bench/. Runs from the sources (tsx) and compiled (dist/test/bench/, the
// vsock benchmark in the guest). Not a test.

import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { accessSync, constants, existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { stringify as toYaml } from 'yaml';
import { httpGet, httpReady, metricSum } from '../helpers/admin-http.js';

/** The checkout: the nearest directory up from this file with a package.json (this file runs from test/bench/ or dist/test/bench/). */
export const ROOT = findRoot(path.dirname(fileURLToPath(import.meta.url)));
export const CLI = path.join(ROOT, 'dist/proxy/cmd/cli.js');

function findRoot(start: string): string {
  for (let dir = start; ; dir = path.dirname(dir)) {
    if (existsSync(path.join(dir, 'package.json'))) return dir;
    if (path.dirname(dir) === dir) throw new Error(`no package.json above ${start}`);
  }
}

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

/**
 * Node flags for the CLI children: the shebang's of `cli`, then the words of
 * the environment variable `extra` (e.g. BENCH_NODE_ARGS="--max-semi-space-size=16", later flags win).
 */
export function cliNodeFlags(cli: string = CLI, extra = 'BENCH_NODE_ARGS'): string[] {
  return [...shebangNodeFlags(cli), ...(process.env[extra]?.split(' ').filter(Boolean) ?? [])];
}

export function intEnv(name: string, fallback: number): number {
  const raw = process.env[name];
  if (raw === undefined || raw === '') return fallback;
  const n = Number(raw);
  if (!Number.isInteger(n) || n < 1) throw new Error(`${name} must be a positive integer, got "${raw}"`);
  return n;
}

/** The chains BENCH_CHAINS names (comma-separated, each one of `all`; empty: none), or `defaults`. */
export function chainsFromEnv<C extends string>(all: readonly C[], defaults: readonly C[]): C[] {
  const named = process.env.BENCH_CHAINS?.split(',').map((s) => s.trim()).filter(Boolean) ?? [...defaults];
  return named.filter((c): c is C => {
    if (!(all as readonly string[]).includes(c)) throw new Error(`BENCH_CHAINS: unknown chain "${c}" (known: ${all.join(', ')})`);
    return true;
  });
}

export function log(msg: string): void {
  process.stderr.write(`[bench ${new Date().toISOString().slice(11, 19)}] ${msg}\n`);
}

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

export async function waitUntil(cond: () => boolean | Promise<boolean>, what: string, timeoutMs = 15_000, pollMs = 25): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await cond())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(pollMs);
  }
}

/** The path of an installed program (PATH, then the sbin directories), or an error saying how to install it. */
export function requireBinary(name: string, install = `apt-get install -y ${name}`): string {
  for (const dir of [...(process.env.PATH ?? '').split(path.delimiter), '/usr/sbin', '/usr/local/sbin']) {
    if (!dir) continue;
    try {
      accessSync(path.join(dir, name), constants.X_OK);
      return path.join(dir, name);
    } catch {
      // not here
    }
  }
  throw new Error(`${name} not installed: ${install}`);
}

// ---- cleanup: every child we start is killed on exit, error or Ctrl-C ---------

const cleanups: Array<() => Promise<void> | void> = [];
/** Process groups we lead (socat forks its children into them) and plain pids, for a last-resort sync kill. */
const groups = new Set<number>();
const pids = new Set<number>();
let cleaningUp: Promise<void> | undefined;
/** A signal stops the benchmark: the failures it causes in the children (a killed wrk, iptables) are not the benchmark's. */
let stoppedBy: NodeJS.Signals | undefined;

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
  for (const target of [...[...groups].map((g) => -g), ...pids]) {
    try {
      process.kill(target, 'SIGKILL');
    } catch {
      // gone
    }
  }
});
for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.once(signal, () => {
    stoppedBy = signal;
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
    if (stoppedBy === undefined) process.stderr.write(`bench failed: ${(err as Error).stack ?? String(err)}\n`);
  } finally {
    await cleanup();
  }
}

export type LogLine = Record<string, unknown>;

/**
 * Splits `stream` into lines and hands each chunk's JSON-object lines to
 * `onLines` (a line split across chunks is joined first; other lines, and
 * lines that do not parse, are skipped).
 */
export function onJsonLines(stream: NodeJS.ReadableStream, onLines: (lines: LogLine[]) => void): void {
  let partial = '';
  stream.setEncoding('utf8');
  stream.on('data', (chunk: string) => {
    const parts = (partial + chunk).split('\n');
    partial = parts.pop() ?? '';
    const lines: LogLine[] = [];
    for (const p of parts) {
      if (!p.startsWith('{')) continue;
      try {
        lines.push(JSON.parse(p) as LogLine);
      } catch {
        continue;
      }
    }
    onLines(lines);
  });
}

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
 * pipe always drained so the child never blocks on it). group: the child leads
 * a process group, signalled whole (a forking server's children go with it).
 */
export function startDaemon(cmd: string, args: string[], options: { stdout: 'ignore' | 'lines'; group?: boolean }): Daemon {
  const group = options.group ?? false;
  const child = spawn(cmd, args, { stdio: ['ignore', options.stdout === 'lines' ? 'pipe' : 'ignore', 'pipe'], detached: group });
  let err = '';
  child.stderr!.setEncoding('utf8');
  child.stderr!.on('data', (c: string) => (err = (err + c).slice(-8192)));
  child.on('error', (e) => (err += `\nspawn error: ${e.message}`));
  const recent: LogLine[] = [];
  const waiters = new Set<() => void>();
  if (options.stdout === 'lines') {
    onJsonLines(child.stdout!, (lines) => {
      for (const line of lines) {
        recent.push(line);
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
  (group ? groups : pids).add(pid);
  const signal = (s: NodeJS.Signals): void => {
    try {
      if (group) process.kill(-pid, s);
      else child.kill(s);
    } catch {
      // already gone
    }
  };
  const stop = async (): Promise<void> => {
    if (!done) {
      signal('SIGTERM');
      const t = setTimeout(() => signal('SIGKILL'), 3_000);
      await exited;
      clearTimeout(t);
    }
    if (group) {
      // Forked children may outlive their parent: kill the whole group.
      signal('SIGKILL');
      groups.delete(pid);
    } else pids.delete(pid);
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

/**
 * `vsockmesh vm-manager` as a child (the built CLI, with its shebang's node
 * flags); resolves once it serves (admin port: null with --no-admin), or fails
 * after `timeoutMs` (seeding a large --inventory into etcd on a loaded
 * machine takes longer than the default).
 */
export async function startVmManagerCli(args: string[], timeoutMs = 30_000): Promise<{ daemon: Daemon; port: number; adminPort: number | null }> {
  const daemon = startDaemon(process.execPath, [...cliNodeFlags(), CLI, 'vm-manager', '--listen', '127.0.0.1:0', '--insecure', ...args], { stdout: 'lines' });
  const ready = await daemon.waitForLine((l) => l.msg === 'vm-manager ready', 'vm-manager ready', timeoutMs);
  const serving = await daemon.waitForLine((l) => l.msg === 'vm-manager serving', 'vm-manager serving', timeoutMs);
  const admin = ready.admin as { port?: number } | null;
  return { daemon, port: Number(serving.port), adminPort: admin?.port ?? null };
}

/**
 * `vsockmesh <role> -c <config>` as a child, as production runs the bin (with
 * `nodeFlags`, default the shebang's and BENCH_NODE_ARGS; stdout, JSON logs
 * with the access lines, to /dev/null); resolves once its admin endpoint at
 * `adminPort` answers /ready with 200. `slow` stretches the deadlines; `cli`:
 * another build of the bin (a baseline measured in the same run).
 */
export async function startProxyCli(
  role: 'sidecar' | 'host-relay',
  configFile: string,
  options: { adminPort: number; nodeFlags?: string[]; timeoutMs?: number; slow?: number; /** Another build of the bin (a before/after run); default this checkout's. */ cli?: string },
): Promise<Daemon> {
  const slow = options.slow ?? 1;
  const what = `${role} ${path.basename(configFile)}`;
  const daemon = startDaemon(process.execPath, [...(options.nodeFlags ?? cliNodeFlags()), options.cli ?? CLI, role, '-c', configFile], { stdout: 'ignore' });
  try {
    await waitUntil(
      async () => {
        if (daemon.child.exitCode !== null) throw new Error(`${what} exited with ${daemon.child.exitCode}`);
        return (await httpGet(options.adminPort, '/ready', 1_000 * slow).catch(() => undefined))?.status === 200;
      },
      `${what} /ready`,
      (options.timeoutMs ?? 15_000) * slow,
    );
  } catch (err) {
    throw new Error(`${(err as Error).message}\n${daemon.stderr()}`, { cause: err });
  }
  return daemon;
}

/**
 * How much longer than on an idle machine a start may take: the load average
 * per core, at least 1 (a sidecar once missed 15 s to /ready at load 23 on 2
 * cores, where it waits for its share of the CPU).
 */
function loadSlowness(): number {
  return Math.max(1, os.loadavg()[0]! / os.cpus().length);
}

/**
 * The vsockmesh 2-hop chain of the loopback benchmarks (tcp, http): sidecar B
 * with one inbound listener on `inboundPort` in front of the `backends`, then
 * sidecar A with one outbound listener per backend on its `entry` port
 * (plus `listener`, e.g. `protocol: http`), whose cluster is that backend
 * behind B. Both log one access line per connection or request (to
 * /dev/null). The wait for /ready grows with the load. Returns the two hops, A first.
 */
export async function startSidecarPair(options: {
  dir: string;
  name: string;
  backends: Record<string, number>;
  entry: Record<string, number>;
  ports: { inbound: number; adminA: number; adminB: number };
  listener?: Record<string, unknown>;
  peerTls?: { a: Record<string, string>; b: Record<string, string> };
  nodeFlags: string[];
  cli?: string;
  /** Both hops' warm_path (unset: the default; this checkout's bin only: a build before it refuses the key). */
  warmPath?: boolean;
}): Promise<Hop[]> {
  const { backends, entry, ports, peerTls } = options;
  const keys = Object.keys(backends);
  const common = { log: { level: 'info', access_log: true }, drain_timeout: '1s' };
  const b = {
    node: { id: 'bench-b' },
    ...(peerTls && { peer_tls: { mode: 'strict', ...peerTls.b } }),
    admin: { address: '127.0.0.1', port: ports.adminB },
    ...common,
    listeners: [{ kind: 'inbound', name: 'inbound', addresses: ['127.0.0.1'], port: ports.inbound, ports: keys.map((k) => backends[k]), ...(options.warmPath !== undefined && { warm_path: options.warmPath }) }],
  };
  const a = {
    node: { id: 'bench-a' },
    ...(peerTls && { peer_tls: { mode: 'strict', ...peerTls.a } }),
    admin: { address: '127.0.0.1', port: ports.adminA },
    ...common,
    listeners: keys.map((k) => ({ kind: 'outbound', name: `out-${k}`, addresses: ['127.0.0.1'], port: entry[k], cluster: k, ...(options.warmPath !== undefined && { warm_path: options.warmPath }), ...options.listener })),
    clusters: keys.map((k) => ({
      name: k,
      authority: `${k}.bench`,
      endpoints: [{ address: '127.0.0.1', port: backends[k], vm_id: 'bench-b', peer: { address: '127.0.0.1', port: ports.inbound } }],
    })),
  };
  const pids: number[] = [];
  for (const [side, config, admin] of [['b', b, ports.adminB], ['a', a, ports.adminA]] as const) {
    const file = path.join(options.dir, `${options.name}-${side}.yaml`);
    writeFileSync(file, toYaml(config));
    pids.push((await startProxyCli('sidecar', file, { adminPort: admin, nodeFlags: options.nodeFlags, slow: loadSlowness(), ...(options.cli !== undefined && { cli: options.cli }) })).pid);
  }
  const [pidB, pidA] = pids as [number, number];
  return [
    { pids: [pidA], group: false },
    { pids: [pidB], group: false },
  ];
}

/** Runs a child to completion; stdout and stderr as text. Killed at cleanup if still running. */
export function runChild(cmd: string, args: string[], timeoutMs: number): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    if (child.pid !== undefined) pids.add(child.pid);
    let stdout = '';
    let stderr = '';
    child.stdout!.setEncoding('utf8').on('data', (c: string) => (stdout += c));
    child.stderr!.setEncoding('utf8').on('data', (c: string) => (stderr += c));
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.once('error', (e) => (stderr += e.message));
    child.once('close', (code) => {
      clearTimeout(timer);
      if (child.pid !== undefined) pids.delete(child.pid);
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

/** The fields of /proc/PID/stat after "(comm) ": state=0 ppid=1 pgrp=2 ... utime=11 stime=12 cutime=13 cstime=14. */
function statFields(pid: number | 'self'): string[] | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  } catch {
    return undefined;
  }
}

/** CPU seconds (user + system) one process has used so far; with `children`, plus those of its reaped children (socat's forks). */
export function cpuSeconds(pid: number, options: { children?: boolean } = {}): number {
  const f = statFields(pid);
  if (!f) return NaN;
  return (Number(f[11]) + Number(f[12]) + (options.children ? Number(f[13]) + Number(f[14]) : 0)) / CLK_TCK;
}

/** CPU seconds of this process's reaped children (a client run to completion). */
export function childrenCpuSeconds(): number {
  const f = statFields('self');
  return f ? (Number(f[13]) + Number(f[14])) / CLK_TCK : NaN;
}

/** The processes of one proxy hop: plain pids, or the leaders of process groups whose every member counts. */
export interface Hop {
  pids: number[];
  group: boolean;
}

/** Every process of the hops, each with the hop it belongs to (process groups looked up in /proc). */
function hopProcesses(hops: Hop[]): Array<{ hop: number; pid: number }> {
  const out: Array<{ hop: number; pid: number }> = [];
  const groupOf = new Map<number, number>();
  hops.forEach((h, i) => {
    if (h.group) for (const pid of h.pids) groupOf.set(pid, i);
    else for (const pid of h.pids) out.push({ hop: i, pid });
  });
  if (groupOf.size === 0) return out;
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    const hop = groupOf.get(Number(statFields(Number(entry))?.[2]));
    if (hop !== undefined) out.push({ hop, pid: Number(entry) });
  }
  return out;
}

/** CPU seconds used so far by every process of the hops, reaped children included. */
export function hopsCpuSeconds(hops: Hop[]): number {
  let sum = 0;
  for (const { pid } of hopProcesses(hops)) sum += cpuSeconds(pid, { children: true }) || 0;
  return sum;
}

/**
 * Bytes and calls of read(2) so far, summed over the hops' live processes (/proc/<pid>/io rchar, syscr: the
 * relay's reads; send(2) does not count there). Reaped socat forks are not counted.
 */
export function hopsReads(hops: Hop[]): { bytes: number; calls: number } {
  let bytes = 0;
  let calls = 0;
  for (const { pid } of hopProcesses(hops)) {
    try {
      const io = readFileSync(`/proc/${pid}/io`, 'utf8');
      bytes += Number(/^rchar:\s+(\d+)/m.exec(io)?.[1] ?? 0);
      calls += Number(/^syscr:\s+(\d+)/m.exec(io)?.[1] ?? 0);
    } catch {
      // gone (a socat fork that ended)
    }
  }
  return { bytes, calls };
}

/** VmRSS of each hop (the sum over its processes) and how many processes it has. */
export function hopsRssKiB(hops: Hop[]): Array<{ kib: number; processes: number }> {
  const per = hops.map(() => ({ kib: 0, processes: 0 }));
  for (const { hop, pid } of hopProcesses(hops)) {
    per[hop]!.kib += rssKiB(pid) || 0;
    per[hop]!.processes++;
  }
  return per;
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

/** Context switches the whole machine has made so far (/proc/stat `ctxt`). */
export function machineContextSwitches(): number {
  try {
    const line = readFileSync('/proc/stat', 'utf8').split('\n').find((l) => l.startsWith('ctxt '));
    return line ? Number(line.slice(5)) : NaN;
  } catch {
    return NaN;
  }
}

// ---- load generators and the proxy workloads -----------------------------------------

/**
 * How long a run lasts and how much slower than usual things may be
 * (`slow` > 1 under an emulated CPU: deadlines grow with it).
 */
export interface LoadPace {
  seconds: number;
  slow: number;
}

/** MB/s received by an iperf3 client through `port`, and the bytes moved (for CPU per GB); retried twice. */
export async function iperf3(bin: string, port: number, streams: number, pace: LoadPace): Promise<{ mbps: number; bytes: number }> {
  for (let attempt = 1; ; attempt++) {
    const r = await runChild(bin, ['-c', '127.0.0.1', '-p', String(port), '-t', String(pace.seconds), '-P', String(streams), '-J'], (pace.seconds + 30) * 1000 * pace.slow);
    let json: { error?: string; end?: { sum_received?: { bits_per_second?: number; bytes?: number } } } = {};
    try {
      json = JSON.parse(r.stdout) as typeof json;
    } catch {
      json = { error: `unparsable output (exit ${r.code}): ${r.stdout.slice(0, 200)} ${r.stderr.slice(0, 200)}` };
    }
    const bps = json.end?.sum_received?.bits_per_second;
    if (!json.error && bps !== undefined) return { mbps: bps / 8 / 1e6, bytes: json.end?.sum_received?.bytes ?? NaN };
    if (attempt >= 3) {
      log(`iperf3 -P ${streams} via :${port} failed: ${json.error}`);
      return { mbps: NaN, bytes: NaN };
    }
    log(`iperf3 -P ${streams} via :${port}: ${json.error}; retrying`);
    await sleep(1_000);
  }
}

export interface WrkResult {
  rps: number;
  requests: number;
  p50us: number;
  p99us: number;
  errors: number;
  non2xx: number;
}

function toMicros(value: string): number {
  const m = /^([\d.]+)(us|ms|s|m)$/.exec(value);
  if (!m) return NaN;
  const n = Number(m[1]);
  return m[2] === 'us' ? n : m[2] === 'ms' ? n * 1e3 : m[2] === 's' ? n * 1e6 : n * 60e6;
}

/** Where wrk runs and what it dials: `wrapper` execs it (e.g. `ip netns exec <ns>`), `host` (default 127.0.0.1). */
export interface WrkTarget {
  host?: string;
  wrapper?: string[];
}

/** wrk against http://<host>:port/ (a request times out after 2 s, times `slow`). */
export async function wrk(bin: string, port: number, threads: number, connections: number, pace: LoadPace, extra: string[] = [], target: WrkTarget = {}): Promise<WrkResult> {
  const args = [`-t${threads}`, `-c${connections}`, `-d${pace.seconds}s`, '--latency', '--timeout', `${2 * pace.slow}s`, ...extra, `http://${target.host ?? '127.0.0.1'}:${port}/`];
  const [cmd, ...argv] = [...(target.wrapper ?? []), bin, ...args];
  const r = await runChild(cmd!, argv, (pace.seconds + 30) * 1000 * pace.slow);
  const rps = Number(/Requests\/sec:\s+([\d.]+)/.exec(r.stdout)?.[1] ?? NaN);
  const requests = Number(/(\d+) requests in/.exec(r.stdout)?.[1] ?? NaN);
  const p50us = toMicros(/^\s+50%\s+(\S+)/m.exec(r.stdout)?.[1] ?? '');
  const p99us = toMicros(/^\s+99%\s+(\S+)/m.exec(r.stdout)?.[1] ?? '');
  const se = /Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/.exec(r.stdout);
  const errors = se ? se.slice(1).reduce((sum, x) => sum + Number(x), 0) : 0;
  const non2xx = Number(/Non-2xx or 3xx responses: (\d+)/.exec(r.stdout)?.[1] ?? 0);
  if (!Number.isFinite(rps) || requests === 0) log(`wrk via :${port} failed (exit ${r.code}): ${r.stdout.slice(0, 600)} ${r.stderr.slice(0, 300)}`);
  return { rps, requests, p50us, p99us, errors, non2xx };
}

/** What runWorkloads measures, as the metric names of a RoundSamples. */
export type WorkloadMetric = 'tput1' | 'tput4' | 'p50' | 'p99' | 'rps64' | 'cps32' | 'cpuPerGB' | 'cpuPerConn' | 'cpuPerReq' | 'machineCpuPerReq' | 'machineCtxPerReq' | 'bytesPerRead';

export interface WorkloadResults {
  /** MB/s, 1 and 4 iperf3 streams. */
  tput1: number;
  tput4: number;
  /** wrk: 1 connection (latency), 64 connections (requests/s), 32 with `Connection: close` (new connections/s). */
  latency: WrkResult;
  rps64: WrkResult;
  cps32: WrkResult;
  /** CPU seconds of the hops per GB of the 1-stream run, and CPU-µs per request of the close run (NaN without hops). */
  cpuPerGB: number;
  cpuPerConn: number;
  /**
   * CPU-µs per request of the 64-connection run: of the hops, and of the whole machine (/proc/stat: every
   * process and the kernel's own threads, e.g. vsock_loopback's worker; meaningful only where nothing else runs, as in the guest).
   */
  cpuPerReq: number;
  machineCpuPerReq: number;
  /** Bytes per read(2) of the hops' processes during the 1-stream run (how much each relay read moves). */
  bytesPerRead: number;
  /** Context switches of the whole machine per request of the 64-connection run (as machineCpuPerReq: the guest's alone). */
  machineCtxPerReq: number;
}

/** The workloads of the proxy benchmarks (tcp-bench, vsock-bench) through one chain, one after the other. */
export async function runWorkloads(tools: { iperf3: string; wrk: string }, entry: { iperf: number; http: number }, hops: Hop[], pace: LoadPace): Promise<WorkloadResults> {
  const cpu = (): number => (hops.length > 0 ? hopsCpuSeconds(hops) : NaN);
  const cpu0 = cpu();
  const reads0 = hopsReads(hops);
  const one = await iperf3(tools.iperf3, entry.iperf, 1, pace);
  const cpuPerGB = (cpu() - cpu0) / (one.bytes / 1e9);
  const reads1 = hopsReads(hops);
  const bytesPerRead = hops.length > 0 ? (reads1.bytes - reads0.bytes) / (reads1.calls - reads0.calls) : NaN;
  await sleep(300);
  const tput4 = (await iperf3(tools.iperf3, entry.iperf, 4, pace)).mbps;
  await sleep(300);
  const latency = await wrk(tools.wrk, entry.http, 1, 1, pace);
  await sleep(300);
  const cpu2 = cpu();
  const busy2 = machineBusySeconds();
  const ctx2 = machineContextSwitches();
  const rps64 = await wrk(tools.wrk, entry.http, 2, 64, pace);
  const cpuPerReq = ((cpu() - cpu2) / rps64.requests) * 1e6;
  const machineCpuPerReq = ((machineBusySeconds() - busy2) / rps64.requests) * 1e6;
  const machineCtxPerReq = (machineContextSwitches() - ctx2) / rps64.requests;
  await sleep(300);
  const cpu1 = cpu();
  const cps32 = await wrk(tools.wrk, entry.http, 2, 32, pace, ['-H', 'Connection: close']);
  const cpuPerConn = ((cpu() - cpu1) / cps32.requests) * 1e6;
  return { tput1: one.mbps, tput4, latency, rps64, cps32, cpuPerGB, cpuPerConn, cpuPerReq, machineCpuPerReq, machineCtxPerReq, bytesPerRead };
}

/** Keeps one chain's workload results for the current round. */
export function recordWorkloads<Entry extends string>(samples: RoundSamples<Entry, WorkloadMetric>, entry: Entry, w: WorkloadResults): void {
  samples.record(entry, 'tput1', w.tput1);
  samples.record(entry, 'tput4', w.tput4);
  samples.record(entry, 'p50', w.latency.p50us);
  samples.record(entry, 'p99', w.latency.p99us);
  samples.record(entry, 'rps64', w.rps64.rps);
  samples.record(entry, 'cps32', w.cps32.rps);
  samples.record(entry, 'cpuPerGB', w.cpuPerGB);
  samples.record(entry, 'cpuPerConn', w.cpuPerConn);
  samples.record(entry, 'cpuPerReq', w.cpuPerReq);
  samples.record(entry, 'machineCpuPerReq', w.machineCpuPerReq);
  samples.record(entry, 'machineCtxPerReq', w.machineCtxPerReq);
  samples.record(entry, 'bytesPerRead', w.bytesPerRead);
}

// ---- HTTP (admin endpoints) and Prometheus text ----------------------------------------

export { httpGet, httpReady, metricSum };

/** Local TCP ports in LISTEN state (from /proc/net/tcp{,6}): a listener seen without connecting to it. */
export function listeningPorts(): Set<number> {
  const ports = new Set<number>();
  for (const file of ['/proc/net/tcp', '/proc/net/tcp6']) {
    let text: string;
    try {
      text = readFileSync(file, 'utf8');
    } catch {
      continue;
    }
    for (const line of text.split('\n').slice(1)) {
      const f = line.trim().split(/\s+/);
      if (f[3] === '0A') ports.add(parseInt(f[1]!.split(':')[1]!, 16));
    }
  }
  return ports;
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

/**
 * The machine is shared: a run during which processes outside the benchmark
 * used more than BENCH_MAX_OTHER_CORES (default 0.3) cores is measured again,
 * at most BENCH_MAX_REPEATS times in the whole benchmark.
 */
export class QuietRuns<R extends { otherCores: number }> {
  readonly maxOtherCores = Number(process.env.BENCH_MAX_OTHER_CORES ?? 0.3);
  readonly maxRepeats: number;
  /** Attempts that did not count (a quieter one did). */
  readonly discarded: R[] = [];
  private repeatsLeft: number;

  /** `unit`: what is repeated, in the log lines ("run", "round"). */
  constructor(
    defaultRepeats: number,
    private readonly unit = 'run',
  ) {
    this.maxRepeats = Number(process.env.BENCH_MAX_REPEATS ?? defaultRepeats);
    this.repeatsLeft = this.maxRepeats;
  }

  /** Whether a run that saw `otherCores` is to be repeated (one repeat used up and logged if so). */
  repeat(otherCores: number): boolean {
    if (otherCores <= this.maxOtherCores) return false;
    if (this.repeatsLeft === 0) {
      log(`  other processes used ${otherCores.toFixed(2)} cores (> ${this.maxOtherCores}); no repeats left`);
      return false;
    }
    this.repeatsLeft--;
    log(`  other processes used ${otherCores.toFixed(2)} cores (> ${this.maxOtherCores}): repeating this ${this.unit}`);
    return true;
  }

  /** Runs `attempt` until a run is quiet enough or no repeat is left; the quietest attempt counts. */
  async measure(attempt: () => Promise<R>): Promise<R> {
    let kept: R | undefined;
    for (;;) {
      const r = await attempt();
      if (kept === undefined || r.otherCores < kept.otherCores) {
        if (kept) this.discarded.push(kept);
        kept = r;
      } else this.discarded.push(r);
      if (!this.repeat(r.otherCores)) return kept;
    }
  }
}

/**
 * Values measured in rounds, by entry (a chain) and metric, at most one per
 * round: medians over rounds, and ratios of two values measured in the same
 * round (paired: slow drifts of the machine's load cancel out).
 */
export class RoundSamples<Entry extends string, Metric extends string> {
  /** The round the next values belong to. */
  round = 0;
  private readonly byRound = new Map<string, Map<number, number>>();

  /** Keeps `value` for the current round (a value that did not come out, NaN, is left out). */
  record(entry: Entry, metric: Metric, value: number): void {
    if (!Number.isFinite(value)) return;
    const key = `${entry}/${metric}`;
    if (!this.byRound.has(key)) this.byRound.set(key, new Map());
    this.byRound.get(key)!.set(this.round, value);
  }

  values(entry: Entry, metric: Metric): number[] {
    return [...(this.byRound.get(`${entry}/${metric}`)?.values() ?? [])];
  }

  median(entry: Entry, metric: Metric): number {
    return median(this.values(entry, metric));
  }

  /** The smallest and largest value over rounds (NaN, NaN without any). */
  range(entry: Entry, metric: Metric): { min: number; max: number } {
    const values = this.values(entry, metric);
    return values.length === 0 ? { min: NaN, max: NaN } : { min: Math.min(...values), max: Math.max(...values) };
  }

  /** Median over rounds of x/y, both measured in the same round. */
  pairedRatio(x: Entry, xMetric: Metric, y: Entry, yMetric: Metric): number {
    const xs = this.byRound.get(`${x}/${xMetric}`);
    const ys = this.byRound.get(`${y}/${yMetric}`);
    if (!xs || !ys) return NaN;
    return median([...xs].filter(([r]) => ys.has(r)).map(([r, v]) => v / ys.get(r)!));
  }

  /** Every value, by entry and metric (for the JSON report). */
  toJSON(): Record<string, number[]> {
    return Object.fromEntries([...this.byRound].map(([key, rounds]) => [key, [...rounds.values()]]));
  }
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
