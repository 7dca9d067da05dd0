// `vsockmesh control-plane`: the ADS server, the config API and (by default)
// the VM manager, on one gRPC port. Snapshots are rebuilt from the mesh and
// the VM registry after every change (debounced), checked for consistency,
// and only then served: a node that is a registered VM gets its own snapshot
// once it connects; every other client (a plain gRPC xDS client, say) the
// default. This file wires the pieces: translate.ts (resources),
// removal-delay.ts (make before break), node-snapshots.ts (per-node memo),
// snapshot-cache.ts, registry-source.ts, debounce.ts and ads-server.ts.
// Readiness (notReady(), and the gRPC health service) follows the mesh
// store (and the in-process VM manager's registry store): until the mesh is
// read nothing is built and ADS streams are refused; once it was, its last
// snapshots are served even while the store is away.

import * as grpc from '@grpc/grpc-js';
import { systemClock, type CancelTimer } from '../../proxy/runtime/clock.js';
import type { VmRecord } from '../../proxy/resolve/types.js';
import type { Logger } from '../../proxy/runtime/log.js';
import { settledWithin } from '../../proxy/runtime/within.js';
import type { IdentityService } from '../identity/certify-server.js';
import { HealthService, type HealthStatus } from '../health-service.js';
import { configProto } from '../proto.js';
import { VmManagerClient } from '../vm-manager/client.js';
import type { Registry } from '../vm-manager/registry.js';
import type { RegistryStore } from '../vm-manager/registry-store.js';
import { VM_MANAGER_SERVICE, VmManagerServer } from '../vm-manager/server.js';
import { AdsServer } from './ads-server.js';
import { MAX_GRPC_RECEIVE_BYTES } from './bounds.js';
import { configApiHandlers, type SyncStatusSource } from './config-api.js';
import { Debouncer } from './debounce.js';
import type { MeshStore } from './mesh-store.js';
import { NodeSnapshots } from './node-snapshots.js';
import { LocalRegistry, RegistryMirror, type RegistrySource } from './registry-source.js';
import { delayClusterRemoval, type DelayedRemoval } from './removal-delay.js';
import { SnapshotCache } from './snapshot-cache.js';
import type { Snapshot } from './snapshot.js';
import type { RegistryView } from './translate.js';
import { SharedSnapshots } from './shared-snapshot.js';
import { ROLES } from '../security/authorize.js';
import { ControlGuard } from '../security/guard.js';
import { serverCredentials, type ControlTransport } from '../security/transport.js';

export interface ControlPlaneOptions {
  mesh: MeshStore;
  logger: Logger;
  /** Mutual TLS with this process's identity for the server and the VM manager client, or plain text when asked for by name. */
  transport: ControlTransport;
  /** Serve this registry's VM manager API too (the default; kept in a state file or a store), or follow a VM manager elsewhere. */
  vms: { registry: Registry; statePath?: string; registryStore?: RegistryStore } | { remote: string };
  debounce?: { quietMs: number; maxMs: number };
  /** How long a removed cluster is still served after the listeners and routes naming it are gone (default 1 s). */
  clusterRemovalDelayMs?: number;
  /** How long a node's sync status and snapshot are kept after its last ADS stream closed (default 10 minutes). */
  statusRetentionMs?: number;
  /** The identity API (Certify, JoinTokens), served when the control plane runs a CA. */
  identity?: IdentityService;
}

/** The services whose health the control plane reports ('' is the whole server). */
const ADS_SERVICE = 'envoy.service.discovery.v3.AggregatedDiscoveryService';
const MESH_CONFIG_SERVICE = 'vsockmesh.config.v1.MeshConfig';

export class ControlPlane {
  readonly server: grpc.Server;
  readonly ads: AdsServer;
  readonly guard: ControlGuard;
  readonly cache: SnapshotCache;
  readonly vmManager: VmManagerServer | undefined;
  private readonly registry: RegistrySource;
  private readonly debouncer: Debouncer;
  private readonly nodes = new NodeSnapshots();
  private readonly removalDelayMs: number;
  /** What every node shares (the default snapshot), as of the last rebuild. */
  private shared: Snapshot | undefined;
  private readonly sharedSnapshots = new SharedSnapshots();
  private removal: DelayedRemoval | undefined;
  private cancelWake: CancelTimer | undefined;
  private boundPort = 0;
  private draining = false;
  private readonly health = new HealthService((service) => this.healthStatus(service));
  /** Rebuilds done (for tests and /stats). */
  rebuilds = 0;

