// The VM manager under load: 10,000 VMs on 50 hypervisors registered over
// the gRPC API, then Resolve over one gRPC channel with 64 calls outstanding
// (throughput) and with 1 outstanding (latency), destinations mixed by IP:port,
// VM id and service name, callers drawn from the registered VMs.
//
// The VM manager is the built CLI in a child process (`node <shebang flags>
// dist/proxy/cmd/cli.js vm-manager --listen 127.0.0.1:0 --no-admin`, log level
// info: one line per registered VM, drained by this process). The client is
// xds/vm-manager/client.ts in this process (one VmManagerClient, one channel).
// RSS is the child's VmRSS from /proc/PID/status: after start (empty
// registry), after registering, after the Resolve runs.
//
// Durability (the state on disk, every write fdatasync'ed before the answer):
// one registration's time, one at a time, with 100, 1,000 and 10,000 VMs
// registered (each sample registers a new VM, timed, then deregisters it, so
// the registry keeps its size; medians of rounds, each with a VM manager of
// its own): a write's cost must not grow with the registry. Then registrations/s one at a time and with 64 outstanding,
// memory only against the state file (group commit: registrations that
// arrive during a write share the next one), in alternating rounds. The
// state files are in a temporary directory of os.tmpdir() (on this machine
// ext4 on the root disk: fdatasync reaches the disk).
//
// Run: npm run bench:vm-manager   (env: BENCH_ROUNDS=3, BENCH_SECONDS=4,
//      BENCH_WARMUP_MS=1000, BENCH_VMS=10000, BENCH_HYPERVISORS=50,
//      BENCH_CONCURRENCY=64, BENCH_NODE_ARGS="..." for the VM manager,
//      BENCH_MAX_OTHER_CORES=0.3 and BENCH_MAX_REPEATS=4: runs disturbed by other work are repeated,
//      BENCH_SAMPLES=300 registrations timed per registry size, BENCH_DURABLE_OPS=2000 registrations per
//      throughput run (a quarter of them one at a time), BENCH_PARTS=registry,durability)
// Not a test: `npm test` does not run it.

