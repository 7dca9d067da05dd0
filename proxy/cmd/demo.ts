// `vsockmesh demo`: the same-hypervisor decision, end to end on one machine.
//
// An in-process VM manager (the real gRPC server on 127.0.0.1:0) knows two
// hypervisors and three VMs: vm-a and vm-b on hv-1, vm-c on hv-2. Each VM is a
// loopback address of its own (Linux routes all of 127/8) with its apps and a
// sidecar. vm-a's sidecar resolves its destinations through the VM manager and
// picks the transport per connection: vsock to a VM on its own hypervisor, TCP
// to a VM elsewhere, plain TCP to an address the VM manager does not know.
// The demo sends traffic through each path, checks it, and prints what was
// chosen and why (from the sidecars' access logs and describeSelection).
//
// vsock is real when this machine has vsock_loopback (every socket at CID 1,
// so hv-1 is registered in `loopback` mode and its VMs are told apart by their
// sidecar's vsock port). That is found out by looking at /sys and /dev only:
// without it, or with `vsock: 'off'`, no AF_VSOCK socket is ever opened and the
// same decisions are carried over TCP.

import { createHash, randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import { Writable } from 'node:stream';
import { parseSidecarConfig } from '../config/load.js';
import { createLogger, formatAddress } from '../runtime/log.js';
import { describeSelection, selectTransport, type Selection } from '../resolve/select.js';
import type { Sidecar } from '../sidecar.js';
import { createSidecar } from './proxies.js';
import { Registry } from '../../xds/vm-manager/registry.js';
import { VmManagerServer } from '../../xds/vm-manager/server.js';
import type { Destination, HypervisorRecord, Resolution, VmRecord } from '../resolve/types.js';

export interface DemoOptions {
  once: boolean;
  /** Bytes sent through each echo path. */
  echoBytes: number;
  /**
   * 'auto' (default): real vsock between vm-a and vm-b when this machine has
   * vsock_loopback (seen in /sys/module and /dev, without opening a socket).
   * 'off': vsock disabled in every sidecar; no AF_VSOCK socket is opened.
   */
  vsock?: 'auto' | 'off';
  /** Where the demo's human-readable lines go (default stdout). */
  out?: NodeJS.WritableStream;
  /** Without `once`: stop serving when this aborts (as on Ctrl-C). */
  signal?: AbortSignal;
}

/** Whether vsock_loopback is usable here, decided from the filesystem alone (no AF_VSOCK socket). */
export function detectVsockLoopback(): { usable: true } | { usable: false; why: string } {
  if (!existsSync('/sys/module/vsock_loopback')) return { usable: false, why: 'no /sys/module/vsock_loopback' };
  if (!existsSync('/dev/vsock')) return { usable: false, why: 'no /dev/vsock' };
  return { usable: true };
}

interface AccessEntry {
  node: string;
  [key: string]: unknown;
}

interface DemoVm {
  id: string;
  hypervisorId: string;
  ip: string;
  cid: number;
  /** Registered when vsock is off, so the VM manager's records are the same either way (nothing listens there). */
  nominalVsockPort: number;
  web: boolean;
}

const HYPERVISORS: HypervisorRecord[] = [
  { hypervisorId: 'hv-1', vsockMode: 'loopback', relayPort: 0 },
  { hypervisorId: 'hv-2', vsockMode: 'host-relay', relayPort: 15100 },
];

const VMS: DemoVm[] = [
  { id: 'vm-a', hypervisorId: 'hv-1', ip: '127.0.0.2', cid: 1, nominalVsockPort: 15007, web: false },
  { id: 'vm-b', hypervisorId: 'hv-1', ip: '127.0.0.3', cid: 1, nominalVsockPort: 15008, web: true },
  { id: 'vm-c', hypervisorId: 'hv-2', ip: '127.0.0.4', cid: 3, nominalVsockPort: 15009, web: true },
];

/** An app the VM manager does not know (no VM, no sidecar). */
const OUTSIDE_IP = '127.0.0.5';
const CLIENT = 'vm-a';
const LOOPBACK_CID = 1;
const MiB = 1024 * 1024;
/** A demo connection that makes no progress this long fails (emulated guests are slow, but not this slow). */
const TRAFFIC_TIMEOUT_MS = 60_000;

interface Apps {
  echo: number;
  http?: number;
}

interface Step {
  /** vm-a's outbound listener and cluster. */
  name: string;
  cluster: Record<string, unknown>;
  destination: Destination;
  /** What the cluster asks for, as a person reads it. */
  asks: string;
  traffic: 'echo' | 'http';
  /** http: the VM whose app must answer. */
  expectFrom?: string;
}

export async function runDemo(options: DemoOptions): Promise<void> {
  const out = options.out ?? process.stdout;
  const say = (line = ''): void => void out.write(`${line}\n`);
  const detected = options.vsock === 'off' ? ({ usable: false, why: 'turned off for this run' } as const) : detectVsockLoopback();
  const vsockOn = detected.usable;
  const offWhy = detected.usable ? '' : options.vsock === 'off' ? 'vsock turned off for this run' : `vsock loopback not available here (${detected.why})`;

  // ---- logs: access lines are what the demo reports; warnings are shown as they come
  const access: AccessEntry[] = [];
  const waiters = new Set<() => void>();
  const logSink = (node: string): Writable => {
    let rest = '';
    return new Writable({
      write(chunk: Buffer, _enc, done) {
        const lines = (rest + chunk.toString('utf8')).split('\n');
        rest = lines.pop() ?? '';
        for (const line of lines) {
          if (!line) continue;
          let entry: Record<string, unknown>;
          try {
            entry = JSON.parse(line) as Record<string, unknown>;
          } catch {
            continue;
          }
          if (entry.log === 'access') {
            access.push({ ...entry, node });
            for (const w of [...waiters]) w();
          } else if (entry.level === 'warn' || entry.level === 'error' || entry.level === 'fatal') {
            say(`  ! ${node}: ${String(entry.msg)}`);
          }
        }
        done();
      },
    });
  };
  const waitForAccess = async (match: (e: AccessEntry) => boolean, timeoutMs = 10_000): Promise<AccessEntry | undefined> => {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const found = access.find(match);
      if (found || Date.now() >= deadline) return found;
      await new Promise<void>((resolve) => {
        const wake = (): void => {
          waiters.delete(wake);
          clearTimeout(timer);
          resolve();
        };
        const timer = setTimeout(wake, 100);
        waiters.add(wake);
      });
    }
  };

  // Everything started is stopped in reverse order: sidecars, then the VM manager, then the apps.
  const cleanups: Array<() => Promise<void>> = [];
  const stopAll = async (): Promise<void> => {
    for (const cleanup of cleanups.splice(0).reverse()) {
      try {
        await cleanup();
      } catch (err) {
        say(`  ! stopping: ${(err as Error).message}`);
      }
    }
  };

  let setup: Awaited<ReturnType<typeof startEverything>>;
  try {
    setup = await startEverything({ vsockOn, logSink, cleanups });
  } catch (err) {
    say(`demo: cannot start: ${(err as Error).message}`);
    await stopAll();
    process.exitCode = 1;
    return;
  }
  const { registry, vmManagerPort, sidecars, apps, outsideEcho, steps } = setup;
  const client = sidecars.get(CLIENT)!;
  const addr = (a: { address: string; port: number } | undefined): string => (a ? formatAddress(a.address, a.port) : '-');

  // ---- what runs where
  say('vsockmesh demo: the VM manager knows where every VM runs; a sidecar sends to a VM on its own hypervisor over vsock, to any other over TCP');
  if (vsockOn) say('  vsock: vsock_loopback is loaded here: hv-1\'s VMs talk over real vsock (loopback mode: every VM at CID 1, told apart by its sidecar\'s vsock port)');
  else say(`  vsock: ${offWhy}: same decisions, carried over TCP`);
  say(`  VM manager  grpc 127.0.0.1:${vmManagerPort} (in this process)`);
  for (const hv of HYPERVISORS) {
    say(`  ${hv.hypervisorId} (vsock ${hv.vsockMode}${hv.vsockMode === 'host-relay' ? `, relay port ${hv.relayPort}` : ''})`);
    for (const vm of VMS.filter((v) => v.hypervisorId === hv.hypervisorId)) {
      const record = registry.getVm(vm.id)!;
      const s = sidecars.get(vm.id)!;
      const appList = [`echo :${apps.get(vm.id)!.echo}`, ...(vm.web ? [`http :${apps.get(vm.id)!.http!}`] : [])].join(', ');
      const vsockText = vsockOn
        ? `vsock ${record.vsockCid}:${record.sidecar!.vsockPort}${vm.id === 'vm-b' ? ' (peer_authorization: registry)' : ''}`
        : `vsock port ${record.sidecar!.vsockPort} registered, not listened on (vsock off)`;
      const services = record.services.map((sv) => sv.name).join(', ');
      say(`    ${vm.id}  ${vm.ip}  CID ${record.vsockCid}  sidecar tcp ${addr(s.listenerAddress('inbound'))}, ${vsockText}; apps ${appList}; services ${services}`);
    }
  }
  say(`  not in the VM manager: ${OUTSIDE_IP}  echo :${outsideEcho} (no sidecar)`);
  say(`  ${CLIENT}'s outbound listeners (its apps connect here):`);
  for (const step of steps) say(`    ${step.name.padEnd(11)} ${addr(client.listenerAddress(step.name))} -> ${step.asks}`);
  say();

  // ---- traffic, one path at a time
  let failures = 0;
  for (const [i, step] of steps.entries()) {
    const answer = registry.resolve(CLIENT, step.destination);
    const selection = expectedSelection(step.destination, answer, vsockOn);
    say(`[${i + 1}] ${step.name}: ${step.asks}`);
    say(`    VM manager: ${explainAnswer(step.destination, answer)}`);
    say(`    decision:   ${describeSelection(selection)}${explainSelection(selection, answer, offWhy)}`);
    const listener = client.listenerAddress(step.name);
    let result: { ok: boolean; text: string };
    try {
      result = step.traffic === 'echo' ? await echoResult(listener, options.echoBytes) : await httpResult(listener, step.expectFrom!);
    } catch (err) {
      result = { ok: false, text: `FAILED: ${(err as Error).message}` };
    }
    const outbound = await waitForAccess((e) => e.node === CLIENT && e.direction === 'outbound' && e.listener === step.name);
    if (!outbound) {
      say(`    ${CLIENT} -> ?: no access line from ${CLIENT}'s sidecar ... ${result.text}`);
      failures++;
      continue;
    }
    const to = destinationLabel(step.destination, outbound);
    say(`    ${CLIENT} -> ${to}: ${carried(outbound)} (${String(outbound.route)})${outbound.fallback ? ` after a failed vsock connect (fallback ${String(outbound.fallback)})` : ''} ... ${result.text}`);
    if (!result.ok) failures++;
    say(`      ${accessLine(outbound)}`);
    const peerHop = String(outbound.upstream) !== String(outbound.dst);
    if (peerHop) {
      const inbound = await waitForAccess((e) => e.direction === 'inbound' && e.src === outbound.src);
      if (inbound) say(`      ${accessLine(inbound)}`);
    }
  }
  say();

  if (failures > 0) {
    say(`demo: ${failures} check(s) failed`);
    await stopAll();
    process.exitCode = 1;
    return;
  }
  if (options.once) {
    say('demo: all traffic arrived intact');
    await stopAll();
    return;
  }

  // ---- serving until Ctrl-C
  say('serving until Ctrl-C; try:');
  const tries: Array<[string, string]> = [
    [`curl http://${addr(client.listenerAddress('web'))}/hello`, 'service web: vm-b, same hypervisor'],
    [`curl http://${addr(client.listenerAddress('web-c'))}/hello`, 'vm-c: other hypervisor, TCP'],
    [`echo hello | socat - TCP:${addr(client.listenerAddress('echo-b'))}`, "vm-b's echo app"],
    [`curl http://${addr(client.adminAddress())}/stats`, "vm-a's metrics: vsockmesh_transport_decisions_total by reason"],
    [`npx vsockmesh ctl --vm-manager 127.0.0.1:${vmManagerPort} resolve vm/vm-c --from ${CLIENT}`, 'ask the VM manager'],
  ];
  const width = Math.max(...tries.map(([cmd]) => cmd.length));
  for (const [cmd, what] of tries) say(`  ${cmd.padEnd(width)}  # ${what}`);
  const shown = { count: access.length };
  const timer = setInterval(() => {
    for (const e of access.slice(shown.count)) say(`      ${accessLine(e)}`);
    shown.count = access.length;
  }, 200);
  await new Promise<void>((resolve) => {
    const done = (): void => {
      process.off('SIGINT', done);
      process.off('SIGTERM', done);
      options.signal?.removeEventListener('abort', done);
      resolve();
    };
    process.on('SIGINT', done);
    process.on('SIGTERM', done);
    if (options.signal?.aborted) done();
    else options.signal?.addEventListener('abort', done);
  });
  clearInterval(timer);
  say('stopping: draining the sidecars, then the VM manager');
  await stopAll();
  say('stopped');
}

