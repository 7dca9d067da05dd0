// TCP benchmark on loopback: the same workloads through four chains, in
// alternating rounds, medians reported as a Markdown table (also written to
// .bench/tcp-<timestamp>.md) with the vsockmesh targets checked.
//
//   direct          client -> backend
//   socat 2-hop     client -> socat -> socat -> backend            (fork per connection)
//   HAProxy 2-hop   client -> haproxy (send-proxy-v2) -> haproxy (accept-proxy) -> backend
//   vsockmesh 2-hop client -> sidecar A (outbound) -> PROXY v2 -> sidecar B (inbound) -> backend
//   HAProxy mTLS    the HAProxy chain with `ssl crt ... ca-file ... verify required` between the hops
//   vsockmesh mTLS  the vsockmesh chain with peer_tls strict between the sidecars
// Both mTLS chains use the same certificates (ECDSA P-256 X509-SVIDs under one
// root) and TLS 1.3 only; HAProxy keeps its default session reuse. The report
// notes how many of each vsockmesh mTLS chain's peer-hop handshakes resumed.
//
// Each proxy is one process with one thread (HAProxy nbthread 1; a sidecar is
// one Node process). Both HAProxy and the sidecars log one line per connection
// (access logs on, as in production) to /dev/null.
//
// Workloads: iperf3 bulk (1 and 4 streams), wrk latency with 1 connection
// (backend: an HAProxy in HTTP mode answering 200 itself), wrk requests/s with
// 64 connections, wrk new connections/s (Connection: close), RSS idle (right
// after start and once a sidecar has settled its memory) and with
// 1,000 idle connections held open.
//
// Run: npm run bench   (env: BENCH_ROUNDS=3, BENCH_SECONDS=5, BENCH_IDLE_CONNS=1000,
//                       BENCH_CHAINS=direct,socat,haproxy,vsockmesh,haproxy-mtls,vsockmesh-mtls,
//                       BENCH_NODE_ARGS="--max-semi-space-size=1 --cpu-prof ..." for the sidecars,
//                       BENCH_WARM_PATH=0|1: both hops of this build with warm_path: false|true (default on),
//                       BENCH_BEFORE=/path/to/other/checkout/dist/proxy/cmd/cli.js: adds the chains
//                       vsockmesh-before and vsockmesh-mtls-before run by that build with its own
//                       shebang's node flags, for before/after
//                       figures of a change in the same run, in the same interleaved rounds)
// Not a test: `npm test` does not run it.

