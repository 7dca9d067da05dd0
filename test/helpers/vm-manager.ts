// A VM manager for tests: the real gRPC server in the test process (port 0)
// or the real CLI as a child process, plus inventory builders.

import type { ExecutionContext } from 'ava';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { stringify } from 'yaml';
import { createLogger } from '../../proxy/runtime/log.js';
import { CallError } from '../../xds/call-error.js';
import { VmManagerClient } from '../../xds/vm-manager/client.js';
import { Registry } from '../../xds/vm-manager/registry.js';
import { VmManagerServer } from '../../xds/vm-manager/server.js';
import type { HypervisorRecord, VmRecord } from '../../proxy/resolve/types.js';
import { startCli, type CliProcess } from './cli.js';
import type { ControlTransport } from '../../xds/security/transport.js';
import { LogCapture } from './sidecars.js';
import { startEtcd, type EtcdServer } from './etcd.js';

export type VmSpec = Omit<VmRecord, 'generation' | 'leaseExpiresAt' | 'services' | 'labels' | 'sidecar'> & Partial<Pick<VmRecord, 'services' | 'labels' | 'sidecar'>>;

export function vm(spec: VmSpec): Omit<VmRecord, 'generation' | 'leaseExpiresAt'> {
  return { sidecar: null, services: [], labels: {}, ...spec };
}

export interface TestVmManager {
  server: VmManagerServer;
  registry: Registry;
  address: string;
  client: VmManagerClient;
  logs: LogCapture;
  stop(): Promise<void>;
}

/** A VM manager in this process over real gRPC, seeded with hypervisors and VMs. */
export async function startVmManager(
  seed: { hypervisors?: HypervisorRecord[]; vms?: Array<Omit<VmRecord, 'generation' | 'leaseExpiresAt'>> } = {},
  options: { resolveTtlMs?: number; statePath?: string; registry?: Registry; compactAfterBytes?: number; transport?: ControlTransport; clientTransport?: ControlTransport } = {},
): Promise<TestVmManager> {
  const registry = options.registry ?? new Registry({ resolveTtlMs: options.resolveTtlMs ?? 30_000 });
  for (const h of seed.hypervisors ?? []) registry.registerHypervisor(h);
  for (const v of seed.vms ?? []) registry.registerVm(v);
  const logs = new LogCapture();
  const server = new VmManagerServer({
    registry,
    logger: createLogger({ level: 'debug', destination: logs }),
    // Plain text unless a test gives certificates (test/helpers/pki.ts): named, never a default of the server.
    transport: options.transport ?? { insecure: true },
    ...(options.statePath !== undefined && { statePath: options.statePath }),
    ...(options.compactAfterBytes !== undefined && { compactAfterBytes: options.compactAfterBytes }),
  });
  const port = await server.start('127.0.0.1:0');
  const address = `127.0.0.1:${port}`;
  // 30 s: a test file's tests run at once, each its own servers, and on a busy 2-core machine a first call's mutual TLS
  // handshake alone took over 5 s (control-mtls: DEADLINE_EXCEEDED instead of the refusal asserted, at load 19).
  const client = new VmManagerClient(address, { defaultTimeoutMs: 30_000, transport: options.clientTransport ?? options.transport ?? { insecure: true } });
  return {
    server,
    registry,
    address,
    client,
    logs,
    stop: async () => {
      client.close();
      await server.stop();
    },
  };
}

export type VmManagerProcess = { proc: CliProcess; address: string };

/** `vsockmesh vm-manager` as a child process on a free port; resolves once it serves. */
export async function startVmManagerProcess(args: string[]): Promise<VmManagerProcess> {
  // Plain text unless the test gives the process an identity.
  const identity = args.some((a) => ['--cert', '--ca-cert', '--identity-dir', '--insecure'].includes(a)) ? [] : ['--insecure'];
  const proc = startCli(['vm-manager', ...(args.includes('--listen') ? [] : ['--listen', '127.0.0.1:0']), '--no-admin', ...identity, ...args]);
  // As long as the control plane's and the sidecar's starts (cli.ts): at load 27 a vm-manager had printed nothing after 15 s.
  const line = await proc.waitForLine((l) => l.msg === 'vm-manager serving', 'vm-manager serving', 60_000);
  return { proc, address: `127.0.0.1:${String(line.port)}` };
}

export const HV1: HypervisorRecord = { hypervisorId: 'hv-1', vsockMode: 'host-relay', relayPort: 15100 };
export const HV2: HypervisorRecord = { hypervisorId: 'hv-2', vsockMode: 'host-relay', relayPort: 15100 };

/** The error a call that must fail failed with (a CallError, or the test fails). */
export async function rejection(p: Promise<unknown>): Promise<CallError> {
  try {
    await p;
  } catch (err) {
    if (err instanceof CallError) return err;
    throw new Error(`expected a CallError, got ${String(err)}`, { cause: err });
  }
  throw new Error('expected the call to fail');
}

/**
 * Two `vm-manager` processes on one real etcd (plain text), started from an
 * inventory of hv-1 and hv-2 with no VM, a (the first) seeding it; `store` is
 * their flags, to start another replica alike. Everything ends with the test.
 */
export async function startVmManagerReplicas(t: ExecutionContext): Promise<{ etcd: EtcdServer; store: string[]; a: VmManagerProcess; b: VmManagerProcess }> {
  const dir = await mkdtemp(join(tmpdir(), 'vsockmesh-vmm-replicas-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const etcd = await startEtcd(t);
  const inventory = join(dir, 'inventory.yaml');
  await writeFile(inventory, stringify({ hypervisors: [{ id: 'hv-1', vsock_mode: 'host-relay', relay_port: 15100 }, { id: 'hv-2', vsock_mode: 'host-relay', relay_port: 15100 }], vms: [] }));
  const store = ['--store', `etcd://${etcd.endpoint}`, '--store-insecure', '--inventory', inventory];
  const a = await startVmManagerProcess(store);
  t.teardown(() => a.proc.kill('SIGKILL'));
  const b = await startVmManagerProcess(store);
  t.teardown(() => b.proc.kill('SIGKILL'));
  return { etcd, store, a, b };
}