// ---- start-up ------------------------------------------------------------------

async function startEverything(input: { vsockOn: boolean; logSink: (node: string) => Writable; cleanups: Array<() => Promise<void>> }) {
  const { vsockOn, logSink, cleanups } = input;

  // Apps first: each VM's echo app (and vm-b's and vm-c's HTTP app) on the VM's own address.
  const apps = new Map<string, Apps>();
  for (const vm of VMS) {
    const echo = await startEchoApp(vm.ip, cleanups);
    const web = vm.web ? await startHttpApp(vm.ip, vm.id, cleanups) : undefined;
    apps.set(vm.id, { echo, ...(web !== undefined && { http: web }) });
  }
  const outsideEcho = await startEchoApp(OUTSIDE_IP, cleanups);

  // The VM manager: placement is the platform's to say; the demo is the platform here.
  const registry = new Registry({ resolveTtlMs: 30_000 });
  for (const hv of HYPERVISORS) registry.registerHypervisor(hv);
  const vmManager = new VmManagerServer({ registry, logger: createLogger({ level: 'info', destination: logSink('vm-manager') }) });
  const vmManagerPort = await vmManager.start('127.0.0.1:0');
  cleanups.push(async () => {
    await vmManager.drain(1_000);
    await vmManager.stop();
  });
  const vmManagerAddress = `127.0.0.1:${vmManagerPort}`;

  const ip = (id: string): string => VMS.find((v) => v.id === id)!.ip;
  const appsOf = (id: string): Apps => apps.get(id)!;
  const steps: Step[] = [
    {
      name: 'echo-b',
      cluster: { authority: 'echo.vm-b', resolve: { vm: 'vm-b', port: appsOf('vm-b').echo } },
      destination: { kind: 'vm', vmId: 'vm-b' },
      asks: `resolve {vm: vm-b, port: ${appsOf('vm-b').echo}} (vm-b's echo app)`,
      traffic: 'echo',
    },
    {
      name: 'web',
      cluster: { authority: 'web.mesh', resolve: { service: 'web' } },
      destination: { kind: 'service', name: 'web' },
      asks: 'resolve {service: web} (served by vm-b and vm-c)',
      traffic: 'http',
      expectFrom: 'vm-b',
    },
    {
      name: 'echo-c',
      cluster: { authority: 'echo.vm-c', resolve: { vm: 'vm-c', port: appsOf('vm-c').echo } },
      destination: { kind: 'vm', vmId: 'vm-c' },
      asks: `resolve {vm: vm-c, port: ${appsOf('vm-c').echo}} (vm-c's echo app)`,
      traffic: 'echo',
    },
    {
      name: 'web-c',
      cluster: { authority: 'web.vm-c', resolve: { address: ip('vm-c'), port: appsOf('vm-c').http! } },
      destination: { kind: 'ip_port', ip: ip('vm-c'), port: appsOf('vm-c').http! },
      asks: `resolve {address: ${ip('vm-c')}, port: ${appsOf('vm-c').http!}} (vm-c's HTTP app, by address)`,
      traffic: 'http',
      expectFrom: 'vm-c',
    },
    {
      name: 'echo-direct',
      cluster: { resolve: { address: OUTSIDE_IP, port: outsideEcho } },
      destination: { kind: 'ip_port', ip: OUTSIDE_IP, port: outsideEcho },
      asks: `resolve {address: ${OUTSIDE_IP}, port: ${outsideEcho}} (an app the VM manager does not know)`,
      traffic: 'echo',
    },
  ];

  // A sidecar per VM, each asking the VM manager over gRPC (the daemon agent).
  const sidecars = new Map<string, Sidecar>();
  for (const vm of VMS) {
    const own = appsOf(vm.id);
    const ports = [own.echo, ...(own.http !== undefined ? [own.http] : [])].map((port) => ({ port, target: { address: vm.ip, port } }));
    const listeners: Array<Record<string, unknown>> = [{ kind: 'inbound', name: 'inbound', addresses: [vm.ip], port: 0, ports }];
    // vsock_loopback: every socket is at CID 1; the kernel picks each sidecar's port and the VM manager is told it.
    if (vsockOn) listeners.push({ kind: 'inbound', name: 'inbound-vsock', transport: 'vsock', cid: LOOPBACK_CID, port: 0, peer_authorization: 'registry', ports });
    const clusters: Array<Record<string, unknown>> = [];
    if (vm.id === CLIENT) {
      for (const step of steps) {
        listeners.push({ kind: 'outbound', name: step.name, addresses: [vm.ip], port: 0, cluster: step.name });
        clusters.push({ name: step.name, ...step.cluster });
      }
    }
    const config = parseSidecarConfig(
      {
        node: { id: vm.id },
        vsock: { enabled: vsockOn, connect_timeout: '2s' },
        vm_manager: { address: vmManagerAddress, query_timeout: '5s' },
        admin: { address: vm.ip, port: 0 },
        drain_timeout: '2s',
        listeners,
        clusters,
      },
      `demo sidecar ${vm.id}`,
    );
    const sidecar = await createSidecar(config, { logger: createLogger({ level: 'info', destination: logSink(vm.id) }) });
    await sidecar.start();
    cleanups.push(async () => {
      await sidecar.drain();
      await sidecar.stop();
    });
    sidecars.set(vm.id, sidecar);
  }

  // Register the VMs with the ports their sidecars bound.
  for (const vm of VMS) {
    const sidecar = sidecars.get(vm.id)!;
    const own = appsOf(vm.id);
    registry.registerVm({
      vmId: vm.id,
      hypervisorId: vm.hypervisorId,
      vsockCid: vm.cid,
      addresses: [vm.ip],
      sidecar: { tcpPort: sidecar.listenerAddress('inbound').port, vsockPort: vsockOn ? sidecar.listenerAddress('inbound-vsock').port : vm.nominalVsockPort },
      services: [{ name: 'echo', port: own.echo }, ...(own.http !== undefined ? [{ name: 'web', port: own.http }] : [])],
      labels: { demo: 'true' },
    });
  }

  // Every sidecar has heard of itself from the VM manager's Watch stream (peer_authorization: registry needs it).
  const deadline = Date.now() + 20_000;
  for (;;) {
    const unknown = [...sidecars].filter(([, s]) => !s.resolver || s.resolver.local() === null).map(([id]) => id);
    if (unknown.length === 0) break;
    if (Date.now() >= deadline) throw new Error(`the VM manager's records did not reach the sidecars of ${unknown.join(', ')} within 20 s`);
    await new Promise((r) => setTimeout(r, 50));
  }
  return { registry, vmManagerPort, sidecars, apps, outsideEcho, steps };
}

