// The xDS fan-out beyond one process (issue 15): `BENCH_XDS=replicas npm run bench:xds`.
//
// One inventory of BENCH_VMS VMs (default 10,000) on 20 hypervisors in 50
// services, and BENCH_SIDECARS simulated sidecars (default "1000,10000"; the
// first that many VMs, node id = VM id, each a state-of-the-world ADS stream
// that ACKs everything, xds-bench-child.ts) over each topology of
// BENCH_TOPOLOGIES (default "memory,1,2,4"):
//
// - memory: one `vsockmesh control-plane --inventory` (the registry in
//   process, the in-memory store), as before issue 15; a change is MoveVm on
//   the control plane itself.
// - N (1, 2, 4): a real etcd (Debian's etcd-server, started here on loopback
//   with a data directory of its own), one `vsockmesh vm-manager --store` that
//   seeds the registry from the inventory, and N `vsockmesh control-plane
//   --store --vm-manager` replicas following it. Sidecar i connects to replica
//   i mod N. A change is MoveVm on the VM manager: etcd commits it, the VM
//   manager's watch brings it back, every replica's Watch mirror gets it,
//   rebuilds and pushes.
//
// Each topology is deployed once and grows through the sidecar counts: the
// first count's sidecars sync and its changes are measured, then the sidecars
// up to the next count join (the 10,000 are the 1,000 and 9,000 more on the
// same processes), sync, and the changes are measured again: one initial sync
// of 10,000 per topology, not 1,000 and then 10,000 from scratch. The initial
// sync is waited for as long as sidecars keep getting in sync; the run gives
// up when none more did for BENCH_SYNC_STALL_S (default 180 s). A process of
// the deployment gets 10 minutes to start (seeding 10,000 VMs into etcd on a
// loaded machine).
//
// The sidecars joining at a count are spread over BENCH_LOAD_PROCESSES child
// processes (default 4, at least one per replica, each connected to one replica) so that the
// client side is not one event loop; each process carries its streams over
// at most BENCH_CHANNELS HTTP/2 connections (default 100): 10,000 simulated
// sidecars are 10,000 streams with 10,000 node ids, but not 10,000
// connections as real sidecars would hold (the report says how many;
// BENCH_FLOW_WINDOW sets their HTTP/2 flow-control window). Measured per change: from MoveVm's return
// to the last ACK over all children (system-wide monotonic clock), the
// replicas' CPU and peak RSS, the VM manager's and etcd's CPU, the responses
// and bytes the sidecars got by type (and what came between the previous
// change, or the initial sync, and this one); after the
// initial sync, every replica's idle RSS with its streams and etcd's RSS. The
// machine is shared: compare topologies within one run (the load average and
// the cores other processes used are in the report). With BENCH_CPU_PROF=1
// the replicas run with --cpu-prof and the report adds, per change, the
// control plane's own part (from its profile, same clock): change → rebuild
// started (the debounce), → rebuild done, → the last push handed to gRPC,
// and how long it was busy; what comes after the last push until the last
// ACK is the sidecars' side (the load processes and the scheduler). With
// BENCH_SETTLES=1 the control planes log at debug level and each change's
// line says when each last settled its memory (proxy/runtime/quiet-trim.ts)
// and, with the preload xds-gc-lines.mjs in BENCH_NODE_ARGS, which V8
// collections ran during it; BENCH_AWAIT_SETTLE=first|alternate|every waits
// for a settle before those changes (alternate: changes after a settle and
// without one, paired in one run). Not a test.

import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { VmManagerClient } from '../../xds/vm-manager/client.js';
import { etcdBinary, launchEtcd, type EtcdServer } from '../helpers/etcd.js';
import { ROOT, cliNodeFlags, fmt, intEnv, log, machineLine, mdTable, median, onCleanup, rssKiB, sleep, startDaemon, startVmManagerCli, type Daemon, type LogLine } from './bench-common.js';
import { changeTimelines, cpuProfileFlags, hvId, inventoryYaml, meshYaml, newestProfile, nowMs, serviceName, vmId, type ChangeTimeline, type Placement } from './xds-bench-lib.js';
import { cpuMeter, rssSampler, startLoadChild, waitSynced, type LoadChild } from './xds-bench-load.js';

