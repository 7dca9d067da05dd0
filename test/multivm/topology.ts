// The multi-VM topology inside the outer guest (hypervisor hv-1): the control
// plane (with its CA and the VM manager API, over mutual TLS) and the host
// relay (host agent hv-1, attesting guests) as CLI processes, as on a real
// host; the inner
// guests at CIDs 3 (vm-a), 4 (vm-b) and 5 (vm-c); and the bytes a real sidecar
// sends, captured from one so the inner guests (no Node: see README) can send
// exactly them.

import { createHash } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { stringify } from 'yaml';
import { createVsockServer } from '../../proxy/native/vsock.js';
import { decodeProxyHeader } from '../../proxy/proxy-protocol.js';
import { RELAY_HEADER_LENGTH } from '../../proxy/relay-header.js';
import { httpGet, httpReady, metricSum } from '../helpers/admin-http.js';
import { collect, connect } from '../helpers/apps.js';
import { runCli, startCli, type CliProcess } from '../helpers/cli.js';
import { startTestMeshCa, type TestMeshCa } from '../helpers/pki.js';
import { GENERATED_ROOT_DIR } from '../../xds/security/process-identity.js';
import { startSidecar } from '../helpers/sidecars.js';
import { InnerVm, innerImage, logDir } from './hypervisor.js';

export const HYPERVISOR = 'hv-1';
export const OTHER_HYPERVISOR = 'hv-2';
/** The relay's vsock port (CID 2 from the guests' side). */
export const RELAY_PORT = 15100;
/** Every VM's sidecar vsock inbound port, as registered with the VM manager. */
export const SIDECAR_PORT = 15006;
/** A port vm-b serves that is not its registered sidecar port. */
export const UNREGISTERED_PORT = 15099;
/** The host agent's attestation port (CID 2 from the guests' side): the documented default. */
export const ATTESTATION_PORT = 15101;
/** Fixed ports: the outer guest is a machine of its own. */
export const VM_MANAGER = { address: '127.0.0.1:15200', admin: 15400 };
export const RELAY_ADMIN = 15300;
/** The app port the sidecar's PROXY v2 header names as destination. */
export const APP_PORT = 8080;

export interface GuestPlan {
  vmId: string;
  cid: number;
  /** Where the VM manager places it (not necessarily where it runs). */
  placedOn: string;
  /** vmagent servers started once the guest is up (a sink answers with the count and sha256 of what it got: one way across the relay, half the emulated work of an echo). */
  servers: Array<{ port: number; mode: 'echo' | 'sink' }>;
}

export const GUESTS: Record<'a' | 'b' | 'c', GuestPlan> = {
  a: { vmId: 'vm-a', cid: 3, placedOn: HYPERVISOR, servers: [] },
  b: {
    vmId: 'vm-b',
    cid: 4,
    placedOn: HYPERVISOR,
    servers: [
      { port: SIDECAR_PORT, mode: 'sink' },
      { port: UNREGISTERED_PORT, mode: 'sink' },
    ],
  },
  // Runs here, but the VM manager places it on hv-2: its connections are not this relay's to carry.
  c: { vmId: 'vm-c', cid: 5, placedOn: OTHER_HYPERVISOR, servers: [{ port: SIDECAR_PORT, mode: 'sink' }] },
};

/** The VM manager's inventory for the plan (README "VM manager" format). */
export function inventory(guests: GuestPlan[]): unknown {
  return {
    hypervisors: [HYPERVISOR, OTHER_HYPERVISOR].map((id) => ({ id, vsock_mode: 'host-relay', relay_port: RELAY_PORT })),
    vms: guests.map((g) => ({ id: g.vmId, hypervisor: g.placedOn, cid: g.cid, addresses: [`10.0.0.${g.cid}`], sidecar: { tcp_port: SIDECAR_PORT, vsock_port: SIDECAR_PORT } })),
  };
}