async function startEchoApp(host: string, cleanups: Array<() => Promise<void>>): Promise<number> {
  const sockets = new Set<net.Socket>();
  const server = net.createServer({ allowHalfOpen: true }, (s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
    s.on('error', () => s.destroy());
    s.pipe(s);
  });
  await listen(server, host);
  cleanups.push(async () => {
    for (const s of sockets) s.destroy();
    await new Promise((r) => server.close(r));
  });
  return (server.address() as net.AddressInfo).port;
}

async function startHttpApp(host: string, vmId: string, cleanups: Array<() => Promise<void>>): Promise<number> {
  const server = http.createServer((req, res) => {
    res.writeHead(200, { 'content-type': 'text/plain' });
    res.end(`hello from ${vmId}: ${req.method} ${req.url}\n`);
  });
  await listen(server, host);
  cleanups.push(async () => {
    server.closeAllConnections();
    await new Promise((r) => server.close(r));
  });
  return (server.address() as net.AddressInfo).port;
}

function listen(server: net.Server, host: string): Promise<void> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen({ host, port: 0 }, () => {
      server.off('error', reject);
      resolve();
    });
  });
}

// ---- what to print -------------------------------------------------------------------

/** The decision vm-a's sidecar makes from the VM manager's answer (the same pure function it runs). */
function expectedSelection(destination: Destination, answer: Resolution, vsockOn: boolean): Selection {
  const vm = answer.found ? (answer.vm ?? null) : null;
  const port = destination.kind === 'ip_port' ? destination.port : destination.kind === 'service' ? answer.port : undefined;
  const address = destination.kind === 'ip_port' ? destination.ip : vm?.addresses[0];
  return selectTransport({
    local: answer.caller ?? null,
    destination: vm,
    hypervisor: answer.hypervisor ?? null,
    requested: address !== undefined && port !== undefined ? { address, port } : null,
    vsockHealthy: vsockOn,
    policy: 'prefer-vsock',
  });
}

