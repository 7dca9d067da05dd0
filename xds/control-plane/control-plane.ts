// `vsockmesh control-plane`: the ADS server, the config API and (by default)
// the VM manager, on one gRPC port. Snapshots are rebuilt from the mesh and
// the VM registry after every change (debounced), checked for consistency,
// and only then served: a node gets its own snapshot (its listeners) once it
// connects; every other client (a plain gRPC xDS client, say) the default.

import * as grpc from '@grpc/grpc-js';
import type { Logger } from '../../proxy/runtime/log.js';
import { settledWithin } from '../../proxy/runtime/within.js';
import { configProto } from '../proto.js';
import { VmManagerClient } from '../vm-manager/client.js';
import { Registry } from '../vm-manager/registry.js';
import { VmManagerServer } from '../vm-manager/server.js';
import type { HypervisorRecord, VmEvent, VmRecord } from '../../proxy/resolve/types.js';
import { AdsServer } from './ads-server.js';
import { MAX_GRPC_RECEIVE_BYTES } from './bounds.js';
import { configApiHandlers, type SyncStatusSource } from './config-api.js';
import type { MeshStore } from './mesh-store.js';
import { buildNodeResources, buildResources, checkConsistency, mergeSnapshots, toSnapshot, typeVersion, type RegistryView } from './snapshot.js';
import { Debouncer, SnapshotCache } from './snapshot-cache.js';
import type { MeshConfig, Snapshot, VersionedResource } from './types.js';
import { TYPE_URLS, type ResourceTypeUrl } from '../envoy/proto.js';

export interface ControlPlaneOptions {
  mesh: MeshStore;
  logger: Logger;
  /** Serve this registry's VM manager API too (the default), or follow a VM manager elsewhere. */
  vms: { registry: Registry; statePath?: string } | { remote: string };
  debounce?: { quietMs: number; maxMs: number };
  /** How long a removed cluster is still served after the listeners and routes naming it are gone (default 1 s). */
  clusterRemovalDelayMs?: number;
  /** How long a node's sync status and snapshot are kept after its last ADS stream closed (default 10 minutes). */
  statusRetentionMs?: number;
}

/** The registry as the snapshot builder needs it, from the local registry or a remote VM manager's Watch. */
class RegistryMirror {
  private readonly vms = new Map<string, VmRecord>();
  private readonly hypervisors = new Map<string, HypervisorRecord>();
  private watch: { cancel(): void } | undefined;
  private retry: NodeJS.Timeout | undefined;
  private revision = 0;
  private epoch = '';
  private stopped = false;

  constructor(
    private readonly client: VmManagerClient,
    private readonly onChange: () => void,
    private readonly logger: Logger,
  ) {}

  start(): void {
    if (this.stopped) return;
    this.watch = this.client.watch(
      this.revision,
      {
        onOpen: (epoch) => {
          if (epoch !== this.epoch && this.epoch !== '') this.reset();
          this.epoch = epoch;
        },
        onEvent: (e) => this.apply(e),
        onError: (err) => {
          if (this.stopped) return;
          if ((err as { code?: string }).code === 'OUT_OF_RANGE') this.reset();
          this.logger.warn({ reason: 'vm_manager_watch', error: err.message }, 'VM manager watch ended; serving the last known VMs, reconnecting');
          this.retry = setTimeout(() => this.start(), 1_000);
          this.retry.unref();
        },
      },
      this.epoch,
    );
  }

  stop(): void {
    this.stopped = true;
    clearTimeout(this.retry);
    this.watch?.cancel();
    this.client.close();
  }

  /** Made once per change, not once per node. */
  private cached: (RegistryView & { byId: Map<string, VmRecord> }) | undefined;

  view(): RegistryView & { byId: Map<string, VmRecord> } {
    this.cached ??= { vms: [...this.vms.values()], hypervisors: [...this.hypervisors.values()], byId: new Map(this.vms) };
    return this.cached;
  }

  has(vmId: string): boolean {
    return this.vms.has(vmId);
  }