/** A config file in the log directory (kept with the logs on failure). */
export function writeYaml(name: string, content: unknown): string {
  const path = join(logDir(), name);
  writeFileSync(path, stringify(content));
  return path;
}

/** A CLI role as a child process whose admin endpoint says it is ready. */
export class Daemon {
  private constructor(
    readonly name: string,
    readonly proc: CliProcess,
    readonly adminPort: number,
  ) {}

  /** Every daemon started, ready or not, for the teardown. */
  static readonly started: Daemon[] = [];

  static async start(name: string, args: string[], adminPort: number, timeoutMs = 180_000): Promise<Daemon> {
    const proc = startCli(args);
    const daemon = new Daemon(name, proc, adminPort);
    Daemon.started.push(daemon);
    const deadline = Date.now() + timeoutMs;
    while (!(await httpReady(adminPort))) {
      if (proc.child.exitCode !== null || proc.child.signalCode !== null) throw new Error(`${name} exited before it was ready\n${proc.stdout()}\n${proc.stderr()}`);
      if (Date.now() > deadline) throw new Error(`${name} was not ready within ${timeoutMs / 1000} s\n${proc.stdout()}\n${proc.stderr()}`);
      await new Promise((r) => setTimeout(r, 250));
    }
    return daemon;
  }

  get pid(): number {
    return this.proc.child.pid ?? -1;
  }

  async stats(): Promise<string> {
    return (await httpGet(this.adminPort, '/stats')).body;
  }

  async metric(name: string, labels: Record<string, string> = {}): Promise<number> {
    return metricSum(await this.stats(), name, labels);
  }

  /** JSON log lines with `log: "access"`. */
  access(): Array<Record<string, unknown>> {
    return this.proc.lines.filter((l) => l.log === 'access');
  }

  withReason(reason: string): Array<Record<string, unknown>> {
    return this.proc.lines.filter((l) => l.reason === reason);
  }

  /** Stops it by PID (SIGKILL after a grace) and keeps its output in the log directory. */
  async stop(): Promise<void> {
    this.proc.kill('SIGTERM');
    const killer = setTimeout(() => this.proc.kill('SIGKILL'), 20_000);
    await this.proc.exited;
    clearTimeout(killer);
    writeFileSync(join(logDir(), `${this.name}.log`), `${this.proc.stdout()}\n---- stderr\n${this.proc.stderr()}`);
  }
}

/** The mesh CA's root, as the control plane generated it: the harness issues the other processes' identities under it, as an administrator would. */
let pki: TestMeshCa | undefined;

/** Files (cert.pem, key.pem, ca.pem) of spiffe://vsockmesh.local/<kind>/<name>. */
export async function identityFiles(kind: 'vm' | 'hv' | 'operator', name: string): Promise<{ cert: string; key: string; ca: string }> {
  if (!pki) throw new Error('the control plane (and its CA) is not up yet');
  const files = await pki.files(await pki.identity(kind, name));
  return { cert: files.certPath, key: files.keyPath, ca: files.caPath };
}

/** `vsockmesh control-plane` with its CA (root generated in the log directory) serving the VM manager API with the plan's inventory, over mutual TLS. */
export async function startControlPlane(guests: GuestPlan[]): Promise<Daemon> {
  const inv = writeYaml('inventory.yaml', inventory(guests));
  const identityDir = join(logDir(), 'identity');
  // Loading the ADS and Envoy protos and making the CA's root take minutes under TCG on a loaded machine (one run: over 180 s).
  const daemon = await Daemon.start('control-plane', ['control-plane', '--listen', VM_MANAGER.address, '--inventory', inv, '--admin-port', String(VM_MANAGER.admin), '--identity-dir', identityDir], VM_MANAGER.admin, 12 * 60_000);
  pki = await startTestMeshCa(undefined, join(identityDir, GENERATED_ROOT_DIR));
  operator = await identityFiles('operator', 'multivm');
  return daemon;
}

/**
 * `vsockmesh host-relay` as host agent hv-1 (its identity from files), asking
 * the VM manager and attesting guests; deadlines sized for guests emulated
 * twice over. `assertSource: false` only for the benchmark, whose figures
 * compare with a relay that asserts nothing.
 */
