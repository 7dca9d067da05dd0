// The demo's world: an in-process VM manager (the real gRPC server on
// 127.0.0.1:0) that knows two hypervisors and three VMs, vm-a and vm-b on
// hv-1, vm-c on hv-2. Each VM is a loopback address of its own (Linux routes
// all of 127/8) with its apps and a sidecar; vm-a's sidecar has one outbound
// listener per step, each resolving its destination through the VM manager.
// Plus an app at an address the VM manager does not know.

import { existsSync } from 'node:fs';
import type { Writable } from 'node:stream';
import { parseSidecarConfig } from '../../config/load.js';
import { createLogger } from '../../runtime/log.js';
import type { Sidecar } from '../../sidecar.js';
import type { Destination, HypervisorRecord } from '../../resolve/types.js';
import { Registry } from '../../../xds/vm-manager/registry.js';
import { VmManagerServer } from '../../../xds/vm-manager/server.js';
import { createSidecar } from '../proxies.js';
import { staticSource } from '../../identity/certificate-source.js';
import { startDemoIdentities } from './identities.js';
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

export interface Scenario {
  registry: Registry;
  vmManagerPort: number;
  sidecars: Map<string, Sidecar>;
  apps: Map<string, Apps>;
  outsideEcho: number;
  steps: Step[];
  /** mTLS on the VM manager API: who holds which SPIFFE ID, from a throw-away CA in `caDir`. */
  identities: { caDir: string; shown: Array<{ who: string; spiffeId: string; notAfter: Date }> };
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

  // The VM manager: placement is the platform's to say; the demo is the platform here.
  const registry = new Registry({ resolveTtlMs: 30_000 });
  for (const hv of HYPERVISORS) registry.registerHypervisor(hv);
  const identities = await startDemoIdentities(cleanups);
  const vmManagerIdentity = await identities.issue('cp', 'vm-manager');
  const shown: Array<{ who: string; spiffeId: string; notAfter: Date }> = [{ who: 'vm-manager', spiffeId: vmManagerIdentity.spiffeId, notAfter: vmManagerIdentity.notAfter }];
  const vmManager = new VmManagerServer({ registry, transport: { source: staticSource(vmManagerIdentity) }, logger: createLogger({ level: 'info', destination: logSink('vm-manager') }) });
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
    const identity = await identities.issue('vm', vm.id);
    shown.push({ who: `sidecar ${vm.id}`, spiffeId: identity.spiffeId, notAfter: identity.notAfter });
    const files = await identities.files(vm.id, identity);
    const config = parseSidecarConfig(
      {
        node: { id: vm.id },
        vsock: { enabled: vsockOn, connect_timeout: '2s' },
        vm_manager: { address: vmManagerAddress, query_timeout: '5s' },
        tls: files,
        // The TCP peer hop is mutual TLS with the same SVID; a plain-text peer is refused (a new mesh's default).
        peer_tls: { mode: 'strict', key_file: files.key, chain_file: files.cert, bundle_file: files.ca },
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
  return { registry, vmManagerPort, sidecars, apps, outsideEcho, steps, identities: { caDir: identities.dir, shown } };
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