function explainAnswer(destination: Destination, answer: Resolution): string {
  if (!answer.found || !answer.vm) {
    return `no VM has ${destination.kind === 'ip_port' ? destination.ip : JSON.stringify(destination)}: unknown destination`;
  }
  const vm: VmRecord = answer.vm;
  const caller = answer.caller;
  const where = `${vm.vmId} is on ${vm.hypervisorId} (vsock ${answer.hypervisor?.vsockMode ?? '?'}, CID ${vm.vsockCid})`;
  const relation = caller === undefined ? `${CLIENT} is not registered` : answer.sameHypervisor ? `like ${caller.vmId}: same hypervisor` : `${caller.vmId} is on ${caller.hypervisorId}: other hypervisor`;
  const chosen = destination.kind === 'service' ? `service ${destination.name} -> ${vm.vmId} (the VM manager prefers a provider on the caller's hypervisor); ` : '';
  return `${chosen}${where}, ${relation}`;
}

function explainSelection(selection: Selection, answer: Resolution, offWhy: string): string {
  const vm = answer.vm?.vmId ?? '?';
  switch (selection.reason) {
    case 'same_hypervisor':
      return '';
    case 'vsock_unhealthy':
      return ` -- same hypervisor, so vsock would be chosen, but ${offWhy || 'vsock is unavailable'}: TCP to ${vm}'s sidecar carries it`;
    case 'other_hypervisor':
      return ` -- vsock reaches only VMs on the same hypervisor: TCP to ${vm}'s sidecar`;
    case 'unknown_destination':
      return ' -- no VM, so no sidecar to hand it to: plain TCP straight to the app';
    default:
      return '';
  }
}

