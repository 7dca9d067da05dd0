// What a snapshot rebuild costs the control plane in process, without the
// network: the registry (10,000 VMs on 20 hypervisors in 50 services, the
// replicated benchmark's fixtures) read through LocalRegistry, the shared
// snapshot, and the node snapshots of BENCH_NODES registered VMs (default
// 1,000): (1) every node's first snapshot (what the initial sync builds, the
// consistency check included), (2) one VM moving: the shared snapshot made
// again and every node's snapshot with it. CPU time of this process
// (process.cpuUsage), not wall time: a shared machine's load changes the
// wall time, much less the CPU. With BENCH_BEFORE_ROOT (another checkout's
// root, e.g. the before build of a change) its control-plane modules are
// measured in the same process, interleaved with this checkout's, and the
// report gives after / before ratios.
//
// Run: node --import tsx test/bench/xds-rebuild-bench.ts   (env: BENCH_NODES=1000,
//      BENCH_VMS=10000, BENCH_ROUNDS=5, BENCH_BEFORE_ROOT=/work/wt/before). Not a test.

import os from 'node:os';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { fmt, intEnv, log, machineLine, mdTable, median, ROOT, runBench } from './bench-common.js';
import { hvId, serviceName, vmAddress, vmId } from './xds-bench-lib.js';

const VMS = intEnv('BENCH_VMS', 10_000);
const NODES = intEnv('BENCH_NODES', 1_000);
const ROUNDS = intEnv('BENCH_ROUNDS', 5);
const HYPERVISORS = 20;
const SERVICES = 50;

/** The modules of one checkout that a rebuild runs. */
interface Build {
  name: string;
  Registry: new () => { registerHypervisor(h: object): unknown; registerVm(vm: object): unknown; moveVm(id: string, hv: string): unknown };
  LocalRegistry: new (registry: unknown, onChange: () => void) => { state(): { vms: readonly object[]; hypervisors: readonly object[]; byId: ReadonlyMap<string, object> } };
  SharedSnapshots: new () => { snapshot(mesh: unknown, view: unknown): unknown };
  NodeSnapshots: new () => { snapshotFor(vm: unknown, mesh: unknown, shared: unknown): unknown };
  parseMeshConfig: (raw: unknown) => unknown;
}

async function load(name: string, root: string): Promise<Build> {
  const m = async (file: string) => import(pathToFileURL(path.join(root, file)).href);
  const cp = 'xds/control-plane';
  return {
    name,
    Registry: (await m('xds/vm-manager/registry.ts')).Registry,
    LocalRegistry: (await m(`${cp}/registry-source.ts`)).LocalRegistry,
    SharedSnapshots: (await m(`${cp}/shared-snapshot.ts`)).SharedSnapshots,
    NodeSnapshots: (await m(`${cp}/node-snapshots.ts`)).NodeSnapshots,
    parseMeshConfig: (await m(`${cp}/mesh.ts`)).parseMeshConfig,
  };
}

const cpuMs = (f: () => void): number => {
  const t = process.cpuUsage();
  f();
  const d = process.cpuUsage(t);
  return (d.user + d.system) / 1000;
};

interface Figures {
  firstMs: number;
  moveMs: number;
}

/** One round with `b`: a fresh registry and memo, every node's first snapshot, then one VM moving. */
function round(b: Build, r: number): Figures {
  const registry = new b.Registry();
  const hypervisors = Array.from({ length: HYPERVISORS }, (_, h) => hvId(h));
  for (const id of hypervisors) registry.registerHypervisor({ hypervisorId: id, vsockMode: 'host-relay', relayPort: 15100 });
  const width = String(VMS - 1).length;
  for (let i = 0; i < VMS; i++) {
    registry.registerVm({
      vmId: vmId(i, width),
      hypervisorId: hypervisors[Math.floor(i / SERVICES) % HYPERVISORS]!,
      vsockCid: 3 + i,
      addresses: [vmAddress(i)],
      sidecar: { tcpPort: 15006, vsockPort: 15007 },
      services: [{ name: serviceName(i % SERVICES), port: 8080 }],
      labels: { app: serviceName(i % SERVICES) },
    });
  }
  const mesh = b.parseMeshConfig({ services: Array.from({ length: SERVICES }, (_, s) => ({ name: serviceName(s), port: 8080, outbound_port: 18000 + s })) });
  const source = new b.LocalRegistry(registry, () => {});
  const shared = new b.SharedSnapshots();
  const nodes = new b.NodeSnapshots();
  const nodeIds = Array.from({ length: NODES }, (_, i) => vmId(i, width));
  const rebuild = (): void => {
    const state = source.state();
    const s = shared.snapshot(mesh, state);
    for (const id of nodeIds) nodes.snapshotFor(state.byId.get(id), mesh, s);
  };
  const firstMs = cpuMs(rebuild);
  const moved = nodeIds[(r * 211 + 7) % NODES]!;
  registry.moveVm(moved, hypervisors[(r + 3) % HYPERVISORS]!);
  const moveMs = cpuMs(rebuild);
  return { firstMs, moveMs };
}

async function main(): Promise<void> {
  const builds = [await load('this checkout', ROOT)];
  const beforeRoot = process.env.BENCH_BEFORE_ROOT;
  if (beforeRoot) builds.unshift(await load(`before (${beforeRoot})`, path.resolve(beforeRoot)));
  log(`${machineLine()}; ${fmt(VMS)} VMs, ${fmt(NODES)} nodes, ${ROUNDS} rounds after a warm-up each, builds: ${builds.map((b) => b.name).join(', ')}`);
  const results = new Map<string, Figures[]>(builds.map((b) => [b.name, []]));
  for (const b of builds) round(b, 0); // warm-up: JIT
  for (let r = 1; r <= ROUNDS; r++) {
    // Interleaved, the order alternating.
    for (const b of r % 2 === 0 ? [...builds].reverse() : builds) {
      const f = round(b, r);
      results.get(b.name)!.push(f);
      log(`  round ${r} ${b.name}: first snapshots ${fmt(f.firstMs)} ms CPU, one VM moves ${fmt(f.moveMs, 1)} ms CPU`);
    }
  }
  const med = (name: string, f: (x: Figures) => number): number => median(results.get(name)!.map(f));
  const rows = builds.map((b) => [b.name, `${fmt(med(b.name, (x) => x.firstMs))} ms`, `${fmt(med(b.name, (x) => x.moveMs), 1)} ms`]);
  if (builds.length === 2) {
    const [a, b] = builds.map((x) => x.name) as [string, string];
    rows.push(['this checkout / before', `${fmt(med(b, (x) => x.firstMs) / med(a, (x) => x.firstMs), 2)}×`, `${fmt(med(b, (x) => x.moveMs) / med(a, (x) => x.moveMs), 2)}×`]);
  }
  process.stdout.write(
    `\n${machineLine()} (5 and 15 min: ${os.loadavg().slice(1).map((x) => x.toFixed(1)).join(', ')}); ${fmt(VMS)} VMs, ${fmt(NODES)} node snapshots, CPU ms of this process, medians of ${ROUNDS} rounds\n\n` +
      mdTable(['build', `every node's first snapshot (${fmt(NODES)} nodes, checked)`, 'one VM moves: shared + every node snapshot'], rows) +
      '\n',
  );
}

await runBench(main);