const VMS = intEnv('BENCH_VMS', 10_000);
const HYPERVISORS = 20;
const SERVICES = 50;
const ROUNDS = intEnv('BENCH_ROUNDS', 3);
const DEBOUNCE_MS = intEnv('BENCH_DEBOUNCE_MS', 100);
const LOAD_PROCESSES = intEnv('BENCH_LOAD_PROCESSES', 4);
const CHANNELS = intEnv('BENCH_CHANNELS', 100);
/** The load processes' HTTP/2 flow-control window per connection (BENCH_FLOW_WINDOW; default grpc-js's 64 KiB; Envoy's default is 256 MiB). */
const FLOW_WINDOW = process.env.BENCH_FLOW_WINDOW ? intEnv('BENCH_FLOW_WINDOW', 65_535) : undefined;
const CPU_PROF = process.env.BENCH_CPU_PROF === '1';
/** BENCH_SETTLES=1: the control planes log at debug level and each change's line says when each last settled its memory before it. */
const SETTLES = process.env.BENCH_SETTLES === '1' || process.env.BENCH_AWAIT_SETTLE !== undefined;
/**
 * BENCH_AWAIT_SETTLE=first|alternate|every: before the warm-up (first), before
 * every other change from the warm-up on (alternate: changes after a settle and
 * changes without one, paired in one run) or before every change, wait (up to
 * 60 s) until every replica has settled its memory since the last burst
 * (quiet-trim.ts; on a quiet machine that happens 2-3 s after a burst, before
 * the warm-up comes; on a loaded one, often later, during the changes).
 */
const AWAIT_SETTLE = process.env.BENCH_AWAIT_SETTLE;
if (AWAIT_SETTLE !== undefined && !['first', 'alternate', 'every'].includes(AWAIT_SETTLE)) throw new Error(`BENCH_AWAIT_SETTLE must be first, alternate or every, got "${AWAIT_SETTLE}"`);
const AWAIT_SETTLE_MS = 60_000;
const ACK_TARGET_MS = 500;
/** How long the replicas are left alone before their idle RSS is read: long enough for the trim after a burst (proxy/runtime/quiet-trim.ts: 2 quiet seconds). */
const QUIET_WAIT_MS = 5_000;
const RSS_TARGET_MIB = 250;
/** How long the initial sync may go without one more sidecar in sync before the run is given up (BENCH_SYNC_STALL_S). */
const SYNC_STALL_MS = intEnv('BENCH_SYNC_STALL_S', 180) * 1000;
/** Starting a process of the deployment (seeding etcd, a control plane reading 10,000 VMs) on a loaded machine. */
const START_TIMEOUT_MS = 600_000;

function listEnv(name: string, fallback: string): string[] {
  return (process.env[name] ?? fallback)
    .split(',')
    .map((x) => x.trim())
    .filter((x) => x !== '');
}

/** "memory" or a replica count. */
type Topology = 'memory' | number;

function topologies(): Topology[] {
  return listEnv('BENCH_TOPOLOGIES', 'memory,1,2,4').map((x) => {
    if (x === 'memory') return x;
    const n = Number(x);
    if (!Number.isInteger(n) || n < 1) throw new Error(`BENCH_TOPOLOGIES: "${x}" is neither memory nor a replica count`);
    return n;
  });
}

function sidecarCounts(): number[] {
  return listEnv('BENCH_SIDECARS', '1000,10000').map((x) => {
    const n = Number(x);
    if (!Number.isInteger(n) || n < 1 || n > VMS) throw new Error(`BENCH_SIDECARS: "${x}" must be 1..BENCH_VMS (${VMS})`);
    return n;
  });
}

const mib = (kib: number): number => kib / 1024;
const mibText = (kib: number): string => `${fmt(mib(kib), 1)} MiB`;
const msText = (v: number): string => (Number.isFinite(v) ? `${fmt(v)} ms` : 'n/a');
const topologyName = (t: Topology): string => (t === 'memory' ? 'memory (one process, registry in process)' : `etcd, ${t} replica${t === 1 ? '' : 's'}`);

/** Counts by type (cds, eds, ...) summed over the load processes' reports (a missing or malformed one counts nothing). */
function sumByType(parts: readonly unknown[]): Record<string, number> {
  const out: Record<string, number> = {};
  for (const part of parts) {
    if (typeof part !== 'object' || part === null) continue;
    for (const [type, n] of Object.entries(part)) if (typeof n === 'number') out[type] = (out[type] ?? 0) + n;
  }
  return out;
}

/** "eds 1,000 (4.2 MiB), lds 1 (30 KiB)": the types that had responses. */
function byTypeText(responses: Record<string, number>, bytes: Record<string, number>): string {
  const kib = (b: number): string => (b >= 1024 * 1024 ? `${fmt(b / 1024 / 1024, 1)} MiB` : `${fmt(b / 1024)} KiB`);
  const parts = Object.entries(responses).filter(([, n]) => n > 0).map(([type, n]) => `${type} ${fmt(n)} (${kib(bytes[type] ?? 0)})`);
  return parts.length === 0 ? 'nothing' : parts.join(', ');
}