import { accessSync, constants, mkdtempSync, readdirSync, rmSync, statSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { VmManagerClient } from '../../xds/vm-manager/client.js';
import type { Destination, HypervisorRecord, VmRecord } from '../../proxy/resolve/types.js';
import {
  CLI,
  cliNodeFlags,
  cpuSeconds,
  fmt,
  intEnv,
  log,
  machineBusySeconds,
  machineLine,
  mdTable,
  median,
  metricSum,
  httpGet,
  onCleanup,
  percentile,
  QuietRuns,
  rssKiB,
  runBench,
  sleep,
  startVmManagerCli,
  writeReport,
} from './bench-common.js';

const ROUNDS = intEnv('BENCH_ROUNDS', 3);
const SECONDS = intEnv('BENCH_SECONDS', 4);
const WARMUP_MS = intEnv('BENCH_WARMUP_MS', 1000);
const VMS = intEnv('BENCH_VMS', 10_000);
const HYPERVISORS = intEnv('BENCH_HYPERVISORS', 50);
const CONCURRENCY = intEnv('BENCH_CONCURRENCY', 64);
const REGISTER_CONCURRENCY = 64;
const SAMPLES = intEnv('BENCH_SAMPLES', 300);
const DURABLE_OPS = intEnv('BENCH_DURABLE_OPS', 2_000);
const SIZES = [100, 1_000, 10_000].filter((n) => n <= VMS);
const PARTS = new Set((process.env.BENCH_PARTS ?? 'registry,durability').split(','));
/** Resolve runs disturbed by other work are repeated, up to 4 times in all. */
const quiet = new QuietRuns<ResolveRun>(4);
const SERVICES = Math.max(1, Math.floor(VMS / 20)); // 20 providers per service
const APP_PORT = 8080;
const KINDS = ['ip_port', 'vm', 'service'] as const;
type Kind = (typeof KINDS)[number];

/** Deterministic PRNG (mulberry32), so every run asks the same questions. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const vmId = (i: number) => `vm-${String(i).padStart(5, '0')}`;
const hvId = (h: number) => `hv-${String(h).padStart(2, '0')}`;
const ipv4 = (i: number) => `10.${1 + (i >>> 16)}.${(i >>> 8) & 255}.${i & 255}`;

function hypervisors(): HypervisorRecord[] {
  // Mostly KVM (host relay), some direct vsock.
  return Array.from({ length: HYPERVISORS }, (_, h) => (h % 5 === 4 ? { hypervisorId: hvId(h), vsockMode: 'direct', relayPort: 0 } : { hypervisorId: hvId(h), vsockMode: 'host-relay', relayPort: 15100 }));
}

function vmRecord(i: number): Omit<VmRecord, 'generation' | 'leaseExpiresAt'> {
  const h = i % HYPERVISORS;
  const service = `svc-${i % SERVICES}`;
  return {
    vmId: vmId(i),
    hypervisorId: hvId(h),
    vsockCid: 3 + Math.floor(i / HYPERVISORS),
    addresses: [ipv4(i), `fd00::${(i + 1).toString(16)}`],
    sidecar: { tcpPort: 15006, vsockPort: 15007 },
    services: [{ name: service, port: APP_PORT }],
    labels: { app: service, env: 'bench', rack: `r${h % 10}` },
  };
}

interface Query {
  caller: string;
  destination: Destination;
  kind: Kind;
}

function queries(n: number): Query[] {
  const rand = prng(42);
  const pick = (max: number) => Math.floor(rand() * max);
  return Array.from({ length: n }, (_, q) => {
    const kind = KINDS[q % KINDS.length]!;
    const target = pick(VMS);
    const destination: Destination =
      kind === 'ip_port' ? { kind, ip: ipv4(target), port: APP_PORT } : kind === 'vm' ? { kind, vmId: vmId(target) } : { kind, name: `svc-${pick(SERVICES)}` };
    return { caller: vmId(pick(VMS)), destination, kind };
  });
}

interface ResolveRun {
  round: number;
  concurrency: number;
  callsPerSec: number;
  calls: number;
  seconds: number;
  p50us: number;
  p99us: number;
  p999us: number;
  byKindP50us: Record<Kind, number>;
  errors: number;
  firstError: string;
  notFound: number;
  serverCpuUsPerCall: number;
  clientCpuUsPerCall: number;
  /** CPU (cores, averaged over the window) used by processes other than the VM manager and this one: noise. */
  otherCores: number;
}