export async function startRelay(options: { assertSource?: boolean } = {}): Promise<Daemon> {
  const config = writeYaml('relay.yaml', {
    node: { id: HYPERVISOR },
    admin: { address: '127.0.0.1', port: RELAY_ADMIN },
    listen: { port: RELAY_PORT },
    header_timeout: '60s',
    connect_timeout: '30s',
    // The first query also brings up the mutual-TLS channel: 14 s in one run, while two inner guests kept the outer one busy.
    // assert_source on (the default): every relayed connection starts with the relay's signed assertion of the source VM.
    vm_manager: { address: VM_MANAGER.address, hypervisor_id: HYPERVISOR, query_timeout: '60s', cache_ttl: '2s', assert_source: options.assertSource ?? true },
    tls: await identityFiles('hv', HYPERVISOR),
    attestation: { port: ATTESTATION_PORT, control_plane: VM_MANAGER.address, request_timeout: '120s' },
  });
  return Daemon.start('host-relay', ['host-relay', '-c', config], RELAY_ADMIN, 6 * 60_000);
}

let operator: { cert: string; key: string; ca: string } | undefined;

/** Removes the identity files issued for the run. */
export async function cleanupIdentities(): Promise<void> {
  await pki?.cleanup();
}

/** `vsockmesh ctl` as an operator; a non-zero exit is an error. */
export async function ctl(args: string[]): Promise<string> {
  if (!operator) throw new Error('the control plane (and its CA) is not up yet');
  const r = await runCli(['ctl', '--cert', operator.cert, '--key', operator.key, '--ca', operator.ca, '--vm-manager', VM_MANAGER.address, '--timeout-ms', '60000', ...args]);
  if (r.code !== 0) throw new Error(`vsockmesh ctl ${args.join(' ')} exited ${r.code}: ${r.stderr}`);
  return r.stdout;
}

export function bootGuest(plan: GuestPlan): InnerVm {
  return new InnerVm({ name: plan.vmId, cid: plan.cid }, innerImage(), logDir());
}

/** Starts the plan's vmagent servers in a booted guest, each logging its connections to /run/<port>.log. */
export async function startServers(vm: InnerVm, plan: GuestPlan): Promise<void> {
  if (plan.servers.length === 0) return;
  const script = plan.servers
    .map(({ port, mode }) => `vmagent listen ${port} ${mode} /run/${port}.log > /run/listen-${port}.out 2>&1 &\nwhile ! grep -q listening /run/listen-${port}.out; do sleep 0.2; done`)
    .join('\n');
  await vm.check(script);
}

/** The connections a vmagent server saw: `accept` and `close` lines as key/value records. */
export async function serverLog(vm: InnerVm, port: number): Promise<Array<Record<string, string>>> {
  const text = await vm.check(`cat /run/${port}.log 2>/dev/null || true`);
  return text
    .split('\n')
    .filter(Boolean)
    .map((line) => {
      const [event, ...fields] = line.split(' ');
      return { event: event!, ...Object.fromEntries(fields.map((f) => f.split('=') as [string, string])) };
    });
}

/** The first bytes (up to 8 KiB) of one connection a vmagent server saw, as its `accept` or `close` entry names it. */
export async function serverHead(vm: InnerVm, port: number, entry: Record<string, string>): Promise<Buffer> {
  const text = await vm.check(`cat /run/${port}.log.${entry.peer_cid}-${entry.peer_port}.head`);
  return Buffer.from(text, 'latin1');
}

/** The mesh's trust bundle (the CA's root, PEM), as every sidecar holds it. */
export function meshTrust(): { trustDomain: string; bundlePem: string } {
  if (!pki) throw new Error('the control plane (and its CA) is not up yet');
  return { trustDomain: pki.trustDomain, bundlePem: pki.ca.trustBundlePem().join('') };
}