/** What carried the connection, from the outbound access line: `vsock CID:PORT`, `tcp ADDR:PORT` (the peer's sidecar) or `direct ADDR:PORT`. */
function carried(e: AccessEntry): string {
  const upstream = String(e.upstream);
  if (e.transport === 'vsock') return `vsock ${upstream.replace(/^vsock:/, '')}`;
  return `${upstream === String(e.dst) ? 'direct' : 'tcp'} ${upstream}`;
}

function destinationLabel(destination: Destination, e: AccessEntry): string {
  const vm = typeof e.dst_vm === 'string' ? e.dst_vm : undefined;
  if (destination.kind === 'service') return `${vm ?? '?'} (service ${destination.name})`;
  if (destination.kind === 'ip_port') return vm ? `${vm} (${formatAddress(destination.ip, destination.port)})` : formatAddress(destination.ip, destination.port);
  return vm ?? '?';
}

function accessLine(e: AccessEntry): string {
  const bytes = `${String(e.bytes_to_upstream)} B up, ${String(e.bytes_to_downstream)} B down`;
  if (e.direction === 'outbound') {
    const hop = String(e.upstream) === String(e.dst) ? '(direct: no sidecar at the destination)' : '(PROXY v2 header to the peer sidecar)';
    const vm = e.dst_vm === undefined ? '' : ` dst_vm=${String(e.dst_vm)}`;
    return `${e.node} outbound ${String(e.src)} -> ${e.node}:${String(e.listener)} -> ${String(e.upstream)}  transport=${String(e.transport)} route=${String(e.route)}${vm}  ${bytes}  outcome=${String(e.outcome)} ${hop}`;
  }
  const identity = String(e.listener) === 'inbound-vsock' ? `; the peer's kernel-given CID matched ${String(e.source_vm ?? '-')}'s in the VM manager (peer_authorization: registry)` : '';
  return (
    `${e.node} inbound  ${String(e.peer)} -> ${e.node}:${String(e.listener)} -> ${String(e.upstream)}  transport=${String(e.transport)}  ${bytes}  outcome=${String(e.outcome)}` +
    ` source_vm=${String(e.source_vm ?? '-')} authority=${String(e.authority ?? '-')}${identity}`
  );
}

