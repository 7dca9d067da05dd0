// The demo's world: an in-process VM manager (the real gRPC server on
// 127.0.0.1:0) that knows two hypervisors and three VMs, vm-a and vm-b on
// hv-1, vm-c on hv-2. Each VM is a loopback address of its own (Linux routes
// all of 127/8) with its apps and a sidecar; vm-a's sidecar has one outbound
// listener per step, each resolving its destination through the VM manager.
// Plus an app at an address the VM manager does not know. Secure as every
// deployment: a throw-away CA in a temporary directory issues the VM manager
// its cp/vm-manager SVID, each sidecar its vm/<id> (files, tls:) and an
// operator its certificate for `ctl`; every control call is mutual TLS.

import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Writable } from 'node:stream';
import { parseSidecarConfig } from '../../config/load.js';
import { createLogger } from '../../runtime/log.js';
import type { Sidecar } from '../../sidecar.js';
import type { Destination, HypervisorRecord } from '../../resolve/types.js';
import { Registry } from '../../../xds/vm-manager/registry.js';
import { VmManagerServer } from '../../../xds/vm-manager/server.js';
import { issueIdentity, processIdentity } from '../../../xds/security/process-identity.js';
import type { IdentityMaterial } from '../../identity/certificate-source.js';
import { DEFAULT_TRUST_DOMAIN } from '../../identity/spiffe.js';
import { createSidecar } from '../proxies.js';
import { echoTransfer, httpGet, startEchoServer, startHttpApp } from './apps.js';

/** Whether vsock_loopback is usable here, decided from the filesystem alone (no AF_VSOCK socket). */
export function detectVsockLoopback(): { usable: true } | { usable: false; why: string } {
  if (!existsSync('/sys/module/vsock_loopback')) return { usable: false, why: 'no /sys/module/vsock_loopback' };
  if (!existsSync('/dev/vsock')) return { usable: false, why: 'no /dev/vsock' };
  return { usable: true };
}

export interface DemoVm {
  id: string;
  hypervisorId: string;
  ip: string;
  cid: number;
  /** Registered when vsock is off, so the VM manager's records are the same either way (nothing listens there). */
  nominalVsockPort: number;
  web: boolean;
}

export const HYPERVISORS: HypervisorRecord[] = [
  { hypervisorId: 'hv-1', vsockMode: 'loopback', relayPort: 0 },
  { hypervisorId: 'hv-2', vsockMode: 'host-relay', relayPort: 15100 },
];

export const VMS: DemoVm[] = [
  { id: 'vm-a', hypervisorId: 'hv-1', ip: '127.0.0.2', cid: 1, nominalVsockPort: 15007, web: false },
  { id: 'vm-b', hypervisorId: 'hv-1', ip: '127.0.0.3', cid: 1, nominalVsockPort: 15008, web: true },
  { id: 'vm-c', hypervisorId: 'hv-2', ip: '127.0.0.4', cid: 3, nominalVsockPort: 15009, web: true },
];

/** An app the VM manager does not know (no VM, no sidecar). */
export const OUTSIDE_IP = '127.0.0.5';
/** The VM whose apps send the demo's traffic. */
export const CLIENT = 'vm-a';
const LOOPBACK_CID = 1;
/** A demo connection that makes no progress this long fails (emulated guests are slow, but not this slow). */
const TRAFFIC_TIMEOUT_MS = 60_000;

export interface Apps {
  echo: number;
  http?: number;
}

export interface Step {
  /** vm-a's outbound listener and cluster. */
  name: string;
  cluster: Record<string, unknown>;
  /** What the cluster resolves (a VM target names the app's port too). */
  destination: Destination & { port?: number };
  /** What the cluster asks for, as a person reads it. */
  asks: string;
  traffic: 'echo' | 'http';
  /** http: the VM whose app must answer. */
  expectFrom?: string;
}

/** PEM files of one identity (key mode 0600). */
export interface IdentityFiles {
  spiffeId: string;
  cert: string;
  key: string;
  ca: string;
}

export interface Scenario {
  registry: Registry;
  vmManagerPort: number;
  /** The throw-away CA's directory, the VM manager's SPIFFE ID, each VM's and the operator's identity files. */
  identities: { dir: string; vmManager: string; vms: Map<string, IdentityFiles>; operator: IdentityFiles };
  sidecars: Map<string, Sidecar>;
  apps: Map<string, Apps>;
  outsideEcho: number;
  steps: Step[];
}