  constructor(private readonly options: ControlPlaneOptions) {
    const { logger } = options;
    this.removalDelayMs = options.clusterRemovalDelayMs ?? 1_000;
    this.cache = new SnapshotCache({
      // Node snapshots are checked as they are made (node-snapshots.ts); anything else here.
      check: (s) => this.nodes.checkShared(s),
      onListenerError: (err, nodeId) => logger.error({ err, node_id: nodeId }, 'a snapshot watcher failed'),
    });
    this.ads = new AdsServer({
      cache: this.cache,
      logger,
      ...(options.statusRetentionMs !== undefined && { statusRetentionMs: options.statusRetentionMs }),
      onNodeSeen: (nodeId) => this.serveNode(nodeId),
      // A node gone longer than the retention is rebuilt no more: its snapshot is made again if it comes back.
      onNodeForgotten: (nodeId) => this.forgetNode(nodeId),
      notServing: () => (options.mesh.loaded ? undefined : options.mesh.notReady()),
    });
    const { vms } = options;
    // The registry this process serves, or its mirror of a remote one (made below; calls come after construction).
    this.guard = new ControlGuard({ transport: options.transport, logger, metrics: this.ads.metrics, server: 'control-plane', vmHypervisor: (id: string) => this.vmRecord(id)?.hypervisorId ?? null });
    this.server = new grpc.Server({ 'grpc.max_send_message_length': 64 * 1024 * 1024, 'grpc.max_receive_message_length': MAX_GRPC_RECEIVE_BYTES, interceptors: this.guard.interceptors() });
    this.ads.addTo(this.server);
    this.health.addTo(this.server);
    this.debouncer = new Debouncer(() => this.rebuild(), {
      quietMs: options.debounce?.quietMs ?? 100,
      maxMs: options.debounce?.maxMs ?? 1_000,
      onError: (err) => logger.error({ err, reason: 'snapshot_rebuild_failed' }, `snapshot rebuild failed; serving the previous snapshots: ${(err as Error).message}`),
    });
    const changed = (): void => this.debouncer.trigger();
    if ('registry' in vms) {
      this.vmManager = new VmManagerServer({ registry: vms.registry, logger, grpcServer: this.server, ...(vms.statePath !== undefined && { statePath: vms.statePath }), ...(vms.registryStore !== undefined && { registryStore: vms.registryStore }) });
      vms.registryStore?.onReadinessChange(() => this.health.changed());
      this.registry = new LocalRegistry(vms.registry, changed);
    } else {
      this.registry = new RegistryMirror(new VmManagerClient(vms.remote, { transport: options.transport }), vms.remote, changed, logger);
    }
    options.mesh.on('change', changed);
    options.mesh.on('health', () => this.health.changed());
    this.server.addService(configProto().vsockmesh.config.v1.MeshConfig.service, configApiHandlers(options.mesh, this.syncSource(), logger, (call) => {
      const seen = this.guard.identify(call);
      if (seen === 'insecure') return { spiffe_id: '', role: '', insecure: true };
      return seen.ok ? { spiffe_id: seen.spiffeId, role: ROLES[seen.identity.kind], insecure: false } : { spiffe_id: '', role: '', insecure: false };
    }));
    options.identity?.addTo(this.server, (id) => this.vmRecord(id));
  }

  /** What the registry holds (the served one, or the mirror's last known), for /config_dump. */
  registrySummary(): { vm_manager: string; hypervisors: number; vms: number } {
    const state = this.registry.state();
    return { vm_manager: this.registry.where, hypervisors: state.hypervisors.length, vms: state.vms.length };
  }

  /** The registry's record of a VM: the served registry's own, or the mirror's last known. */
  private vmRecord(vmId: string): VmRecord | undefined {
    return this.registry.state().byId.get(vmId);
  }

  get port(): number {
    return this.boundPort;
  }

  /** Why this replica is not ready (admin /ready, gRPC health), or undefined when it is. */
  notReady(): string | undefined {
    if (this.draining) return 'draining';
    const mesh = this.options.mesh.notReady();
    if (mesh !== undefined) return mesh;
    const registry = 'registryStore' in this.options.vms ? this.options.vms.registryStore?.notReady() : undefined;
    if (registry !== undefined) return registry;
    if (this.vmManager !== undefined && this.vmManager.state !== 'serving') return `the VM manager is ${this.vmManager.state}`;
    return undefined;
  }

  private healthStatus(service: string): HealthStatus | undefined {
    if (service === VM_MANAGER_SERVICE) return this.vmManager?.healthStatus(service);
    // ADS serves the last snapshots while the store is away: serving once the mesh was read.
    if (service === ADS_SERVICE) return this.draining || !this.options.mesh.loaded ? 'NOT_SERVING' : 'SERVING';
    if (service === '' || service === MESH_CONFIG_SERVICE) return this.notReady() === undefined ? 'SERVING' : 'NOT_SERVING';
    return undefined;
  }

