// A real, unmodified xDS client through our control plane: the stock
// @grpc/grpc-js-xds (test/fixtures/xds-client.mjs, a child process with its
// bootstrap in GRPC_XDS_BOOTSTRAP_CONFIG) calls `xds:///greeter`. The control
// plane serves it the API listener, route configuration, EDS cluster and
// endpoints of mesh service "greeter", built from the VM registry:
//   1. only vm-a (backend-a) serves greeter: every call reaches backend-a;
//   2. the registry moves greeter to vm-b: new EDS, every call reaches backend-b
//      (backend-a still runs, so only the push can explain the move), none fails;
//   3. greeter balances by least_request: the client ACKs the cluster (it runs
//      round robin, listed after least_request) and every call still succeeds;
//   4. greeter leaves the mesh: listener and cluster are no longer served, calls
//      fail with UNAVAILABLE.

import test, { type ExecutionContext } from 'ava';
import { spawn, type ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { createLogger } from '../../proxy/runtime/log.js';
import { ControlPlane } from '../../xds/control-plane/control-plane.js';
import { MeshStore } from '../../xds/control-plane/mesh-store.js';
import { Registry } from '../../xds/vm-manager/registry.js';
import { LogCapture } from '../helpers/sidecars.js';
import { HV1, vm } from '../helpers/vm-manager.js';
import { waitFor } from '../helpers/apps.js';
import { TYPE_URLS } from '../../xds/envoy/proto.js';

const FIXTURE = fileURLToPath(new URL('../fixtures/xds-client.mjs', import.meta.url));
const PROTO = fileURLToPath(new URL('../fixtures/greeter.proto', import.meta.url));
const UNAVAILABLE = grpc.status.UNAVAILABLE; // 14
const CLIENT_NODE = 'grpc-xds-interop-client';
/** What the client traces on stderr (kept for assertion messages). */
const GRPC_TRACE = 'xds_client,xds_resolver,xds_dependency_manager,cds_balancer,xds_cluster_impl,priority,weighted_target,round_robin,resolving_load_balancer';

interface CallResult {
  ok: string[];
  errors: number[];
  details: string[];
}

// ---- greeter backends ---------------------------------------------------------------

interface GreeterPackage {
  vsockmesh: { test: { Greeter: grpc.ServiceClientConstructor } };
}

function greeterService(): grpc.ServiceDefinition {
  const definition = protoLoader.loadSync(PROTO, { keepCase: true, defaults: true });
  return (grpc.loadPackageDefinition(definition) as unknown as GreeterPackage).vsockmesh.test.Greeter.service;
}

interface Backend {
  name: string;
  host: string;
  port: number;
  /** Hello calls answered so far. */
  hits: number;
  stop(): Promise<void>;
}

async function startBackend(name: string, host: string): Promise<Backend> {
  const server = new grpc.Server();
  const backend: Backend = { name, host, port: 0, hits: 0, stop: async () => {} };
  server.addService(greeterService(), {
    Hello: (_call: grpc.ServerUnaryCall<unknown, unknown>, callback: grpc.sendUnaryData<{ from: string }>) => {
      backend.hits++;
      callback(null, { from: name });
    },
  });
  backend.port = await new Promise<number>((resolve, reject) =>
    server.bindAsync(`${host}:0`, grpc.ServerCredentials.createInsecure(), (err, port) => (err ? reject(err) : resolve(port))),
  );
  backend.stop = () =>
    new Promise<void>((resolve) => {
      const timer = setTimeout(() => {
        server.forceShutdown();
        resolve();
      }, 2_000);
      server.tryShutdown(() => {
        clearTimeout(timer);
        resolve();
      });
    });
  return backend;
}

// ---- the xDS client child --------------------------------------------------------------

class XdsClientProcess {
  private readonly child: ChildProcess;
  private err = '';
  private readonly pending: Array<(line: Record<string, unknown>) => void> = [];
  private readonly early: Array<Record<string, unknown>> = [];
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;

  constructor(target: string, controlPlanePort: number) {
    const bootstrap = {
      xds_servers: [{ server_uri: `127.0.0.1:${controlPlanePort}`, channel_creds: [{ type: 'insecure' }], server_features: ['xds_v3'] }],
      // grpc-js-xds 1.14.1 needs a locality (even empty) or fails with a misleading null-property error.
      node: { id: CLIENT_NODE, cluster: 'interop', locality: {} },
    };
    this.child = spawn(process.execPath, [FIXTURE, target], {
      stdio: ['pipe', 'pipe', 'pipe'],
      env: { ...process.env, GRPC_XDS_BOOTSTRAP_CONFIG: JSON.stringify(bootstrap), GRPC_TRACE, GRPC_VERBOSITY: 'DEBUG', NODE_OPTIONS: '' },
    });
    this.child.stderr!.setEncoding('utf8').on('data', (d: string) => (this.err += d));
    createInterface({ input: this.child.stdout! }).on('line', (line) => {
      let value: Record<string, unknown>;
      try {
        value = JSON.parse(line) as Record<string, unknown>;
      } catch {
        this.err += `[stdout, not JSON] ${line}\n`;
        return;
      }
      const next = this.pending.shift();
      if (next) next(value);
      else this.early.push(value);
    });
    this.exited = new Promise((resolve) => this.child.on('exit', (code, signal) => resolve({ code, signal })));
  }

  /** The last `max` characters of the client's stderr (its gRPC traces). */
  stderr(max = 12_000): string {
    return this.err.length > max ? `…${this.err.slice(-max)}` : this.err;
  }

  /** The next JSON line on stdout, or a rejection (with stderr) at exit or timeout. */
  private nextLine(what: string, timeoutMs: number): Promise<Record<string, unknown>> {
    const early = this.early.shift();
    if (early) return Promise.resolve(early);
    return new Promise((resolve, reject) => {
      const fail = (why: string): void => {
        const i = this.pending.indexOf(take);
        if (i !== -1) this.pending.splice(i, 1);
        reject(new Error(`xds client: ${why} waiting for ${what}\nstderr:\n${this.stderr()}`));
      };
      const timer = setTimeout(() => fail(`timed out after ${timeoutMs} ms`), timeoutMs);
      const onExit = (code: number | null, signal: NodeJS.Signals | null): void => {
        clearTimeout(timer);
        fail(`exited (${code ?? signal})`);
      };
      const take = (line: Record<string, unknown>): void => {
        clearTimeout(timer);
        this.child.off('exit', onExit);
        resolve(line);
      };
      this.pending.push(take);
      this.child.once('exit', onExit);
    });
  }

  async ready(): Promise<void> {
    const line = await this.nextLine('ready', 15_000);
    if (line.ready !== true) throw new Error(`xds client: expected {"ready":true}, got ${JSON.stringify(line)}\nstderr:\n${this.stderr()}`);
  }

  /** `n` sequential Hello calls, each with its own deadline. */
  async call(n: number, deadlineMs = 5_000): Promise<CallResult> {
    this.child.stdin!.write(`call ${n} ${deadlineMs}\n`);
    const line = await this.nextLine(`call ${n}`, n * deadlineMs + 10_000);
    return line as unknown as CallResult;
  }

  async quit(): Promise<void> {
    if (this.child.exitCode !== null || this.child.signalCode !== null) return;
    this.child.stdin!.end('quit\n');
    const timer = setTimeout(() => this.child.kill('SIGKILL'), 5_000);
    await this.exited;
    clearTimeout(timer);
  }
}

// ---- helpers --------------------------------------------------------------------------------

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

/** Calls in batches until `done(batch)` or the deadline; every batch, in order. */
async function pollCalls(client: XdsClientProcess, done: (r: CallResult) => boolean, options: { batch: number; deadlineMs: number; callDeadlineMs?: number }): Promise<{ batches: CallResult[]; reached: boolean }> {
  const batches: CallResult[] = [];
  const end = Date.now() + options.deadlineMs;
  while (Date.now() < end) {
    const r = await client.call(options.batch, options.callDeadlineMs ?? 2_000);
    batches.push(r);
    if (done(r)) return { batches, reached: true };
    await sleep(100);
  }
  return { batches, reached: false };
}

/** The batches as lines (the first 5 and the last 15 when there are more). */
function summary(batches: CallResult[]): string {
  const lines = batches.map((b, i) => `#${i}: ok=${JSON.stringify(b.ok)} errors=${JSON.stringify(b.errors)} details=${JSON.stringify([...new Set(b.details)])}`);
  return (lines.length > 20 ? [...lines.slice(0, 5), `… ${lines.length - 20} more …`, ...lines.slice(-15)] : lines).join('\n');
}

/** Sockets, servers and child processes of this process, by kind (timers aside). */
function ioHandles(): Record<string, number> {
  const counts: Record<string, number> = {};
  for (const kind of process.getActiveResourcesInfo()) {
    if (/TCP|Pipe|Process|UDP/.test(kind)) counts[kind] = (counts[kind] ?? 0) + 1;
  }
  return counts;
}

async function handlesBackTo(t: ExecutionContext, before: Record<string, number>): Promise<void> {
  const extra = (): string[] => Object.entries(ioHandles()).filter(([kind, n]) => n > (before[kind] ?? 0)).map(([kind, n]) => `${kind}: ${n} (was ${before[kind] ?? 0})`);
  const end = Date.now() + 5_000;
  while (extra().length > 0 && Date.now() < end) await sleep(50);
  t.deepEqual(extra(), [], 'sockets, servers or processes left after cleanup');
}

// ---- the test ------------------------------------------------------------------------------------

test('a real, unmodified xDS client (@grpc/grpc-js-xds) follows EDS pushes between gRPC backends and fails UNAVAILABLE when the service leaves the mesh', async (t) => {
  t.timeout(110_000);
  const handlesBefore = ioHandles();
  const cleanups: Array<() => Promise<void>> = [];
  try {
    // 1. Two greeter backends, each on its own loopback address (VM addresses are unique per registry).
    const backendA = await startBackend('backend-a', '127.0.0.11');
    cleanups.unshift(() => backendA.stop());
    const backendB = await startBackend('backend-b', '127.0.0.12');
    cleanups.unshift(() => backendB.stop());

    // 2. The registry: one hypervisor; vm-a serves greeter, vm-b nothing yet.
    const registry = new Registry();
    registry.registerHypervisor(HV1);
    registry.registerVm(vm({ vmId: 'vm-a', hypervisorId: HV1.hypervisorId, vsockCid: 3, addresses: [backendA.host], services: [{ name: 'greeter', port: backendA.port }] }));
    registry.registerVm(vm({ vmId: 'vm-b', hypervisorId: HV1.hypervisorId, vsockCid: 4, addresses: [backendB.host], services: [] }));

    // 3. The control plane, real gRPC on port 0. Plain text, named: @grpc/grpc-js-xds 1.14.1 takes only
    // "insecure" and "google_default" channel_creds in its bootstrap (no TLS to the xDS server), so proxyless
    // clients need a control plane started with --insecure (README "Security").
    const mesh = MeshStore.fromConfig({ services: [{ name: 'greeter', port: 50051 }] });
    const logs = new LogCapture();
    const plane = new ControlPlane({ mesh, logger: createLogger({ level: 'debug', destination: logs }), vms: { registry }, transport: { insecure: true } });
    const port = await plane.start('127.0.0.1:0');
    cleanups.unshift(() => plane.stop());
    const planeErrors = (): string => JSON.stringify(logs.lines.filter((l) => l.level === 'error' || l.level === 'warn'));

    // 4. The xDS client: every call reaches backend-a.
    const client = new XdsClientProcess('xds:///greeter', port);
    cleanups.unshift(() => client.quit());
    await client.ready();
    const first = await client.call(10);
    t.deepEqual(first.errors, [], `calls through xds:///greeter failed: ${summary([first])}\ncontrol plane errors: ${planeErrors()}\nclient stderr:\n${client.stderr()}`);
    t.deepEqual(first.ok, Array<string>(10).fill('backend-a'), `expected every call at backend-a: ${summary([first])}\nclient stderr:\n${client.stderr()}`);
    t.is(backendB.hits, 0, 'backend-b was called before it served greeter');

    // 5. New EDS: greeter moves from vm-a to vm-b (backend-a keeps running).
    registry.registerVm(vm({ vmId: 'vm-a', hypervisorId: HV1.hypervisorId, vsockCid: 3, addresses: [backendA.host], services: [] }));
    registry.registerVm(vm({ vmId: 'vm-b', hypervisorId: HV1.hypervisorId, vsockCid: 4, addresses: [backendB.host], services: [{ name: 'greeter', port: backendB.port }] }));
    await plane.flush();
    const moved = await pollCalls(client, (r) => r.errors.length === 0 && r.ok.length > 0 && r.ok.every((from) => from === 'backend-b'), { batch: 5, deadlineMs: 20_000 });
    t.true(moved.reached, `traffic did not move to backend-b after the EDS push:\n${summary(moved.batches)}\ncontrol plane errors: ${planeErrors()}\nclient stderr:\n${client.stderr()}`);
    const failedDuringMove = moved.batches.flatMap((b) => b.errors);
    t.deepEqual(failedDuringMove, [], `calls failed while the endpoints changed:\n${summary(moved.batches)}\nclient stderr:\n${client.stderr()}`);
    const aHits = backendA.hits;
    const after = await client.call(10);
    t.deepEqual(after.errors, [], `calls failed after the switch: ${summary([after])}\nclient stderr:\n${client.stderr()}`);
    t.deepEqual(after.ok, Array<string>(10).fill('backend-b'), `expected every call at backend-b after the switch: ${summary([after])}\nclient stderr:\n${client.stderr()}`);
    t.is(backendA.hits, aHits, 'backend-a still got calls after it left the endpoints');

    // 6. greeter balances by least_request: grpc-js-xds has no such policy, and the cluster lists round robin after it
    // (load_balancing_policy): the client ACKs the new cluster version (a NACK would keep the old one, calls would still work).
    const cdsBefore = plane.ads.syncStatus().find((s) => s.nodeId === CLIENT_NODE && s.typeUrl === TYPE_URLS.Cluster)?.lastAckVersion;
    await mesh.put('services', { name: 'greeter', port: 50051, lb_policy: 'least_request' });
    await plane.flush();
    const cds = () => plane.ads.syncStatus().find((s) => s.nodeId === CLIENT_NODE && s.typeUrl === TYPE_URLS.Cluster);
    await waitFor(() => (cds()?.lastAckVersion ?? cdsBefore) !== cdsBefore || cds()?.lastNack != null, 'the client to answer the least_request cluster', 20_000);
    t.is(cds()?.lastNack ?? null, null, `the client NACKed the least_request cluster\nclient stderr:\n${client.stderr()}`);
    t.is(cds()?.lastAckVersion, cds()?.lastSentVersion);
    const balanced = await client.call(10);
    t.deepEqual(balanced.errors, [], `calls failed under least_request: ${summary([balanced])}\nclient stderr:\n${client.stderr()}`);
    t.deepEqual(balanced.ok, Array<string>(10).fill('backend-b'));

    // 7. greeter leaves the mesh: its listener, route, cluster and endpoints are no longer served.
    t.true(await mesh.delete('services', 'greeter'));
    await plane.flush();
    const removed = await pollCalls(client, (r) => r.errors.includes(UNAVAILABLE), { batch: 1, deadlineMs: 20_000, callDeadlineMs: 1_000 });
    t.true(removed.reached, `calls did not fail with UNAVAILABLE after greeter left the mesh:\n${summary(removed.batches)}\ncontrol plane errors: ${planeErrors()}\nclient stderr:\n${client.stderr()}`);
    // (a call may still succeed between flush() and the push reaching the client; none once it failed)
    const hitsAtFirstFailure = backendA.hits + backendB.hits;
    const gone = await client.call(5, 1_000);
    t.deepEqual(gone.ok, [], `calls still succeeded after greeter left the mesh: ${summary([gone])}\nclient stderr:\n${client.stderr()}`);
    t.deepEqual(gone.errors, Array<number>(5).fill(UNAVAILABLE), `expected UNAVAILABLE (14) for every call: ${summary([gone])}\nclient stderr:\n${client.stderr()}`);
    t.is(backendA.hits + backendB.hits, hitsAtFirstFailure, 'a backend still got calls after greeter left the mesh');
    t.log(`after removal the client says: ${[...new Set(gone.details)].join(' | ')}`);

    // 8. The client quits cleanly.
    await client.quit();
    const exit = await client.exited;
    t.deepEqual(exit, { code: 0, signal: null }, `xds client did not exit cleanly\nstderr:\n${client.stderr()}`);
  } finally {
    for (const cleanup of cleanups) await cleanup();
  }
  await handlesBackTo(t, handlesBefore);
});