interface Fixtures {
  dir: string;
  mesh: string;
  inventory: string;
  placements: Placement[];
  hypervisors: string[];
}

function writeFixtures(): Fixtures {
  const hypervisors = Array.from({ length: HYPERVISORS }, (_, h) => hvId(h));
  const services = Array.from({ length: SERVICES }, (_, s) => serviceName(s));
  const width = String(VMS - 1).length;
  const placements: Placement[] = Array.from({ length: VMS }, (_, i) => ({
    vm: vmId(i, width),
    hypervisor: hypervisors[Math.floor(i / SERVICES) % HYPERVISORS]!,
    service: services[i % SERVICES]!,
    cid: 3 + i,
  }));
  const dir = mkdtempSync(path.join(os.tmpdir(), 'vsockmesh-xds-replicas-'));
  onCleanup(() => rmSync(dir, { recursive: true, force: true }));
  const files = { dir, mesh: path.join(dir, 'mesh.yaml'), inventory: path.join(dir, 'inventory.yaml'), placements, hypervisors };
  writeFileSync(files.mesh, meshYaml(services));
  writeFileSync(files.inventory, inventoryYaml(placements, hypervisors));
  return files;
}

interface Replica {
  daemon: Daemon;
  port: number;
  /** BENCH_CPU_PROF: where its CPU profile is written when it exits. */
  profileDir: string | null;
  /** BENCH_SETTLES: the control plane's memory settles (its 'memory settled' debug lines), as they come. */
  settles: Settle[];
  /** BENCH_SETTLES with a preload that logs V8's collections: them, as they come. */
  gcs: Gc[];
}

interface Gc {
  kind: string;
  ms: number;
  atMs: number;
}

/** The collections in [fromMs, toMs] by kind: "major 2 (310 ms), minor 40 (120 ms)". */
function gcText(gcs: readonly Gc[], fromMs: number, toMs: number): string {
  const by = new Map<string, { n: number; ms: number }>();
  for (const g of gcs) {
    if (g.atMs < fromMs || g.atMs > toMs) continue;
    const x = by.get(g.kind) ?? { n: 0, ms: 0 };
    x.n++;
    x.ms += g.ms;
    by.set(g.kind, x);
  }
  return by.size === 0 ? 'no GC seen' : [...by].map(([k, x]) => `${k} ${x.n} (${fmt(x.ms)} ms)`).join(', ');
}

/** One settle of a control plane's memory (proxy/runtime/quiet-trim.ts), on the wall clock. */
interface Settle {
  atMs: number;
  pauseMs: number;
  rssBeforeKiB: number;
  rssAfterKiB: number;
}

async function startControlPlane(cli: string, args: string[]): Promise<Replica> {
  const profileDir = CPU_PROF ? path.join(ROOT, '.bench', `xds-replica-prof-${new Date().toISOString().replace(/[:.]/g, '-')}-${Math.random().toString(36).slice(2, 6)}`) : null;
  if (profileDir) mkdirSync(profileDir, { recursive: true });
  const prof = profileDir ? cpuProfileFlags(profileDir, 1000) : [];
  const daemon = startDaemon(process.execPath, [...cliNodeFlags(), ...prof, cli, 'control-plane', '--listen', '127.0.0.1:0', '--no-admin', '--insecure', '--debounce-ms', String(DEBOUNCE_MS), '--log-level', SETTLES ? 'debug' : 'info', ...args], { stdout: 'lines' });
  const serving = await daemon.waitForLine((l: LogLine) => l.msg === 'control-plane serving', 'control-plane serving', START_TIMEOUT_MS);
  const settles: Settle[] = [];
  const gcs: Gc[] = [];
  if (SETTLES) {
    // Every 'memory settled' line once (the predicate sees the recent lines again as more come; it never matches).
    const seen = new WeakSet<LogLine>();
    daemon
      .waitForLine(
        (l: LogLine) => {
          if (l.msg === 'gc' && !seen.has(l)) {
            // An experiment's preload (BENCH_NODE_ARGS="--import gc-lines.mjs") may log V8's collections as {"msg":"gc","kind","ms","at"}.
            seen.add(l);
            gcs.push({ kind: String(l.kind), ms: Number(l.ms), atMs: Number(l.at) });
          }
          if (l.msg === 'memory settled' && !seen.has(l)) {
            seen.add(l);
            settles.push({ atMs: Date.parse(String(l.time)), pauseMs: Number(l.ms), rssBeforeKiB: Number(l.rss_before) / 1024, rssAfterKiB: Number(l.rss_after) / 1024 });
          }
          return false;
        },
        'memory settled lines',
        24 * 3600_000,
      )
      .catch(() => undefined);
  }
  return { daemon, port: Number(serving.port), profileDir, settles, gcs };
}

