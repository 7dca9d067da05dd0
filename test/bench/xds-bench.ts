// The xDS control plane under load: two benchmarks (issue 6, "Benchmark").
//
// 1. Fan-out. `vsockmesh control-plane` (the built CLI, a child process,
//    `--listen 127.0.0.1:0 --no-admin --mesh FILE --inventory FILE
//    --debounce-ms 100`) with an inventory of 1,000 VMs on 20 hypervisors,
//    each VM serving one of 50 services (one VM of every service on every
//    hypervisor), and a mesh of those 50 services. One separate load process
//    (xds-bench-child.ts) opens 1,000 state-of-the-world ADS streams, one per
//    registered VM (node id = the VM id, so each node gets its own snapshot
//    with its outbound listeners): wildcard CDS + LDS, EDS for the clusters,
//    RDS for the route configurations, an ACK for every response. Once all
//    1,000 have ACKed all four types, each round moves one VM to another
//    hypervisor through the VM manager API (served on the control plane's
//    port): the VM facts in its service's ClusterLoadAssignment change, so
//    every node's EDS version changes. Measured per round: from the MoveVm
//    call's return to the last of the 1,000 ACKs of the new EDS version
//    (timestamps on the system-wide monotonic clock, compared across the two
//    processes), the control plane's CPU (utime + stime from /proc/PID/stat),
//    its RSS (VmRSS, sampled every 10 ms) and the slowest of GetVm calls made
//    every 25 ms meanwhile (the VM manager API shares the control plane's
//    event loop). One unmeasured warm-up round first. Targets: every client
//    ACKed within 1 s of a change, RSS under 300 MiB with the 1,000 streams
//    open. With BENCH_CPU_PROF=1 the control plane runs with --cpu-prof and
//    the report adds where its time went during the measured rounds (and how
//    long each snapshot rebuild blocked its event loop).
//
// 2. 10,000 endpoints in one cluster. The control plane (debounce 0, so the
//    figures are the rebuild and the push) with 10,000 VMs on 50 hypervisors,
//    all serving one service. In this process, ADS clients with a node id
//    that is not a registered VM (the shared snapshot, like a plain xDS
//    client): SotW (EDS for the one cluster) and delta
//    (DeltaAggregatedResources, EDS subscribe), each a fresh stream per trial:
//    time from the request to the response received and to the assignment
//    decoded, and its size (the serialized message as received; checked by
//    serializing the decoded message again with the same serializer). Then
//    both kinds subscribed at once while one VM moves per round: the size of
//    the update each gets and the time from the change call's return to it.
//
// The fan-out runs twice in one invocation (BENCH_XDS_SECURITY=both): with
// plain-text control APIs (--insecure) and with mutual TLS: the control plane
// under a throw-away root (--ca-cert/--ca-key), each of the 1,000 ADS clients
// with its own SVID (vm/<vm id>, issued under that root) on its own
// connection, the VM manager client an operator SVID; then a table of the
// two side by side (mTLS / plain ratios).
//
// 3. BENCH_XDS=replicas: control-plane replicas on etcd beside the one
//    process (xds-replicas-bench.ts, which says what it measures).
//
// Run: npm run bench:xds   (env: BENCH_XDS=fanout|endpoints|both|replicas (both),
//      BENCH_XDS_SECURITY=plain|mtls|both (both; the fan-out's control APIs),
//      BENCH_CLIENTS=1000, BENCH_HYPERVISORS=20, BENCH_SERVICES=50, BENCH_CHANNELS=1000
//      (HTTP/2 connections the clients share; 1000: one each), BENCH_ROUNDS=5,
//      BENCH_DEBOUNCE_MS=100, BENCH_ENDPOINTS=10000, BENCH_ENDPOINT_ROUNDS=5,
//      BENCH_CPU_PROF=1 (V8 CPU profile of the control plane, summarized for the change rounds),
//      BENCH_NODE_ARGS="..." appended to the control plane's node flags, BENCH_CLI=path/to/cli.js
//      (a control plane from another build, e.g. a candidate fix; default this checkout's dist/),
//      BENCH_MAX_OTHER_CORES=0.3 and BENCH_MAX_REPEATS=3: rounds disturbed by other work are repeated)
// Not a test: `npm test` does not run it.