  private reset(): void {
    this.cached = undefined;
    this.revision = 0;
    this.vms.clear();
    this.hypervisors.clear();
  }

  private apply(e: VmEvent): void {
    this.cached = undefined;
    this.revision = e.revision;
    if (e.type === 'hypervisor') this.hypervisors.set(e.hypervisor.hypervisorId, e.hypervisor);
    else if (e.type === 'removed') this.vms.delete(e.vm.vmId);
    else this.vms.set(e.vm.vmId, e.vm);
    this.onChange();
  }
}

/** Builds a node's snapshot the first time anything asks for it. */
class LazySnapshotCache extends SnapshotCache {
  constructor(
    private readonly build: (nodeId: string) => Snapshot | undefined,
    check: (s: Snapshot) => void,
  ) {
    super({ check });
  }

  private ensure(nodeId: string): void {
    if (this.has(nodeId)) return;
    try {
      const snapshot = this.build(nodeId);
      if (snapshot) this.setSnapshot(nodeId, snapshot);
    } catch {
      // Inconsistent: the node gets the default until a rebuild succeeds (the rebuild logs why).
    }
  }

  override get(nodeId: string): Snapshot | undefined {
    this.ensure(nodeId);
    return super.get(nodeId);
  }

  override watch(nodeId: string, listener: (s: Snapshot | undefined) => void): () => void {
    this.ensure(nodeId);
    return super.watch(nodeId, listener);
  }
}

export class ControlPlane {
  readonly server = new grpc.Server({ 'grpc.max_send_message_length': 64 * 1024 * 1024, 'grpc.max_receive_message_length': MAX_GRPC_RECEIVE_BYTES });
  readonly ads: AdsServer;
  readonly cache: LazySnapshotCache;
  readonly vmManager: VmManagerServer | undefined;
  private readonly mirror: RegistryMirror | undefined;
  private readonly debouncer: Debouncer;
  private boundPort = 0;
  /** Rebuilds done (for tests and /stats). */
  rebuilds = 0;

  constructor(private readonly options: ControlPlaneOptions) {
    const check = (s: Snapshot): void => {
      if (this.checked.has(s)) return;
      const problems = checkConsistency(s);
      if (problems.length > 0) throw new Error(`inconsistent snapshot: ${problems.join('; ')}`);
    };
    this.cache = new LazySnapshotCache((nodeId) => (this.isVm(nodeId) ? this.snapshotFor(nodeId) : undefined), check);
    this.ads = new AdsServer({
      cache: this.cache,
      logger: options.logger,
      ...(options.statusRetentionMs !== undefined && { statusRetentionMs: options.statusRetentionMs }),
      // A node gone longer than the retention is rebuilt no more: its snapshot is made again if it comes back.
      onNodeForgotten: (nodeId) => {
        this.cache.clearSnapshot(nodeId);
        this.nodeParts.delete(nodeId);
      },
    });
    this.ads.addTo(this.server);
    this.debouncer = new Debouncer(() => this.rebuild(), {
      quietMs: options.debounce?.quietMs ?? 100,
      maxMs: options.debounce?.maxMs ?? 1_000,
      onError: (err) => options.logger.error({ err, reason: 'snapshot_rebuild_failed' }, `snapshot rebuild failed; serving the previous snapshots: ${(err as Error).message}`),
    });
    const { vms } = options;
    if ('registry' in vms) {
      this.vmManager = new VmManagerServer({ registry: vms.registry, logger: options.logger, grpcServer: this.server, ...(vms.statePath !== undefined && { statePath: vms.statePath }) });
      vms.registry.subscribe(() => this.debouncer.trigger());
    } else {
      this.mirror = new RegistryMirror(new VmManagerClient(vms.remote), () => this.debouncer.trigger(), options.logger);
    }
    options.mesh.on('change', () => this.debouncer.trigger());
    this.server.addService(configProto().vsockmesh.config.v1.MeshConfig.service, configApiHandlers(options.mesh, this.syncSource(), options.logger));
  }

  get port(): number {
    return this.boundPort;
  }