/** The processes of one topology, up and serving. */
interface Deployment {
  replicas: Replica[];
  /** Where MoveVm goes: the VM manager (etcd) or the one control plane (memory). */
  changes: VmManagerClient;
  vmManager: Daemon | null;
  etcd: EtcdServer | null;
  stop(): Promise<void>;
}

async function deploy(topology: Topology, files: Fixtures, cli: string): Promise<Deployment> {
  if (topology === 'memory') {
    const cp = await startControlPlane(cli, ['--mesh', files.mesh, '--inventory', files.inventory]);
    const changes = new VmManagerClient(`127.0.0.1:${cp.port}`, { defaultTimeoutMs: 60_000, transport: { insecure: true } });
    return {
      replicas: [cp],
      changes,
      vmManager: null,
      etcd: null,
      stop: async () => {
        changes.close();
        await cp.daemon.stop();
      },
    };
  }
  let remove: () => Promise<void> = async () => {};
  // etcd's default request limits: the VM manager seeds the inventory in chunks within them.
  const etcd = await launchEtcd({}, (r) => (remove = r));
  // The last resort when the cleanups are cut short (a signal): etcd is not a startDaemon child.
  const killEtcd = (): void => {
    const pid = etcd.pid();
    if (pid === undefined) return;
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // gone
    }
  };
  process.on('exit', killEtcd);
  onCleanup(() => {
    process.off('exit', killEtcd);
  });
  onCleanup(remove);
  const store = ['--store', `etcd://${etcd.endpoint}`, '--store-insecure'];
  const t = nowMs();
  const vmm = await startVmManagerCli(['--no-admin', '--inventory', files.inventory, ...store], START_TIMEOUT_MS);
  log(`  etcd ${etcd.endpoint} (pid ${etcd.pid()}), vm-manager --store on :${vmm.port} (seeded ${fmt(VMS)} VMs) in ${fmt(nowMs() - t)} ms`);
  const replicas: Deployment['replicas'] = [];
  for (let r = 0; r < topology; r++) replicas.push(await startControlPlane(cli, ['--mesh', files.mesh, ...store, '--vm-manager', `127.0.0.1:${vmm.port}`]));
  const changes = new VmManagerClient(`127.0.0.1:${vmm.port}`, { defaultTimeoutMs: 60_000, transport: { insecure: true } });
  return {
    replicas,
    changes,
    vmManager: vmm.daemon,
    etcd,
    stop: async () => {
      changes.close();
      for (const r of replicas) await r.daemon.stop();
      await vmm.daemon.stop();
      await remove();
    },
  };
}

interface Round {
  round: number;
  lastAckMs: number;
  ackP50Ms: number;
  updated: number;
  errors: number;
  callMs: number;
  /** CPU seconds per replica, the VM manager's, etcd's and all load processes'. */
  replicaCpuS: number[];
  vmManagerCpuS: number;
  etcdCpuS: number;
  loadCpuS: number;
  replicaPeakKiB: number[];
  otherCores: number;
  /** Responses and their bytes by type over all sidecars, for this change and for what arrived between the previous round and this one. */
  responses: Record<string, number>;
  bytes: Record<string, number>;
  between: { responses: Record<string, number>; bytes: Record<string, number> };
  /** BENCH_CPU_PROF: per replica, the change in its profile, relative to the MoveVm call's return (ms). */
  cp?: Array<{ rebuildFromMs: number; rebuildToMs: number; lastPushMs: number; busyMs: number; gcMs: number }>;
}

export interface ReplicaRun {
  topology: Topology;
  sidecars: number;
  loadProcesses: number;
  /** HTTP/2 connections the sidecars' streams shared. */
  connections: number;
  syncMs: number;
  replicaIdleKiB: number[];
  /** The same, QUIET_WAIT_MS after the last change. */
  replicaAfterKiB: number[];
  etcdKiB: number;
  vmManagerKiB: number;
  rounds: Round[];
  /** BENCH_CPU_PROF: the measured changes' windows (ms on nowMs()'s clock), read from the profiles once the replicas exit. */
  windows?: Array<{ fromMs: number; toMs: number; t0: number }>;
  loadAverage: number;
  error?: string;
}