import { accessSync, constants, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { TYPE_URLS, unpackAny, type DeltaDiscoveryResponse__Output, type DiscoveryResponse__Output } from '../../xds/envoy/proto.js';
import { VmManagerClient } from '../../xds/vm-manager/client.js';
import { staticSource, type IdentityMaterial } from '../../proxy/identity/certificate-source.js';
import type { ControlTransport } from '../../xds/security/transport.js';
import { leafExtensions, makeCert, makeRoot } from '../helpers/pki.js';
import {
  CLI,
  ROOT,
  cliNodeFlags,
  fmt,
  intEnv,
  log,
  machineLine,
  mdTable,
  median,
  onCleanup,
  QuietRuns,
  rssKiB,
  runBench,
  sleep,
  startDaemon,
  writeReport,
  type Daemon,
  type LogLine,
} from './bench-common.js';
import {
  adsChannel,
  cpuProfileFlags,
  hvId,
  hwmKiB,
  inventoryYaml,
  meshYaml,
  newestProfile,
  nowMs,
  openDelta,
  openSotw,
  reserializedDeltaBytes,
  reserializedSotwBytes,
  serviceName,
  summarizeProfile,
  vmId,
  type DeltaStream,
  type Placement,
  type ProfileSummary,
  type Sized,
  type SotwStream,
} from './xds-bench-lib.js';
import { apiProbe, cpuMeter, rssSampler, startLoadChild } from './xds-bench-load.js';
import { replicated } from './xds-replicas-bench.js';

function numEnv(name: string, fallback: number, min = 0): number {
  const raw = process.env[name];
  if (raw === undefined || raw === '') return fallback;
  const n = Number(raw);
  if (!Number.isInteger(n) || n < min) throw new Error(`${name} must be an integer ≥ ${min}, got "${raw}"`);
  return n;
}

const WHICH = process.env.BENCH_XDS ?? 'both';
const SECURITY = process.env.BENCH_XDS_SECURITY ?? 'both';
type Security = 'plain' | 'mtls';
const CLIENTS = intEnv('BENCH_CLIENTS', 1000);
const HYPERVISORS = intEnv('BENCH_HYPERVISORS', 20);
const SERVICES = intEnv('BENCH_SERVICES', 50);
const CHANNELS = intEnv('BENCH_CHANNELS', 1000);
const ROUNDS = intEnv('BENCH_ROUNDS', 5);
const DEBOUNCE_MS = numEnv('BENCH_DEBOUNCE_MS', 100);
const ENDPOINTS = intEnv('BENCH_ENDPOINTS', 10_000);
const ENDPOINT_ROUNDS = intEnv('BENCH_ENDPOINT_ROUNDS', 5);
const ENDPOINT_HYPERVISORS = 50;
const ENDPOINT_DEBOUNCE_MS = numEnv('BENCH_ENDPOINT_DEBOUNCE_MS', 0);
const CPU_PROF = process.env.BENCH_CPU_PROF === '1';
const FLOW_WINDOW = process.env.BENCH_FLOW_WINDOW ? intEnv('BENCH_FLOW_WINDOW', 65_535) : undefined;
/** Rounds disturbed by other work are repeated, up to this many times per benchmark. */
const REPEATS = 3;
const ACK_TARGET_MS = 1_000;
const RSS_TARGET_MIB = 300;
/** The CLI the control plane runs from: this checkout's build, or BENCH_CLI (another build to compare, e.g. a candidate fix in a copy of dist/). */
const CP_CLI = process.env.BENCH_CLI ? path.resolve(process.env.BENCH_CLI) : CLI;
const BIG_SERVICE = 'big';
/** Functions of the control plane whose inclusive time the profile summary reports. */
const PROFILED = [
  'rebuild',
  'snapshotFor',
  'buildSharedResources',
  'buildNodeResources',
  'serviceAssignment',
  'toSnapshot',
  'mergeSnapshots',
  'typeVersion',
  'inconsistencies',
  'delayClusterRemoval',
  'setSnapshot',
  'setDefault',
  'onSnapshot',
  'flush',
  'onRequest',
  'applyRequest',
  'nextResponse',
  'packAny',
  'unpackAny',
  'list',
  '(garbage collector)',
];

const mib = (kib: number): number => kib / 1024;
const ms = (v: number, digits = 0): string => (Number.isFinite(v) ? `${fmt(v, digits)} ms` : 'n/a');
const bytesText = (b: number): string => (b >= 1024 * 1024 ? `${fmt(b / 1024 / 1024, 2)} MiB` : b >= 1024 ? `${fmt(b / 1024, 1)} KiB` : `${fmt(b)} B`);

interface Files {
  dir: string;
  mesh: string;
  inventory: string;
}

function writeFixtures(name: string, placements: Placement[], hypervisors: string[], services: string[]): Files {
  const dir = mkdtempSync(path.join(os.tmpdir(), `vsockmesh-xds-bench-${name}-`));
  onCleanup(() => rmSync(dir, { recursive: true, force: true }));
  const files = { dir, mesh: path.join(dir, 'mesh.yaml'), inventory: path.join(dir, 'inventory.yaml') };
  writeFileSync(files.mesh, meshYaml(services));
  writeFileSync(files.inventory, inventoryYaml(placements, hypervisors));
  return files;
}

interface ControlPlaneHandle {
  daemon: Daemon;
  port: number;
  startMs: number;
  profileDir: string | null;
  /** SIGTERM and wait for the exit (the CPU profile is written then); SIGKILL after `timeoutMs`. */
  stopAndWait(timeoutMs?: number): Promise<void>;
}

/** What the control APIs of a run speak: plain text, or mutual TLS under a throw-away root (the clients' SVIDs from the same root). */
interface Pki {
  security: Security;
  /** Control-plane flags: --insecure, or --ca-cert/--ca-key. */
  flags: string[];
  /** The VM manager client's transport (an operator SVID under mTLS). */
  operator: ControlTransport;
  /** mTLS: the directory of the ADS clients' SVIDs (<vm>.json), for the load process. */
  identityDir?: string;
}

async function makePki(security: Security, dir: string, vms: string[]): Promise<Pki> {
  if (security === 'plain') return { security, flags: ['--insecure'], operator: { insecure: true } };
  const t = nowMs();
  const root = await makeRoot('O=vsockmesh bench, CN=throw-away root');
  const caCert = path.join(dir, 'root.pem');
  const caKey = path.join(dir, 'root-key.pem');
  writeFileSync(caCert, root.pem);
  writeFileSync(caKey, root.keys.privateKey.export({ format: 'pem', type: 'pkcs8' }).toString(), { mode: 0o600 });
  const svid = async (id: string): Promise<IdentityMaterial> => {
    const leaf = await makeCert(root, { subject: 'O=vsockmesh bench', extensions: leafExtensions({ uris: [id] }) });
    return { keyPem: leaf.keys.privateKey.export({ format: 'pem', type: 'pkcs8' }).toString(), chainPem: leaf.pem, bundlePem: root.pem, spiffeId: id, notAfter: new Date(leaf.cert.validTo) };
  };
  const identityDir = path.join(dir, 'svids');
  mkdirSync(identityDir);
  for (const vm of vms) writeFileSync(path.join(identityDir, `${vm}.json`), JSON.stringify(await svid(`spiffe://vsockmesh.local/vm/${vm}`)), { mode: 0o600 });
  log(`mTLS: a throw-away root and ${vms.length} VM SVIDs issued in ${fmt(nowMs() - t)} ms`);
  return { security, flags: ['--ca-cert', caCert, '--ca-key', caKey], operator: { source: staticSource(await svid('spiffe://vsockmesh.local/operator/bench')) }, identityDir };
}

async function startControlPlane(name: string, files: Files, debounceMs: number, securityFlags: string[]): Promise<ControlPlaneHandle> {
  const profileDir = CPU_PROF ? path.join(ROOT, '.bench', `xds-prof-${name}-${new Date().toISOString().replace(/[:.]/g, '-')}`) : null;
  if (profileDir) mkdirSync(profileDir, { recursive: true });
  const args = [
    ...cliNodeFlags(),
    ...(profileDir ? cpuProfileFlags(profileDir, 500) : []),
    CP_CLI,
    'control-plane',
    '--listen',
    '127.0.0.1:0',
    '--no-admin',
    '--mesh',
    files.mesh,
    '--inventory',
    files.inventory,
    '--debounce-ms',
    String(debounceMs),
    ...securityFlags,
  ];
  const t = nowMs();
  const daemon = startDaemon(process.execPath, args, { stdout: 'lines' });
  const serving = await daemon.waitForLine((l: LogLine) => l.msg === 'control-plane serving', 'control-plane serving', 120_000);
  const startMs = nowMs() - t;
  const stopAndWait = async (timeoutMs = 30_000): Promise<void> => {
    if (daemon.child.exitCode !== null || daemon.child.signalCode !== null) return daemon.stop();
    const closed = new Promise<void>((resolve) => daemon.child.once('close', () => resolve()));
    daemon.child.kill('SIGTERM');
    const timer = setTimeout(() => daemon.child.kill('SIGKILL'), timeoutMs);
    await closed;
    clearTimeout(timer);
    await daemon.stop();
  };
  return { daemon, port: Number(serving.port), startMs, profileDir, stopAndWait };
}

function profileSection(p: ProfileSummary | null, what: string): string[] {
  if (p === null) return [];
  return [
    '',
    `CPU profile of the control plane (${path.relative(ROOT, p.file)}), ${p.window ? what : 'whole run (the window did not match the profile)'}: ${fmt(p.sampledMs)} ms sampled. ` +
      `Each ${p.spans.fn}() blocked the event loop for (first to last sample with it on the stack; of which garbage collector; whole busy stretch until the loop was first idle): ` +
      `${p.spans.stretches.map((x) => `${ms(x.ms)} (GC ${ms(x.gcMs)}; busy ${ms(x.busyMs)})`).join(', ') || 'none'}.`,
    '',
    mdTable(
      ['function (inclusive: callees included)', 'ms', '% of sampled'],
      p.inclusive.filter((x) => x.ms > 0).sort((a, b) => b.ms - a.ms).map((x) => [x.fn, fmt(x.ms), `${x.pct.toFixed(1)} %`]),
    ),
    '',
    mdTable(
      ['function (self time)', 'ms', '% of sampled'],
      p.self.map((x) => [x.fn.replaceAll('|', '\\|'), fmt(x.ms), `${x.pct.toFixed(1)} %`]),
    ),
  ];
}

// ---- benchmark 1: fan-out -------------------------------------------------------------------

interface FanoutRound {
  round: number;
  warmup: boolean;
  vm: string;
  from: string;
  to: string;
  callMs: number;
  firstResponseMs: number;
  lastResponseMs: number;
  ackP50Ms: number;
  ackP90Ms: number;
  ackP99Ms: number;
  lastAckMs: number;
  updated: number;
  missing: string[];
  errors: number;
  versions: number;
  responses: Record<string, number>;
  bytes: Record<string, number>;
  between: { responses: Record<string, number>; bytes: Record<string, number> } | null;
  cpCpuS: number;
  loadCpuS: number;
  wallS: number;
  otherCores: number;
  cpPeakRssKiB: number;
  apiMaxMs: number;
}

/** The figures the plain-text and mTLS runs are compared by. */
interface FanoutFigures {
  security: Security;
  syncMs: number;
  syncCpuS: number;
  rssEmptyMiB: number;
  rssStreamsMiB: number;
  peakRoundsMiB: number;
  hwmMiB: number;
  lastAckMedianMs: number;
  lastAckMaxMs: number;
  ackP50MedianMs: number;
  cpCpuPerChangeS: number;
  moveVmMs: number;
}

async function fanout(security: Security): Promise<{ md: string; json: unknown; met: boolean; figures: FanoutFigures }> {
  const hypervisors = Array.from({ length: HYPERVISORS }, (_, h) => hvId(h));
  const services = Array.from({ length: SERVICES }, (_, s) => serviceName(s));
  const width = String(CLIENTS - 1).length;
  // VM i serves service i mod S on hypervisor floor(i / S) mod H: every hypervisor runs every service once (with 1,000/50/20).
  const placements: Placement[] = Array.from({ length: CLIENTS }, (_, i) => ({
    vm: vmId(i, width),
    hypervisor: hypervisors[Math.floor(i / SERVICES) % HYPERVISORS]!,
    service: services[i % SERVICES]!,
    cid: 3 + i,
  }));
  const files = writeFixtures(`fanout-${security}`, placements, hypervisors, services);
  const pki = await makePki(security, files.dir, placements.map((p) => p.vm));
  // Under mTLS every client is its own connection with its own certificate (a shared connection would be one identity).
  const channels = security === 'mtls' ? CLIENTS : Math.min(CHANNELS, CLIENTS);
  log(`fan-out (${security === 'mtls' ? 'mutual TLS' : 'plain text'}): ${CLIENTS} VMs on ${HYPERVISORS} hypervisors, ${SERVICES} services; ${CLIENTS} ADS streams over ${channels} HTTP/2 connections; debounce ${DEBOUNCE_MS} ms`);

  const cp = await startControlPlane(`fanout-${security}`, files, DEBOUNCE_MS, pki.flags);
  const cpPid = cp.daemon.pid;
  await sleep(500);
  const rssEmptyKiB = rssKiB(cpPid);
  log(`control plane pid ${cpPid} serving on :${cp.port} after ${fmt(cp.startMs)} ms, RSS ${fmt(mib(rssEmptyKiB), 1)} MiB without streams`);
  const vmm = new VmManagerClient(`127.0.0.1:${cp.port}`, { defaultTimeoutMs: 30_000, transport: pki.operator });
  onCleanup(() => vmm.close());
  await vmm.waitForReady(10_000);

  // Sync: every client ACKs all four types.
  const syncMeter = cpuMeter([cpPid]);
  const syncRss = rssSampler(cpPid, 50);
  const load = startLoadChild({ address: `127.0.0.1:${cp.port}`, nodes: placements.map((p) => p.vm), channels, ...(FLOW_WINDOW !== undefined && { flowControlWindow: FLOW_WINDOW }), ...(pki.identityDir !== undefined && { identityDir: pki.identityDir }) });
  const synced = await load.next((e) => e.event === 'synced', 'every client to ACK all four types', 180_000);
  const syncPeakKiB = syncRss.stop();
  const syncCpu = syncMeter.stop();
  const syncMs = Number(synced.ms);
  log(`all ${CLIENTS} clients ACKed CDS, EDS, LDS and RDS ${fmt(syncMs)} ms after the load process started; control plane CPU ${syncCpu.cpu[0]!.toFixed(2)} s, peak RSS ${fmt(mib(syncPeakKiB), 1)} MiB`);
  const syncBytes = synced.bytes as Record<string, number>;
  const syncResponses = synced.responses as Record<string, number>;
  await sleep(1_000);
  const rssStreamsKiB = rssKiB(cpPid);
  log(`control plane RSS with ${CLIENTS} streams open (idle): ${fmt(mib(rssStreamsKiB), 1)} MiB`);

  // Change rounds: one VM moves to another hypervisor per round.
  const where = new Map(placements.map((p) => [p.vm, p.hypervisor]));
  const rounds: FanoutRound[] = [];
  const quiet = new QuietRuns<FanoutRound>(REPEATS, 'round');
  let moveIndex = 0;
  let windowFrom = NaN;
  let windowTo = NaN;
  const doRound = async (round: number, warmup: boolean): Promise<FanoutRound> => {
    const p = placements[(moveIndex * 211 + 7) % placements.length]!;
    const from = where.get(p.vm)!;
    const to = hypervisors[(hypervisors.indexOf(from) + 1 + (moveIndex % (HYPERVISORS - 1 || 1))) % HYPERVISORS]!;
    moveIndex++;
    load.send({ cmd: 'arm', round });
    const armed = await load.next((e) => e.event === 'armed' && e.round === round, `round ${round} armed`, 10_000);
    const meter = cpuMeter([cpPid, load.pid]);
    const rss = rssSampler(cpPid);
    const probe = apiProbe(vmm, placements[placements.length - 1]!.vm);
    const callStart = nowMs();
    if (!warmup && !Number.isFinite(windowFrom)) windowFrom = callStart;
    await vmm.moveVm(p.vm, to);
    const t0 = nowMs();
    where.set(p.vm, to);
    load.send({ cmd: 'wait', round, t0, callStart, timeoutMs: 60_000 });
    const r = await load.next((e) => e.event === 'round' && e.round === round, `round ${round} result`, 90_000);
    await sleep(100); // the control plane reads the last ACKs
    const api = await probe.stop();
    const peak = rss.stop();
    const m = meter.stop();
    if (!warmup) windowTo = nowMs();
    const between = armed.between as FanoutRound['between'];
    return {
      round,
      warmup,
      vm: p.vm,
      from,
      to,
      callMs: Number(r.callMs),
      firstResponseMs: Number(r.firstResponseMs),
      lastResponseMs: Number(r.lastResponseMs),
      ackP50Ms: Number(r.ackP50Ms),
      ackP90Ms: Number(r.ackP90Ms),
      ackP99Ms: Number(r.ackP99Ms),
      lastAckMs: Number(r.lastAckMs),
      updated: Number(r.updated),
      missing: r.missing as string[],
      errors: Number(r.errors),
      versions: Number(r.versions),
      responses: r.responses as Record<string, number>,
      bytes: r.bytes as Record<string, number>,
      between,
      cpCpuS: m.cpu[0]!,
      loadCpuS: m.cpu[1]!,
      wallS: m.wallS,
      otherCores: m.otherCores,
      cpPeakRssKiB: peak,
      apiMaxMs: api.maxMs,
    };
  };
  const describe = (r: FanoutRound): string =>
    `${r.vm} ${r.from} → ${r.to}: ${r.updated}/${CLIENTS} ACKed (${r.versions} new EDS version${r.versions === 1 ? '' : 's'}), MoveVm ${ms(r.callMs, 1)}, ` +
    `first EDS response ${ms(r.firstResponseMs)}, ACK p50 ${ms(r.ackP50Ms)} p99 ${ms(r.ackP99Ms)}, last ACK ${ms(r.lastAckMs)} after the call returned; ` +
    `control plane CPU ${r.cpCpuS.toFixed(2)} s, peak RSS ${fmt(mib(r.cpPeakRssKiB), 1)} MiB, slowest GetVm ${ms(r.apiMaxMs)}; load process CPU ${r.loadCpuS.toFixed(2)} s; other processes ${r.otherCores.toFixed(2)} cores`;

  const warm = await doRound(0, true);
  log(`warm-up round (not counted): ${describe(warm)}`);
  await sleep(500);
  for (let round = 1; round <= ROUNDS; round++) {
    const kept = await quiet.measure(async () => {
      const r = await doRound(round, false);
      log(`round ${round}/${ROUNDS}: ${describe(r)}`);
      await sleep(500);
      return r;
    });
    rounds.push(kept);
  }
  const rssAfterKiB = rssKiB(cpPid);
  const hwm = hwmKiB(cpPid);
  await load.stop();
  await cp.stopAndWait();
  vmm.close();

  let profile: ProfileSummary | null = null;
  if (cp.profileDir) {
    const file = newestProfile(cp.profileDir);
    if (file) profile = summarizeProfile(file, PROFILED, { fromMs: windowFrom, toMs: windowTo });
    else log(`no CPU profile found in ${cp.profileDir}`);
  }

  // ---- report
  const all = rounds;
  const lastAcks = all.map((r) => r.lastAckMs);
  const worstLastAck = Math.max(...lastAcks);
  const everyoneUpdated = all.every((r) => r.updated === CLIENTS && r.errors === 0);
  const ackMet = everyoneUpdated && worstLastAck <= ACK_TARGET_MS;
  const rssMet = mib(rssStreamsKiB) < RSS_TARGET_MIB;
  const peakRounds = Math.max(...all.map((r) => r.cpPeakRssKiB));
  const edsBytesPerResponse = median(all.map((r) => r.bytes.eds! / Math.max(1, r.responses.eds!)));
  const roundRows = all.map((r) => [
    String(r.round),
    `${r.vm}: ${r.from} → ${r.to}`,
    `${r.updated}/${CLIENTS}`,
    ms(r.callMs, 1),
    ms(r.firstResponseMs),
    ms(r.ackP50Ms),
    ms(r.ackP99Ms),
    ms(r.lastAckMs),
    `${r.cpCpuS.toFixed(2)} s`,
    `${fmt(mib(r.cpPeakRssKiB), 1)} MiB`,
    `${fmt(r.responses.eds!)} × ${bytesText(r.bytes.eds! / Math.max(1, r.responses.eds!))}`,
    `${r.otherCores.toFixed(2)}`,
  ]);
  const summary = mdTable(
    ['metric', 'median of rounds', 'max (worst round)'],
    [
      [`change (MoveVm returned) → last of the ${fmt(CLIENTS)} EDS ACKs`, ms(median(lastAcks)), ms(worstLastAck)],
      ['change → ACK p50 over clients', ms(median(all.map((r) => r.ackP50Ms))), ms(Math.max(...all.map((r) => r.ackP50Ms)))],
      ['change → first client gets the new EDS', ms(median(all.map((r) => r.firstResponseMs))), ms(Math.max(...all.map((r) => r.firstResponseMs)))],
      ['MoveVm call (request → reply)', ms(median(all.map((r) => r.callMs)), 1), ms(Math.max(...all.map((r) => r.callMs)), 1)],
      ['control plane CPU per change', `${median(all.map((r) => r.cpCpuS)).toFixed(2)} s`, `${Math.max(...all.map((r) => r.cpCpuS)).toFixed(2)} s`],
      ['control plane peak RSS during a change', `${fmt(mib(median(all.map((r) => r.cpPeakRssKiB))), 1)} MiB`, `${fmt(mib(peakRounds), 1)} MiB`],
      ['slowest VM manager call (GetVm every 25 ms) during a change', ms(median(all.map((r) => r.apiMaxMs))), ms(Math.max(...all.map((r) => r.apiMaxMs)))],
      ['load process CPU per change', `${median(all.map((r) => r.loadCpuS)).toFixed(2)} s`, `${Math.max(...all.map((r) => r.loadCpuS)).toFixed(2)} s`],
      ['EDS bytes pushed per change (all clients)', bytesText(median(all.map((r) => r.bytes.eds!))), bytesText(Math.max(...all.map((r) => r.bytes.eds!)))],
    ],
  );
  const state = mdTable(
    ['control plane', 'value'],
    [
      ['start (spawn → serving, 1,000-VM inventory)', ms(cp.startMs)],
      ['RSS, no streams', `${fmt(mib(rssEmptyKiB), 1)} MiB`],
      [`initial sync: ${CLIENTS} clients ACK all four types`, `${ms(syncMs)} (control plane CPU ${syncCpu.cpu[0]!.toFixed(2)} s, peak RSS ${fmt(mib(syncPeakKiB), 1)} MiB)`],
      [
        'initial sync bytes (per client)',
        (['cds', 'eds', 'lds', 'rds'] as const).map((t) => `${t.toUpperCase()} ${bytesText((syncBytes[t] ?? 0) / CLIENTS)} (${fmt((syncResponses[t] ?? 0) / CLIENTS, 1)} responses)`).join(', '),
      ],
      [`RSS, ${CLIENTS} streams open, idle`, `${fmt(mib(rssStreamsKiB), 1)} MiB`],
      ['RSS after the change rounds', `${fmt(mib(rssAfterKiB), 1)} MiB`],
      ['peak RSS of the whole run (VmHWM)', `${fmt(mib(hwm), 1)} MiB`],
    ],
  );
  const expectedOnly = all.every(
    (r) =>
      r.responses.eds === CLIENTS &&
      r.responses.cds === 0 &&
      r.responses.rds === 0 &&
      r.responses.lds! <= 1 &&
      (r.between === null || Object.values(r.between.responses).every((n) => n === 0)),
  );
  const responsesNote = expectedOnly
    ? "- In every round each client got exactly one EDS response, and the moved VM's own node one LDS response (its outbound listeners carry its hypervisor); nothing arrived between rounds."
    : `- Responses per round: ${all
        .map(
          (r) =>
            `round ${r.round}: EDS ${r.responses.eds}, CDS ${r.responses.cds}, LDS ${r.responses.lds}, RDS ${r.responses.rds}` +
            (r.between ? ` (between the rounds before it: ${Object.entries(r.between.responses).map(([k, v]) => `${k.toUpperCase()} ${v}`).join(', ')})` : ''),
        )
        .join('; ')}.`;
  const checks = [
    `- ${ackMet ? 'MET' : 'MISSED'} every client ACKed within ${fmt(ACK_TARGET_MS)} ms of a change: worst last ACK ${ms(worstLastAck)} (median ${ms(median(lastAcks))}) over ${all.length} rounds; ` +
      `${everyoneUpdated ? `all ${CLIENTS} clients updated in every round` : 'NOT every client updated (see the rounds)'}. Includes the ${DEBOUNCE_MS} ms debounce.`,
    `- ${rssMet ? 'MET' : 'MISSED'} RSS under ${RSS_TARGET_MIB} MiB with ${CLIENTS} streams open: ${fmt(mib(rssStreamsKiB), 1)} MiB idle; ` +
      `${fmt(mib(peakRounds), 1)} MiB at most during a change, ${fmt(mib(hwm), 1)} MiB peak over the run (VmHWM, includes the initial sync).`,
  ];
  const md = [
    `## vsockmesh xDS fan-out, ${security === 'mtls' ? 'mutual TLS' : 'plain text'} (${new Date().toISOString()})`,
    '',
    `${machineLine()}. One control plane (\`node ${cliNodeFlags().join(' ')}${CPU_PROF ? ' --cpu-prof' : ''} ${path.relative(ROOT, CP_CLI)} control-plane --no-admin --debounce-ms ${DEBOUNCE_MS} ${security === 'mtls' ? '--ca-cert root.pem --ca-key root-key.pem' : '--insecure'}\`), ` +
      `${CLIENTS} VMs on ${HYPERVISORS} hypervisors, ${SERVICES} services (${CLIENTS / SERVICES} endpoints each); one load process with ${CLIENTS} SotW ADS streams ` +
      `(node id = a VM id each${security === 'mtls' ? ', each with its own SVID' : ''}) over ${channels} HTTP/2 connection${channels === 1 ? '' : 's'}${FLOW_WINDOW ? ` (flow-control window ${FLOW_WINDOW} B)` : ''}. ` +
      `A change is one MoveVm (another hypervisor): every node's EDS version changes. ${all.length} rounds after one warm-up round.`,
    '',
    summary,
    '',
    ...checks,
    '',
    mdTable(['round', 'VM moved', 'clients updated', 'MoveVm call', 'first EDS', 'ACK p50', 'ACK p99', 'last ACK', 'CP CPU', 'CP peak RSS', 'EDS responses × size', 'other cores'], roundRows),
    '',
    state,
    '',
    'Notes:',
    '- Times are from the MoveVm call\'s return in the bench process to the ACK written by each client in the load process, on the system-wide monotonic clock.',
    `- Each node's EDS response carries all ${SERVICES} assignments (state of the world), so a change pushes ${bytesText(edsBytesPerResponse)} to every client.`,
    responsesNote,
    `- The load process reads only version_info, type_url and nonce of an EDS response before ACKing it (CDS and LDS are decoded for the names); it still receives every byte through grpc-js: ${median(all.map((r) => r.loadCpuS)).toFixed(2)} s of its CPU per change (median).`,
    `- Warm-up round: last ACK ${ms(warm.lastAckMs)}, control plane CPU ${warm.cpCpuS.toFixed(2)} s.`,
    ...(quiet.discarded.length ? [`- ${quiet.discarded.length} round(s) repeated for noise: ${quiet.discarded.map((d) => `round ${d.round} (${d.otherCores.toFixed(2)} cores, last ACK ${ms(d.lastAckMs)})`).join('; ')}.`] : []),
    ...profileSection(profile, 'samples of the measured change rounds only'),
  ].join('\n');
  const figures: FanoutFigures = {
    security,
    syncMs,
    syncCpuS: syncCpu.cpu[0]!,
    rssEmptyMiB: mib(rssEmptyKiB),
    rssStreamsMiB: mib(rssStreamsKiB),
    peakRoundsMiB: mib(peakRounds),
    hwmMiB: mib(hwm),
    lastAckMedianMs: median(lastAcks),
    lastAckMaxMs: worstLastAck,
    ackP50MedianMs: median(all.map((r) => r.ackP50Ms)),
    cpCpuPerChangeS: median(all.map((r) => r.cpCpuS)),
    moveVmMs: median(all.map((r) => r.callMs)),
  };
  return {
    md,
    met: ackMet && rssMet,
    figures,
    json: {
      settings: { security, cli: CP_CLI, clients: CLIENTS, hypervisors: HYPERVISORS, services: SERVICES, channels, rounds: ROUNDS, debounceMs: DEBOUNCE_MS, flowControlWindow: FLOW_WINDOW ?? null, nodeFlags: cliNodeFlags() },
      controlPlane: { startMs: cp.startMs, rssEmptyKiB, rssStreamsKiB, rssAfterKiB, hwmKiB: hwm, sync: { ms: syncMs, cpuS: syncCpu.cpu[0], peakRssKiB: syncPeakKiB, bytes: syncBytes, responses: syncResponses } },
      targets: { ackMs: ACK_TARGET_MS, ackMet, worstLastAckMs: worstLastAck, rssMiB: RSS_TARGET_MIB, rssMet },
      warmup: warm,
      rounds,
      discarded: quiet.discarded,
      profile,
    },
  };
}

// ---- benchmark 2: 10,000 endpoints in one cluster ---------------------------------------------

interface Trial {
  kind: 'sotw' | 'delta';
  recvMs: number;
  decodedMs: number;
  bytes: number;
  reserializedBytes: number;
  endpoints: number;
}

function countEndpoints(any: Parameters<typeof unpackAny>[0]): number {
  const cla = unpackAny(any, TYPE_URLS.ClusterLoadAssignment);
  return cla.endpoints.reduce((n, l) => n + l.lb_endpoints.length, 0);
}

function firstData<T>(stream: { once(e: 'data', f: (d: T) => void): unknown; once(e: 'error', f: (err: Error) => void): unknown }, timeoutMs: number): Promise<{ data: T; at: number }> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no response within ${timeoutMs} ms`)), timeoutMs);
    stream.once('data', (data: T) => {
      clearTimeout(timer);
      resolve({ data, at: nowMs() });
    });
    stream.once('error', (err: Error) => {
      clearTimeout(timer);
      reject(err);
    });
  });
}

const ignoreCancel = (s: { on(e: 'error', f: (err: Error) => void): unknown }): void => {
  s.on('error', () => {});
};

async function sotwTrial(channel: ReturnType<typeof adsChannel>, node: string): Promise<Trial> {
  const s = openSotw(channel);
  ignoreCancel(s);
  const first = firstData<Sized<DiscoveryResponse__Output>>(s, 60_000);
  const t = nowMs();
  s.write({ node: { id: node }, type_url: TYPE_URLS.ClusterLoadAssignment, resource_names: [BIG_SERVICE] });
  const { data, at } = await first;
  const endpoints = countEndpoints(data.msg.resources[0]!);
  const decoded = nowMs();
  s.cancel();
  return { kind: 'sotw', recvMs: at - t, decodedMs: decoded - t, bytes: data.bytes, reserializedBytes: reserializedSotwBytes(data.msg), endpoints };
}

async function deltaTrial(channel: ReturnType<typeof adsChannel>, node: string): Promise<Trial> {
  const s = openDelta(channel);
  ignoreCancel(s);
  const first = firstData<Sized<DeltaDiscoveryResponse__Output>>(s, 60_000);
  const t = nowMs();
  s.write({ node: { id: node }, type_url: TYPE_URLS.ClusterLoadAssignment, resource_names_subscribe: [BIG_SERVICE] });
  const { data, at } = await first;
  const endpoints = countEndpoints(data.msg.resources[0]!.resource!);
  const decoded = nowMs();
  s.cancel();
  return { kind: 'delta', recvMs: at - t, decodedMs: decoded - t, bytes: data.bytes, reserializedBytes: reserializedDeltaBytes(data.msg), endpoints };
}

interface EndpointRound {
  round: number;
  vm: string;
  callMs: number;
  /** From the change call's return. */
  sotwMs: number;
  deltaMs: number;
  /** From the change call's start (with debounce 0 the rebuild runs before the call's reply goes out). */
  sotwFromCallMs: number;
  deltaFromCallMs: number;
  sotwBytes: number;
  deltaBytes: number;
  sotwEndpoints: number;
  deltaResources: number;
  deltaRemoved: number;
  cpCpuS: number;
  cpPeakRssKiB: number;
  otherCores: number;
}

async function endpoints(): Promise<{ md: string; json: unknown }> {
  const hypervisors = Array.from({ length: ENDPOINT_HYPERVISORS }, (_, h) => hvId(h));
  const width = String(ENDPOINTS - 1).length;
  const placements: Placement[] = Array.from({ length: ENDPOINTS }, (_, i) => ({ vm: vmId(i, width), hypervisor: hypervisors[i % ENDPOINT_HYPERVISORS]!, service: BIG_SERVICE, cid: 3 + i }));
  const files = writeFixtures('endpoints', placements, hypervisors, [BIG_SERVICE]);
  log(`endpoints: ${ENDPOINTS} VMs on ${ENDPOINT_HYPERVISORS} hypervisors all serving "${BIG_SERVICE}"; debounce ${ENDPOINT_DEBOUNCE_MS} ms`);
  const cp = await startControlPlane('endpoints', files, ENDPOINT_DEBOUNCE_MS, ['--insecure']);
  const cpPid = cp.daemon.pid;
  await sleep(500);
  const rssStartKiB = rssKiB(cpPid);
  log(`control plane pid ${cpPid} serving on :${cp.port} after ${fmt(cp.startMs)} ms, RSS ${fmt(mib(rssStartKiB), 1)} MiB`);
  const vmm = new VmManagerClient(`127.0.0.1:${cp.port}`, { defaultTimeoutMs: 30_000, transport: { insecure: true } });
  onCleanup(() => vmm.close());
  await vmm.waitForReady(10_000);
  const channel = adsChannel(`127.0.0.1:${cp.port}`);
  onCleanup(() => channel.close());
  await new Promise<void>((resolve, reject) => channel.waitForReady(Date.now() + 10_000, (err) => (err ? reject(err) : resolve())));

  // Initial pushes: a fresh stream per trial, SotW and delta alternating (one unmeasured of each first).
  const trials: Trial[] = [];
  const trialRss = rssSampler(cpPid);
  await sotwTrial(channel, 'bench-observer-sotw');
  await deltaTrial(channel, 'bench-observer-delta');
  for (let i = 0; i < ENDPOINT_ROUNDS; i++) {
    const pair = i % 2 === 0 ? [sotwTrial, deltaTrial] : [deltaTrial, sotwTrial];
    for (const trial of pair) {
      const r = await trial(channel, trial === sotwTrial ? 'bench-observer-sotw' : 'bench-observer-delta');
      trials.push(r);
      log(`  initial ${r.kind.padEnd(5)}: response ${ms(r.recvMs, 1)}, decoded ${ms(r.decodedMs, 1)}, ${fmt(r.bytes)} bytes (re-serialized ${fmt(r.reserializedBytes)}), ${fmt(r.endpoints)} endpoints`);
    }
  }
  const trialPeakKiB = trialRss.stop();

  // Updates: both kinds subscribed while one VM moves per round.
  const sotw: SotwStream = openSotw(channel);
  const delta: DeltaStream = openDelta(channel);
  ignoreCancel(sotw);
  ignoreCancel(delta);
  onCleanup(() => {
    sotw.cancel();
    delta.cancel();
  });
  let sotwFirst = firstData<Sized<DiscoveryResponse__Output>>(sotw, 60_000);
  let deltaFirst = firstData<Sized<DeltaDiscoveryResponse__Output>>(delta, 60_000);
  sotw.write({ node: { id: 'bench-subscriber-sotw' }, type_url: TYPE_URLS.ClusterLoadAssignment, resource_names: [BIG_SERVICE] });
  delta.write({ node: { id: 'bench-subscriber-delta' }, type_url: TYPE_URLS.ClusterLoadAssignment, resource_names_subscribe: [BIG_SERVICE] });
  const ackSotw = (m: DiscoveryResponse__Output): void => {
    sotw.write({ type_url: m.type_url, version_info: m.version_info, response_nonce: m.nonce, resource_names: [BIG_SERVICE] });
  };
  const ackDelta = (m: DeltaDiscoveryResponse__Output): void => {
    delta.write({ type_url: m.type_url, response_nonce: m.nonce });
  };
  ackSotw((await sotwFirst).data.msg);
  ackDelta((await deltaFirst).data.msg);
  await sleep(300);

  const where = new Map(placements.map((p) => [p.vm, p.hypervisor]));
  const rounds: EndpointRound[] = [];
  let windowFrom = NaN;
  let windowTo = NaN;
  const quiet = new QuietRuns<EndpointRound>(REPEATS, 'round');
  for (let round = 0; round <= ENDPOINT_ROUNDS; round++) {
    // Round 0 is a warm-up.
    const p = placements[(round * 1_297 + 11) % placements.length]!;
    const from = where.get(p.vm)!;
    const to = hypervisors[(hypervisors.indexOf(from) + 1 + round) % ENDPOINT_HYPERVISORS]!;
    sotwFirst = firstData(sotw, 60_000);
    deltaFirst = firstData(delta, 60_000);
    const meter = cpuMeter([cpPid]);
    const rss = rssSampler(cpPid);
    const callStart = nowMs();
    if (round === 1) windowFrom = callStart;
    await vmm.moveVm(p.vm, to);
    const t0 = nowMs();
    where.set(p.vm, to);
    const [s, d] = await Promise.all([sotwFirst, deltaFirst]);
    ackSotw(s.data.msg);
    ackDelta(d.data.msg);
    await sleep(100);
    const m = meter.stop();
    const peak = rss.stop();
    windowTo = nowMs();
    const r: EndpointRound = {
      round,
      vm: `${p.vm}: ${from} → ${to}`,
      callMs: t0 - callStart,
      sotwMs: s.at - t0,
      deltaMs: d.at - t0,
      sotwFromCallMs: s.at - callStart,
      deltaFromCallMs: d.at - callStart,
      sotwBytes: s.data.bytes,
      deltaBytes: d.data.bytes,
      sotwEndpoints: countEndpoints(s.data.msg.resources[0]!),
      deltaResources: d.data.msg.resources.length,
      deltaRemoved: d.data.msg.removed_resources.length,
      cpCpuS: m.cpu[0]!,
      cpPeakRssKiB: peak,
      otherCores: m.otherCores,
    };
    log(
      `  ${round === 0 ? 'warm-up' : `round ${round}`}: ${r.vm}: MoveVm ${ms(r.callMs, 1)}; SotW update ${ms(r.sotwFromCallMs, 1)} after the call started (${fmt(r.sotwBytes)} B, ${fmt(r.sotwEndpoints)} endpoints), ` +
        `delta ${ms(r.deltaFromCallMs, 1)} (${fmt(r.deltaBytes)} B, ${r.deltaResources} resource(s), ${r.deltaRemoved} removed); control plane CPU ${r.cpCpuS.toFixed(2)} s; other processes ${r.otherCores.toFixed(2)} cores`,
    );
    await sleep(300);
    if (round === 0) continue;
    if (quiet.repeat(r.otherCores)) {
      round--;
      continue;
    }
    rounds.push(r);
  }
  const rssEndKiB = rssKiB(cpPid);
  const hwm = hwmKiB(cpPid);
  sotw.cancel();
  delta.cancel();
  channel.close();
  vmm.close();
  await cp.stopAndWait();
  let profile: ProfileSummary | null = null;
  if (cp.profileDir) {
    const file = newestProfile(cp.profileDir);
    if (file) profile = summarizeProfile(file, PROFILED, { fromMs: windowFrom, toMs: windowTo });
  }

  const pick = (kind: Trial['kind'], f: (t: Trial) => number): number => median(trials.filter((t) => t.kind === kind).map(f));
  const rm = (f: (r: EndpointRound) => number): number => median(rounds.map(f));
  const rmax = (f: (r: EndpointRound) => number): number => Math.max(...rounds.map(f));
  const table = mdTable(
    [`${fmt(ENDPOINTS)} endpoints, one cluster (medians)`, 'SotW (StreamAggregatedResources)', 'delta (DeltaAggregatedResources)'],
    [
      ['initial: request → response received', ms(pick('sotw', (t) => t.recvMs), 1), ms(pick('delta', (t) => t.recvMs), 1)],
      ['initial: request → assignment decoded', ms(pick('sotw', (t) => t.decodedMs), 1), ms(pick('delta', (t) => t.decodedMs), 1)],
      ['initial response, serialized (as received)', `${fmt(pick('sotw', (t) => t.bytes))} B`, `${fmt(pick('delta', (t) => t.bytes))} B`],
      ['initial response, re-serialized (same serializer)', `${fmt(pick('sotw', (t) => t.reserializedBytes))} B`, `${fmt(pick('delta', (t) => t.reserializedBytes))} B`],
      ['bytes per endpoint', fmt(pick('sotw', (t) => t.bytes) / ENDPOINTS, 1), fmt(pick('delta', (t) => t.bytes) / ENDPOINTS, 1)],
      ['one VM moves: update size', `${fmt(rm((r) => r.sotwBytes))} B (${fmt(rm((r) => r.sotwEndpoints))} endpoints)`, `${fmt(rm((r) => r.deltaBytes))} B (${fmt(rm((r) => r.deltaResources))} resource)`],
      [
        'one VM moves: change call (start) → update received: rebuild + push (median / max)',
        `${ms(rm((r) => r.sotwFromCallMs), 1)} / ${ms(rmax((r) => r.sotwFromCallMs), 1)}`,
        `${ms(rm((r) => r.deltaFromCallMs), 1)} / ${ms(rmax((r) => r.deltaFromCallMs), 1)}`,
      ],
      ['one VM moves: change call returned → update received (median / max)', `${ms(rm((r) => r.sotwMs), 1)} / ${ms(rmax((r) => r.sotwMs), 1)}`, `${ms(rm((r) => r.deltaMs), 1)} / ${ms(rmax((r) => r.deltaMs), 1)}`],
    ],
  );
  const cpTable = mdTable(
    ['control plane', 'value'],
    [
      [`start (spawn → serving, ${fmt(ENDPOINTS)}-VM inventory)`, ms(cp.startMs)],
      ['MoveVm call (request → reply), median', ms(rm((r) => r.callMs), 1)],
      ['CPU per change (rebuild + both pushes), median / max', `${rm((r) => r.cpCpuS).toFixed(2)} s / ${rmax((r) => r.cpCpuS).toFixed(2)} s`],
      ['RSS after start / peak during initial trials / peak during changes / end', `${fmt(mib(rssStartKiB), 1)} / ${fmt(mib(trialPeakKiB), 1)} / ${fmt(mib(rmax((r) => r.cpPeakRssKiB)), 1)} / ${fmt(mib(rssEndKiB), 1)} MiB`],
      ['peak RSS of the whole run (VmHWM)', `${fmt(mib(hwm), 1)} MiB`],
    ],
  );
  const roundRows = rounds.map((r) => [String(r.round), r.vm, ms(r.callMs, 1), ms(r.sotwFromCallMs, 1), ms(r.deltaFromCallMs, 1), fmt(r.sotwBytes), fmt(r.deltaBytes), `${r.cpCpuS.toFixed(2)} s`, r.otherCores.toFixed(2)]);
  const md = [
    `## vsockmesh xDS: ${fmt(ENDPOINTS)} endpoints in one cluster (${new Date().toISOString()})`,
    '',
    `${machineLine()}. One control plane (\`--debounce-ms ${ENDPOINT_DEBOUNCE_MS}\`, so the update time is the rebuild and the push), ${fmt(ENDPOINTS)} VMs on ${ENDPOINT_HYPERVISORS} hypervisors all serving "${BIG_SERVICE}". ` +
      `Clients in the bench process, node ids that are not registered VMs (the shared snapshot); ${ENDPOINT_ROUNDS} initial trials of each kind (fresh stream each) and ${rounds.length} changes after one warm-up.`,
    '',
    table,
    '',
    cpTable,
    '',
    mdTable(['round', 'VM moved', 'MoveVm call', 'SotW update (from call start)', 'delta update (from call start)', 'SotW bytes', 'delta bytes', 'CP CPU', 'other cores'], roundRows),
    '',
    'Notes:',
    '- The whole cluster is one resource (one ClusterLoadAssignment), so delta resends all of it when one endpoint changes: delta saves nothing on EDS here. ' +
      'It only saves on types with many resources (CDS/LDS/RDS, or EDS across many clusters).',
    '- With --debounce-ms 0 the rebuild is a timer that fires before the MoveVm reply is written, so the reply mostly waits for the rebuild: the update times are taken from the call\'s start. ' +
      'Every VM manager call that arrives during a rebuild waits the same way (one event loop).',
    '- The re-serialized SotW response is 2 bytes longer than the one received: the decoder fills in defaults and protobufjs then writes `canary: false` explicitly.',
    '- "Response received" is when grpc-js handed over the DiscoveryResponse (the resources still packed in Any); "decoded" adds unpacking the ClusterLoadAssignment.',
    ...profileSection(profile, 'samples of the measured change rounds only'),
  ].join('\n');
  return {
    md,
    json: {
      settings: { cli: CP_CLI, endpoints: ENDPOINTS, hypervisors: ENDPOINT_HYPERVISORS, rounds: ENDPOINT_ROUNDS, debounceMs: ENDPOINT_DEBOUNCE_MS, nodeFlags: cliNodeFlags() },
      controlPlane: { startMs: cp.startMs, rssStartKiB, trialPeakKiB, rssEndKiB, hwmKiB: hwm },
      trials,
      rounds,
      profile,
    },
  };
}