  async start(address: string): Promise<number> {
    this.rebuild();
    this.boundPort = await new Promise<number>((resolve, reject) => {
      this.server.bindAsync(address, serverCredentials(this.options.transport, { clientCertificate: this.options.identity ? 'optional' : 'required' }), (err, port) => (err ? reject(new Error(`control-plane: cannot listen on ${address}: ${err.message}`)) : resolve(port)));
    });
    await this.vmManager?.start(address);
    this.registry.start();
    this.options.logger.info({ address, port: this.boundPort, vm_manager: this.registry.where }, 'control-plane serving');
    return this.boundPort;
  }

  /** Ends the ADS and Watch streams (clients reconnect elsewhere or later), lets unary calls finish. */
  async drain(timeoutMs = 5_000): Promise<void> {
    this.draining = true;
    this.health.changed();
    this.health.end();
    this.ads.closeStreams();
    await this.vmManager?.drain(timeoutMs);
    await settledWithin(new Promise<void>((resolve) => this.server.tryShutdown(() => resolve())), timeoutMs);
  }

  async stop(): Promise<void> {
    this.cancelWake?.();
    this.debouncer.close();
    this.registry.stop();
    this.ads.stop();
    this.health.end();
    await this.vmManager?.stop();
    this.server.forceShutdown();
    this.guard.stop();
  }

  /** Applies pending changes now instead of after the debounce. */
  flush(): Promise<void> {
    return this.debouncer.flush();
  }

  /** A stream named its node: a registered VM without a snapshot of its own gets one now (else it waits on the default). */
  private serveNode(nodeId: string): void {
    if (this.cache.has(nodeId)) return;
    const vm = this.registry.state().byId.get(nodeId);
    if (vm === undefined) return;
    try {
      this.cache.setSnapshot(nodeId, this.nodeSnapshot(vm, this.registry.state()));
    } catch {
      // Inconsistent: the node gets the default until a rebuild succeeds (the rebuild logs why).
    }
  }

  private forgetNode(nodeId: string): void {
    this.cache.clearSnapshot(nodeId);
    this.nodes.forget(nodeId);
  }

  private nodeSnapshot(vm: VmRecord, registry: RegistryView): Snapshot {
    const mesh = this.options.mesh.config;
    this.shared ??= this.sharedSnapshots.snapshot(mesh, registry);
    return this.nodes.snapshotFor(vm, mesh, this.shared);
  }

  /**
   * New snapshots for every node the ADS server remembers and for everyone
   * else: registered VMs get their own first, so none of them is told the
   * default on the way; a node whose VM left falls back to the default. An
   * inconsistent snapshot is refused (logged) and the previous one kept.
   */
  private rebuild(): void {
    // No mesh read yet: nothing to build (an empty snapshot would tell sidecars to drop every listener).
    if (!this.options.mesh.loaded) return;
    this.rebuilds++;
    const registry = this.registry.state();
    const now = systemClock.now();
    this.removal = delayClusterRemoval(this.removal, this.sharedSnapshots.snapshot(this.options.mesh.config, registry), now, this.removalDelayMs);
    this.shared = this.removal.snapshot;
    this.wakeAt(this.removal.wakeAt, now);
    const serve = (what: string, set: () => void): void => {
      try {
        set();
      } catch (err) {
        this.options.logger.error({ reason: 'inconsistent_snapshot', node: what, error: (err as Error).message }, `not serving a new snapshot to ${what}: ${(err as Error).message}`);
      }
    };
    const remembered = this.ads.nodes.nodeIds();
    for (const nodeId of remembered) {
      const vm = registry.byId.get(nodeId);
      if (vm !== undefined) serve(nodeId, () => this.cache.setSnapshot(nodeId, this.nodeSnapshot(vm, registry)));
    }
    serve('nodes without their own snapshot', () => this.cache.setDefault(this.shared));
    for (const nodeId of remembered) if (!registry.byId.has(nodeId)) this.forgetNode(nodeId);
  }

  /** Rebuilds again once the first kept cluster is due to go (a little after, so that it has). */
  private wakeAt(at: number | null, now: number): void {
    this.cancelWake?.();
    this.cancelWake = at === null ? undefined : systemClock.setTimer(() => this.debouncer.trigger(), Math.max(0, at - now) + 1);
  }

  private syncSource(): SyncStatusSource {
    return {
      page: (page) => this.ads.syncStatusPage(page),
      currentVersions: (nodeIds) => {
        const out: Record<string, string> = {};
        const add = (node: string, s: Snapshot | undefined): void => {
          if (s) for (const [type, version] of Object.entries(s.versions)) out[`${node}|${type}`] = version;
        };
        add('', this.cache.default);
        for (const id of nodeIds) if (this.cache.has(id)) add(id, this.cache.get(id));
        return out;
      },
    };
  }
}