function size(n: number): string {
  if (n >= MiB && n % MiB === 0) return `${n / MiB} MiB`;
  if (n >= 1024 && n % 1024 === 0) return `${n / 1024} KiB`;
  return `${n} B`;
}

// ---- traffic ---------------------------------------------------------------------------

/** The client is an app in vm-a: it connects from vm-a's address. */
async function echoResult(target: { address: string; port: number }, bytes: number): Promise<{ ok: boolean; text: string }> {
  const r = await echoThrough(target, bytes);
  const text = `sent ${r.sent} B, received ${r.received} B, sha256 ${r.match ? 'matches' : 'DIFFERS'}`;
  return r.match && r.received === r.sent ? { ok: true, text: `ok, ${size(bytes)} echoed: ${text}` } : { ok: false, text: `FAILED: ${text}` };
}

async function httpResult(target: { address: string; port: number }, expectFrom: string): Promise<{ ok: boolean; text: string }> {
  const r = await httpGet(target);
  const text = `HTTP ${r.status}: ${r.body.trim()}`;
  return r.status === 200 && r.body.startsWith(`hello from ${expectFrom}:`) ? { ok: true, text: `ok, ${text}` } : { ok: false, text: `FAILED (expected HTTP 200 from ${expectFrom}): ${text}` };
}