/** The plain-text and mTLS fan-outs of this invocation side by side. */
function securityComparison(plain: FanoutFigures, mtls: FanoutFigures): string {
  const row = (label: string, a: number, b: number, unit: (v: number) => string): string[] => [label, unit(a), unit(b), Number.isFinite(a) && a > 0 ? `${fmt(b / a, 2)}×` : 'n/a'];
  const mibText = (v: number): string => `${fmt(v, 1)} MiB`;
  const s = (v: number): string => `${v.toFixed(2)} s`;
  return [
    `## xDS fan-out: mutual TLS beside plain text, same invocation (${new Date().toISOString()})`,
    '',
    `${machineLine()}; ${CLIENTS} ADS clients; under mTLS each client has its own SVID and connection, plain text runs over ${Math.min(CHANNELS, CLIENTS)} connection(s).`,
    '',
    mdTable(
      ['metric', 'plain text', 'mutual TLS', 'mTLS / plain'],
      [
        row('change → last of the ACKs (median of rounds)', plain.lastAckMedianMs, mtls.lastAckMedianMs, (v) => ms(v)),
        row('change → last of the ACKs (worst round)', plain.lastAckMaxMs, mtls.lastAckMaxMs, (v) => ms(v)),
        row('change → ACK p50 over clients (median)', plain.ackP50MedianMs, mtls.ackP50MedianMs, (v) => ms(v)),
        row('MoveVm call (median)', plain.moveVmMs, mtls.moveVmMs, (v) => ms(v, 1)),
        row('control plane CPU per change (median)', plain.cpCpuPerChangeS, mtls.cpCpuPerChangeS, s),
        row(`initial sync: all ${CLIENTS} clients ACK all four types`, plain.syncMs, mtls.syncMs, (v) => ms(v)),
        row('control plane CPU for the initial sync', plain.syncCpuS, mtls.syncCpuS, s),
        row('control plane RSS, no streams', plain.rssEmptyMiB, mtls.rssEmptyMiB, mibText),
        row(`control plane RSS, ${CLIENTS} streams open, idle`, plain.rssStreamsMiB, mtls.rssStreamsMiB, mibText),
        row('control plane peak RSS during a change', plain.peakRoundsMiB, mtls.peakRoundsMiB, mibText),
        row('control plane peak RSS of the run (VmHWM)', plain.hwmMiB, mtls.hwmMiB, mibText),
      ],
    ),
  ].join('\n');
}