/** `concurrency` loops calling Resolve back to back; counts calls completed in the window, latency of those started in it. */
async function resolveLoad(client: VmManagerClient, qs: Query[], concurrency: number, pid: number, round: number): Promise<ResolveRun> {
  let next = 0;
  let phase: 'warmup' | 'measure' | 'stopping' = 'warmup';
  let calls = 0;
  let errors = 0;
  let firstError = '';
  let notFound = 0;
  const latencies: number[] = [];
  const byKind: Record<Kind, number[]> = { ip_port: [], vm: [], service: [] };
  const loop = async (): Promise<void> => {
    while (phase !== 'stopping') {
      const q = qs[next++ % qs.length]!;
      const inWindow = phase === 'measure';
      const t0 = performance.now();
      try {
        const r = await client.resolve(q.caller, q.destination, { timeoutMs: 10_000 });
        if (!r.found) notFound++;
        if (phase === 'measure') calls++;
        if (inWindow && phase === 'measure') {
          const us = (performance.now() - t0) * 1000;
          latencies.push(us);
          byKind[q.kind].push(us);
        }
      } catch (err) {
        errors++;
        firstError ||= (err as Error).message;
      }
    }
  };
  const loops = Array.from({ length: concurrency }, loop);
  await sleep(WARMUP_MS);
  phase = 'measure';
  const cpuServer0 = cpuSeconds(pid);
  const cpuClient0 = process.cpuUsage();
  const busy0 = machineBusySeconds();
  const t0 = performance.now();
  await sleep(SECONDS * 1000);
  const seconds = (performance.now() - t0) / 1000;
  const counted = calls;
  const serverCpu = cpuSeconds(pid) - cpuServer0;
  const clientCpu = process.cpuUsage(cpuClient0);
  const busy = machineBusySeconds() - busy0;
  phase = 'stopping';
  await Promise.all(loops);
  return {
    round,
    concurrency,
    callsPerSec: counted / seconds,
    calls: counted,
    seconds,
    p50us: percentile(latencies, 50),
    p99us: percentile(latencies, 99),
    p999us: percentile(latencies, 99.9),
    byKindP50us: { ip_port: percentile(byKind.ip_port, 50), vm: percentile(byKind.vm, 50), service: percentile(byKind.service, 50) },
    errors,
    firstError,
    notFound,
    serverCpuUsPerCall: (serverCpu / counted) * 1e6,
    clientCpuUsPerCall: (clientCpu.user + clientCpu.system) / counted,
    otherCores: Math.max(0, (busy - serverCpu - (clientCpu.user + clientCpu.system) / 1e6) / seconds),
  };
}

