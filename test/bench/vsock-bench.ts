// vsock benchmark. Runs ONLY inside the QEMU guest of test/vm/guest.mjs
// (vsock_loopback: every socket is at CID 1, told apart by vsock port), as
// compiled JavaScript (dist/test/bench/vsock-bench.js); the host side is
// test/bench/vsock-bench-host.mjs (`npm run bench:vsock`), which boots the guest
// once, runs this and saves the table to .bench/vsock-<timestamp>.md.
//
// The same workloads as test/bench/tcp-bench.ts through these chains, in
// alternating rounds (order rotated each round), medians reported:
//
//   (a) direct        client -> backend (TCP loopback)
//   (b) mesh-vsock    client -> sidecar A -> vsock (direct, CID 1) -> sidecar B vsock inbound -> backend
//   (c) mesh-tcp      client -> sidecar A' (vsock.enabled: false) -> TCP peer -> sidecar B TCP inbound -> backend
//   (d) socat-vsock   client -> socat TCP-LISTEN,fork -> VSOCK-CONNECT -> socat VSOCK-LISTEN,fork -> backend
//   (d') socat-tcp    as (d) with TCP loopback in the middle: (d)/(d') is the kernel's vsock_loopback against
//                     its TCP under the same relay, the reference for (b)/(c)
//   (e) raw           socat alone, one stream, sender -> receiver over vsock loopback and over TCP loopback
//   (f) mesh-relay    client -> sidecar A'' -> host relay (`vsockmesh host-relay`) -> sidecar B vsock inbound -> backend
//   (g) mesh-vsock-tls   as (b), mutual TLS on the vsock hop (peer_tls.over_vsock) into sidecar B-tls
//   (h) mesh-tcp-mtls    as (c), mutual TLS on the TCP hop (peer_tls strict) into sidecar B-tls
//   (b0) mesh-vsock-before  as (b), sidecars A and B of another build (BENCH_BEFORE: its cli.js), for before/after
//
// (b) vs (h) is what skipping crypto on vsock buys (the CID as the identity
// against mTLS on TCP); (g) is what a confidential VM pays for not trusting
// the host.
//
// Sidecars and the relay are processes of the compiled CLI (dist/proxy/cmd/cli.js),
// run with the node flags of its shebang, access logs on, stdout to /dev/null.
// One sidecar B serves (b), (c) and (f); sidecar B-tls (ECDSA P-256 X509-SVIDs
// of vm-a and vm-b under one root, TLS 1.3) serves (g) and (h).
//
// Workloads: iperf3 bulk (1 and 4 streams), wrk latency with 1 connection,
// wrk requests/s with 64 connections, wrk new connections/s (Connection: close);
// the HTTP backend is an HAProxy in HTTP mode answering 200 itself.
//
// env: BENCH_ROUNDS (3), BENCH_SECONDS (5 under KVM, 3 under TCG),
//      BENCH_CHAINS=direct,mesh-vsock,mesh-tcp,socat-vsock,socat-tcp,raw,mesh-relay,mesh-vsock-tls,mesh-tcp-mtls (default all),
//      plus mesh-vsock-before with BENCH_BEFORE=/path/to/other/build/dist/proxy/cmd/cli.js (seen by the guest: /tmp is shared)
// Output: progress on stderr; the Markdown report on stdout between the
// REPORT_BEGIN / REPORT_END marker lines (the host launcher saves it).