/** What a vmagent sink answers once the sender half-closes. */
export function sinkAnswer(...parts: Buffer[]): string {
  return `received ${parts.reduce((n, p) => n + p.length, 0)} sha256 ${sha256(...parts)}\n`;
}

/** The "vmagent-result k=v ..." line of a vmagent connect. */
export function agentResult(stderr: string): Record<string, string> {
  const line = stderr.split('\n').find((l) => l.startsWith('vmagent-result '));
  if (!line) throw new Error(`no vmagent-result line in: ${stderr}`);
  return Object.fromEntries(
    line
      .slice('vmagent-result '.length)
      .split(' ')
      .map((f) => f.split('=') as [string, string]),
  );
}

/** vmagent's --pattern: xorshift32 from `seed`, 4 bytes little-endian per step. */
export function pattern(bytes: number, seed: number): Buffer {
  const words = new Uint32Array(Math.ceil(bytes / 4));
  let x = seed >>> 0 || 1;
  for (let i = 0; i < words.length; i++) {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    words[i] = x;
  }
  return Buffer.from(words.buffer, 0, bytes);
}

export function sha256(...parts: Buffer[]): string {
  const h = createHash('sha256');
  for (const p of parts) h.update(p);
  return h.digest('hex');
}

export interface SidecarPreamble {
  /** The 16-byte relay header naming the destination CID and port. */
  relayHeader: Buffer;
  /** The PROXY v2 header (source and destination app addresses, authority, source and destination VM). */
  proxyHeader: Buffer;
}

/**
 * What a real sidecar (node `nodeId`, cluster endpoint via the host relay)
 * sends first: it connects to a stand-in relay here (vsock loopback) that
 * records the relay header and the PROXY v2 header and hangs up.
 */
export async function captureSidecarPreamble(nodeId: string, destination: GuestPlan): Promise<SidecarPreamble> {
  let resolveCaptured!: (b: Buffer) => void;
  let rejectCaptured!: (e: Error) => void;
  const captured = new Promise<Buffer>((resolve, reject) => {
    resolveCaptured = resolve;
    rejectCaptured = reject;
  });
  const server = createVsockServer({ port: 0 }, (socket) => {
    let bytes = Buffer.alloc(0);
    socket.on('error', () => {});
    socket.on('data', (chunk: Buffer) => {
      bytes = Buffer.concat([bytes, chunk]);
      if (bytes.length < RELAY_HEADER_LENGTH) return;
      const decoded = decodeProxyHeader(bytes.subarray(RELAY_HEADER_LENGTH));
      if (decoded.kind === 'incomplete') return;
      if (decoded.kind === 'invalid') rejectCaptured(new Error(`the sidecar sent no valid PROXY v2 header: ${decoded.reason}`));
      else resolveCaptured(bytes.subarray(0, RELAY_HEADER_LENGTH + decoded.length));
      socket.destroy();
    });
  });
  const sidecar = await startSidecar({
    node: { id: nodeId },
    vsock: { connect_timeout: '30s' },
    listeners: [{ kind: 'outbound', name: 'out', port: 0, cluster: destination.vmId }],
    clusters: [
      {
        name: destination.vmId,
        authority: `${destination.vmId}.mesh`,
        endpoints: [
          {
            address: `10.0.0.${destination.cid}`,
            port: APP_PORT,
            vm_id: destination.vmId,
            vsock: { mode: 'host-relay', cid: destination.cid, port: SIDECAR_PORT, relay: { cid: 1, port: server.address().port } },
          },
        ],
      },
    ],
  });
  try {
    const client = await connect(sidecar.sidecar.listenerAddress('out').port);
    const closed = collect(client);
    const bytes = await captured;
    await closed;
    return { relayHeader: bytes.subarray(0, RELAY_HEADER_LENGTH), proxyHeader: bytes.subarray(RELAY_HEADER_LENGTH) };
  } finally {
    await sidecar.sidecar.stop();
    await new Promise<void>((r) => server.close(() => r()));
  }
}
