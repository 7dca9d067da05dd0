// Two "VMs" for transparent-capture tests: network namespaces A and B joined
// by a veth pair, B running an app that answers with the client address it was
// given. Shared by the host test (test/integration/capture-netns.test.ts, the
// hop over TCP), the guest one (test/vm/capture-vsock.test.ts, over vsock) and
// the capture rows of the HTTP benchmark (test/bench/http-capture-bench.ts,
// which passes its own cleanup list as `t`).

import type { ExecutionContext } from 'ava';
import { execFile, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { stringify } from 'yaml';
import { CLI, startCommand, type CliProcess } from './cli.js';

const run = promisify(execFile);
export const NOBODY = 65534;
export const A_IP = '10.88.0.1';
export const B_IP = '10.88.0.2';
export const APP_PORT = 8080;
export const CAPTURE_PORT = 15001;

/** What this machine lacks to run the namespaces and the rules, or undefined. */
export function missingNetnsTools(): string | undefined {
  if (process.getuid?.() !== 0) return 'root (network namespaces and iptables)';
  for (const [tool, pkg] of [['ip', 'iproute2'], ['iptables-restore', 'iptables'], ['curl', 'curl'], ['setpriv', 'util-linux']]) {
    if (spawnSync('sh', ['-c', `command -v ${tool}`]).status !== 0) return `${tool} (apt-get install -y ${pkg})`;
  }
  return undefined;
}

/** Where what is made is undone, whatever happens: a test's context, or a benchmark's cleanup list. */
export type Teardown = Pick<ExecutionContext, 'teardown'>;

export interface Vm {
  ns: string;
  /** Runs a command in the namespace (as root) to completion. */
  exec(args: string[]): Promise<{ stdout: string; stderr: string }>;
  /** `ip netns exec <ns>`, to put in front of a long-running command. */
  wrapper: string[];
  /** How long a step in it may take (a process start, a request): longer under emulation. */
  deadlineMs: number;
}

/** Namespaces A and B joined by a veth pair (A_IP, B_IP); both go in teardown, whatever happened. */
export async function twoVms(t: Teardown, deadlineMs = 60_000): Promise<{ a: Vm; b: Vm }> {
  const id = randomBytes(3).toString('hex');
  const vms: Vm[] = [];
  for (const name of [`vsm-a-${id}`, `vsm-b-${id}`]) {
    await run('ip', ['netns', 'add', name]);
    t.teardown(() => run('ip', ['netns', 'delete', name]).then(() => undefined));
    await run('ip', ['-n', name, 'link', 'set', 'lo', 'up']);
    vms.push({ ns: name, exec: (args) => run('ip', ['netns', 'exec', name, ...args], { timeout: deadlineMs }), wrapper: ['ip', 'netns', 'exec', name], deadlineMs });
  }
  const [a, b] = vms as [Vm, Vm];
  await run('ip', ['link', 'add', `va-${id}`, 'netns', a.ns, 'type', 'veth', 'peer', 'name', `vb-${id}`, 'netns', b.ns]);
  for (const [vm, dev, ip] of [[a, `va-${id}`, A_IP], [b, `vb-${id}`, B_IP]] as const) {
    await run('ip', ['-n', vm.ns, 'addr', 'add', `${ip}/24`, 'dev', dev]);
    await run('ip', ['-n', vm.ns, 'link', 'set', dev, 'up']);
  }
  return { a, b };
}

/** A long-running process in a namespace, killed with the test. */
export function spawnIn(t: Teardown, vm: Vm, argv: string[]): CliProcess {
  const proc = startCommand([...vm.wrapper, ...argv]);
  t.teardown(() => proc.kill('SIGKILL'));
  return proc;
}

/** The VM manager's inventory of the two VMs: vm-a (A_IP) and vm-b (B_IP, serving `web` on APP_PORT) on two hypervisors, so their hop is TCP to `peerPort`. */
export function twoVmInventory(peerPort: number): unknown {
  return {
    hypervisors: [
      { id: 'hv-1', vsock_mode: 'host-relay', relay_port: 15100 },
      { id: 'hv-2', vsock_mode: 'host-relay', relay_port: 15100 },
    ],
    vms: [
      { id: 'vm-a', hypervisor: 'hv-1', cid: 3, addresses: [A_IP], sidecar: { tcp_port: peerPort, vsock_port: peerPort } },
      { id: 'vm-b', hypervisor: 'hv-2', cid: 3, addresses: [B_IP], sidecar: { tcp_port: peerPort, vsock_port: peerPort }, services: [{ name: 'web', port: APP_PORT }] },
    ],
  };
}

/** `vsockmesh vm-manager` in `vm` on its loopback with `inventory` (the YAML shape), once it serves; its port. */
export async function startVmManagerIn(t: Teardown, vm: Vm, inventory: unknown): Promise<number> {
  return (await startVmManagerProcessIn(t, vm, inventory)).port;
}

/** startVmManagerIn's VM manager: its port and its process id (for its CPU). */
export async function startVmManagerProcessIn(t: Teardown, vm: Vm, inventory: unknown): Promise<{ port: number; pid: number }> {
  const dir = await mkdtemp(join(tmpdir(), 'vsockmesh-capture-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const file = join(dir, 'inventory.yaml');
  await writeFile(file, stringify(inventory));
  const vmm = spawnIn(t, vm, [process.execPath, CLI, 'vm-manager', '--listen', '127.0.0.1:0', '--no-admin', '--insecure', '--inventory', file]);
  const serving = await vmm.waitForLine((l) => l.msg === 'vm-manager serving', 'vm-manager serving', vm.deadlineMs);
  return { port: serving.port as number, pid: vmm.child.pid! };
}

/** test/fixtures/client-address-app.mjs, from the sources or from their build in dist/test/helpers. */
const APP = [new URL('../fixtures/client-address-app.mjs', import.meta.url), new URL('../../../test/fixtures/client-address-app.mjs', import.meta.url)]
  .map((u) => fileURLToPath(u))
  .find((p) => existsSync(p))!;

/** B's app on APP_PORT of every address of B: answers with the client address it was given, and how. */
export async function startClientAddressApp(t: ExecutionContext, b: Vm): Promise<void> {
  const app = spawnIn(t, b, [process.execPath, APP, String(APP_PORT)]);
  await app.waitForLine((l) => l.msg === 'app listening', 'app listening', b.deadlineMs);
}

/** curl in `vm` (as root: capture rules apply to it) to B's app; the client address B's app saw and how, or curl's exit code. */
export function curlApp(vm: Vm): Promise<{ client?: string; via?: string; code?: number }> {
  return vm.exec(['curl', '-sS', '--max-time', String(vm.deadlineMs / 2000), `http://${B_IP}:${APP_PORT}/`]).then(
    (r) => JSON.parse(r.stdout) as { client: string; via: string },
    (err: { code?: number }) => ({ code: err.code }),
  );
}

/** `vsockmesh iptables <args>` in `vm`; its stdout. */
export async function iptablesIn(vm: Vm, args: string[]): Promise<string> {
  return (await vm.exec([process.execPath, CLI, 'iptables', ...args])).stdout;
}

/** /stats of a sidecar, read from inside its namespace (loopback: never captured). */
export async function statsIn(vm: Vm, adminPort: number): Promise<string> {
  return (await vm.exec(['curl', '-sS', '--max-time', String(vm.deadlineMs / 2000), `http://127.0.0.1:${adminPort}/stats`])).stdout;
}

/** Whether a sidecar in `vm` answers /ready with 200, asked from inside its namespace. */
export function readyIn(vm: Vm, adminPort: number): Promise<boolean> {
  return vm.exec(['curl', '-sf', '-o', '/dev/null', '--max-time', String(vm.deadlineMs / 2000), `http://127.0.0.1:${adminPort}/ready`]).then(
    () => true,
    () => false,
  );
}

/** The access lines a sidecar process has printed so far. */
export const accessLines = (proc: CliProcess) => proc.lines.filter((l) => l.log === 'access');

/** A sidecar's CLI wrapper in `vm` as uid NOBODY (the user the capture rules exclude). */
export const asNobody = (vm: Vm) => [...vm.wrapper, 'setpriv', `--reuid=${NOBODY}`, `--regid=${NOBODY}`, '--clear-groups'];