/** A run that did not complete. */
function failedRun(topology: Topology, sidecars: number, error: string): ReplicaRun {
  return { topology, sidecars, loadProcesses: 0, connections: 0, syncMs: NaN, replicaIdleKiB: [], replicaAfterKiB: [], etcdKiB: 0, vmManagerKiB: 0, rounds: [], loadAverage: os.loadavg()[0]!, error };
}

/**
 * One topology, deployed once, with each of `counts` simulated sidecars in
 * turn (ascending): the first count's sidecars connect and sync, ROUNDS
 * changes after a warm-up are measured; then the sidecars up to the next
 * count join (their own load processes), sync, and the changes are measured
 * with all of them; and so on. A count that fails ends the topology (the
 * larger ones are reported as not run).
 */
async function measure(topology: Topology, counts: readonly number[], files: Fixtures, cli: string): Promise<ReplicaRun[]> {
  log(`${topologyName(topology)}: ${fmt(VMS)} VMs, ${counts.map((c) => fmt(c)).join(' then ')} sidecars`);
  const runs: ReplicaRun[] = [];
  const d = await deploy(topology, files, cli);
  const loads: LoadChild[] = [];
  try {
    await d.changes.waitForReady(START_TIMEOUT_MS);
    const n = d.replicas.length;
    const perReplica = Math.max(1, Math.ceil(LOAD_PROCESSES / n));
    const replicaPids = d.replicas.map((r) => r.daemon.pid);
    const etcdPid = d.etcd?.pid();
    const where = new Map(files.placements.map((p) => [p.vm, p.hypervisor]));
    let connections = 0;
    let have = 0;
    // Rounds are numbered over the whole topology (the load processes tell them apart by number).
    let seq = 0;
    for (const sidecars of counts) {
      try {
        // Sidecar i (over the whole run) on replica i mod N; the ones joining now over their own load processes.
        const joining: LoadChild[] = [];
        for (let r = 0; r < n; r++) {
          const mine = files.placements.slice(0, sidecars).filter((_, i) => i >= have && i % n === r);
          for (let c = 0; c < perReplica; c++) {
            const nodes = mine.filter((_, i) => i % perReplica === c).map((p) => p.vm);
            if (nodes.length === 0) continue;
            const channels = Math.min(CHANNELS, nodes.length);
            connections += channels;
            joining.push(startLoadChild({ address: `127.0.0.1:${d.replicas[r]!.port}`, nodes, channels, ...(FLOW_WINDOW !== undefined && { flowControlWindow: FLOW_WINDOW }) }));
          }
        }
        loads.push(...joining);
        const syncMs = await waitSynced(joining, sidecars - have, SYNC_STALL_MS);
        let burstEndWall = Date.now();
        const joined = sidecars - have;
        have = sidecars;
        await sleep(QUIET_WAIT_MS);
        const replicaIdleKiB = replicaPids.map((pid) => rssKiB(pid));
        const etcdKiB = etcdPid === undefined ? 0 : rssKiB(etcdPid);
        const vmManagerKiB = d.vmManager === null ? 0 : rssKiB(d.vmManager.pid);
        log(
          `  ${fmt(joined)} sidecars${joined === sidecars ? '' : ` (of ${fmt(sidecars)})`} synced in ${fmt(syncMs)} ms over ${joining.length} load processes; ${loads.length} processes, ${fmt(connections)} HTTP/2 connections (${fmt(sidecars / connections, 1)} streams each); ` +
            `replica RSS ${replicaIdleKiB.map(mibText).join(', ')}; etcd ${mibText(etcdKiB)}; vm-manager ${mibText(vmManagerKiB)}`,
        );
        const rounds: Round[] = [];
        const windows: Array<{ fromMs: number; toMs: number; t0: number }> = [];
        for (let round = 0; round <= ROUNDS; round++) {
          const id = seq++;
          const awaitSettle = AWAIT_SETTLE === 'every' || (AWAIT_SETTLE === 'first' && round === 0) || (AWAIT_SETTLE === 'alternate' && round % 2 === 0);
          if (awaitSettle) {
            const since = burstEndWall;
            const t = Date.now();
            while (!d.replicas.every((x) => x.settles.some((z) => z.atMs >= since)) && Date.now() - t < AWAIT_SETTLE_MS) await sleep(100);
            log(`  waited ${fmt(Date.now() - t)} ms for the replicas to settle (${d.replicas.every((x) => x.settles.some((z) => z.atMs >= since)) ? 'all did' : 'not all did'})`);
          }
          const p = files.placements[(round * 211 + 7) % sidecars]!;
          const to = files.hypervisors[(files.hypervisors.indexOf(where.get(p.vm)!) + 1 + round) % HYPERVISORS]!;
          for (const l of loads) l.send({ cmd: 'arm', round: id });
          const armed = await Promise.all(loads.map((l) => l.next((e) => e.event === 'armed' && e.round === id, `round ${round} armed`, 120_000)));
          const pids = [...replicaPids, d.vmManager?.pid ?? 0, etcdPid ?? 0, ...loads.map((l) => l.pid)].filter((pid) => pid > 0);
          const meter = cpuMeter(pids);
          const samplers = replicaPids.map((pid) => rssSampler(pid));
          const callStart = nowMs();
          const callWall = Date.now();
          await d.changes.moveVm(p.vm, to);
          const t0 = nowMs();
          where.set(p.vm, to);
          for (const l of loads) l.send({ cmd: 'wait', round: id, t0, callStart, timeoutMs: 120_000 });
          const results = await Promise.all(loads.map((l) => l.next((e) => e.event === 'round' && e.round === id, `round ${round} result`, 180_000)));
          await sleep(100);
          burstEndWall = Date.now();
          if (round > 0) windows.push({ fromMs: callStart, toMs: nowMs(), t0 });
          const peaks = samplers.map((x) => x.stop());
          const m = meter.stop();
          // A figure the load process could not give (no sidecar updated) comes as null in its JSON.
          const num = (v: unknown): number => (typeof v === 'number' ? v : NaN);
          const cpuOf = (pid: number | undefined): number => (pid === undefined ? 0 : (m.cpu[pids.indexOf(pid)] ?? 0));
          const r: Round = {
            round,
            lastAckMs: Math.max(...results.map((x) => num(x.lastAckMs))),
            // The clients' p50 is per process; their median is close enough for a report line.
            ackP50Ms: median(results.map((x) => num(x.ackP50Ms))),
            updated: results.reduce((a, x) => a + Number(x.updated), 0),
            errors: results.reduce((a, x) => a + Number(x.errors), 0),
            callMs: t0 - callStart,
            replicaCpuS: replicaPids.map(cpuOf),
            vmManagerCpuS: cpuOf(d.vmManager?.pid),
            etcdCpuS: cpuOf(etcdPid),
            loadCpuS: loads.reduce((a, l) => a + cpuOf(l.pid), 0),
            replicaPeakKiB: peaks,
            otherCores: m.otherCores,
            responses: sumByType(results.map((x) => x.responses)),
            bytes: sumByType(results.map((x) => x.bytes)),
            between: { responses: sumByType(armed.map((x) => (x.between as { responses?: unknown } | undefined)?.responses)), bytes: sumByType(armed.map((x) => (x.between as { bytes?: unknown } | undefined)?.bytes)) },
          };
          log(
            `  ${round === 0 ? 'warm-up' : `round ${round}`}: ${p.vm} → ${to}: ${r.updated}/${sidecars} ACKed, last ACK ${msText(r.lastAckMs)} (p50 ${msText(r.ackP50Ms)}), MoveVm ${msText(r.callMs)}; ` +
              `replica CPU ${r.replicaCpuS.map((c) => c.toFixed(2)).join('/')} s, vm-manager ${r.vmManagerCpuS.toFixed(2)} s, etcd ${r.etcdCpuS.toFixed(2)} s, load ${r.loadCpuS.toFixed(2)} s; other processes ${r.otherCores.toFixed(2)} cores; ` +
              `sent ${byTypeText(r.responses, r.bytes)}; before it ${byTypeText(r.between.responses, r.between.bytes)}` +
              (SETTLES ? `; settles: ${d.replicas.map((x) => settlesText(x.settles, callWall)).join(' | ')}` : '') +
              (d.replicas.some((x) => x.gcs.length > 0) ? `; GC: ${d.replicas.map((x) => gcText(x.gcs, callWall, callWall + r.callMs + r.lastAckMs)).join(' | ')}` : ''),
          );
          if (round > 0) rounds.push(r);
          await sleep(500);
        }
        await sleep(QUIET_WAIT_MS);
        const replicaAfterKiB = replicaPids.map((pid) => rssKiB(pid));
        log(`  replica RSS ${fmt(QUIET_WAIT_MS)} ms after the last change: ${replicaAfterKiB.map(mibText).join(', ')}`);
        runs.push({ topology, sidecars, loadProcesses: loads.length, connections, syncMs, replicaIdleKiB, replicaAfterKiB, etcdKiB, vmManagerKiB, rounds, windows, loadAverage: os.loadavg()[0]! });
      } catch (err) {
        log(`  ${topologyName(topology)} with ${fmt(sidecars)} sidecars did not complete: ${(err as Error).message.slice(-2_000)}`);
        runs.push(failedRun(topology, sidecars, (err as Error).message));
        for (const rest of counts.filter((c) => c > sidecars)) runs.push(failedRun(topology, rest, `not run: ${fmt(sidecars)} sidecars did not complete`));
        break;
      }
    }
  } finally {
    await Promise.all(loads.map((l) => l.stop()));
    await d.stop();
  }
  // The profiles are written as the replicas exit.
  if (CPU_PROF) {
    for (const run of runs) {
      if (run.windows === undefined) continue;
      const windows = run.windows;
      const timelines = d.replicas.map((r) => {
        const file = r.profileDir === null ? undefined : newestProfile(r.profileDir);
        return file === undefined ? null : changeTimelines(file, windows);
      });
      run.rounds.forEach((r, i) => {
        const rel = (v: number): number => v - windows[i]!.t0;
        r.cp = timelines.map((tl) => {
          const x: ChangeTimeline | undefined = tl?.[i];
          return x === undefined ? { rebuildFromMs: NaN, rebuildToMs: NaN, lastPushMs: NaN, busyMs: NaN, gcMs: NaN } : { rebuildFromMs: rel(x.rebuildFromMs), rebuildToMs: rel(x.rebuildToMs), lastPushMs: rel(x.lastPushMs), busyMs: x.busyMs, gcMs: x.gcMs };
        });
        log(`  ${fmt(run.sidecars)} sidecars, round ${r.round}: control plane${r.cp.length > 1 ? 's' : ''}: ${r.cp.map((c) => `rebuild ${msText(c.rebuildFromMs)} → ${msText(c.rebuildToMs)}, last push ${msText(c.lastPushMs)}, busy ${msText(c.busyMs)} (GC ${msText(c.gcMs)})`).join('; ')}; last ACK ${msText(r.lastAckMs)}`);
      });
    }
  }
  return runs;
}