/** Starts the apps, the VM manager and a sidecar per VM, and registers the VMs; what it started goes on `cleanups`. */
export async function startScenario(input: { vsockOn: boolean; logSink: (node: string) => Writable; cleanups: Array<() => Promise<void>> }): Promise<Scenario> {
  const { vsockOn, logSink, cleanups } = input;

  // Apps first: each VM's echo app (and vm-b's and vm-c's HTTP app) on the VM's own address.
  const startEcho = async (host: string): Promise<number> => {
    const app = await startEchoServer(host);
    cleanups.push(() => app.close());
    return app.port;
  };
  const apps = new Map<string, Apps>();
  for (const vm of VMS) {
    const echo = await startEcho(vm.ip);
    let web: number | undefined;
    if (vm.web) {
      const app = await startHttpApp(vm.ip, vm.id);
      cleanups.push(() => app.close());
      web = app.port;
    }
    apps.set(vm.id, { echo, ...(web !== undefined && { http: web }) });
  }
  const outsideEcho = await startEcho(OUTSIDE_IP);

  // The throw-away CA (the embedded root in a temporary directory) and the VM manager's own identity from it.
  const dir = await mkdtemp(join(tmpdir(), 'vsockmesh-demo-'));
  cleanups.push(() => rm(dir, { recursive: true, force: true }));
  const vmManagerLogger = createLogger({ level: 'info', destination: logSink('vm-manager') });
  const own = await processIdentity({ identityDir: dir, name: 'vm-manager' }, vmManagerLogger, 'vm-manager');
  cleanups.push(async () => own.close());
  const ca = own.ca!;
  const identityFiles = async (kind: 'vm' | 'operator', name: string): Promise<IdentityFiles> => {
    const m: IdentityMaterial = await issueIdentity(ca, `spiffe://${DEFAULT_TRUST_DOMAIN}/${kind}/${name}`);
    const at = join(dir, `${kind}-${name}`);
    await mkdir(at, { mode: 0o700 });
    const files = { spiffeId: m.spiffeId, cert: join(at, 'cert.pem'), key: join(at, 'key.pem'), ca: join(at, 'ca.pem') };
    await writeFile(files.key, m.keyPem, { mode: 0o600 });
    await writeFile(files.cert, m.chainPem);
    await writeFile(files.ca, m.bundlePem);
    return files;
  };

  // The VM manager: placement is the platform's to say; the demo is the platform here.
  const registry = new Registry({ resolveTtlMs: 30_000 });
  for (const hv of HYPERVISORS) registry.registerHypervisor(hv);
  const vmManager = new VmManagerServer({ registry, transport: own.transport, logger: vmManagerLogger });
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
      destination: { kind: 'vm', vmId: 'vm-b', port: appsOf('vm-b').echo },
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
      destination: { kind: 'vm', vmId: 'vm-c', port: appsOf('vm-c').echo },
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
  const vmIdentities = new Map<string, IdentityFiles>();
  for (const vm of VMS) {
    const identity = await identityFiles('vm', vm.id);
    vmIdentities.set(vm.id, identity);
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
        tls: { cert: identity.cert, key: identity.key, ca: identity.ca },
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
  const identities = { dir, vmManager: 'source' in own.transport ? own.transport.source.current().spiffeId : '', vms: vmIdentities, operator: await identityFiles('operator', 'demo') };
  return { registry, vmManagerPort, identities, sidecars, apps, outsideEcho, steps };
}

export type TrafficResult =
  | { kind: 'echo'; sent: number; received: number; match: boolean }
  | { kind: 'http'; status: number; body: string; expectFrom: string }
  | { kind: 'failed'; error: string };

/** A step's traffic, sent by an app in vm-a: it connects from vm-a's address, to vm-a's outbound listener. */
export async function sendTraffic(step: Step, listener: { address: string; port: number }, echoBytes: number): Promise<TrafficResult> {
  const options = { localAddress: listener.address, idleTimeoutMs: TRAFFIC_TIMEOUT_MS };
  try {
    if (step.traffic === 'http') return { kind: 'http', ...(await httpGet(listener, options)), expectFrom: step.expectFrom! };
    const r = await echoTransfer(listener.port, echoBytes, listener.address, options);
    return { kind: 'echo', sent: r.sent, received: r.received, match: r.receivedSha256 === r.sentSha256 };
  } catch (err) {
    return { kind: 'failed', error: (err as Error).message };
  }
}