async function registryBench(machine: string): Promise<string> {
  log(`${VMS} VMs on ${HYPERVISORS} hypervisors, ${SERVICES} services; rounds ${ROUNDS}, ${SECONDS}s per run after ${WARMUP_MS} ms warm-up, ${CONCURRENCY} and 1 outstanding; ${machine}`);

  const vmm = await startVmManagerCli(['--no-admin']);
  const pid = vmm.daemon.pid;
  const address = `127.0.0.1:${vmm.port}`;
  const client = new VmManagerClient(address, { defaultTimeoutMs: 10_000, transport: { insecure: true } });
  try {
    await client.waitForReady(10_000);
    await sleep(1_000);
    const rssStart = rssKiB(pid);
    log(`vm-manager pid ${pid} at ${address}; RSS with an empty registry ${fmt(rssStart / 1024, 1)} MiB`);

    // ---- registration -----------------------------------------------------------
    for (const h of hypervisors()) await client.registerHypervisor(h);
    const cpuReg0 = cpuSeconds(pid);
    const clientReg0 = process.cpuUsage();
    const busyReg0 = machineBusySeconds();
    const regStart = performance.now();
    let nextVm = 0;
    let registered = 0;
    // When each tenth of the VMs was in: registration cost as the registry grows.
    const tenth = Math.max(1, Math.floor(VMS / 10));
    const marks: number[] = [];
    const registerLoop = async (): Promise<void> => {
      while (nextVm < VMS) {
        await client.registerVm(vmRecord(nextVm++));
        if (++registered % tenth === 0) marks.push(performance.now());
      }
    };
    await Promise.all(Array.from({ length: REGISTER_CONCURRENCY }, registerLoop));
    const regSeconds = (performance.now() - regStart) / 1000;
    const firstTenthRate = marks.length > 0 ? tenth / ((marks[0]! - regStart) / 1000) : NaN;
    const lastTenthRate = marks.length >= 2 ? tenth / ((marks[marks.length - 1]! - marks[marks.length - 2]!) / 1000) : NaN;
    const tenthRates = marks.map((m, i) => tenth / ((m - (i === 0 ? regStart : marks[i - 1]!)) / 1000));
    const regCpu = cpuSeconds(pid) - cpuReg0;
    const clientReg = process.cpuUsage(clientReg0);
    const regOtherCores = Math.max(0, (machineBusySeconds() - busyReg0 - regCpu - (clientReg.user + clientReg.system) / 1e6) / regSeconds);
    const listed = await client.listVms();
    if (listed.vms.length !== VMS) throw new Error(`registered ${VMS} VMs but ListVms says ${listed.vms.length}`);
    await sleep(2_000);
    const rssRegistered = rssKiB(pid);
    log(
      `registered ${fmt(VMS)} VMs in ${regSeconds.toFixed(2)} s (${fmt(VMS / regSeconds)} VMs/s; first tenth ${fmt(firstTenthRate)}/s, last ${fmt(lastTenthRate)}/s; ${fmt((regCpu / VMS) * 1e6)} server CPU-µs each); ` +
        `RSS ${fmt(rssRegistered / 1024, 1)} MiB (+${fmt((rssRegistered - rssStart) / 1024, 1)} MiB)`,
    );

    // ---- Resolve ----------------------------------------------------------------
    const qs = queries(30_000);
    const runs: ResolveRun[] = [];
    const started = Date.now();
    for (let round = 1; round <= ROUNDS; round++) {
      const order = round % 2 === 1 ? [CONCURRENCY, 1] : [1, CONCURRENCY];
      for (const c of order) {
        const kept = await quiet.measure(async () => {
          const r = await resolveLoad(client, qs, c, pid, round);
          log(
            `round ${round}/${ROUNDS}, ${String(c).padStart(2)} outstanding: ${fmt(r.callsPerSec)} calls/s, p50 ${fmt(r.p50us)} µs, p99 ${fmt(r.p99us)} µs, ` +
              `server ${fmt(r.serverCpuUsPerCall, 1)} CPU-µs/call, client ${fmt(r.clientCpuUsPerCall, 1)} CPU-µs/call, errors ${r.errors}${r.firstError ? ` (${r.firstError})` : ''}, ` +
              `not found ${r.notFound}, other processes ${r.otherCores.toFixed(2)} cores`,
          );
          return r;
        });
        runs.push(kept);
      }
    }
    const elapsed = Math.round((Date.now() - started) / 1000);
    await sleep(1_000);
    const rssAfter = rssKiB(pid);

    const med = (c: number, f: (r: ResolveRun) => number): number => median(runs.filter((r) => r.concurrency === c).map(f));
    const both = (label: string, f: (r: ResolveRun) => number, digits: number, unit: string): string[] => [label, `${fmt(med(CONCURRENCY, f), digits)}${unit}`, `${fmt(med(1, f), digits)}${unit}`];
    const resolveTable = mdTable(
      ['Resolve over one channel (median of rounds)', `${CONCURRENCY} outstanding`, '1 outstanding'],
      [
        both('Calls/s', (r) => r.callsPerSec, 0, ''),
        both('Latency p50', (r) => r.p50us, 0, ' µs'),
        both('Latency p99', (r) => r.p99us, 0, ' µs'),
        both('Latency p99.9', (r) => r.p999us, 0, ' µs'),
        ...KINDS.map((k) => both(`Latency p50, by ${k === 'ip_port' ? 'IP:port' : k === 'vm' ? 'VM id' : 'service'}`, (r) => r.byKindP50us[k], 0, ' µs')),
        both('VM manager CPU per call', (r) => r.serverCpuUsPerCall, 1, ' µs'),
        both('Client (this process) CPU per call', (r) => r.clientCpuUsPerCall, 1, ' µs'),
        both('CPU used by other processes on the machine (noise)', (r) => r.otherCores, 2, ' cores'),
      ],
    );
    const registryTable = mdTable(
      ['VM manager', 'value'],
      [
        ['RSS, empty registry (after start)', `${fmt(rssStart / 1024, 1)} MiB`],
        [`RSS, ${fmt(VMS)} VMs registered`, `${fmt(rssRegistered / 1024, 1)} MiB (+${fmt((rssRegistered - rssStart) / 1024, 1)} MiB, ${fmt(((rssRegistered - rssStart) * 1024) / VMS)} B per VM)`],
        ['RSS, after the Resolve runs', `${fmt(rssAfter / 1024, 1)} MiB`],
        [`Registration of ${fmt(VMS)} VMs (RegisterVm, ${REGISTER_CONCURRENCY} outstanding)`, `${regSeconds.toFixed(2)} s (${fmt(VMS / regSeconds)} VMs/s)`],
        ['VM manager CPU per registration', `${fmt((regCpu / VMS) * 1e6)} µs`],
        [`Registration rate, first vs last ${fmt(tenth)} VMs`, `${fmt(firstTenthRate)} vs ${fmt(lastTenthRate)} VMs/s`],
      ],
    );
    const errors = runs.reduce((s, r) => s + r.errors, 0);
    const notFound = runs.reduce((s, r) => s + r.notFound, 0);
    const md = [
      `## vsockmesh VM manager benchmark (${new Date().toISOString()})`,
      '',
      `Loopback, ${machine}, shared by the VM manager and the client. ${fmt(VMS)} VMs on ${HYPERVISORS} hypervisors (two addresses, one of ${fmt(SERVICES)} services, three labels each). ` +
        `Resolve: medians of ${ROUNDS} rounds (order of the two runs alternated), ${SECONDS} s per run after ${WARMUP_MS} ms of warm-up; ${elapsed} s of runs.`,
      '',
      registryTable,
      '',
      resolveTable,
      '',
      'Notes:',
      `- VM manager: \`node ${cliNodeFlags().join(' ')} dist/proxy/cmd/cli.js vm-manager --listen 127.0.0.1:0 --no-admin\` (log level info: one log line per registered VM), RSS from /proc/PID/status VmRSS, no GC forced.`,
      '- Client: one VmManagerClient (xds/vm-manager/client.ts, one gRPC channel over plain TCP) in the bench process; the two processes share the 2 cores, so the client\'s CPU is part of what limits calls/s.',
      `- Queries cycle IP:port, VM id, service (a fixed pseudo-random list of ${fmt(qs.length)}), each from a random registered caller; calls/s counts calls completed in the window, latency those started in it (call → answer decoded).`,
      `- Errors over all runs: ${errors}; answers not found: ${notFound} (every query names a registered VM, address or service).`,
      `- The machine is shared: a Resolve run during which other processes used more than ${quiet.maxOtherCores} cores is repeated (at most ${quiet.maxRepeats} repeats) and the quietest attempt kept; ` +
        `${quiet.discarded.length} discarded this time${quiet.discarded.length ? ` (${quiet.discarded.map((d) => `c${d.concurrency} round ${d.round}: ${d.otherCores.toFixed(2)} cores, ${fmt(d.callsPerSec)} calls/s`).join('; ')})` : ''}. ` +
        `During registration other processes used ${regOtherCores.toFixed(2)} cores (not repeated).`,
    ].join('\n');
    writeReport('vm-manager-registry', md, {
      date: new Date().toISOString(),
      machine,
      settings: { rounds: ROUNDS, seconds: SECONDS, warmupMs: WARMUP_MS, vms: VMS, hypervisors: HYPERVISORS, services: SERVICES, concurrency: CONCURRENCY, registerConcurrency: REGISTER_CONCURRENCY },
      rssKiB: { start: rssStart, registered: rssRegistered, afterResolve: rssAfter },
      registration: { seconds: regSeconds, vmsPerSec: VMS / regSeconds, serverCpuUsPerVm: (regCpu / VMS) * 1e6, firstTenthVmsPerSec: firstTenthRate, lastTenthVmsPerSec: lastTenthRate, tenthsVmsPerSec: tenthRates },
      medians: Object.fromEntries(
        [CONCURRENCY, 1].map((c) => [
          `c${c}`,
          { callsPerSec: med(c, (r) => r.callsPerSec), p50us: med(c, (r) => r.p50us), p99us: med(c, (r) => r.p99us), p999us: med(c, (r) => r.p999us), serverCpuUsPerCall: med(c, (r) => r.serverCpuUsPerCall) },
        ]),
      ),
      runs,
      discarded: quiet.discarded,
      markdown: md,
    });
    return md;
  } finally {
    client.close();
    await vmm.daemon.stop();
  }
}