async function main(): Promise<void> {
  accessSync(CP_CLI, constants.R_OK);
  if (!['fanout', 'endpoints', 'both', 'replicas'].includes(WHICH)) throw new Error(`BENCH_XDS must be fanout, endpoints, both or replicas (got "${WHICH}")`);
  log(`${machineLine()}; control plane: ${path.relative(ROOT, CP_CLI) || CP_CLI}, node flags: ${cliNodeFlags().join(' ') || '(none)'}`);
  const out: string[] = [];
  if (!['plain', 'mtls', 'both'].includes(SECURITY)) throw new Error(`BENCH_XDS_SECURITY must be plain, mtls or both (got "${SECURITY}")`);
  if (WHICH === 'replicas') {
    const t = nowMs();
    const r = await replicated(CP_CLI);
    const file = writeReport('xds-replicas', r.md, { date: new Date().toISOString(), ...(r.json as object), markdown: r.md });
    process.stdout.write(`\n${r.md}\n\nwritten to ${file} (and .json); ${fmt((nowMs() - t) / 1000)} s\n`);
    return;
  }
  if (WHICH !== 'endpoints') {
    const figures: FanoutFigures[] = [];
    for (const security of (SECURITY === 'both' ? ['plain', 'mtls'] : [SECURITY]) as Security[]) {
      const t = nowMs();
      const r = await fanout(security);
      figures.push(r.figures);
      const file = writeReport(`xds-fanout-${security}`, r.md, { date: new Date().toISOString(), ...(r.json as object), markdown: r.md });
      out.push(`${r.md}\n\nwritten to ${file} (and .json); ${fmt((nowMs() - t) / 1000)} s`);
      process.stdout.write(`\n${out.at(-1)}\n`);
    }
    if (figures.length === 2) {
      const md = securityComparison(figures[0]!, figures[1]!);
      writeReport('xds-fanout-mtls-vs-plain', md, { date: new Date().toISOString(), figures, markdown: md });
      process.stdout.write(`\n${md}\n`);
    }
  }
  if (WHICH !== 'fanout') {
    const t = nowMs();
    const r = await endpoints();
    const file = writeReport('xds-endpoints', r.md, { date: new Date().toISOString(), ...(r.json as object), markdown: r.md });
    out.push(`${r.md}\n\nwritten to ${file} (and .json); ${fmt((nowMs() - t) / 1000)} s`);
    process.stdout.write(`\n${out.at(-1)}\n`);
  }
}

await runBench(main);
