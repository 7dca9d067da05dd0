// HTTP (L7) benchmark on loopback: the same two loads through four chains, in
// alternating rounds, medians reported as a Markdown table (also written to
// .bench/http-<timestamp>.md) with the vsockmesh targets checked.
//
//   direct          client -> app
//   HAProxy 2-hop   client -> haproxy (mode http) -> haproxy (mode http) -> app
//   nginx 2-hop     client -> nginx (proxy_pass / grpc_pass, keepalive upstreams) -> nginx -> app
//   vsockmesh 2-hop client -> sidecar A (outbound listener, protocol: http) -> PROXY v2 -> sidecar B (inbound) -> app
//   vsockmesh before  the vsockmesh chain run by another build (BENCH_BASELINE_CLI=<path>/dist/proxy/cmd/cli.js)
//                   with its own shebang's node flags, or the same build with other flags
//                   (BENCH_BASELINE_NODE_ARGS): a before/after comparison measured in the same rounds
//
// Each proxy is one process with one thread doing the work (HAProxy nbthread
// 1; nginx worker_processes 1, its master counted too; a sidecar is one Node
// process), each logging one line per request to /dev/null.
//
// Loads: HTTP/1.1 keep-alive, wrk -t2 -c64 against an HAProxy answering 200
// itself (a fast C app); gRPC unary calls over h2c, h2load with 4 connections
// and 16 streams each against an h2c app (http-bench-backend.ts). Per chain
// and load: requests/s, p50/p99 latency, and CPU seconds per request of the
// chain's proxy processes (from /proc), and for the vsockmesh chains sidecar
// A's minor GCs (scavenges) per 1,000 requests (its /stats): how much it
// allocates per request, a figure that a loaded machine hardly moves, unlike
// the timings.
//
// Capture mode (BENCH_CAPTURE=1, or l4 / http for one pair; as root): the
// cost of transparent capture (`vsockmesh iptables apply`, nat REDIRECT to a
// capture listener) against an explicit listener on the same sidecars, in
// network namespaces, measured in the same rounds: (a) L4, capture without
// an inspector against an explicit L4 listener; (b) HTTP, capture with
// http_inspector (L7) against an explicit `protocol: http` listener; each with
// keep-alive requests and new connections. See http-capture-bench.ts. Without
// root it says why and leaves the rows out.
//
// Run: npm run bench:http  (env: BENCH_ROUNDS=3, BENCH_SECONDS=8,
//   BENCH_CHAINS=direct,haproxy,nginx,vsockmesh[,vsockmesh-before] (empty: none), BENCH_LOADS=http1,grpc,
//   BENCH_CAPTURE=1|l4|http, BENCH_WARM_PATH=0|1 (this build's hops with warm_path: false|true; unset: the default, on),
//   BENCH_BASELINE_CLI, BENCH_H2C=frames|node (both builds' listeners' h2c path; unset: each build's default), BENCH_NODE_ARGS="--cpu-prof --cpu-prof-dir=..." for the sidecars,
//   BENCH_BASELINE_NODE_ARGS for the baseline's sidecars, default BENCH_NODE_ARGS)
// Not a test: `npm test` does not run it.