// ---- durability ---------------------------------------------------------------------

/** A VM the durability runs add: its own CIDs and addresses, away from vmRecord's. */
function extraVm(tag: string, i: number): Omit<VmRecord, 'generation' | 'leaseExpiresAt'> {
  return {
    vmId: `${tag}-${i}`,
    hypervisorId: hvId(i % HYPERVISORS),
    vsockCid: 1_000_000 + i,
    addresses: [`10.200.${(i >>> 8) & 255}.${i & 255}`, `fd01::${(i + 1).toString(16)}`],
    sidecar: { tcpPort: 15006, vsockPort: 15007 },
    services: [{ name: `svc-${i % SERVICES}`, port: APP_PORT }],
    labels: { app: `svc-${i % SERVICES}`, env: 'bench', rack: `r${i % 10}` },
  };
}

/** A VM manager child (memory only, or with a state file in a fresh temporary directory), its client, and the state files' bytes. */
async function durableVmManager(mode: 'memory' | 'file') {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'vsockmesh-bench-state-'));
  onCleanup(() => rmSync(dir, { recursive: true, force: true }));
  const statePath = path.join(dir, 'vms.json');
  const vmm = await startVmManagerCli(['--admin-port', '0', ...(mode === 'file' ? ['--state-file', statePath] : [])]);
  const client = new VmManagerClient(`127.0.0.1:${vmm.port}`, { defaultTimeoutMs: 30_000, transport: { insecure: true } });
  onCleanup(() => client.close());
  await client.waitForReady(10_000);
  for (const h of hypervisors()) await client.registerHypervisor(h);
  const stateBytes = (): number => readdirSync(dir).reduce((sum, name) => sum + statSync(path.join(dir, name)).size, 0);
  const stats = async (): Promise<{ writes: number; changes: number }> => {
    const text = (await httpGet(vmm.adminPort!, '/stats')).body;
    return { writes: metricSum(text, 'vsockmesh_vm_manager_state_writes_total', { result: 'ok' }), changes: metricSum(text, 'vsockmesh_vm_manager_state_changes_total') };
  };
  return { vmm, client, stateBytes, stats, stop: () => vmm.daemon.stop() };
}