/** A replica's settles from 60 s before a change on, relative to the change's call ("-3,100 ms (120 ms, 250 → 150 MiB)"). */
function settlesText(settles: readonly Settle[], callWall: number): string {
  const near = settles.filter((x) => x.atMs >= callWall - 60_000);
  if (near.length === 0) return 'none in the 60 s before';
  return near.map((x) => `${x.atMs >= callWall ? '+' : ''}${fmt(x.atMs - callWall)} ms (${fmt(x.pauseMs)} ms, ${fmt(mib(x.rssBeforeKiB))} → ${fmt(mib(x.rssAfterKiB))} MiB)`).join(', ');
}

/** BENCH_CPU_PROF: the control plane's part of a change (the slowest replica per round, medians over rounds). */
function cpColumn(r: ReplicaRun): string {
  const worst = (f: (c: NonNullable<Round['cp']>[number]) => number) => median(r.rounds.map((x) => Math.max(...(x.cp ?? []).map(f))));
  return `${msText(worst((c) => c.rebuildFromMs))} / ${msText(worst((c) => c.rebuildToMs))} / ${msText(worst((c) => c.lastPushMs))}; ${msText(worst((c) => c.busyMs))}`;
}

function report(all: ReplicaRun[]): string {
  // By sidecar count, then topology (the runs come topology by topology).
  const runs = [...all].sort((a, b) => a.sidecars - b.sidecars);
  const rows = runs.map((r) => {
    if (r.error !== undefined) return [topologyName(r.topology), fmt(r.sidecars), `did not complete: ${r.error.split('\n')[0]!.slice(0, 120)}`, '', '', '', '', '', '', '', '', '', ...(CPU_PROF ? [''] : [])];
    const worst = Math.max(...r.rounds.map((x) => x.lastAckMs));
    const allUpdated = r.rounds.every((x) => x.updated === r.sidecars && x.errors === 0);
    return [
      topologyName(r.topology),
      `${fmt(r.sidecars)} (${fmt(r.connections)} conn.)`,
      `${msText(median(r.rounds.map((x) => x.lastAckMs)))} / ${msText(worst)}${allUpdated ? '' : ' (not all updated)'}`,
      msText(median(r.rounds.map((x) => x.ackP50Ms))),
      `${(r.syncMs / 1000).toFixed(1)} s`,
      r.replicaIdleKiB.map((k) => fmt(mib(k))).join(' / ') + ' MiB',
      r.replicaAfterKiB.map((k) => fmt(mib(k))).join(' / ') + ' MiB',
      `${fmt(mib(Math.max(...r.rounds.flatMap((x) => x.replicaPeakKiB))))} MiB`,
      median(r.rounds.map((x) => x.replicaCpuS.reduce((a, b) => a + b, 0))).toFixed(2) + ' s',
      r.topology === 'memory' ? '—' : `${median(r.rounds.map((x) => x.vmManagerCpuS)).toFixed(2)} s / ${median(r.rounds.map((x) => x.etcdCpuS)).toFixed(2)} s`,
      r.topology === 'memory' ? '—' : `${mibText(r.etcdKiB)}`,
      `${median(r.rounds.map((x) => x.otherCores)).toFixed(2)} (load ${r.loadAverage.toFixed(1)})`,
      ...(CPU_PROF ? [cpColumn(r)] : []),
    ];
  });
  const met = runs
    .filter((r) => r.error === undefined && r.sidecars === 1000)
    .map((r) => {
      const worst = Math.max(...r.rounds.map((x) => x.lastAckMs));
      const rss = Math.max(...r.replicaIdleKiB);
      return `- ${topologyName(r.topology)}, 1,000 sidecars: last ACK ${msText(worst)} at worst (target < ${ACK_TARGET_MS} ms: ${worst < ACK_TARGET_MS ? 'met' : 'missed'}); largest replica ${mibText(rss)} with its streams (target < ${RSS_TARGET_MIB} MiB: ${mib(rss) < RSS_TARGET_MIB ? 'met' : 'missed'}).`;
    });
  return [
    `## vsockmesh xDS over control-plane replicas on etcd (${new Date().toISOString()})`,
    '',
    `${machineLine()}. ${fmt(VMS)} VMs on ${HYPERVISORS} hypervisors in ${SERVICES} services (${fmt(VMS / SERVICES)} endpoints each); the sidecars are the first VMs (node id = VM id), state-of-the-world ADS, ` +
      `spread over load processes (at least one per replica), each process's streams over at most ${CHANNELS} HTTP/2 connections (real sidecars hold one each)${FLOW_WINDOW ? `, flow-control window ${FLOW_WINDOW} B` : ''}; sidecar i on replica i mod N. A change is one MoveVm; ${ROUNDS} rounds after a warm-up, debounce ${DEBOUNCE_MS} ms.`,
    '',
    mdTable(
      [
        'topology',
        'sidecars',
        'change → last ACK (median / worst)',
        'ACK p50',
        'initial sync',
        'replica RSS, streams open, idle after the sync',
        'replica RSS after the changes',
        'replica peak RSS in a change',
        'replicas CPU per change (sum)',
        'vm-manager / etcd CPU per change',
        'etcd RSS',
        'other cores (load avg)',
        ...(CPU_PROF ? ['control plane, from its profile (median): change → rebuild started / done / last push handed to gRPC; busy'] : []),
      ],
      rows,
    ),
    '',
    ...met,
  ].join('\n');
}