function echoThrough(target: { address: string; port: number }, bytes: number): Promise<{ sent: number; received: number; match: boolean }> {
  const payload = randomBytes(bytes);
  const sentHash = createHash('sha256').update(payload).digest('hex');
  return new Promise((resolve, reject) => {
    const socket = net.connect({ host: target.address, port: target.port, localAddress: target.address, allowHalfOpen: true });
    const hash = createHash('sha256');
    let received = 0;
    socket.on('data', (chunk: Buffer) => {
      received += chunk.length;
      hash.update(chunk);
    });
    socket.on('end', () => {
      socket.end();
      resolve({ sent: bytes, received, match: hash.digest('hex') === sentHash });
    });
    socket.on('error', reject);
    socket.setTimeout(TRAFFIC_TIMEOUT_MS, () => socket.destroy(new Error(`no progress for ${TRAFFIC_TIMEOUT_MS / 1000} s`)));
    socket.end(payload);
  });
}

function httpGet(target: { address: string; port: number }): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = http.get({ host: target.address, port: target.port, localAddress: target.address, path: '/', agent: false }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => (body += d));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
      res.on('error', reject);
    });
    req.on('error', reject);
    req.setTimeout(TRAFFIC_TIMEOUT_MS, () => req.destroy(new Error(`no answer for ${TRAFFIC_TIMEOUT_MS / 1000} s`)));
  });
}