  async start(address: string): Promise<number> {
    this.rebuild();
    this.boundPort = await new Promise<number>((resolve, reject) => {
      this.server.bindAsync(address, grpc.ServerCredentials.createInsecure(), (err, port) => (err ? reject(new Error(`control-plane: cannot listen on ${address}: ${err.message}`)) : resolve(port)));
    });
    await this.vmManager?.start(address);
    this.mirror?.start();
    this.options.logger.info({ address, port: this.boundPort, vm_manager: this.vmManager ? 'in process' : (this.options.vms as { remote: string }).remote }, 'control-plane serving');
    return this.boundPort;
  }

  /** Ends the ADS and Watch streams (clients reconnect elsewhere or later), lets unary calls finish. */
  async drain(timeoutMs = 5_000): Promise<void> {
    this.ads.closeStreams();
    await this.vmManager?.drain(timeoutMs);
    await settledWithin(new Promise<void>((resolve) => this.server.tryShutdown(() => resolve())), timeoutMs);
  }

  async stop(): Promise<void> {
    clearTimeout(this.removalTimer);
    this.debouncer.close();
    this.mirror?.stop();
    this.ads.stop();
    await this.vmManager?.stop();
    this.server.forceShutdown();
  }

  /** Applies pending changes now instead of after the debounce. */
  flush(): Promise<void> {
    return this.debouncer.flush();
  }

  /** The registry as of its current revision (copied once per revision, not per node). */
  private viewCache: { revision: number; view: RegistryView; byId: Map<string, VmRecord> } | undefined;

  private view(): RegistryView & { byId: Map<string, VmRecord> } {
    if (this.mirror) return this.mirror.view();
    const registry = (this.options.vms as { registry: Registry }).registry;
    if (this.viewCache?.revision !== registry.revision) {
      const { vms, hypervisors } = registry.list();
      this.viewCache = { revision: registry.revision, view: { vms, hypervisors }, byId: new Map(vms.map((vm) => [vm.vmId, vm])) };
    }
    return { ...this.viewCache.view, byId: this.viewCache.byId };
  }

  private isVm(nodeId: string): boolean {
    return this.mirror ? this.mirror.has(nodeId) : (this.options.vms as { registry: Registry }).registry.getVm(nodeId) !== undefined;
  }

  /** The default snapshot (what every node shares), built once per rebuild. */
  private shared: Snapshot | undefined;
  /** The names a node's own listeners may refer to, for the shared snapshot they were checked against. */
  private sharedNames: { shared: Snapshot; names: string } | undefined;
  /**
   * Each node's own part (its listeners and inbound clusters), rebuilt only
   * when its VM record or the mesh changes; and the merged snapshot, remade
   * only when the shared part changes, checked again only when the names its
   * listeners may refer to change. A VM moving then costs one node's part,
   * not every node's.
   */
  private readonly nodeParts = new Map<string, { key: string; mesh: MeshConfig; own: Snapshot; shared?: Snapshot; merged?: Snapshot; checkedAgainst?: string }>();
  /** Snapshots whose consistency is already known (the cache's check skips them). */
  private readonly checked = new WeakSet<Snapshot>();

  private snapshotFor(nodeId: string, view = this.view()): Snapshot {
    const mesh = this.options.mesh.config;
    this.shared ??= toSnapshot(buildResources(mesh, view, ''));
    const vm = view.byId.get(nodeId);
    const key = vm ? JSON.stringify([vm.hypervisorId, vm.vsockCid, vm.addresses, vm.sidecar, vm.services]) : '';
    let part = this.nodeParts.get(nodeId);
    if (!part || part.key !== key || part.mesh !== mesh) {
      part = { key, mesh, own: toSnapshot(buildNodeResources(mesh, { vms: vm ? [vm] : [], hypervisors: view.hypervisors }, nodeId)) };
      this.nodeParts.set(nodeId, part);
    }
    if (part.shared !== this.shared || part.merged === undefined) {
      part.merged = mergeSnapshots(this.shared, part.own);
      part.shared = this.shared;
    }
    if (this.sharedNames?.shared !== this.shared) {
      const names = (type: ResourceTypeUrl): string => [...this.shared!.resources[type].keys()].join('\0');
      this.sharedNames = { shared: this.shared, names: `${names(TYPE_URLS.Cluster)}|${names(TYPE_URLS.RouteConfiguration)}` };
    }
    if (part.checkedAgainst !== this.sharedNames.names) {
      const problems = checkConsistency(part.merged);
      if (problems.length > 0) throw new Error(`inconsistent snapshot: ${problems.join('; ')}`);
      part.checkedAgainst = this.sharedNames.names;
    }
    this.checked.add(part.merged);
    return part.merged;
  }