/**
 * Every topology × sidecar count of this invocation; a combination that fails
 * or times out is reported as such, the others still run. `cli`: the control
 * plane's build (BENCH_CLI); the VM manager is always this checkout's.
 */
export async function replicated(cli: string): Promise<{ md: string; json: unknown }> {
  if (etcdBinary() === undefined) throw new Error('etcd not installed (apt-get install -y etcd-server): the replicated xDS benchmark needs it');
  const files = writeFixtures();
  const runs: ReplicaRun[] = [];
  const counts = [...new Set(sidecarCounts())].sort((a, b) => a - b);
  for (const topology of topologies()) {
    try {
      runs.push(...(await measure(topology, counts, files, cli)));
    } catch (err) {
      log(`  ${topologyName(topology)} did not start: ${(err as Error).message.slice(-2_000)}`);
      for (const sidecars of counts) runs.push(failedRun(topology, sidecars, (err as Error).message));
    }
    process.stdout.write(`\n${report(runs)}\n`);
  }
  return { md: report(runs), json: { settings: { vms: VMS, hypervisors: HYPERVISORS, services: SERVICES, rounds: ROUNDS, debounceMs: DEBOUNCE_MS, loadProcesses: LOAD_PROCESSES, channels: CHANNELS, flowControlWindow: FLOW_WINDOW ?? null }, runs } };
}