import { spawnSync } from 'node:child_process';
import { accessSync, constants, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { freePort, httpOkListen, startHaproxy } from '../helpers/haproxy.js';
import {
  CLI,
  ROOT,
  RoundSamples,
  chainsFromEnv,
  cliNodeFlags,
  fmt,
  hopsCpuSeconds,
  httpGet,
  intEnv,
  listeningPorts,
  log,
  metricSum,
  onCleanup,
  percentile,
  requireBinary,
  runBench,
  runChild,
  sleep,
  startDaemon,
  startSidecarPair,
  waitUntil,
  wrk,
  writeReport,
  type Hop,
} from './bench-common.js';
import { CaptureRows, captureChainsFromEnv } from './http-capture-bench.js';

const ROUNDS = intEnv('BENCH_ROUNDS', 3);
const SECONDS = intEnv('BENCH_SECONDS', 8);
const PACE = { seconds: SECONDS, slow: 1 };
const BASELINE_CLI = process.env.BENCH_BASELINE_CLI ?? '';
const H2C = process.env.BENCH_H2C ?? '';
/** BENCH_WARM_PATH=0 or 1: this build's hops with warm_path: false or true (unset: the default, on). */
const WARM_PATH = process.env.BENCH_WARM_PATH === undefined ? undefined : process.env.BENCH_WARM_PATH === '1';
const ALL_CHAINS = ['direct', 'haproxy', 'nginx', 'vsockmesh', 'vsockmesh-before'] as const;
type ChainName = (typeof ALL_CHAINS)[number];
const DEFAULT_CHAINS: ChainName[] = ['direct', 'haproxy', 'nginx', 'vsockmesh', ...(BASELINE_CLI ? (['vsockmesh-before'] as const) : [])];
const CHAINS: ChainName[] = chainsFromEnv(ALL_CHAINS, DEFAULT_CHAINS);
if (CHAINS.includes('vsockmesh-before') && !BASELINE_CLI) throw new Error('BENCH_CHAINS: vsockmesh-before needs BENCH_BASELINE_CLI=<another checkout>/dist/proxy/cmd/cli.js');
const SIDECAR_NODE_FLAGS = cliNodeFlags();
const BASELINE_NODE_FLAGS = BASELINE_CLI ? cliNodeFlags(BASELINE_CLI, process.env.BENCH_BASELINE_NODE_ARGS === undefined ? 'BENCH_NODE_ARGS' : 'BENCH_BASELINE_NODE_ARGS') : [];
const LABEL: Record<ChainName, string> = {
  direct: 'direct',
  haproxy: 'HAProxy 2-hop (http)',
  nginx: 'nginx 2-hop',
  vsockmesh: 'vsockmesh 2-hop',
  'vsockmesh-before': 'vsockmesh before',
};
/** gRPC load: connections × concurrent streams each (64 calls in flight, as the 64 HTTP/1.1 connections). */
const GRPC_CONNECTIONS = 4;
const GRPC_STREAMS = 16;
const GRPC_PATH = '/bench.Echo/Unary';

interface Ports {
  http1: number;
  grpc: number;
}

interface Chain {
  name: ChainName;
  entry: Ports;
  hops: Hop[];
  /** Sidecar A's admin port (vsockmesh chains): its GC counts. */
  adminPort?: number;
}

// ---- chains ---------------------------------------------------------------------

async function startHaproxyChain(app: Ports): Promise<Chain> {
  const hop2 = { http1: await freePort(), grpc: await freePort() };
  const entry = { http1: await freePort(), grpc: await freePort() };
  const sections = (prefix: string, bind: Ports, to: Ports): string[] => [
    [`listen ${prefix}_http1`, '  mode http', `  bind 127.0.0.1:${bind.http1}`, `  server s1 127.0.0.1:${to.http1}`].join('\n'),
    [`listen ${prefix}_grpc`, '  mode http', `  bind 127.0.0.1:${bind.grpc} proto h2`, `  server s1 127.0.0.1:${to.grpc} proto h2`].join('\n'),
  ];
  const common = { nbthread: 1, idleTimeout: '10m', captureOutput: false, readyPorts: [] };
  const b = await startHaproxy({ ...common, sections: sections('hop2', hop2, app) });
  const a = await startHaproxy({ ...common, sections: sections('hop1', entry, hop2) });
  onCleanup(async () => {
    await a.stop();
    await b.stop();
  });
  const all = [...Object.values(entry), ...Object.values(hop2)];
  await waitUntil(() => all.every((p) => listeningPorts().has(p)), 'haproxy listeners');
  return { name: 'haproxy', entry, hops: [{ pids: [a.pid], group: false }, { pids: [b.pid], group: false }] };
}

/** One nginx (master + 1 worker, a process group) proxying `bind` to `to` with keep-alive upstream connections. */
function startNginx(nginx: string, dir: string, name: string, bind: Ports, to: Ports): Hop {
  const prefix = path.join(dir, name);
  const conf = `${prefix}.conf`;
  writeFileSync(
    conf,
    [
      'daemon off;',
      'master_process on;',
      'user root;',
      'worker_processes 1;',
      `pid ${prefix}.pid;`,
      'error_log stderr error;',
      'events { worker_connections 4096; }',
      'http {',
      `  access_log /dev/null;`,
      ...['client_body', 'proxy', 'fastcgi', 'uwsgi', 'scgi'].map((t) => `  ${t}_temp_path ${prefix}-${t};`),
      `  upstream http1 { server 127.0.0.1:${to.http1}; keepalive 64; }`,
      `  upstream grpc { server 127.0.0.1:${to.grpc}; keepalive 64; }`,
      '  keepalive_requests 1000000;',
      `  server { listen 127.0.0.1:${bind.http1}; location / { proxy_pass http://http1; proxy_http_version 1.1; proxy_set_header Connection ""; } }`,
      `  server { listen 127.0.0.1:${bind.grpc} http2; http2_max_concurrent_streams 1000; location / { grpc_pass grpc://grpc; } }`,
      '}',
    ].join('\n'),
  );
  const daemon = startDaemon(nginx, ['-p', dir, '-c', conf, '-e', 'stderr'], { stdout: 'ignore', group: true });
  return { pids: [daemon.pid], group: true };
}

async function startNginxChain(nginx: string, app: Ports, dir: string): Promise<Chain> {
  const hop2 = { http1: await freePort(), grpc: await freePort() };
  const entry = { http1: await freePort(), grpc: await freePort() };
  const b = startNginx(nginx, dir, 'nginx-hop2', hop2, app);
  const a = startNginx(nginx, dir, 'nginx-hop1', entry, hop2);
  const all = [...Object.values(entry), ...Object.values(hop2)];
  await waitUntil(() => all.every((p) => listeningPorts().has(p)), 'nginx listeners');
  return { name: 'nginx', entry, hops: [a, b] };
}

async function startVsockmeshChain(name: 'vsockmesh' | 'vsockmesh-before', cli: string, nodeFlags: string[], app: Ports, dir: string): Promise<Chain> {
  const ports = { inbound: await freePort(), adminA: await freePort(), adminB: await freePort() };
  const entry = { http1: await freePort(), grpc: await freePort() };
  // BENCH_H2C=frames|node: both builds' listeners take that h2c path (unset: each build's own default).
  const listener = { protocol: 'http', ...(H2C !== '' && { h2c: H2C }) };
  const hops = await startSidecarPair({ dir, name, backends: { ...app }, entry, ports, listener, nodeFlags, cli, ...(name === 'vsockmesh' && WARM_PATH !== undefined && { warmPath: WARM_PATH }) });
  return { name, entry, hops, adminPort: ports.adminA };
}

// ---- loads ------------------------------------------------------------------------

interface LoadResult {
  rps: number;
  p50us: number;
  p99us: number;
  /** Proxy CPU (all hops) per request, µs; NaN without hops. */
  cpuUs: number;
  /** Sidecar A's scavenges per 1,000 requests; NaN for other chains. */
  scavenges: number;
  failed: number;
}

/** h2load's arguments for `seconds` of unary gRPC calls (an empty message each) over h2c to `port`. */
function h2loadArgs(port: number, body: string, seconds: number, logFile?: string): string[] {
  return [
    ...['-D', String(seconds), '-t1', `-c${GRPC_CONNECTIONS}`, `-m${GRPC_STREAMS}`, '-d', body],
    ...['-H', 'content-type: application/grpc', '-H', 'te: trailers'],
    ...(logFile ? ['--log-file', logFile] : []),
    `http://127.0.0.1:${port}${GRPC_PATH}`,
  ];
}

/** h2load: unary gRPC calls over h2c; latency from its per-request log. */
async function h2load(bin: string, port: number, dir: string, body: string): Promise<Omit<LoadResult, 'cpuUs' | 'scavenges'> & { requests: number }> {
  const logFile = path.join(dir, `h2load-${port}.log`);
  const args = h2loadArgs(port, body, SECONDS, logFile);
  const r = await runChild(bin, args, (SECONDS + 30) * 1000);
  const rps = Number(/finished in [\d.]+m?s, ([\d.]+) req\/s/.exec(r.stdout)?.[1] ?? NaN);
  const done = /requests: (\d+) total, \d+ started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored/.exec(r.stdout);
  const requests = Number(done?.[3] ?? NaN);
  const failed = done ? Number(done[4]) + Number(done[5]) : NaN;
  if (!Number.isFinite(rps)) log(`h2load via :${port} failed (exit ${r.code}): ${r.stdout.slice(-400)} ${r.stderr.slice(0, 300)}`);
  // Lines: start time (µs since the epoch), status, µs until the response ended.
  let micros: number[];
  try {
    micros = readFileSync(logFile, 'utf8')
      .split('\n')
      .map((l) => l.split('\t'))
      .filter((f) => f.length >= 3 && f[1] === '200')
      .map((f) => Number(f[2]));
  } finally {
    rmSync(logFile, { force: true });
  }
  return { rps, requests, failed, p50us: percentile(micros, 50), p99us: percentile(micros, 99) };
}

const ALL_LOADS = ['http1', 'grpc'] as const;
type Load = (typeof ALL_LOADS)[number];
const LOADS: Load[] = (process.env.BENCH_LOADS?.split(',').map((s) => s.trim()) ?? [...ALL_LOADS]).filter((l): l is Load => {
  if (!(ALL_LOADS as readonly string[]).includes(l)) throw new Error(`BENCH_LOADS: unknown load "${l}" (known: ${ALL_LOADS.join(', ')})`);
  return true;
});
type Metric = `${Load}_${'rps' | 'p50' | 'p99' | 'cpu' | 'gc'}`;
const samples = new RoundSamples<ChainName, Metric>();
const notes: string[] = [];

async function measure(chain: Chain, load: Load, run: () => Promise<{ rps: number; p50us: number; p99us: number; requests: number; failed: number }>): Promise<LoadResult> {
  const cpu = (): number => (chain.hops.length > 0 ? hopsCpuSeconds(chain.hops) : NaN);
  const minorGcs = async (): Promise<number> =>
    chain.adminPort === undefined ? NaN : metricSum((await httpGet(chain.adminPort, '/stats')).body, 'vsockmesh_process_nodejs_gc_duration_seconds_count', { kind: 'minor' });
  const gc0 = await minorGcs();
  const cpu0 = cpu();
  const r = await run();
  const cpuUs = ((cpu() - cpu0) / r.requests) * 1e6;
  const scavenges = (((await minorGcs()) - gc0) / r.requests) * 1000;
  samples.record(chain.name, `${load}_rps`, r.rps);
  samples.record(chain.name, `${load}_p50`, r.p50us);
  samples.record(chain.name, `${load}_p99`, r.p99us);
  samples.record(chain.name, `${load}_cpu`, cpuUs);
  samples.record(chain.name, `${load}_gc`, scavenges);
  if (r.failed > 0) {
    const note = `${LABEL[chain.name]} round ${samples.round + 1}, ${load}: ${r.failed} failed requests`;
    notes.push(note);
    log(note);
  }
  return { rps: r.rps, p50us: r.p50us, p99us: r.p99us, cpuUs, scavenges, failed: r.failed };
}

// ---- report -----------------------------------------------------------------------------

const med = (chain: ChainName, metric: Metric): number => samples.median(chain, metric);

function table(): string {
  const rows: Array<{ label: string; metric: Metric; unit: string; digits: number }> = [
    { label: 'HTTP/1.1 requests/s (wrk -t2 -c64, keep-alive)', metric: 'http1_rps', unit: 'req/s', digits: 0 },
    { label: 'HTTP/1.1 latency p50', metric: 'http1_p50', unit: 'ms', digits: 2 },
    { label: 'HTTP/1.1 latency p99', metric: 'http1_p99', unit: 'ms', digits: 2 },
    { label: 'HTTP/1.1 proxy CPU per request (all hops)', metric: 'http1_cpu', unit: 'CPU-µs', digits: 0 },
    { label: 'HTTP/1.1 sidecar A scavenges per 1,000 requests', metric: 'http1_gc', unit: '', digits: 1 },
    { label: `gRPC unary calls/s (h2load, ${GRPC_CONNECTIONS} conns × ${GRPC_STREAMS} streams)`, metric: 'grpc_rps', unit: 'req/s', digits: 0 },
    { label: 'gRPC latency p50', metric: 'grpc_p50', unit: 'ms', digits: 2 },
    { label: 'gRPC latency p99', metric: 'grpc_p99', unit: 'ms', digits: 2 },
    { label: 'gRPC proxy CPU per call (all hops)', metric: 'grpc_cpu', unit: 'CPU-µs', digits: 0 },
    { label: 'gRPC sidecar A scavenges per 1,000 calls', metric: 'grpc_gc', unit: '', digits: 1 },
  ];
  const head = `| load / metric | ${CHAINS.map((c) => LABEL[c]).join(' | ')} |`;
  const sep = `|---|${CHAINS.map(() => '---:').join('|')}|`;
  const lines = rows.map((row) => {
    const scale = row.unit === 'ms' ? 1e-3 : 1;
    const cells = CHAINS.map((c) => {
      const v = med(c, row.metric);
      if (!Number.isFinite(v)) return c === 'direct' || row.metric.endsWith('_gc') ? '—' : 'n/a';
      const ratio = CHAINS.includes('haproxy') && c !== 'haproxy' && c !== 'direct' && !row.metric.endsWith('_gc') ? ` (${samples.pairedRatio(c, row.metric, 'haproxy', row.metric).toFixed(2)}×)` : '';
      return `${fmt(v * scale, row.digits)}${row.unit ? ` ${row.unit}` : ''}${ratio}`;
    });
    return `| ${row.label} | ${cells.join(' | ')} |`;
  });
  return [head, sep, ...lines].join('\n');
}

function targets(): string {
  const out: string[] = [];
  if (!CHAINS.includes('vsockmesh') || !CHAINS.includes('haproxy')) out.push('Targets: need both the vsockmesh and HAProxy chains.');
  else out.push('Targets for vsockmesh 2-hop (paired ratios to HAProxy 2-hop in HTTP mode, same round):', '');
  for (const load of CHAINS.includes('haproxy') ? LOADS : []) {
    const rps = samples.pairedRatio('vsockmesh', `${load}_rps`, 'haproxy', `${load}_rps`);
    const p99 = samples.pairedRatio('vsockmesh', `${load}_p99`, 'haproxy', `${load}_p99`);
    const name = load === 'http1' ? 'HTTP/1.1' : 'gRPC';
    out.push(`- ${rps >= 0.6 ? 'PASS' : 'MISS'} ${name} requests/s: ${rps.toFixed(2)}× HAProxy (target ≥ 0.60×)`);
    out.push(`- ${p99 <= 2 ? 'PASS' : 'MISS'} ${name} p99 latency: ${p99.toFixed(2)}× HAProxy (target ≤ 2.00×)`);
  }
  if (CHAINS.includes('vsockmesh-before')) {
    out.push('', 'This build against the baseline build (paired, same round; requests/s higher is better, CPU per request lower):', '');
    for (const load of LOADS) {
      const rps = samples.pairedRatio('vsockmesh', `${load}_rps`, 'vsockmesh-before', `${load}_rps`);
      const cpu = samples.pairedRatio('vsockmesh', `${load}_cpu`, 'vsockmesh-before', `${load}_cpu`);
      const p99 = samples.pairedRatio('vsockmesh', `${load}_p99`, 'vsockmesh-before', `${load}_p99`);
      const gc = samples.pairedRatio('vsockmesh', `${load}_gc`, 'vsockmesh-before', `${load}_gc`);
      out.push(`- ${load === 'http1' ? 'HTTP/1.1' : 'gRPC'}: requests/s ${rps.toFixed(2)}×, CPU per request ${cpu.toFixed(2)}×, p99 ${p99.toFixed(2)}×, scavenges per request ${gc.toFixed(2)}×`);
    }
  }
  return out.join('\n');
}

// ---- main -------------------------------------------------------------------------------

async function main(): Promise<void> {
  const tools = { wrk: requireBinary('wrk'), h2load: requireBinary('h2load', 'apt-get install -y nghttp2-client') };
  const nginx = CHAINS.includes('nginx') ? requireBinary('nginx', 'apt-get install -y nginx-light') : '';
  accessSync(CLI, constants.R_OK);
  if (BASELINE_CLI) accessSync(BASELINE_CLI, constants.R_OK);
  const version = (cmd: string, args: string[]): string => {
    const r = spawnSync(cmd, args, { encoding: 'utf8' });
    return `${r.stdout}${r.stderr}`.split('\n')[0]!.trim();
  };
  const haproxyVersion = version(requireBinary('haproxy'), ['-v']);
  const nginxVersion = nginx ? version(nginx, ['-v']) : '';
  const h2loadVersion = version(tools.h2load, ['--version']);
  const dir = mkdtempSync(path.join(os.tmpdir(), 'vsockmesh-http-bench-'));
  onCleanup(() => rmSync(dir, { recursive: true, force: true }));
  const body = path.join(dir, 'grpc-request.bin');
  writeFileSync(body, Buffer.alloc(5));

  const capture = captureChainsFromEnv();
  if (capture && 'skipped' in capture) log(`BENCH_CAPTURE: not measured, ${capture.skipped}`);

  const loadAtStart = os.loadavg();
  log(`rounds ${ROUNDS}, ${SECONDS}s per run, chains: ${CHAINS.join(', ')}; load average ${loadAtStart.map((l) => l.toFixed(2)).join(' ')}`);

  const app: Ports = { http1: await freePort(), grpc: await freePort() };
  const http1App = await startHaproxy({ sections: [httpOkListen('http_ok', { bindPort: app.http1, log: false })], nbthread: 1, captureOutput: false, log: false });
  onCleanup(() => http1App.stop());
  const grpcApp = startDaemon(process.execPath, ['--import', 'tsx', path.join(ROOT, 'test/bench/http-bench-backend.ts'), String(app.grpc)], { stdout: 'lines' });
  await grpcApp.waitForLine((l) => l.msg === 'ready', 'the gRPC app');

  const chains: Chain[] = [];
  if (CHAINS.includes('direct')) chains.push({ name: 'direct', entry: { ...app }, hops: [] });
  if (CHAINS.includes('haproxy')) chains.push(await startHaproxyChain(app));
  if (CHAINS.includes('nginx')) chains.push(await startNginxChain(nginx, app, dir));
  if (CHAINS.includes('vsockmesh')) chains.push(await startVsockmeshChain('vsockmesh', CLI, SIDECAR_NODE_FLAGS, app, dir));
  if (CHAINS.includes('vsockmesh-before')) chains.push(await startVsockmeshChain('vsockmesh-before', BASELINE_CLI, BASELINE_NODE_FLAGS, app, dir));

  const captureRows = capture && 'chains' in capture ? await CaptureRows.start(capture.chains, dir, tools.wrk, PACE) : undefined;

  // A Node sidecar's first seconds run cold code (JIT): 2 s of each load through every chain first, not recorded.
  log('warm-up: 2 s of each load through every chain');
  for (const chain of chains) {
    if (LOADS.includes('http1')) await wrk(tools.wrk, chain.entry.http1, 2, 64, { seconds: 2, slow: 1 });
    if (LOADS.includes('grpc')) await runChild(tools.h2load, h2loadArgs(chain.entry.grpc, body, 2), 30_000);
  }
  await captureRows?.warmUp();

  const started = Date.now();
  for (let round = 0; round < ROUNDS; round++) {
    samples.round = round;
    const order = chains.map((_, i) => chains[(i + round) % chains.length]!);
    log(`round ${round + 1}/${ROUNDS}: ${order.map((c) => LABEL[c.name]).join(' → ')}; load average ${os.loadavg()[0]!.toFixed(2)}`);
    for (const chain of order) {
      const line: string[] = [];
      for (const load of LOADS) {
        const r =
          load === 'http1'
            ? await measure(chain, load, async () => {
                const w = await wrk(tools.wrk, chain.entry.http1, 2, 64, PACE);
                return { ...w, failed: w.errors + w.non2xx };
              })
            : await measure(chain, load, () => h2load(tools.h2load, chain.entry.grpc, dir, body));
        line.push(`${load} ${fmt(r.rps, 0)} req/s p50/p99 ${fmt(r.p50us / 1e3, 2)}/${fmt(r.p99us / 1e3, 2)} ms ${fmt(r.cpuUs, 0)} CPU-µs/req${Number.isFinite(r.scavenges) ? ` ${fmt(r.scavenges, 1)} scavenges/1k` : ''}`);
        await sleep(300);
      }
      log(`  ${LABEL[chain.name].padEnd(20)} ${line.join('; ')}`);
      await sleep(300);
    }
    await captureRows?.runRound(round);
  }

  const elapsed = Math.round((Date.now() - started) / 1000);
  const cpus = os.cpus();
  const loadAtEnd = os.loadavg();
  const md = [
    `## vsockmesh HTTP benchmark (${new Date().toISOString()})`,
    '',
    `Loopback, ${cpus.length} × ${cpus[0]?.model.trim() ?? 'cpu'} shared by clients, proxies and apps; load average (1/5/15 min) ${loadAtStart.map((l) => l.toFixed(2)).join('/')} before the run, ` +
      `${loadAtEnd.map((l) => l.toFixed(2)).join('/')} after. Medians of ${ROUNDS} round${ROUNDS > 1 ? 's' : ''} (chain order rotated per round), ${SECONDS} s per run, ${elapsed} s in all. ` +
      'Ratios in parentheses: the median over rounds of the chain\'s value over HAProxy 2-hop\'s in the same round (for latency and CPU lower is better).',
    '',
    table(),
    '',
    targets(),
    '',
    'Notes:',
    `- Each proxy is one process, one thread: HAProxy \`nbthread 1\` per hop, \`mode http\`, default keep-alive and connection reuse (${haproxyVersion}); ` +
      `nginx \`worker_processes 1\` per hop, \`proxy_pass\` with \`proxy_http_version 1.1\` and \`grpc_pass\` to \`keepalive\` upstreams (${nginxVersion}), master and worker counted; ` +
      `a vsockmesh sidecar is one Node ${process.version} process (\`node ${SIDECAR_NODE_FLAGS.map((f) => `${f} `).join('')}cli.js sidecar\`): sidecar A's outbound listener has \`protocol: http\`, so its default \`--heap-profile auto\` re-executes it with \`--max-semi-space-size=8\` (README "Running a sidecar"), and sidecar B's inbound listener is L4 (auto keeps its flags).` +
      (BASELINE_CLI ? ` The baseline's sidecars: \`node ${BASELINE_NODE_FLAGS.map((f) => `${f} `).join('')}${BASELINE_CLI} sidecar\`.` : ''),
    '- HAProxy and nginx hops speak plain HTTP to each other; the vsockmesh hop carries a PROXY v2 header first (as in production).',
    '- Access logs on everywhere, to /dev/null: vsockmesh `log: {level: info, access_log: true}`, HAProxy one line per request, nginx `access_log /dev/null`.',
    `- Apps: an HAProxy answering 200 "ok" itself (HTTP/1.1); a node:http2 server answering each unary call with an empty message and \`grpc-status: 0\` (http-bench-backend.ts). Clients: wrk 4.1, ${h2loadVersion} (latency percentiles from its per-request log).`,
    '- CPU per request: CPU seconds (user + system) of all proxy processes of the chain during the run, divided by the requests done.',
    "- Scavenges per 1,000 requests: sidecar A's minor GCs during the run (`vsockmesh_process_nodejs_gc_duration_seconds_count{kind=\"minor\"}` of its /stats) per 1,000 requests done: with the young generation's fixed size, proportional to what it allocates per request.",
    ...notes.map((n) => `- ${n}`),
    '',
    captureRows?.markdown(ROUNDS) ??
      (capture && 'skipped' in capture ? `Transparent capture against an explicit listener: not measured, ${capture.skipped}.` : 'Transparent capture against an explicit listener: not measured (BENCH_CAPTURE=1, as root).'),
  ].join('\n');

  const file = writeReport('http', md, { rounds: ROUNDS, seconds: SECONDS, chains: CHAINS, samples, notes, loadAtStart, loadAtEnd, capture: captureRows && { chains: captureRows.chains, samples: captureRows.samples, notes: captureRows.notes } });
  process.stdout.write(`\n${md}\n\nwritten to ${file}\n`);
}

await runBench(main);