import { spawnSync } from 'node:child_process';
import { accessSync, constants, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { stringify as toYaml } from 'yaml';
import { freePort, haproxyBinary, httpOkListen, startHaproxy } from '../helpers/haproxy.js';
import { meshTls, type MeshTls } from '../helpers/peer-tls.js';
import { assertInGuest, underKvm } from '../vm/guest-env.js';
import {
  CLI,
  RoundSamples,
  childrenCpuSeconds,
  cliNodeFlags,
  fmt,
  httpGet,
  intEnv,
  listeningPorts,
  machineBusySeconds,
  log,
  median,
  metricSum,
  onCleanup,
  requireBinary,
  runBench,
  runChild,
  recordWorkloads,
  runWorkloads,
  shebangNodeFlags,
  sleep,
  startDaemon,
  startProxyCli,
  waitUntil,
  type Hop,
  type WorkloadMetric,
} from './bench-common.js';

// Refuses to run anywhere but in the guest: nothing here may open AF_VSOCK on a host.
assertInGuest();

export const REPORT_BEGIN = '----- vsock-bench report begin -----';
export const REPORT_END = '----- vsock-bench report end -----';

const KVM = underKvm();
const ACCEL = KVM ? 'KVM' : 'TCG';
const ROUNDS = intEnv('BENCH_ROUNDS', 3);
const SECONDS = intEnv('BENCH_SECONDS', KVM ? 5 : 3);
/** Emulated CPUs start processes and connect slowly. */
const SLOW = KVM ? 1 : 4;
const PACE = { seconds: SECONDS, slow: SLOW };
/** socat buffer for the raw measurement: iperf3's default write size (socat's own default is 8 KiB). */
const RAW_BUFFER = 131072;
/** vsock ports inside the guest (nothing else runs there). */
const VPORT = { bInbound: 15007, bTlsInbound: 15008, bBeforeInbound: 15009, relay: 15100, socatIperf: 16001, socatHttp: 16002, rawBase: 16100 };

const ALL = ['direct', 'mesh-vsock', 'mesh-tcp', 'socat-vsock', 'socat-tcp', 'raw', 'mesh-relay', 'mesh-vsock-tls', 'mesh-tcp-mtls', 'mesh-vsock-before'] as const;
type Selectable = (typeof ALL)[number];
// Without BENCH_CHAINS: every chain, the before chain only when BENCH_BEFORE names the other build.
const DEFAULT_CHAINS: readonly Selectable[] = process.env.BENCH_BEFORE ? ALL : ALL.filter((c) => c !== 'mesh-vsock-before');
const SELECTED: Selectable[] = (process.env.BENCH_CHAINS?.split(',').map((s) => s.trim()).filter(Boolean) ?? [...DEFAULT_CHAINS]).filter((c): c is Selectable => {
  if (!(ALL as readonly string[]).includes(c)) throw new Error(`BENCH_CHAINS: unknown chain "${c}" (known: ${ALL.join(', ')})`);
  return true;
});
const BEFORE_CLI = process.env.BENCH_BEFORE;
if (SELECTED.includes('mesh-vsock-before') && !BEFORE_CLI) throw new Error('BENCH_CHAINS: mesh-vsock-before needs BENCH_BEFORE (the other build\'s cli.js)');

type ChainName = 'direct' | 'mesh-vsock' | 'mesh-tcp' | 'socat-vsock' | 'socat-tcp' | 'mesh-relay' | 'mesh-vsock-tls' | 'mesh-tcp-mtls' | 'mesh-vsock-before';
type RawName = 'raw-tcp' | 'raw-vsock';
type EntryName = ChainName | RawName;
const CHAIN_ORDER: ChainName[] = ['direct', 'mesh-vsock', 'mesh-vsock-before', 'mesh-tcp', 'socat-vsock', 'socat-tcp', 'mesh-relay', 'mesh-vsock-tls', 'mesh-tcp-mtls'];
const CHAINS = CHAIN_ORDER.filter((c) => SELECTED.includes(c));
const LABEL: Record<EntryName, string> = {
  direct: '(a) direct TCP',
  'mesh-vsock': '(b) vsockmesh 2-hop vsock',
  'mesh-vsock-before': '(b0) vsockmesh 2-hop vsock, before',
  'mesh-tcp': '(c) vsockmesh 2-hop TCP',
  'socat-vsock': '(d) socat vsock 2-hop',
  'socat-tcp': '(d\') socat TCP 2-hop',
  'mesh-relay': '(f) vsockmesh host-relay 3-hop',
  'mesh-vsock-tls': '(g) vsockmesh 2-hop vsock + mTLS',
  'mesh-tcp-mtls': '(h) vsockmesh 2-hop TCP + mTLS',
  'raw-tcp': '(e) raw TCP loopback (socat)',
  'raw-vsock': '(e) raw vsock loopback (socat)',
};
/** The bin's shebang flags, as production runs it. */
const SIDECAR_NODE_FLAGS = shebangNodeFlags();
/** The host's binaries, seen through the guest's read-only root. */
const ON_HOST = 'install it on the host (the guest uses the host\'s binaries)';

/** Waits as long as an emulated CPU needs. */
const waitSlowly = (cond: () => boolean | Promise<boolean>, what: string): Promise<void> => waitUntil(cond, what, 15_000 * SLOW, 50);

/** An admin endpoint's answer, or undefined when it does not answer. */
const adminGet = (port: number, urlPath: string): Promise<{ status: number; body: string } | undefined> => httpGet(port, urlPath, 5_000 * SLOW).catch(() => undefined);

// ---- chains --------------------------------------------------------------------------

interface Ports {
  iperf: number;
  http: number;
}

interface Chain {
  name: ChainName;
  entry: Ports;
  hops: Hop[];
  /** Admin ports of the vsockmesh processes of this chain (checked for fallbacks and transports). */
  admins: Array<{ what: string; port: number }>;
}

interface SidecarProcess {
  pid: number;
  admin: number;
}

async function startMeshProcess(dir: string, role: 'sidecar' | 'host-relay', name: string, config: Record<string, unknown>, admin: number, cli?: string): Promise<SidecarProcess> {
  const file = path.join(dir, `${name}.yaml`);
  writeFileSync(file, toYaml(config));
  // A Node process starting in an emulated guest on a loaded host can take minutes (a run of 2026-12-06: over 2 under TCG).
  const daemon = await startProxyCli(role, file, { adminPort: admin, nodeFlags: cli ? cliNodeFlags(cli) : SIDECAR_NODE_FLAGS, slow: SLOW, timeoutMs: 150_000 * SLOW, ...(cli && { cli }) });
  return { pid: daemon.pid, admin };
}

const LOG_CONFIG = { level: 'info', access_log: true };

/**
 * Sidecar B: a TCP inbound and a vsock inbound (CID 1 allowed: sidecar A and
 * the host relay, under vsock_loopback). With `tls` it is B-tls, vm-b: the TCP
 * inbound STRICT, the vsock inbound under peer_tls.over_vsock (no VM manager
 * in the bench, so allowed_peer_cids rather than registry).
 */
async function startSidecarB(dir: string, backend: Ports, tls?: MeshTls, cli?: string): Promise<{ b: SidecarProcess; tcpInbound: number; vsockPort: number }> {
  const tcpInbound = await freePort();
  const admin = await freePort();
  const ports = [backend.iperf, backend.http];
  const vsockPort = tls ? VPORT.bTlsInbound : cli ? VPORT.bBeforeInbound : VPORT.bInbound;
  const b = await startMeshProcess(dir, 'sidecar', tls ? 'sidecar-b-tls' : cli ? 'sidecar-b-before' : 'sidecar-b', {
    node: { id: tls ? 'vm-b' : 'bench-b' },
    admin: { address: '127.0.0.1', port: admin },
    log: LOG_CONFIG,
    drain_timeout: '1s',
    ...(tls && { peer_tls: { ...tls.b, handshake_timeout: `${5 * SLOW}s` } }),
    listeners: [
      { kind: 'inbound', name: 'in-tcp', addresses: ['127.0.0.1'], port: tcpInbound, ports },
      { kind: 'inbound', name: 'in-vsock', transport: 'vsock', port: vsockPort, allowed_peer_cids: [1], ports },
    ],
  }, admin, cli);
  return { b, tcpInbound, vsockPort };
}

/** Sidecar A of one chain: outbound listeners for iperf and http, each to one endpoint of `how` (with `peerTls`: as vm-a, to vm-b). */
async function startSidecarA(dir: string, name: ChainName, backend: Ports, b: SidecarProcess, how: { vsockEnabled: boolean; endpoint: Record<string, unknown>; peerTls?: Record<string, unknown>; cli?: string }, extraHops: Hop[] = [], extraAdmins: Chain['admins'] = []): Promise<Chain> {
  const admin = await freePort();
  const entry = { iperf: await freePort(), http: await freePort() };
  const keys = ['iperf', 'http'] as const;
  const a = await startMeshProcess(dir, 'sidecar', `sidecar-a-${name}`, {
    node: { id: how.peerTls ? 'vm-a' : `bench-a-${name}` },
    ...(how.peerTls && { peer_tls: { ...how.peerTls, handshake_timeout: `${5 * SLOW}s` } }),
    // A generous vsock connect deadline: 64 connections at once on an emulated CPU.
    vsock: { enabled: how.vsockEnabled, connect_timeout: `${5 * SLOW}s` },
    admin: { address: '127.0.0.1', port: admin },
    log: LOG_CONFIG,
    drain_timeout: '1s',
    listeners: keys.map((k) => ({ kind: 'outbound', name: `out-${k}`, addresses: ['127.0.0.1'], port: entry[k], cluster: k })),
    clusters: keys.map((k) => ({
      name: k,
      authority: `${k}.bench`,
      endpoints: [{ address: '127.0.0.1', port: backend[k], vm_id: how.peerTls ? 'vm-b' : 'bench-b', ...how.endpoint }],
    })),
  }, admin, how.cli);
  return {
    name,
    entry,
    hops: [{ pids: [a.pid], group: false }, ...extraHops, { pids: [b.pid], group: false }],
    admins: [{ what: `sidecar A (${name})`, port: a.admin }, ...extraAdmins],
  };
}

async function startRelay(dir: string): Promise<SidecarProcess> {
  const admin = await freePort();
  return startMeshProcess(dir, 'host-relay', 'host-relay', {
    node: { id: 'bench-relay' },
    admin: { address: '127.0.0.1', port: admin },
    log: LOG_CONFIG,
    drain_timeout: '1s',
    listen: { cid: 'any', port: VPORT.relay },
    header_timeout: `${2 * SLOW}s`,
    connect_timeout: `${2 * SLOW}s`,
    // Under vsock_loopback the sidecars and the relay are all at CID 1.
    policy: [{ source_cid: 1, destinations: [{ cid: 1, ports: [VPORT.bInbound] }] }],
  }, admin);
}

/**
 * socat 2-hop with the middle hop over `hop`, socat's default 8 KiB buffer (as in tcp-bench), started before the backends:
 * vsock: TCP-LISTEN,fork -> VSOCK-CONNECT:1:p ; VSOCK-LISTEN:p,fork -> TCP backend;
 * tcp:   TCP-LISTEN,fork -> TCP:127.0.0.1:p  ; TCP-LISTEN:p,fork -> TCP backend (the same processes, the kernel's TCP in the middle).
 */
async function startSocatChain(socat: string, backend: Ports, hop: 'vsock' | 'tcp'): Promise<Chain> {
  const hop1: number[] = [];
  const hop2: number[] = [];
  const entry = { iperf: await freePort(), http: await freePort() };
  const middle = hop === 'vsock' ? { iperf: VPORT.socatIperf, http: VPORT.socatHttp } : { iperf: await freePort(), http: await freePort() };
  const tcpListen = (p: number) => `TCP-LISTEN:${p},bind=127.0.0.1,fork,reuseaddr,backlog=4096`;
  for (const k of ['iperf', 'http'] as const) {
    const [listen, connect] = hop === 'vsock' ? [`VSOCK-LISTEN:${middle[k]},fork,backlog=4096`, `VSOCK-CONNECT:1:${middle[k]}`] : [tcpListen(middle[k]), `TCP:127.0.0.1:${middle[k]}`];
    hop2.push(startDaemon(socat, [listen, `TCP:127.0.0.1:${backend[k]}`], { stdout: 'ignore', group: true }).pid);
    hop1.push(startDaemon(socat, [tcpListen(entry[k]), connect], { stdout: 'ignore', group: true }).pid);
  }
  const tcpPorts = hop === 'vsock' ? [entry.iperf, entry.http] : [entry.iperf, entry.http, middle.iperf, middle.http];
  await waitSlowly(() => tcpPorts.every((p) => listeningPorts().has(p)), `socat ${hop} chain's TCP listeners`);
  // The vsock listeners: a probe connection is fine now, the backends do not exist yet (hop 2's fork fails to connect and closes).
  if (hop === 'vsock') {
    for (const k of ['iperf', 'http'] as const) {
      await waitSlowly(async () => (await runChild(socat, ['-u', 'OPEN:/dev/null', `VSOCK-CONNECT:1:${middle[k]}`], 10_000 * SLOW)).code === 0, `socat VSOCK-LISTEN:${middle[k]}`);
    }
  }
  return { name: hop === 'vsock' ? 'socat-vsock' : 'socat-tcp', entry, hops: [{ pids: hop1, group: true }, { pids: hop2, group: true }], admins: [] };
}

// ---- measurements -------------------------------------------------------------------------

/**
 * busyBefore: % of the guest's CPU busy in the second before a chain's runs (what the previous one left behind);
 * compactStalls: the kernel's direct compactions (/proc/vmstat compact_stall) during a chain's runs: an
 * allocation of several pages (vsock_loopback copies each packet, up to 64 KiB, into one kmalloc) that had to wait for it.
 */
type Metric = WorkloadMetric | 'rawCpuPerGB' | 'busyBefore' | 'compactStalls';

/** The guest's direct compactions so far. */
function compactStalls(): number {
  const m = /^compact_stall (\d+)$/m.exec(readFileSync('/proc/vmstat', 'utf8'));
  return m ? Number(m[1]) : NaN;
}
const samples = new RoundSamples<EntryName, Metric>();
const notes: string[] = [];

interface RawTransport {
  name: RawName;
  listen: (port: number) => string;
  connect: (port: number) => string;
}

let rawPortSeq = 0;
function rawTransport(name: RawName): RawTransport {
  return name === 'raw-vsock'
    ? { name, listen: (p) => `VSOCK-LISTEN:${p}`, connect: (p) => `VSOCK-CONNECT:1:${p}` }
    : { name, listen: (p) => `TCP-LISTEN:${p},bind=127.0.0.1,reuseaddr`, connect: (p) => `TCP:127.0.0.1:${p}` };
}

/**
 * One socat stream of `bytes` from /dev/zero to /dev/null over the transport:
 * the receiver (one connection, no fork) is started first; the time runs from
 * the sender's spawn until the receiver has exited, i.e. every byte has arrived.
 * Returns seconds and the CPU seconds of both socats.
 */
async function rawTransfer(socat: string, transport: RawTransport, bytes: number): Promise<{ seconds: number; cpu: number }> {
  const port = transport.name === 'raw-vsock' ? VPORT.rawBase + (rawPortSeq++ % 50) : await freePort();
  const buf = ['-b', String(RAW_BUFFER)];
  const receiver = runChild(socat, [...buf, '-u', transport.listen(port), 'OPEN:/dev/null'], (SECONDS * 20 + 60) * 1000 * SLOW);
  if (transport.name === 'raw-tcp') await waitSlowly(() => listeningPorts().has(port), 'raw TCP receiver');
  else await sleep(200 * SLOW); // no way to see a vsock listener without connecting to it; the sender retries if early
  const cpu0 = childrenCpuSeconds();
  for (let attempt = 1; ; attempt++) {
    const t0 = performance.now();
    const sender = await runChild(socat, [...buf, '-u', `OPEN:/dev/zero,readbytes=${bytes}`, transport.connect(port)], (SECONDS * 20 + 60) * 1000 * SLOW);
    if (sender.code === 0) {
      const r = await receiver;
      const seconds = (performance.now() - t0) / 1000;
      if (r.code !== 0) throw new Error(`raw ${transport.name} receiver failed (exit ${r.code}): ${r.stderr.slice(0, 300)}`);
      return { seconds, cpu: childrenCpuSeconds() - cpu0 };
    }
    if (attempt >= 20 || !/refused|reset/i.test(sender.stderr)) throw new Error(`raw ${transport.name} sender failed (exit ${sender.code}): ${sender.stderr.slice(0, 300)}`);
    await sleep(100 * SLOW);
  }
}

interface RawPlan {
  transport: RawTransport;
  bytes: number;
  /** Seconds a 1-byte transfer takes the same way (process starts, connect, close): subtracted. */
  fixed: number;
}

/** Sizes each raw transfer to last about BENCH_SECONDS, and measures the fixed cost of one. */
async function planRaw(socat: string, name: RawName): Promise<RawPlan> {
  const transport = rawTransport(name);
  const fixedRuns: number[] = [];
  for (let i = 0; i < 3; i++) fixedRuns.push((await rawTransfer(socat, transport, 1)).seconds);
  const fixed = median(fixedRuns);
  const probeBytes = (KVM ? 256 : 16) * 1024 * 1024;
  const probe = await rawTransfer(socat, transport, probeBytes);
  const rate = probeBytes / Math.max(0.01, probe.seconds - fixed);
  const bytes = Math.max(1, Math.round((rate * SECONDS) / (1024 * 1024))) * 1024 * 1024;
  log(`${LABEL[name]}: fixed cost ${(fixed * 1000).toFixed(0)} ms, probe ${fmt(rate / 1e6, 0)} MB/s -> ${bytes / 1024 / 1024} MiB per run`);
  return { transport, bytes, fixed };
}

async function measureRaw(socat: string, plan: RawPlan): Promise<number> {
  const stalls0 = compactStalls();
  const r = await rawTransfer(socat, plan.transport, plan.bytes);
  samples.record(plan.transport.name, 'compactStalls', compactStalls() - stalls0);
  const mbps = plan.bytes / Math.max(0.001, r.seconds - plan.fixed) / 1e6;
  samples.record(plan.transport.name, 'tput1', mbps);
  samples.record(plan.transport.name, 'rawCpuPerGB', r.cpu / (plan.bytes / 1e9));
  return mbps;
}

/** After the run: which transport each chain's sidecar A really used, and any fallbacks or connect errors. */
async function checkMeshPaths(chains: Chain[]): Promise<void> {
  for (const chain of chains) {
    for (const admin of chain.admins) {
      const stats = (await adminGet(admin.port, '/stats'))?.body ?? '';
      const fallbacks = metricSum(stats, 'vsockmesh_transport_fallbacks_total');
      const connectErrors = metricSum(stats, 'vsockmesh_upstream_connect_errors_total');
      const refused = metricSum(stats, 'vsockmesh_connections_refused_total');
      const vsockBytes = metricSum(stats, 'vsockmesh_bytes_total', { transport: 'vsock' });
      const tcpBytes = metricSum(stats, 'vsockmesh_bytes_total', { transport: 'tcp' });
      const line = `${LABEL[chain.name]}: ${admin.what} relayed ${fmt(vsockBytes / 1e6, 0)} MB over vsock, ${fmt(tcpBytes / 1e6, 0)} MB over TCP; fallbacks ${fallbacks}, upstream connect errors ${connectErrors}, refused ${refused}`;
      log(line);
      const expectVsock = !chain.name.startsWith('mesh-tcp');
      if (fallbacks > 0 || connectErrors > 0 || refused > 0 || (admin.what.startsWith('sidecar A') && (expectVsock ? tcpBytes > 0 || vsockBytes === 0 : vsockBytes > 0 || tcpBytes === 0))) {
        notes.push(`CHECK ${line}`);
      }
    }
  }
}

// ---- report ---------------------------------------------------------------------------------

const med = (entry: EntryName, metric: Metric): number => samples.median(entry, metric);
const pairedRatio = (x: EntryName, xMetric: Metric, y: EntryName, yMetric: Metric): number => samples.pairedRatio(x, xMetric, y, yMetric);

const ratio = (r: number): string => (Number.isFinite(r) ? `${r.toFixed(2)}×` : 'n/a');

/** The median and, over several rounds, the spread: `12.3 MB/s [11.0–13.9, 3 rounds]`. */
function withSpread(entry: EntryName, metric: Metric, unit: string, digits: number): string {
  const values = samples.values(entry, metric);
  const v = fmt(med(entry, metric), digits);
  if (values.length < 2) return `${v} ${unit}`;
  const { min, max } = samples.range(entry, metric);
  return `${v} ${unit} [${fmt(min, digits)}–${fmt(max, digits)}, ${values.length} rounds]`;
}

function chainTable(): string {
  const rows: Array<{ label: string; unit: string; digits: number; metric: Metric; proxiesOnly?: boolean }> = [
    { label: 'Throughput, 1 stream (iperf3)', unit: 'MB/s', digits: 1, metric: 'tput1' },
    { label: 'Throughput, 4 streams (iperf3 -P 4)', unit: 'MB/s', digits: 1, metric: 'tput4' },
    { label: 'Latency p50, 1 connection (wrk -c1)', unit: 'µs', digits: 0, metric: 'p50' },
    { label: 'Latency p99, 1 connection (wrk -c1)', unit: 'µs', digits: 0, metric: 'p99' },
    { label: 'Requests/s, 64 connections (wrk -t2 -c64)', unit: 'req/s', digits: 0, metric: 'rps64' },
    { label: 'New connections/s (wrk -t2 -c32, Connection: close)', unit: 'conn/s', digits: 0, metric: 'cps32' },
    { label: 'Proxy CPU per GB relayed, 1 stream (sum of hops)', unit: 'CPU-s/GB', digits: 2, metric: 'cpuPerGB', proxiesOnly: true },
    { label: 'Bytes per read(2) of the proxies, 1 stream', unit: 'B', digits: 0, metric: 'bytesPerRead', proxiesOnly: true },
    { label: 'Proxy CPU per new connection (sum of hops)', unit: 'CPU-µs', digits: 0, metric: 'cpuPerConn', proxiesOnly: true },
    { label: 'Proxy CPU per request, 64 connections (sum of hops)', unit: 'CPU-µs', digits: 0, metric: 'cpuPerReq', proxiesOnly: true },
    { label: 'Guest CPU per request, 64 connections (all of it: wrk, proxies, backend, kernel threads)', unit: 'CPU-µs', digits: 0, metric: 'machineCpuPerReq' },
    { label: 'Guest context switches per request, 64 connections', unit: 'switches', digits: 1, metric: 'machineCtxPerReq' },
    { label: 'Guest CPU busy in the second before the chain\'s runs', unit: '%', digits: 0, metric: 'busyBefore' },
    { label: 'Direct compactions during the chain\'s runs (/proc/vmstat compact_stall)', unit: 'stalls', digits: 0, metric: 'compactStalls' },
  ];
  const ref: EntryName | undefined = CHAINS.includes('mesh-tcp') ? 'mesh-tcp' : undefined;
  const head = `| workload / metric | ${CHAINS.map((c) => LABEL[c]).join(' | ')} |`;
  const sep = `|---|${CHAINS.map(() => '---:').join('|')}|`;
  const lines = rows.map((row) => {
    const r = ref ? med(ref, row.metric) : NaN;
    const cells = CHAINS.map((c) => {
      if (row.proxiesOnly && c === 'direct') return '—';
      const v = med(c, row.metric);
      if (!Number.isFinite(v)) return 'n/a';
      const rel = Number.isFinite(r) && r !== 0 ? ` (${ratio(v / r)})` : '';
      return `${withSpread(c, row.metric, row.unit, row.digits)}${rel}`;
    });
    return `| ${row.label} | ${cells.join(' | ')} |`;
  });
  return [head, sep, ...lines].join('\n');
}

/** The issue's figure: what the vsock hop's CID identity saves against mTLS, and what TLS over vsock costs; ratios to (h) TCP + mTLS. */
function hopIdentityTable(): string | undefined {
  const columns: ChainName[] = ['mesh-vsock', 'mesh-vsock-tls', 'mesh-tcp-mtls', 'mesh-tcp'];
  if (!columns.every((c) => CHAINS.includes(c))) return undefined;
  const ref: ChainName = 'mesh-tcp-mtls';
  const rows: Array<{ label: string; unit: string; digits: number; metric: Metric }> = [
    { label: 'Bulk, 1 stream', unit: 'MB/s', digits: 1, metric: 'tput1' },
    { label: 'Requests/s, 64 connections', unit: 'req/s', digits: 0, metric: 'rps64' },
    { label: 'New connections/s', unit: 'conn/s', digits: 0, metric: 'cps32' },
  ];
  const head = '| peer hop | vsock, CID identity (b) | vsock + mTLS, over_vsock (g) | TCP + mTLS (h) | TCP plain (c) |';
  const lines = rows.map((row) => {
    const r = med(ref, row.metric);
    const cells = columns.map((c) => {
      const v = med(c, row.metric);
      const paired = c === ref || ROUNDS < 2 ? '' : `, per-round ${ratio(pairedRatio(c, row.metric, ref, row.metric))}`;
      return Number.isFinite(v) ? `${fmt(v, row.digits)} ${row.unit} (${ratio(v / r)}${paired})` : 'n/a';
    });
    return `| ${row.label} | ${cells.join(' | ')} |`;
  });
  return [head, '|---|---:|---:|---:|---:|', ...lines].join('\n');
}

/**
 * vsock against TCP under the same relay: ours (b)/(c), socat's (d)/(d'), and what the CID identity saves
 * against mTLS (b)/(h); medians of the per-round ratios (runs of the same round), with the raw transfer's ratio for bulk.
 */
function vsockTcpTable(): string | undefined {
  const pairs: Array<{ head: string; x: ChainName; y: ChainName }> = [
    { head: 'vsockmesh vsock / TCP plain, (b)/(c)', x: 'mesh-vsock', y: 'mesh-tcp' },
    { head: 'socat vsock / TCP, (d)/(d\')', x: 'socat-vsock', y: 'socat-tcp' },
    { head: 'vsockmesh vsock CID / TCP mTLS, (b)/(h)', x: 'mesh-vsock', y: 'mesh-tcp-mtls' },
    { head: 'vsock, this build / before, (b)/(b0)', x: 'mesh-vsock', y: 'mesh-vsock-before' },
  ];
  const present = pairs.filter((p) => CHAINS.includes(p.x) && CHAINS.includes(p.y));
  if (present.length === 0) return undefined;
  const rows: Array<{ label: string; metric: Metric }> = [
    { label: 'Throughput, 1 stream', metric: 'tput1' },
    { label: 'Throughput, 4 streams', metric: 'tput4' },
    { label: 'Latency p99, 1 connection', metric: 'p99' },
    { label: 'Requests/s, 64 connections', metric: 'rps64' },
    { label: 'New connections/s', metric: 'cps32' },
    { label: 'Proxy CPU per GB, 1 stream', metric: 'cpuPerGB' },
    { label: 'Bytes per read(2) of the proxies, 1 stream', metric: 'bytesPerRead' },
    { label: 'Proxy CPU per request, 64 connections', metric: 'cpuPerReq' },
    { label: 'Guest CPU per request, 64 connections', metric: 'machineCpuPerReq' },
    { label: 'Guest context switches per request', metric: 'machineCtxPerReq' },
  ];
  const cell = (x: ChainName, y: ChainName, metric: Metric) => (ROUNDS > 1 ? ratio(pairedRatio(x, metric, y, metric)) : ratio(med(x, metric) / med(y, metric)));
  const lines = rows.map((row) => `| ${row.label} | ${present.map((p) => cell(p.x, p.y, row.metric)).join(' | ')} |`);
  return [`| ratio | ${present.map((p) => p.head).join(' | ')} |`, `|---|${present.map(() => '---:').join('|')}|`, ...lines].join('\n');
}

function rawTable(plans: RawPlan[]): string {
  const t = med('raw-tcp', 'tput1');
  const v = med('raw-vsock', 'tput1');
  const ct = med('raw-tcp', 'rawCpuPerGB');
  const cv = med('raw-vsock', 'rawCpuPerGB');
  const size = (n: RawName) => plans.find((p) => p.transport.name === n)?.bytes;
  const mib = (b: number | undefined) => (b === undefined ? 'n/a' : `${b / 1024 / 1024} MiB`);
  return [
    '| raw loopback, socat alone, 1 stream | TCP | vsock | vsock / TCP |',
    '|---|---:|---:|---:|',
    `| Throughput (${mib(size('raw-tcp'))} / ${mib(size('raw-vsock'))} per run) | ${fmt(t, 1)} MB/s | ${fmt(v, 1)} MB/s | ${ratio(v / t)} |`,
    `| CPU per GB, sender + receiver | ${fmt(ct, 2)} CPU-s/GB | ${fmt(cv, 2)} CPU-s/GB | ${ratio(cv / ct)} |`,
  ].join('\n');
}

function passLine(pass: boolean, text: string): string {
  return `- ${pass ? 'PASS' : 'MISS'} ${text}`;
}

function targets(): string[] {
  const out: string[] = ['Targets:', ''];
  const rawT = med('raw-tcp', 'tput1');
  const rawV = med('raw-vsock', 'tput1');
  const rawRatio = rawV / rawT;
  const have = (...xs: number[]) => xs.every((x) => Number.isFinite(x) && x > 0);
  for (const [metric, what] of [['tput1', '1 stream'], ['tput4', '4 streams']] as const) {
    const b = med('mesh-vsock', metric);
    const c = med('mesh-tcp', metric);
    const mesh = b / c;
    const label = `(1${metric === 'tput1' ? 'a' : 'b'}) sidecar vsock/TCP throughput ratio, ${what}`;
    if (!have(b, c, rawT, rawV)) {
      out.push(`- n/a ${label}: needs chains mesh-vsock, mesh-tcp and raw`);
      continue;
    }
    const pass = mesh >= rawRatio;
    const paired = ROUNDS > 1 ? `; medians of per-round ratios: ${ratio(pairedRatio('mesh-vsock', metric, 'mesh-tcp', metric))} vs ${ratio(pairedRatio('raw-vsock', 'tput1', 'raw-tcp', 'tput1'))}` : '';
    out.push(
      passLine(pass, `${label}: (b)/(c) = ${fmt(b, 1)}/${fmt(c, 1)} MB/s = ${ratio(mesh)} vs raw vsock/TCP (e) = ${fmt(rawV, 1)}/${fmt(rawT, 1)} MB/s = ${ratio(rawRatio)} (target ≥ raw)`) +
        (pass ? `, margin +${(mesh - rawRatio).toFixed(2)}×` : `, gap ${(mesh - rawRatio).toFixed(2)}× (b needs +${((rawRatio / mesh - 1) * 100).toFixed(0)}%)`) +
        paired,
    );
  }
  const b = med('mesh-vsock', 'tput1');
  if (!have(b, rawV)) out.push('- n/a (2) vsock 2-hop ≥ 0.8× raw vsock: needs chains mesh-vsock and raw');
  else {
    const r = b / rawV;
    const pass = r >= 0.8;
    out.push(
      passLine(pass, `(2) vsockmesh 2-hop over vsock (b), 1 stream: ${fmt(b, 1)} MB/s = ${ratio(r)} raw vsock loopback (e) ${fmt(rawV, 1)} MB/s (target ≥ 0.80×)`) +
        (pass ? `, margin +${(r - 0.8).toFixed(2)}×` : `, gap ${(r - 0.8).toFixed(2)}× (b needs +${((0.8 / r - 1) * 100).toFixed(0)}%, i.e. ${fmt(0.8 * rawV, 1)} MB/s)`) +
        (ROUNDS > 1 ? `; median of per-round ratios ${ratio(pairedRatio('mesh-vsock', 'tput1', 'raw-vsock', 'tput1'))}` : ''),
    );
  }
  const a = med('direct', 'tput1');
  const rawT2 = med('raw-tcp', 'tput1');
  if (have(a, b, rawT2, rawV)) {
    const tool = a / rawT2;
    out.push(
      `- info (2) tool check: (b) is measured with iperf3, (e) with socat. Over the same TCP loopback iperf3 (a) moves ${fmt(a, 1)} MB/s and socat (e) ${fmt(rawT2, 1)} MB/s (${ratio(tool)}); ` +
        `(b) against raw vsock scaled by that factor: ${fmt(b, 1)} / ${fmt(rawV * tool, 1)} MB/s = ${ratio(b / (rawV * tool))} (a reading aid, not the target)`,
    );
  }
  return out;
}

interface ReportContext {
  guestInfo: string;
  elapsed: number;
  plans: RawPlan[];
  socatVersion: string;
  iperfVersion: string;
  haproxyVersion: string;
}

/** The report after `rounds` rounds. */
function report(rounds: number, context: ReportContext): string {
  const { guestInfo, elapsed, plans, socatVersion, iperfVersion, haproxyVersion } = context;
  const hopTable = hopIdentityTable();
  const transportTable = vsockTcpTable();
  const nodeFlags = SIDECAR_NODE_FLAGS.map((f) => `${f} `).join('');
  return [
    `## vsockmesh vsock benchmark (${new Date().toISOString()})${rounds < ROUNDS ? `: partial, ${rounds} of ${ROUNDS} rounds (the guest stopped before the rest)` : ''}`,
    '',
    `**${ACCEL}**: ${guestInfo}; vsock_loopback (every socket at CID 1). ` +
      (KVM ? '' : '**Under TCG the absolute numbers measure the emulator, not the network stack: compare ratios only.** ') +
      `Clients, proxies and backends share the guest's CPU. Medians of ${rounds} round${rounds > 1 ? 's' : ''} (order rotated per round, backwards in odd rounds; in brackets the lowest and highest round), ${SECONDS} s per run${KVM ? '' : ' (TCG default: 3 s instead of 5 s)'}, ${elapsed} s of measurement. ` +
      'Ratios in parentheses are to (c) vsockmesh 2-hop over TCP (for latency and CPU lower is better).',
    '',
    chainTable(),
    '',
    ...(transportTable ? ['vsock against TCP under the same relay (medians of the per-round ratios; for latency and CPU lower is better):', '', transportTable, ''] : []),
    ...(hopTable ? ['What each peer hop proves, and what it costs (ratios to (h) TCP + mTLS; per-round: median of the ratios of runs in the same round):', '', hopTable, ''] : []),
    ...(plans.length > 0 ? [rawTable(plans), ''] : []),
    ...targets(),
    '',
    'Notes:',
    `- (b), (c), (f): one sidecar B (\`in-tcp\` TCP inbound and \`in-vsock\` vsock inbound 1:${VPORT.bInbound}, allowed_peer_cids [1]); a separate sidecar A per chain: (b) endpoint vsock direct 1:${VPORT.bInbound}, no TCP peer; (c) \`vsock: {enabled: false}\` and a TCP peer; (f) endpoint vsock host-relay 1:${VPORT.bInbound} via relay 1:${VPORT.relay}, no TCP peer. ` +
      `Every vsockmesh process is one Node ${process.version} process (\`node ${nodeFlags}dist/proxy/cmd/cli.js sidecar|host-relay -c <yaml>\`, flags from the bin's shebang), log level info with access logs on, stdout to /dev/null.`,
    `- (g), (h): one sidecar B-tls (vm-b, ECDSA P-256 X509-SVIDs under one root, TLS 1.3, session tickets on; \`in-tcp\` STRICT, \`in-vsock\` 1:${VPORT.bTlsInbound} with peer_tls.over_vsock and allowed_peer_cids [1]: no VM manager, so the certificate is not checked against the CID's VM, a cached lookup under peer_authorization: registry); a sidecar A (vm-a) per chain with the same peer_tls: (g) endpoint vsock direct, (h) \`vsock: {enabled: false}\` and a TCP peer.`,
    ...(BEFORE_CLI && CHAINS.includes('mesh-vsock-before') ? [`- (b0): sidecars A and B (a separate B, vsock inbound 1:${VPORT.bBeforeInbound}) run by the other build \`${BEFORE_CLI}\` (BENCH_BEFORE), configured as (b).`] : []),
    `- (f) host relay: \`vsockmesh host-relay\` listening on vsock port ${VPORT.relay}, policy source_cid 1 -> cid 1 port ${VPORT.bInbound} (under vsock_loopback the relay is at CID 1 like everyone).`,
    `- (d) ${socatVersion || 'socat'}: \`TCP-LISTEN,fork -> VSOCK-CONNECT:1:p\` and \`VSOCK-LISTEN:p,fork -> TCP\`, one process per connection per hop, socat's default 8 KiB buffer (as tcp-bench's socat chain); (d') the same with \`TCP:127.0.0.1:p\` and \`TCP-LISTEN:p,fork\` in the middle, so (d)/(d') is what the kernel's vsock costs against its TCP under the same relay.`,
    `- (e) raw: \`socat -b ${RAW_BUFFER} -u OPEN:/dev/zero,readbytes=N <VSOCK-CONNECT:1:p | TCP:127.0.0.1:p>\` into \`socat -b ${RAW_BUFFER} -u <VSOCK-LISTEN:p | TCP-LISTEN:p> OPEN:/dev/null\`; timed from the sender's start until the receiver has exited, minus the time a 1-byte transfer takes the same way (${plans.map((p) => `${p.transport.name === 'raw-tcp' ? 'TCP' : 'vsock'} ${(p.fixed * 1000).toFixed(0)} ms`).join(', ')}); N sized from a probe to last about ${SECONDS} s.`,
    `- Backends: ${iperfVersion} server (throughput, \`-t ${SECONDS}\`); ${haproxyVersion.split(' - ')[0]} in HTTP mode answering 200 itself, nbthread 1 (wrk).`,
    '- CPU rows (informational): CPU seconds (user + system, socat forks included) of the proxy processes of the chain during the 1-stream iperf3 run per GB received, during the Connection: close run per request and during the 64-connection run per request; the guest rows count every busy CPU second and every context switch of the guest (/proc/stat) during the 64-connection run per request: it includes the kernel threads, where vsock_loopback delivers every packet (a kworker), which no process row counts.',
    '- PASS/MISS is decided on the medians in the tables; the per-round ratios (x/y of runs in the same round, median over rounds) are shown as a check against drifts of the host\'s load. Target (1) compares the sidecar\'s vsock/TCP ratio (b)/(c) with the kernel\'s raw vsock/TCP ratio (e) measured in the same guest (one stream; (1b) holds the 4-stream ratio to the same reference): the sidecar should lose no more on vsock than the transport itself does. Target (2) compares (b) with raw vsock loopback: (b) has two more loopback TCP hops and two proxies in its path.',
    ...notes.map((n) => `- ${n}`),
  ].join('\n');
}

// ---- main -------------------------------------------------------------------------------------

async function main(): Promise<string> {
  const tools = { wrk: requireBinary('wrk', ON_HOST), iperf3: requireBinary('iperf3', ON_HOST) };
  const { iperf3 } = tools;
  const socat = requireBinary('socat', ON_HOST);
  haproxyBinary();
  accessSync(CLI, constants.R_OK);
  const version = (cmd: string, args: string[], pick: (l: string) => boolean = () => true) =>
    (spawnSync(cmd, args, { encoding: 'utf8' }).stdout.split('\n').find(pick) ?? '').trim();
  const haproxyVersion = version(haproxyBinary(), ['-v']);
  const iperfVersion = version(iperf3, ['--version']);
  const socatVersion = version(socat, ['-V'], (l) => l.startsWith('socat version'));
  const dir = mkdtempSync(path.join(os.tmpdir(), 'vsockmesh-vsock-bench-'));
  onCleanup(() => rmSync(dir, { recursive: true, force: true }));
  const cpus = os.cpus();
  const guestInfo = `${ACCEL} guest (VSOCKMESH_GUEST_ACCEL=${process.env.VSOCKMESH_GUEST_ACCEL ?? 'unset'}), kernel ${os.release()}, ${cpus.length} vCPU (${cpus[0]?.model.trim() ?? 'cpu'}), ${Math.round(os.totalmem() / 2 ** 20)} MiB`;
  log(`${guestInfo}; rounds ${ROUNDS}, ${SECONDS}s per run; chains: ${SELECTED.join(', ')}`);

  const backend: Ports = { iperf: await freePort(), http: await freePort() };
  const chains: Chain[] = [];
  // socat first: its vsock listeners are probed with a real connection, before any backend exists.
  for (const hop of ['vsock', 'tcp'] as const) if (CHAINS.includes(`socat-${hop}`)) chains.push(await startSocatChain(socat, backend, hop));
  const httpBackend = await startHaproxy({ sections: [httpOkListen('http_ok', { bindPort: backend.http, log: false })], nbthread: 1, captureOutput: false, log: false, readyTimeoutMs: 30_000 * SLOW });
  onCleanup(() => httpBackend.stop());
  if (CHAINS.includes('direct')) chains.unshift({ name: 'direct', entry: { ...backend }, hops: [], admins: [] });

  const needB = CHAINS.some((c) => ['mesh-vsock', 'mesh-tcp', 'mesh-relay'].includes(c));
  if (needB) {
    const { b, tcpInbound } = await startSidecarB(dir, backend);
    log(`sidecar B up (TCP inbound :${tcpInbound}, vsock inbound 1:${VPORT.bInbound})`);
    const bAdmin = { what: 'sidecar B', port: b.admin };
    if (CHAINS.includes('mesh-vsock')) {
      chains.push(await startSidecarA(dir, 'mesh-vsock', backend, b, { vsockEnabled: true, endpoint: { vsock: { mode: 'direct', cid: 1, port: VPORT.bInbound } } }, [], [bAdmin]));
    }
    if (CHAINS.includes('mesh-tcp')) {
      chains.push(await startSidecarA(dir, 'mesh-tcp', backend, b, { vsockEnabled: false, endpoint: { peer: { address: '127.0.0.1', port: tcpInbound } } }));
    }
    if (CHAINS.includes('mesh-relay')) {
      const relay = await startRelay(dir);
      log(`host relay up (vsock 1:${VPORT.relay})`);
      chains.push(
        await startSidecarA(dir, 'mesh-relay', backend, b, { vsockEnabled: true, endpoint: { vsock: { mode: 'host-relay', cid: 1, port: VPORT.bInbound, relay: { cid: 1, port: VPORT.relay } } } },
          [{ pids: [relay.pid], group: false }], [{ what: 'host relay', port: relay.admin }]),
      );
    }
    log('sidecars up');
  }
  if (CHAINS.includes('mesh-vsock-before') && BEFORE_CLI) {
    const { b, vsockPort } = await startSidecarB(dir, backend, undefined, BEFORE_CLI);
    log(`sidecar B-before up (${BEFORE_CLI}; vsock inbound 1:${vsockPort})`);
    chains.push(
      await startSidecarA(dir, 'mesh-vsock-before', backend, b, { vsockEnabled: true, endpoint: { vsock: { mode: 'direct', cid: 1, port: vsockPort } }, cli: BEFORE_CLI }, [], [{ what: 'sidecar B-before', port: b.admin }]),
    );
  }
  if (CHAINS.includes('mesh-vsock-tls') || CHAINS.includes('mesh-tcp-mtls')) {
    const tls = await meshTls('strict', { over_vsock: true });
    onCleanup(() => tls.cleanup());
    const { b, tcpInbound } = await startSidecarB(dir, backend, tls);
    log(`sidecar B-tls up (TCP inbound :${tcpInbound} STRICT, vsock inbound 1:${VPORT.bTlsInbound} over_vsock)`);
    const bAdmin = { what: 'sidecar B-tls', port: b.admin };
    if (CHAINS.includes('mesh-vsock-tls')) {
      chains.push(await startSidecarA(dir, 'mesh-vsock-tls', backend, b, { vsockEnabled: true, endpoint: { vsock: { mode: 'direct', cid: 1, port: VPORT.bTlsInbound } }, peerTls: tls.a }, [], [bAdmin]));
    }
    if (CHAINS.includes('mesh-tcp-mtls')) {
      chains.push(await startSidecarA(dir, 'mesh-tcp-mtls', backend, b, { vsockEnabled: false, endpoint: { peer: { address: '127.0.0.1', port: tcpInbound } }, peerTls: tls.a }));
    }
    log('TLS sidecars up');
  }
  // iperf3 last: no readiness probe can reach it as a stray connection.
  startDaemon(iperf3, ['-s', '-B', '127.0.0.1', '-p', String(backend.iperf)], { stdout: 'ignore' });
  await waitSlowly(() => listeningPorts().has(backend.iperf), 'iperf3 server');

  const plans: RawPlan[] = [];
  if (SELECTED.includes('raw')) for (const n of ['raw-tcp', 'raw-vsock'] as const) plans.push(await planRaw(socat, n));

  // The rotation: chains, with the two raw measurements adjacent (they form a ratio).
  type Item = { kind: 'chain'; chain: Chain } | { kind: 'raw'; plan: RawPlan };
  const items: Item[] = [];
  for (const chain of chains) {
    items.push({ kind: 'chain', chain });
    if (chain.name === 'direct') for (const plan of plans) items.push({ kind: 'raw', plan });
  }
  if (!chains.some((c) => c.name === 'direct')) for (const plan of plans) items.unshift({ kind: 'raw', plan });

  const started = Date.now();
  const context = { guestInfo, plans, socatVersion, iperfVersion, haproxyVersion };
  for (let round = 0; round < ROUNDS; round++) {
    samples.round = round;
    // Odd rounds run the rotation backwards: what a chain leaves behind (socat's forks exiting, sockets
    // closing) lands on a different chain each round instead of always on the one after it.
    const rotated = items.map((_, i) => items[(i + round) % items.length]!);
    const order = round % 2 === 1 ? rotated.reverse() : rotated;
    log(`round ${round + 1}/${ROUNDS}: ${order.map((it) => LABEL[it.kind === 'chain' ? it.chain.name : it.plan.transport.name]).join(' → ')}`);
    for (const item of order) {
      if (item.kind === 'raw') {
        const mbps = await measureRaw(socat, item.plan);
        log(`  ${LABEL[item.plan.transport.name].padEnd(32)} ${fmt(mbps, 1)} MB/s, compaction stalls ${samples.values(item.plan.transport.name, 'compactStalls').at(-1) ?? NaN}`);
        await sleep(300);
        continue;
      }
      const chain = item.chain;
      const c = chain.name;
      const busy0 = machineBusySeconds();
      await sleep(1000);
      samples.record(c, 'busyBefore', (machineBusySeconds() - busy0) * 100);
      const stalls0 = compactStalls();
      const w = await runWorkloads(tools, chain.entry, chain.hops, PACE);
      recordWorkloads(samples, c, w);
      samples.record(c, 'compactStalls', compactStalls() - stalls0);
      const { latency: lat, rps64: rps, cps32: cps } = w;
      if (lat.errors + rps.errors + cps.errors > 0 || lat.non2xx + rps.non2xx + cps.non2xx > 0) {
        const note = `${LABEL[c]} round ${round + 1}: wrk socket errors ${lat.errors} (c1) / ${rps.errors} (c64) / ${cps.errors} (close), non-2xx ${lat.non2xx} / ${rps.non2xx} / ${cps.non2xx}`;
        notes.push(note);
        log(note);
      }
      log(
        `  ${LABEL[c].padEnd(32)} 1s ${fmt(w.tput1, 1)} MB/s, 4s ${fmt(w.tput4, 1)} MB/s, p50/p99 ${fmt(lat.p50us, 0)}/${fmt(lat.p99us, 0)} µs, ` +
          `c64 ${fmt(rps.rps, 0)} req/s, close ${fmt(cps.rps, 0)} conn/s; CPU/GB ${fmt(w.cpuPerGB, 1)}, B/read ${fmt(w.bytesPerRead, 0)}, guest busy before ${fmt(samples.values(c, 'busyBefore').at(-1) ?? NaN, 0)} %, compaction stalls ${samples.values(c, 'compactStalls').at(-1) ?? NaN}`,
      );
      await sleep(300);
    }
    // Each finished round's report: a guest stopped later (its timeout) still leaves these rounds (the host keeps the last report).
    if (round + 1 < ROUNDS) process.stdout.write(`${REPORT_BEGIN}\n${report(round + 1, { ...context, elapsed: Math.round((Date.now() - started) / 1000) })}\n${REPORT_END}\n`);
  }
  const elapsed = Math.round((Date.now() - started) / 1000);
  await checkMeshPaths(chains);
  return report(ROUNDS, { ...context, elapsed });
}

await runBench(async () => {
  const md = await main();
  process.stdout.write(`${REPORT_BEGIN}\n${md}\n${REPORT_END}\n`);
});