/** `count` registrations of new VMs with `concurrency` outstanding; each call's time. */
async function registerMany(client: VmManagerClient, make: (i: number) => Omit<VmRecord, 'generation' | 'leaseExpiresAt'>, from: number, count: number, concurrency: number): Promise<{ seconds: number; latenciesMs: number[] }> {
  let next = from;
  const latenciesMs: number[] = [];
  const started = performance.now();
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (next < from + count) {
        const vm = make(next++);
        const t0 = performance.now();
        await client.registerVm(vm);
        latenciesMs.push(performance.now() - t0);
      }
    }),
  );
  return { seconds: (performance.now() - started) / 1000, latenciesMs };
}

interface SizeRun {
  round: number;
  /** The registry size, and how it was reached ("100 again": shrunk back from the largest). */
  label: string;
  vms: number;
  p50ms: number;
  p99ms: number;
  meanMs: number;
  stateBytes: number;
}

/** The sizes measured: growing, then back to the smallest (a process that has run a while, on a registry that was large). */
const sizeSteps = (): Array<{ vms: number; label: string }> => [...SIZES.map((vms) => ({ vms, label: fmt(vms) })), { vms: SIZES[0]!, label: `${fmt(SIZES[0]!)} again` }];

/** One registration's time at each registry size, the state on disk; a VM manager of its own per round. */
async function registrationBySize(round: number): Promise<SizeRun[]> {
  const { client, stateBytes, stop } = await durableVmManager('file');
  const runs: SizeRun[] = [];
  let registered = 0;
  try {
    for (const { vms, label } of sizeSteps()) {
      if (vms > registered) await registerMany(client, vmRecord, registered, vms - registered, REGISTER_CONCURRENCY);
      let d = vms;
      await Promise.all(
        Array.from({ length: REGISTER_CONCURRENCY }, async () => {
          while (d < registered) await client.deregisterVm(vmId(d++));
        }),
      );
      registered = vms;
      const latencies: number[] = [];
      // A fifth more first, not counted (the registry just grew or shrank).
      const warmup = Math.floor(SAMPLES / 5);
      for (let k = 0; k < warmup + SAMPLES; k++) {
        const probe = extraVm('probe', k);
        const t0 = performance.now();
        await client.registerVm(probe);
        if (k >= warmup) latencies.push(performance.now() - t0);
        await client.deregisterVm(probe.vmId);
      }
      const run = { round, label, vms, p50ms: percentile(latencies, 50), p99ms: percentile(latencies, 99), meanMs: latencies.reduce((a, b) => a + b, 0) / latencies.length, stateBytes: stateBytes() };
      log(`round ${round}/${ROUNDS}, ${label} VMs: one registration p50 ${fmt(run.p50ms, 2)} ms, p99 ${fmt(run.p99ms, 2)} ms (${SAMPLES} samples); state files ${fmt(run.stateBytes / 1024)} KiB`);
      runs.push(run);
    }
  } finally {
    await stop();
  }
  return runs;
}