  /** New snapshots for every node that has one and for everyone else; an inconsistent one is refused and the previous kept. */
  private rebuild(): void {
    this.rebuilds++;
    const view = this.view();
    const ids = view.byId;
    const serve = (what: string, set: () => void): void => {
      try {
        set();
      } catch (err) {
        this.options.logger.error({ reason: 'inconsistent_snapshot', node: what, error: (err as Error).message }, `not serving a new snapshot to ${what}: ${(err as Error).message}`);
      }
    };
    this.shared = this.keepRemovedClusters(toSnapshot(buildResources(this.options.mesh.config, view, '')));
    serve('nodes without their own snapshot', () => this.cache.setDefault(this.shared));
    for (const nodeId of this.cache.nodeIds()) {
      if (!ids.has(nodeId)) {
        this.cache.clearSnapshot(nodeId);
        this.nodeParts.delete(nodeId);
      }
      else serve(nodeId, () => this.cache.setSnapshot(nodeId, this.snapshotFor(nodeId, view)));
    }
  }

  /** Clusters (and their assignments) that left the mesh, served until `until` so listeners and routes stop naming them first. */
  private readonly removedClusters = new Map<string, { cluster: VersionedResource; assignment: VersionedResource | undefined; until: number }>();
  private removalTimer: NodeJS.Timeout | undefined;

  /**
   * Make before break: a cluster that disappears is still served for
   * `clusterRemovalDelayMs` after the listeners and routes that named it are
   * gone, so no client is told a route's cluster no longer exists while the
   * route is still in effect.
   */
  private keepRemovedClusters(next: Snapshot): Snapshot {
    const delay = this.options.clusterRemovalDelayMs ?? 1_000;
    const previous = this.cache.default;
    const now = Date.now();
    if (previous && delay > 0) {
      for (const [name, cluster] of previous.resources[TYPE_URLS.Cluster]) {
        if (!next.resources[TYPE_URLS.Cluster].has(name) && !this.removedClusters.has(name)) {
          this.removedClusters.set(name, { cluster, assignment: previous.resources[TYPE_URLS.ClusterLoadAssignment].get(name), until: now + delay });
        }
      }
    }
    for (const [name, r] of this.removedClusters) {
      if (r.until <= now || next.resources[TYPE_URLS.Cluster].has(name)) this.removedClusters.delete(name);
    }
    clearTimeout(this.removalTimer);
    if (this.removedClusters.size === 0) return next;
    const until = Math.min(...[...this.removedClusters.values()].map((r) => r.until));
    this.removalTimer = setTimeout(() => this.debouncer.trigger(), Math.max(0, until - now) + 1);
    this.removalTimer.unref();
    const clusters = new Map(next.resources[TYPE_URLS.Cluster]);
    const assignments = new Map(next.resources[TYPE_URLS.ClusterLoadAssignment]);
    for (const [name, r] of this.removedClusters) {
      clusters.set(name, r.cluster);
      if (r.assignment) assignments.set(name, r.assignment);
    }
    const resources = { ...next.resources, [TYPE_URLS.Cluster]: clusters, [TYPE_URLS.ClusterLoadAssignment]: assignments };
    return {
      resources,
      versions: { ...next.versions, [TYPE_URLS.Cluster]: typeVersion(clusters), [TYPE_URLS.ClusterLoadAssignment]: typeVersion(assignments) },
    };
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