import { spawnSync } from 'node:child_process';
import { accessSync, constants, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { acceptProxyListen, freePort, httpOkListen, sendProxyV2Listen, startHaproxy, type Haproxy } from '../helpers/haproxy.js';
import { makeRoot, vmIdentity } from '../helpers/pki.js';
import { QUIET_MS } from '../../proxy/runtime/settle-memory.js';
import {
  CLI,
  RoundSamples,
  chainsFromEnv,
  cliNodeFlags,
  fmt,
  hopsRssKiB,
  httpGet,
  intEnv,
  listeningPorts,
  log,
  metricSum,
  onCleanup,
  requireBinary,
  runBench,
  recordWorkloads,
  runWorkloads,
  sleep,
  startDaemon,
  startSidecarPair,
  waitUntil,
  writeReport,
  type Hop,
  type WorkloadMetric,
} from './bench-common.js';

const ROUNDS = intEnv('BENCH_ROUNDS', 3);
const SECONDS = intEnv('BENCH_SECONDS', 5);
const IDLE_CONNS = intEnv('BENCH_IDLE_CONNS', 1000);
const PACE = { seconds: SECONDS, slow: 1 };
/** When the settled idle RSS is read: a sidecar's settle waits QUIET_MS of quiet after ready, then takes up to ~0.3 s (more under load). */
const SETTLED_AFTER_MS = QUIET_MS + 3_000;
const BEFORE_CLI = process.env.BENCH_BEFORE;
/** BENCH_WARM_PATH=0 or 1: this build's hops with warm_path: false or true (unset: the default, on). */
const WARM_PATH = process.env.BENCH_WARM_PATH === undefined ? undefined : process.env.BENCH_WARM_PATH === '1';
const ALL_CHAINS = ['direct', 'socat', 'haproxy', 'vsockmesh-before', 'vsockmesh', 'haproxy-mtls', 'vsockmesh-mtls-before', 'vsockmesh-mtls'] as const;
type ChainName = (typeof ALL_CHAINS)[number];
const CHAINS: ChainName[] = chainsFromEnv(ALL_CHAINS, ALL_CHAINS.filter((c) => !c.endsWith('-before')));
if (BEFORE_CLI !== undefined) {
  for (const c of ['vsockmesh', 'vsockmesh-mtls'] as const) if (CHAINS.includes(c) && !CHAINS.includes(`${c}-before`)) CHAINS.splice(CHAINS.indexOf(c), 0, `${c}-before`);
}
if (CHAINS.some((c) => c.endsWith('-before')) && BEFORE_CLI === undefined) throw new Error('BENCH_CHAINS: the -before chains need BENCH_BEFORE (the other build\'s cli.js)');
/** Node flags of the sidecars: the bin's shebang's, as production runs it, then BENCH_NODE_ARGS. */
const SIDECAR_NODE_FLAGS = cliNodeFlags();
const LABEL: Record<ChainName, string> = {
  direct: 'direct',
  socat: 'socat 2-hop',
  haproxy: 'HAProxy 2-hop',
  'vsockmesh-before': 'vsockmesh before',
  vsockmesh: 'vsockmesh 2-hop',
  'haproxy-mtls': 'HAProxy mTLS',
  'vsockmesh-mtls-before': 'vsockmesh mTLS before',
  'vsockmesh-mtls': 'vsockmesh mTLS',
};
/** What a chain's ratios are to: the HAProxy chain with the same hop security. */
const PEER: Record<ChainName, ChainName> = {
  direct: 'haproxy',
  socat: 'haproxy',
  haproxy: 'haproxy',
  'vsockmesh-before': 'haproxy',
  vsockmesh: 'haproxy',
  'haproxy-mtls': 'haproxy-mtls',
  'vsockmesh-mtls-before': 'haproxy-mtls',
  'vsockmesh-mtls': 'haproxy-mtls',
};

// ---- backends -----------------------------------------------------------------

interface Ports {
  iperf: number;
  http: number;
  hold: number;
}

/** Accepts and echoes; counts the connections open right now (the idle-connections workload). */
async function startHoldBackend(): Promise<{ port: number; open: () => number; close: () => Promise<void> }> {
  const sockets = new Set<net.Socket>();
  const server = net.createServer((s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
    s.on('error', () => {});
    s.pipe(s);
  });
  await new Promise<void>((resolve) => server.listen({ host: '127.0.0.1', port: 0, backlog: 4096 }, resolve));
  const close = (): Promise<void> =>
    new Promise((resolve) => {
      for (const s of sockets) s.destroy();
      server.close(() => resolve());
    });
  onCleanup(close);
  return { port: (server.address() as net.AddressInfo).port, open: () => sockets.size, close };
}

// ---- chains -------------------------------------------------------------------

interface Chain {
  name: ChainName;
  entry: Ports;
  /** Proxy processes per hop (socat: process group leaders; their forks are counted too). */
  hops: Hop[];
  /** vsockmesh: the originating sidecar's admin port (its handshake counters). */
  adminA?: number;
}

async function startSocatChain(backend: Ports, socat: string): Promise<Chain> {
  const hop1: number[] = [];
  const hop2: number[] = [];
  const entry = { iperf: 0, http: 0, hold: 0 };
  for (const key of ['iperf', 'http', 'hold'] as const) {
    const p1 = await freePort();
    const p2 = await freePort();
    // backlog: socat's default listen backlog is 5, far too small for 1,000 connections at once.
    const listen = (port: number) => `TCP-LISTEN:${port},bind=127.0.0.1,fork,reuseaddr,backlog=4096`;
    hop2.push(startDaemon(socat, [listen(p2), `TCP:127.0.0.1:${backend[key]}`], { stdout: 'ignore', group: true }).pid);
    hop1.push(startDaemon(socat, [listen(p1), `TCP:127.0.0.1:${p2}`], { stdout: 'ignore', group: true }).pid);
    entry[key] = p1;
  }
  // A probe connection through socat would reach the backend; wait on the listen sockets instead.
  await waitUntil(() => listeningPorts().has(entry.iperf) && listeningPorts().has(entry.http) && listeningPorts().has(entry.hold), 'socat listeners');
  await sleep(100);
  return { name: 'socat', entry, hops: [{ pids: hop1, group: true }, { pids: hop2, group: true }] };
}

/** The two hops' certificates as files: PEM for the sidecars, chain+key for HAProxy's `crt`. */
interface MeshCerts {
  a: Record<string, string>;
  b: Record<string, string>;
  haproxy: { a: string; b: string; ca: string };
}

async function writeMeshCerts(dir: string): Promise<MeshCerts> {
  const root = await makeRoot('O=bench, CN=bench root');
  const files = async (vm: string): Promise<{ sidecar: Record<string, string>; haproxy: string }> => {
    const id = await vmIdentity(root, vm);
    const base = path.join(dir, vm);
    writeFileSync(`${base}-key.pem`, id.keyPem, { mode: 0o600 });
    writeFileSync(`${base}-chain.pem`, id.chainPem);
    writeFileSync(`${base}-haproxy.pem`, id.chainPem + id.keyPem, { mode: 0o600 });
    return { sidecar: { key_file: `${base}-key.pem`, chain_file: `${base}-chain.pem`, bundle_file: path.join(dir, 'bundle.pem') }, haproxy: `${base}-haproxy.pem` };
  };
  writeFileSync(path.join(dir, 'bundle.pem'), root.pem);
  const [a, b] = [await files('bench-a'), await files('bench-b')];
  return { a: a.sidecar, b: b.sidecar, haproxy: { a: a.haproxy, b: b.haproxy, ca: path.join(dir, 'bundle.pem') } };
}

async function startHaproxyChain(backend: Ports, certs?: MeshCerts): Promise<{ chain: Chain; stop: () => Promise<void> }> {
  const hop2Ports = { iperf: await freePort(), http: await freePort(), hold: await freePort() };
  const entry = { iperf: await freePort(), http: await freePort(), hold: await freePort() };
  const keys = ['iperf', 'http', 'hold'] as const;
  const common = { nbthread: 1, idleTimeout: '10m', captureOutput: false };
  // Hop 2 first; it must not be probed before its backends exist (the probe would be a real connection).
  const tls = (crt: string): string => (certs ? ` ssl crt ${crt} ca-file ${certs.haproxy.ca} verify required ssl-min-ver TLSv1.3` : '');
  const hop2 = await startHaproxy({
    ...common,
    sections: keys.map((k) =>
      acceptProxyListen(`hop2_${k}`, { bindPort: hop2Ports[k], server: { address: '127.0.0.1', port: backend[k] } }).replace(' accept-proxy', `${tls(certs?.haproxy.b ?? '')} accept-proxy`),
    ),
    readyPorts: [],
  });
  const hop1 = await startHaproxy({
    ...common,
    sections: keys.map((k) =>
      sendProxyV2Listen(`hop1_${k}`, { bindPort: entry[k], server: { address: '127.0.0.1', port: hop2Ports[k] } }).replace(' send-proxy-v2', `${tls(certs?.haproxy.a ?? '')} send-proxy-v2`),
    ),
    readyPorts: [],
  });
  const stop = async () => {
    await hop1.stop();
    await hop2.stop();
  };
  onCleanup(stop);
  const all = [...Object.values(entry), ...Object.values(hop2Ports)];
  await waitUntil(() => all.every((p) => listeningPorts().has(p)), 'haproxy listeners');
  return { chain: { name: certs ? 'haproxy-mtls' : 'haproxy', entry, hops: [{ pids: [hop1.pid], group: false }, { pids: [hop2.pid], group: false }] }, stop };
}

async function startVsockmeshChain(backend: Ports, dir: string, certs?: MeshCerts, before = false): Promise<Chain> {
  const name: ChainName = `${certs ? 'vsockmesh-mtls' : 'vsockmesh'}${before ? '-before' : ''}`;
  const ports = { inbound: await freePort(), adminA: await freePort(), adminB: await freePort() };
  const entry = { iperf: await freePort(), http: await freePort(), hold: await freePort() };
  const hops = await startSidecarPair({ dir, name: `sidecar-${name}`, backends: { ...backend }, entry, ports, ...(certs && { peerTls: certs }), ...(!before && WARM_PATH !== undefined && { warmPath: WARM_PATH }), nodeFlags: before && BEFORE_CLI !== undefined ? cliNodeFlags(BEFORE_CLI) : SIDECAR_NODE_FLAGS, ...(before && BEFORE_CLI !== undefined && { cli: BEFORE_CLI }) });
  return { name, entry, hops, adminA: ports.adminA };
}

/** The originating sidecar's peer-hop handshakes so far, resumed and full (TLS 1.3 tickets in use or not). */
async function handshakeCounts(adminA: number): Promise<{ resumed: number; full: number }> {
  const stats = (await httpGet(adminA, '/stats')).body;
  const count = (resumed: string): number => metricSum(stats, 'vsockmesh_peer_tls_handshakes_total', { direction: 'outbound', resumed });
  return { resumed: count('true'), full: count('false') };
}

function hopRssKiB(chain: Chain): { max: number; detail: string } {
  const per = hopsRssKiB(chain.hops);
  return { max: Math.max(...per.map((p) => p.kib)), detail: per.map((p, i) => `hop${i + 1} ${(p.kib / 1024).toFixed(1)} MiB/${p.processes} proc`).join(', ') };
}

// ---- workloads ------------------------------------------------------------------

type Metric = WorkloadMetric | 'rssFresh' | 'rssIdle' | 'rss1k';

const samples = new RoundSamples<ChainName, Metric>();
const notes: string[] = [];

/** Opens `n` connections through the chain (one echoed byte each, then idle), measures RSS, closes them. */
async function idleConnections(chain: Chain, holdOpen: () => number, n: number): Promise<{ rss: number; detail: string; opened: number }> {
  const sockets: net.Socket[] = [];
  const openOne = (): Promise<void> =>
    new Promise((resolve, reject) => {
      const s = net.connect({ host: '127.0.0.1', port: chain.entry.hold });
      sockets.push(s);
      s.setTimeout(10_000, () => s.destroy(new Error('no echo within 10 s')));
      s.once('error', reject);
      s.once('data', () => {
        s.setTimeout(0);
        resolve();
      });
      s.write('x');
    });
  try {
    for (let i = 0; i < n; i += 50) await Promise.all(Array.from({ length: Math.min(50, n - i) }, openOne));
    await waitUntil(() => holdOpen() >= n, `${n} connections at the hold backend`);
    await sleep(1_000);
    const rss = hopRssKiB(chain);
    return { rss: rss.max, detail: rss.detail, opened: holdOpen() };
  } finally {
    for (const s of sockets) s.destroy();
    await waitUntil(() => holdOpen() === 0, 'idle connections closed at the backend', 30_000).catch((e: Error) => log(e.message));
  }
}

// ---- report -------------------------------------------------------------------------

const med = (chain: ChainName, metric: Metric): number => samples.median(chain, metric);

interface Row {
  label: string;
  unit: string;
  digits: number;
  value: (chain: ChainName) => number;
}

function table(): string {
  const added = (c: ChainName) => (c === 'direct' ? NaN : med(c, 'p99') - med('direct', 'p99'));
  const rows: Row[] = [
    { label: 'Throughput, 1 stream (iperf3)', unit: 'MB/s', digits: 0, value: (c) => med(c, 'tput1') },
    { label: 'Throughput, 4 streams (iperf3 -P 4)', unit: 'MB/s', digits: 0, value: (c) => med(c, 'tput4') },
    { label: 'Latency p50, 1 connection (wrk -c1)', unit: 'µs', digits: 1, value: (c) => med(c, 'p50') },
    { label: 'Latency p99, 1 connection (wrk -c1)', unit: 'µs', digits: 1, value: (c) => med(c, 'p99') },
    { label: 'Added p99 latency vs direct', unit: 'µs', digits: 1, value: added },
    { label: 'Requests/s, 64 connections (wrk -t2 -c64)', unit: 'req/s', digits: 0, value: (c) => med(c, 'rps64') },
    { label: 'New connections/s (wrk -t2 -c32, Connection: close)', unit: 'conn/s', digits: 0, value: (c) => med(c, 'cps32') },
    { label: 'Proxy CPU per GB relayed, 1 stream (sum of hops)', unit: 'CPU-s/GB', digits: 2, value: (c) => med(c, 'cpuPerGB') },
    { label: 'Proxy CPU per new connection (sum of hops)', unit: 'CPU-µs', digits: 0, value: (c) => med(c, 'cpuPerConn') },
    { label: 'RSS per proxy, idle, right after start (max of hops)', unit: 'MiB', digits: 1, value: (c) => (c === 'direct' ? NaN : med(c, 'rssFresh') / 1024) },
    { label: `RSS per proxy, idle, ${SETTLED_AFTER_MS / 1000} s after start (settled; max of hops)`, unit: 'MiB', digits: 1, value: (c) => (c === 'direct' ? NaN : med(c, 'rssIdle') / 1024) },
    { label: `RSS per proxy, ${IDLE_CONNS.toLocaleString('en-US')} idle connections (max of hops)`, unit: 'MiB', digits: 1, value: (c) => (c === 'direct' ? NaN : med(c, 'rss1k') / 1024) },
  ];
  const head = `| workload / metric | ${CHAINS.map((c) => LABEL[c]).join(' | ')} |`;
  const sep = `|---|${CHAINS.map(() => '---:').join('|')}|`;
  const lines = rows.map((row) => {
    const cells = CHAINS.map((c) => {
      const ref = CHAINS.includes(PEER[c]) ? row.value(PEER[c]) : NaN;
      const v = row.value(c);
      if (!Number.isFinite(v)) return c === 'direct' ? '—' : 'n/a';
      const ratio = Number.isFinite(ref) && ref !== 0 ? ` (${(v / ref).toFixed(2)}×)` : '';
      return `${fmt(v, row.digits)} ${row.unit}${ratio}`;
    });
    return `| ${row.label} | ${cells.join(' | ')} |`;
  });
  return [head, sep, ...lines].join('\n');
}

function targets(): string {
  if (!CHAINS.includes('vsockmesh') || !CHAINS.includes('haproxy')) return 'Targets: need both the vsockmesh and HAProxy chains.';
  const out: string[] = ['Targets for vsockmesh 2-hop (vs HAProxy 2-hop):', ''];
  const ratioTarget = (label: string, metric: Metric, min: number, ours: ChainName = 'vsockmesh', theirs: ChainName = 'haproxy'): void => {
    const v = med(ours, metric);
    const h = med(theirs, metric);
    const r = v / h;
    const pass = r >= min;
    out.push(
      `- ${pass ? 'PASS' : 'MISS'} ${label}: ${r.toFixed(2)}× HAProxy (target ≥ ${min.toFixed(2)}×)` +
        (pass ? `, margin +${(r - min).toFixed(2)}×` : `, gap ${(r - min).toFixed(2)}× (needs +${(((min * h) / v - 1) * 100).toFixed(0)}%)`),
    );
  };
  ratioTarget('throughput, 1 stream', 'tput1', 0.9);
  ratioTarget('throughput, 4 streams', 'tput4', 0.9);
  ratioTarget('requests/s, 64 connections', 'rps64', 0.7);
  ratioTarget('new connections/s', 'cps32', 1.0);
  if (CHAINS.includes('direct')) {
    const direct = med('direct', 'p99');
    const v = med('vsockmesh', 'p99') - direct;
    const h = med('haproxy', 'p99') - direct;
    const limit = 1.5 * h;
    const pass = v <= limit;
    if (!(h > 0)) {
      out.push(`- n/a p99 added latency: HAProxy's added p99 is ${fmt(h, 1)} µs (not above direct: noise); vsockmesh added ${fmt(v, 1)} µs; rerun with more rounds`);
    } else out.push(
      `- ${pass ? 'PASS' : 'MISS'} p99 added latency: ${fmt(v, 1)} µs vs HAProxy ${fmt(h, 1)} µs = ${(v / h).toFixed(2)}× (target ≤ 1.50×, ≤ ${fmt(limit, 1)} µs)` +
        (pass ? `, margin ${fmt(limit - v, 1)} µs` : `, gap ${fmt(v - limit, 1)} µs over`),
    );
  } else out.push('- n/a p99 added latency: needs the direct chain');
  const rss = med('vsockmesh', 'rss1k') / 1024;
  const pass = rss <= 64;
  out.push(
    `- ${pass ? 'PASS' : 'MISS'} RSS per sidecar with ${IDLE_CONNS.toLocaleString('en-US')} idle connections: ${fmt(rss, 1)} MiB (target ≤ 64 MiB)` +
      (pass ? `, margin ${fmt(64 - rss, 1)} MiB` : `, gap ${fmt(rss - 64, 1)} MiB over`),
  );
  const idle = med('vsockmesh', 'rssIdle') / 1024;
  out.push(`- ${idle <= 50 ? 'PASS' : 'MISS'} RSS per sidecar, idle: ${fmt(idle, 1)} MiB (target ≤ 50 MiB)`);
  if (CHAINS.includes('vsockmesh-mtls') && CHAINS.includes('haproxy-mtls')) {
    out.push('', 'Targets for vsockmesh mTLS (vs HAProxy mTLS, same certificates, TLS 1.3):', '');
    ratioTarget('throughput, 1 stream', 'tput1', 1.0, 'vsockmesh-mtls', 'haproxy-mtls');
    ratioTarget('requests/s, 64 connections', 'rps64', 1.0, 'vsockmesh-mtls', 'haproxy-mtls');
    ratioTarget('new connections/s', 'cps32', 1.0, 'vsockmesh-mtls', 'haproxy-mtls');
    const p99 = med('vsockmesh-mtls', 'p99') / med('haproxy-mtls', 'p99');
    out.push(`- ${p99 <= 1.2 ? 'PASS' : 'MISS'} p99 latency, 1 connection: ${p99.toFixed(2)}× HAProxy mTLS (target ≤ 1.20×)`);
  }
  for (const ours of ['vsockmesh', 'vsockmesh-mtls'] as const) {
    const before = `${ours}-before` as const;
    if (!CHAINS.includes(ours) || !CHAINS.includes(before)) continue;
    const change = (metric: Metric): string => `${(med(ours, metric) / med(before, metric)).toFixed(2)}×`;
    out.push('', `${LABEL[ours]} after / before (BENCH_BEFORE): new connections/s ${change('cps32')}, requests/s (64) ${change('rps64')}, CPU per new connection ${change('cpuPerConn')}, idle RSS ${change('rssIdle')}`);
  }
  return out.join('\n');
}

// ---- main -------------------------------------------------------------------------------

async function main(): Promise<void> {
  const tools = { wrk: requireBinary('wrk'), iperf3: requireBinary('iperf3') };
  const { iperf3 } = tools;
  const socat = CHAINS.includes('socat') ? requireBinary('socat') : '';
  accessSync(CLI, constants.R_OK);
  const haproxyVersion = spawnSync(requireBinary('haproxy'), ['-v'], { encoding: 'utf8' }).stdout.split('\n')[0] ?? '';
  const iperfVersion = spawnSync(iperf3, ['--version'], { encoding: 'utf8' }).stdout.split('\n')[0] ?? '';
  const socatVersion = socat ? (spawnSync(socat, ['-V'], { encoding: 'utf8' }).stdout.split('\n').find((l) => l.startsWith('socat version')) ?? '') : '';
  const dir = mkdtempSync(path.join(os.tmpdir(), 'vsockmesh-bench-'));
  onCleanup(() => rmSync(dir, { recursive: true, force: true }));

  const loadAtStart = os.loadavg()[0]!;
  log(`rounds ${ROUNDS}, ${SECONDS}s per run, ${IDLE_CONNS} idle connections, chains: ${CHAINS.join(', ')}; load average ${loadAtStart.toFixed(2)}`);

  // Backends: iperf3 server, HAProxy answering HTTP 200 itself, a Node echo/hold server.
  const backend: Ports = { iperf: await freePort(), http: await freePort(), hold: 0 };
  const hold = await startHoldBackend();
  backend.hold = hold.port;
  const httpBackend: Haproxy = await startHaproxy({ sections: [httpOkListen('http_ok', { bindPort: backend.http, log: false })], nbthread: 1, captureOutput: false, log: false });
  onCleanup(() => httpBackend.stop());

  const chains: Chain[] = [];
  if (CHAINS.includes('direct')) chains.push({ name: 'direct', entry: { ...backend }, hops: [] });
  if (CHAINS.includes('socat')) chains.push(await startSocatChain(backend, socat));
  if (CHAINS.includes('haproxy')) chains.push((await startHaproxyChain(backend)).chain);
  if (CHAINS.includes('vsockmesh-before')) chains.push(await startVsockmeshChain(backend, dir, undefined, true));
  if (CHAINS.includes('vsockmesh')) chains.push(await startVsockmeshChain(backend, dir));
  const certs = CHAINS.some((c) => c.endsWith('-mtls')) ? await writeMeshCerts(dir) : undefined;
  if (CHAINS.includes('haproxy-mtls')) chains.push((await startHaproxyChain(backend, certs)).chain);
  if (CHAINS.includes('vsockmesh-mtls-before')) chains.push(await startVsockmeshChain(backend, dir, certs, true));
  if (CHAINS.includes('vsockmesh-mtls')) chains.push(await startVsockmeshChain(backend, dir, certs));
  // iperf3 last: no readiness probe of a proxy can reach it as a stray test connection.
  startDaemon(iperf3, ['-s', '-B', '127.0.0.1', '-p', String(backend.iperf)], { stdout: 'ignore' });
  await waitUntil(() => listeningPorts().has(backend.iperf), 'iperf3 server');

  const idleRss = (metric: 'rssFresh' | 'rssIdle', when: string): void => {
    for (const chain of chains) {
      if (chain.hops.length === 0) continue;
      const rss = hopRssKiB(chain);
      samples.record(chain.name, metric, rss.max);
      log(`${LABEL[chain.name]}: idle RSS ${when} ${rss.detail}`);
    }
  };
  idleRss('rssFresh', 'right after start');
  // A sidecar settles its memory once quiet (QUIET_MS after ready, then V8's
  // memory-reducing collections and malloc_trim): the idle row is read after it.
  await sleep(SETTLED_AFTER_MS);
  idleRss('rssIdle', `${SETTLED_AFTER_MS / 1000} s after start`);

  const started = Date.now();
  for (let round = 0; round < ROUNDS; round++) {
    samples.round = round;
    const order = chains.map((_, i) => chains[(i + round) % chains.length]!);
    log(`round ${round + 1}/${ROUNDS}: ${order.map((c) => LABEL[c.name]).join(' → ')}`);
    for (const chain of order) {
      const c = chain.name;
      const w = await runWorkloads(tools, chain.entry, chain.hops, PACE);
      recordWorkloads(samples, c, w);
      const { rps64: rps, cps32: cps } = w;
      if (cps.errors > 0 || cps.non2xx > 0 || rps.errors > 0 || rps.non2xx > 0) {
        const note = `${LABEL[c]} round ${round + 1}: wrk socket errors ${rps.errors} (c64) / ${cps.errors} (close), non-2xx ${rps.non2xx} / ${cps.non2xx}`;
        notes.push(note);
        log(note);
      }
      let rssText = '';
      if (chain.hops.length > 0) {
        await sleep(500);
        const idle = await idleConnections(chain, hold.open, IDLE_CONNS);
        samples.record(c, 'rss1k', idle.rss);
        rssText = `, ${IDLE_CONNS} conns RSS ${idle.detail}`;
      }
      log(
        `  ${LABEL[c].padEnd(16)} 1s ${fmt(w.tput1, 0)} MB/s, 4s ${fmt(w.tput4, 0)} MB/s, p50/p99 ${fmt(w.latency.p50us, 1)}/${fmt(w.latency.p99us, 1)} µs, ` +
          `c64 ${fmt(rps.rps, 0)} req/s, close ${fmt(cps.rps, 0)} conn/s${rssText}`,
      );
      await sleep(500);
    }
  }

  const elapsed = Math.round((Date.now() - started) / 1000);
  for (const chain of chains) {
    if (chain.adminA === undefined || !chain.name.includes('mtls')) continue;
    const { resumed, full } = await handshakeCounts(chain.adminA);
    notes.push(`${LABEL[chain.name]}: ${resumed} of ${resumed + full} peer-hop TLS handshakes resumed, ${full} full (all workloads, vsockmesh_peer_tls_handshakes_total of the originating sidecar)`);
  }
  const cpus = os.cpus();
  const md = [
    `## vsockmesh TCP benchmark (${new Date().toISOString()})`,
    '',
    `Loopback, ${cpus.length} × ${cpus[0]?.model.trim() ?? 'cpu'} shared by clients, proxies and backends; load average (1 min) before the run ${loadAtStart.toFixed(2)}. ` +
      `Medians of ${ROUNDS} round${ROUNDS > 1 ? 's' : ''} (chain order rotated per round), ${SECONDS} s per run, ${elapsed} s of measurement. ` +
      'Ratios in parentheses are to HAProxy 2-hop (for latency and RSS lower is better).',
    '',
    table(),
    '',
    targets(),
    '',
    'Notes:',
    `- Each proxy is one process, one thread: HAProxy \`nbthread 1\` per hop (${haproxyVersion.trim()}); a vsockmesh sidecar is one Node ${process.version} process (\`node ${SIDECAR_NODE_FLAGS.map((f) => `${f} `).join('')}dist/proxy/cmd/cli.js sidecar -c <yaml>\`; node flags from the bin's shebang, as production runs it).`,
    '- vsockmesh runs with `log: {level: info, access_log: true}` (production setting), stdout to /dev/null; HAProxy hops log one line per connection to /dev/null too.',
    `- socat (${socatVersion.trim() || 'socat'}) forks one process per connection; its RSS is the sum over every socat process of a hop (parents and forks; pages they share are counted again in each process, so the sum overstates their real footprint).`,
    `- Backends: ${iperfVersion.trim()} server (throughput); an HAProxy in HTTP mode answering 200 "ok" itself (wrk; wrk 4.1 latency distribution); a Node echo server holding the idle connections (one echoed byte each).`,
    `- Added p99 latency = median chain p99 − median direct p99. RSS idle is measured once right after start and once ${SETTLED_AFTER_MS / 1000} s later (a sidecar settles its memory ${QUIET_MS / 1000} s after ready: the target applies to that row); RSS with idle connections after each round's traffic.`,
    '- CPU rows (informational, no target): CPU seconds (user + system, socat forks included) of all proxy processes of the chain during the 1-stream iperf3 run per GB received, and during the Connection: close wrk run per request. They are steadier than rates on a shared 2-core box.',
    ...notes.map((n) => `- ${n}`),
  ].join('\n');

  const file = writeReport('tcp', md, { rounds: ROUNDS, seconds: SECONDS, chains: CHAINS, samples, notes });
  process.stdout.write(`\n${md}\n\nwritten to ${file}\n`);
}

await runBench(main);