interface ThroughputRun {
  mode: 'memory' | 'file';
  concurrency: number;
  round: number;
  perSec: number;
  p50ms: number;
  changesPerWrite: number;
}

/** Registrations/s, memory only against the state file, one at a time and REGISTER_CONCURRENCY outstanding, in alternating rounds. */
async function registrationThroughput(): Promise<ThroughputRun[]> {
  const managers = { memory: await durableVmManager('memory'), file: await durableVmManager('file') };
  const runs: ThroughputRun[] = [];
  const next = { memory: 0, file: 0 };
  try {
    for (let round = 1; round <= ROUNDS; round++) {
      const modes = round % 2 === 1 ? (['memory', 'file'] as const) : (['file', 'memory'] as const);
      for (const concurrency of [1, REGISTER_CONCURRENCY]) {
        for (const mode of modes) {
          const m = managers[mode];
          const count = concurrency === 1 ? Math.max(1, Math.floor(DURABLE_OPS / 4)) : DURABLE_OPS;
          const before = await m.stats();
          const r = await registerMany(m.client, (i) => extraVm(`tp-${mode}`, i), next[mode], count, concurrency);
          const after = await m.stats();
          const names = Array.from({ length: count }, (_, i) => `tp-${mode}-${next[mode] + i}`);
          next[mode] += count;
          // Back to the same registry size for the next run (not timed).
          let d = 0;
          await Promise.all(Array.from({ length: REGISTER_CONCURRENCY }, async () => {
            while (d < names.length) await m.client.deregisterVm(names[d++]!);
          }));
          const writes = after.writes - before.writes;
          const run = { mode, concurrency, round, perSec: count / r.seconds, p50ms: percentile(r.latenciesMs, 50), changesPerWrite: writes > 0 ? (after.changes - before.changes) / writes : NaN };
          log(`round ${round}/${ROUNDS}, ${mode === 'file' ? 'state file' : 'memory only'}, ${concurrency} outstanding: ${fmt(run.perSec)} registrations/s, p50 ${fmt(run.p50ms, 2)} ms${mode === 'file' ? `, ${fmt(run.changesPerWrite, 1)} changes per write` : ''}`);
          runs.push(run);
        }
      }
    }
  } finally {
    await managers.memory.stop();
    await managers.file.stop();
  }
  return runs;
}

async function durabilityBench(machine: string): Promise<string> {
  log(`durability: registration time at ${SIZES.map((n) => fmt(n)).join(', ')} VMs (${SAMPLES} samples each), then registrations/s memory only vs state file, ${ROUNDS} rounds`);
  const sizes: SizeRun[] = [];
  for (let round = 1; round <= ROUNDS; round++) sizes.push(...(await registrationBySize(round)));
  const throughput = await registrationThroughput();
  const bySize = (label: string, f: (r: SizeRun) => number): number => median(sizes.filter((r) => r.label === label).map(f));
  const steps = sizeSteps();
  const base = bySize(steps.at(-1)!.label, (r) => r.p50ms);
  const sizeTable = mdTable(
    [`VMs registered (state file, fdatasync; median of ${ROUNDS})`, 'one registration p50', 'p99', `p50 vs ${steps.at(-1)!.label}`, 'state files'],
    steps.map(({ label }) => {
      const p50 = bySize(label, (r) => r.p50ms);
      return [label, `${fmt(p50, 2)} ms`, `${fmt(bySize(label, (r) => r.p99ms), 2)} ms`, `${(p50 / base).toFixed(2)}×`, `${fmt(bySize(label, (r) => r.stateBytes) / 1024)} KiB`];
    }),
  );
  const med = (mode: 'memory' | 'file', c: number, f: (r: ThroughputRun) => number): number => median(throughput.filter((r) => r.mode === mode && r.concurrency === c).map(f));
  const row = (c: number): string[] => {
    const memory = med('memory', c, (r) => r.perSec);
    const file = med('file', c, (r) => r.perSec);
    return [c === 1 ? 'one at a time' : `${c} outstanding`, fmt(memory), fmt(file), `${(file / memory).toFixed(2)}×`, `${fmt(med('memory', c, (r) => r.p50ms), 2)} / ${fmt(med('file', c, (r) => r.p50ms), 2)} ms`, fmt(med('file', c, (r) => r.changesPerWrite), 1)];
  };
  const throughputTable = mdTable(
    [`registrations/s (median of ${ROUNDS})`, 'memory only', 'state file, fdatasync', 'file / memory', 'p50 memory / file', 'registrations per write'],
    [row(1), row(REGISTER_CONCURRENCY)],
  );
  const md = [
    `## VM manager durability (${new Date().toISOString()})`,
    '',
    `${machine}; state files in ${os.tmpdir()}. Each registration is answered after its change is appended to the log and fdatasync'ed.`,
    '',
    sizeTable,
    '',
    throughputTable,
    '',
    `Notes: a sample registers a new VM (timed) and deregisters it (not timed); ${SAMPLES} samples per size after ${Math.floor(SAMPLES / 5)} not counted, a VM manager of its own per round; "${fmt(SIZES[0] ?? 0)} again": the registry shrunk back from ${fmt(SIZES.at(-1) ?? 0)} (the first ${fmt(SIZES[0] ?? 0)} ran in a process just started). Throughput runs register ${fmt(DURABLE_OPS)} new VMs with ${REGISTER_CONCURRENCY} outstanding, ${fmt(Math.floor(DURABLE_OPS / 4))} one at a time, ` +
      'then deregister them (not timed); "registrations per write" is changes over fdatasyncs from /stats (group commit).',
  ].join('\n');
  writeReport('vm-manager-durability', md, { date: new Date().toISOString(), machine, sizes, throughput, markdown: md });
  return md;
}

async function main(): Promise<void> {
  accessSync(CLI, constants.R_OK);
  const machine = machineLine();
  const reports: string[] = [];
  if (PARTS.has('registry')) reports.push(await registryBench(machine));
  if (PARTS.has('durability')) reports.push(await durabilityBench(machine));
  process.stdout.write(`\n${reports.join('\n\n')}\n\nreports in .bench/ (vm-manager-*.md and .json)\n`);
}

await runBench(main);
