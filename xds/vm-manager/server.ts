// `vsockmesh vm-manager`: the VM manager's gRPC API over the registry, plus
// the standard gRPC health service.
//
// Durability: with a state file, a mutation is planned on a registry that
// holds what is durable plus what is being written (so it sees every change
// before it, and two registrations racing for one CID cannot both win), its
// changes are appended to the state log and fdatasync'ed, and only then
// applied to the registry that Resolve, GetVm, ListVms, Watch and the control
// plane read. A write that fails applies nothing: the caller gets UNAVAILABLE
// "not applied: ...", and the changes planned on top of it fail with it.
// Mutations that arrive while a write is in flight share the next one (group
// commit). Lease expiry takes the same path.
//
// With a store (registry-store.ts, e.g. etcd shared by replicas) the store
// does all of that: a mutation is one compare-and-swap transaction, leases
// are the store's, revisions and epoch the store's, and a Watch from a
// revision the store compacted gets OUT_OF_RANGE.

import * as grpc from '@grpc/grpc-js';
import { Counter, Gauge, Histogram, Registry as MetricsRegistry, collectDefaultMetrics } from '../../proxy/runtime/prom-client.js';
import type { Logger } from '../../proxy/runtime/log.js';
import { fileErrorText } from '../../proxy/runtime/durable-file.js';
import { NotFoundError, VsockmeshError } from '../../proxy/runtime/errors.js';
import { settledWithin } from '../../proxy/runtime/within.js';
import type { VmManagerHandlers } from '../generated/vsockmesh/vmmanager/v1/VmManager.js';
import type { WatchRequest__Output } from '../generated/vsockmesh/vmmanager/v1/WatchRequest.js';
import { statusOf, statusName } from '../grpc-status.js';
import { HealthService, type HealthStatus } from '../health-service.js';
import { vmManagerProto } from '../proto.js';
import { MAX_REQUEST_BYTES } from './bounds.js';
import {
  destinationFromWire,
  eventToWire,
  hypervisorFromWire,
  hypervisorToWire,
  relayRequestFromWire,
  resolutionToWire,
  vmInputFromWire,
  vmToWire,
} from './codec.js';
import { EPOCH_HEADER } from './client.js';
import { listPage } from './pagination.js';
import { Registry, checkEpoch, type RegistryChange } from './registry.js';
import type { RegistryStore } from './registry-store.js';
import { StateLog } from './state-log.js';
import { ControlGuard } from '../security/guard.js';
import { serverCredentials, type ControlTransport } from '../security/transport.js';
import type { VmEvent } from '../../proxy/resolve/types.js';

export const VM_MANAGER_SERVICE = 'vsockmesh.vmmanager.v1.VmManager';

/** Lease expiry scans the registry; scans are at least this far apart. */
const LEASE_SCAN_MS = 250;
/** After a lease expiry that could not be written, the next try. */
const LEASE_RETRY_MS = 1_000;

export interface VmManagerServerOptions {
  registry: Registry;
  logger: Logger;
  /** The snapshot of the registry; its log is beside it (state-log.ts). undefined: memory only. */
  statePath?: string;
  /** The registry is kept in this store (`registry` must be its registry); excludes statePath. */
  registryStore?: RegistryStore;
  /** Compact the log once it is larger than this (default 8 MiB, or the snapshot's size if larger). */
  compactAfterBytes?: number;
  /** Collect Node process metrics (the CLI does; tests do not). */
  processMetrics?: boolean;
  /** Serve on this gRPC server (the control plane's, one port for both, guarded there) instead of an own one: start() then binds nothing. */
  grpcServer?: grpc.Server;
  /** Its own server's transport: mutual TLS with an identity, or plain text when asked for by name. Required without grpcServer. */
  transport?: ControlTransport;
}

export type VmManagerState = 'new' | 'serving' | 'draining' | 'stopped';

/** The VM manager cannot take the request now (its state cannot be written, it is starting or stopping): nothing was applied. */
export class UnavailableError extends VsockmeshError {
  constructor(message: string, options?: ErrorOptions) {
    super('UNAVAILABLE', message, options);
  }
}

/** Changes written together, and the callers waiting for them to be durable. */
interface Batch {
  changes: RegistryChange[];
  waiters: Array<{ resolve: () => void; reject: (err: Error) => void }>;
}

export class VmManagerServer {
  readonly metrics = new MetricsRegistry();
  private readonly server: grpc.Server;
  private readonly shared: boolean;
  private readonly guard: ControlGuard | undefined;
  private readonly watches = new Set<grpc.ServerWritableStream<unknown, unknown>>();
  /** Its own server's health service; a shared server's owner serves health (and asks healthStatus()). */
  private readonly health: HealthService | undefined;
  private readonly requests: Counter<'method' | 'code'>;
  private readonly resolveSeconds: Histogram<string>;
  private readonly stateWrites: Counter<'result'>;
  private readonly stateChanges: Counter<string>;
  private readonly stateWriteSeconds: Histogram<string>;
  private readonly compactions: Counter<'result'>;
  private leaseTimer: NodeJS.Timeout | undefined;
  private leaseTimerAt: number | null = null;
  private leaseExpiryFailing = false;
  private log: StateLog | undefined;
  /** The durable registry plus the changes being written; made from it when needed. */
  private planning: Registry | undefined;
  /** registry.changeCount when `planning` holds exactly the durable state (a different count: changed behind the server's back). */
  private planningBase = 0;
  private batch: Batch | undefined;
  private inflight: Batch | undefined;
  private flushing: Promise<void> | undefined;
  private closing = false;
  private boundPort = 0;
  state: VmManagerState = 'new';

  constructor(private readonly options: VmManagerServerOptions) {
    const registers = [this.metrics];
    if (options.grpcServer === undefined) {
      if (options.transport === undefined) throw new Error('vm-manager: a transport is required (TLS credentials, or { insecure: true })');
      const registry = options.registry;
      this.guard = new ControlGuard({ transport: options.transport, logger: options.logger, metrics: this.metrics, server: 'vm-manager', vmHypervisor: (id) => registry.getVm(id)?.hypervisorId ?? null });
    }
    // Its own server takes requests no larger than the bounds need; the control plane's is shared with ADS and sets its own.
    this.server = options.grpcServer ?? new grpc.Server({ 'grpc.max_receive_message_length': MAX_REQUEST_BYTES, interceptors: this.guard!.interceptors() });
    this.shared = options.grpcServer !== undefined;
    if (options.processMetrics) collectDefaultMetrics({ register: this.metrics });
    this.requests = new Counter({ name: 'vsockmesh_vm_manager_requests_total', help: 'VM manager API calls by method and gRPC status', labelNames: ['method', 'code'], registers });
    this.resolveSeconds = new Histogram({
      name: 'vsockmesh_vm_manager_resolve_seconds',
      help: 'Time to answer Resolve (in the server)',
      buckets: [0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.01],
      registers,
    });
    this.stateWrites = new Counter({ name: 'vsockmesh_vm_manager_state_writes_total', help: 'Appends to the state log (each one fdatasync) by result', labelNames: ['result'], registers });
    this.stateChanges = new Counter({ name: 'vsockmesh_vm_manager_state_changes_total', help: 'Changes written to the state log (per write: the group commit)', registers });
    this.stateWriteSeconds = new Histogram({
      name: 'vsockmesh_vm_manager_state_write_seconds',
      help: 'Time of one append to the state log, fdatasync included',
      buckets: [0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5],
      registers,
    });
    this.compactions = new Counter({ name: 'vsockmesh_vm_manager_compactions_total', help: 'Snapshots written to compact the state log, by result', labelNames: ['result'], registers });
    const registry = options.registry;
    const watches = this.watches;
    new Gauge({
      name: 'vsockmesh_vm_manager_vms',
      help: 'Registered VMs',
      registers,
      collect() {
        this.set(registry.size);
      },
    });
    new Gauge({
      name: 'vsockmesh_vm_manager_revision',
      help: 'Registry revision',
      registers,
      collect() {
        this.set(registry.revision);
      },
    });
    const registryStore = options.registryStore;
    if (registryStore !== undefined) {
      new Counter({
        name: 'vsockmesh_vm_manager_store_commits_total',
        help: 'Registry transactions sent to the store, by result (conflict: another replica wrote first, planned again)',
        labelNames: ['result'],
        registers,
        collect() {
          // Counted where the transactions are made: copied here when scraped.
          this.reset();
          for (const [result, count] of Object.entries(registryStore.commits)) this.inc({ result }, count);
        },
      });
    }
    new Gauge({
      name: 'vsockmesh_vm_manager_watch_streams',
      help: 'Open Watch streams',
      registers,
      collect() {
        this.set(watches.size);
      },
    });
    this.server.addService(vmManagerProto().vsockmesh.vmmanager.v1.VmManager.service, this.handlers());
    if (!this.shared) {
      const health = new HealthService((service) => this.healthStatus(service));
      health.addTo(this.server);
      this.health = health;
      options.registryStore?.onReadinessChange(() => health.changed());
    }
  }

  /** The registry as durable: what every reader sees. */
  get registry(): Registry {
    return this.options.registry;
  }

  get port(): number {
    return this.boundPort;
  }

  /**
   * With a state file, first writes a snapshot of the registry and opens a
   * new log (a failure here fails the start); then listens on `host:port`
   * (port 0: any free port; see .port).
   */
  async start(address: string): Promise<number> {
    const statePath = this.options.statePath;
    if (statePath !== undefined) {
      this.log = await StateLog.start(statePath, this.registry, {
        ...(this.options.compactAfterBytes !== undefined && { compactAfterBytes: this.options.compactAfterBytes }),
        onCompaction: ({ err, snapshotBytes, segment }) => {
          this.compactions.inc({ result: err ? 'failed' : 'ok' });
          if (err) this.options.logger.error({ err, reason: 'compaction_failed', state_file: statePath }, `cannot compact the state log: ${fileErrorText(err)} (the log keeps growing; retried later)`);
          else this.options.logger.info({ state_file: statePath, snapshot_bytes: snapshotBytes, log_segment: segment }, 'state log compacted');
        },
      });
      this.planningBase = this.registry.changeCount;
    }
    if (!this.shared) this.boundPort = await new Promise<number>((resolve, reject) => {
      this.server.bindAsync(address, serverCredentials(this.options.transport!), (err, port) => {
        if (err) reject(new Error(`vm-manager: cannot listen on ${address}: ${err.message}`));
        else resolve(port);
      });
    });
    this.state = 'serving';
    // A store ends its leases itself.
    if (this.options.registryStore === undefined) this.expireLeases();
    this.options.logger.info({ address, port: this.boundPort, vms: this.registry.size, revision: this.registry.revision, state_file: statePath ?? null }, 'vm-manager serving');
    return this.boundPort;
  }

  /** Health goes NOT_SERVING, Watch streams end (clients reconnect elsewhere), unary calls in flight finish. */
  async drain(timeoutMs = 5_000): Promise<void> {
    if (this.state !== 'serving') return;
    this.state = 'draining';
    this.health?.changed();
    for (const call of this.watches) call.end();
    this.watches.clear();
    this.health?.end();
    if (!this.shared) await settledWithin(new Promise<void>((resolve) => this.server.tryShutdown(() => resolve())), timeoutMs);
    await this.flushing;
  }

  async stop(): Promise<void> {
    this.closing = true;
    clearTimeout(this.leaseTimer);
    for (const call of this.watches) call.end();
    this.watches.clear();
    this.health?.end();
    if (!this.shared) this.server.forceShutdown();
    this.guard?.stop();
    await this.flushing;
    await this.log?.close();
    this.state = 'stopped';
  }

  // ---- writes --------------------------------------------------------------------

  /**
   * Runs a mutation: planned on the durable state plus what is being
   * written, answered once its changes are durable and applied. Memory only:
   * applied at once.
   */
  async mutate<T>(fn: (registry: Registry) => T): Promise<T> {
    if (this.options.registryStore !== undefined) {
      if (this.closing) throw new UnavailableError('not applied: the VM manager is stopping');
      return this.options.registryStore.mutate(fn);
    }
    if (this.options.statePath === undefined) return fn(this.registry);
    if (this.closing) throw new UnavailableError('not applied: the VM manager is stopping');
    if (!this.log) throw new UnavailableError('not applied: the VM manager is starting (its state file is not open yet)');
    const planning = this.planningRegistry();
    const { result, changes } = planning.recordChanges(() => fn(planning));
    await this.durable(changes);
    return result;
  }

  private planningRegistry(): Registry {
    // Changed behind the server's back (a test or the demo seeding it directly): plan on what it holds now.
    if (this.planning && !this.batch && !this.inflight && this.registry.changeCount !== this.planningBase) this.planning = undefined;
    if (!this.planning) {
      this.planning = this.registry.clone();
      this.planningBase = this.registry.changeCount;
    }
    return this.planning;
  }

  /** Resolves once `changes`, and every change planned before them, are durable and applied. */
  private durable(changes: RegistryChange[]): Promise<void> {
    return new Promise((resolve, reject) => {
      if (changes.length === 0) {
        // Nothing to write, but the answer may rest on changes still being written.
        const last = this.batch ?? this.inflight;
        if (last) last.waiters.push({ resolve, reject });
        else resolve();
        return;
      }
      this.batch ??= { changes: [], waiters: [] };
      this.batch.changes.push(...changes);
      this.batch.waiters.push({ resolve, reject });
      this.flushing ??= this.flush();
    });
  }

  /** Writes batches one after the other until none is waiting. */
  private async flush(): Promise<void> {
    const log = this.log!;
    // The loop's last check and the reset are one step: a batch added after it starts a new flush.
    try {
      while (this.batch) {
        const batch = this.batch;
        this.batch = undefined;
        this.inflight = batch;
        const started = process.hrtime.bigint();
        try {
          await log.append(batch.changes);
        } catch (err) {
          this.stateWrites.inc({ result: 'failed' });
          // Nothing of it is applied, nor anything planned on top of it: every waiter fails, planning starts again from the durable state.
          const failed = new UnavailableError(`not applied: cannot write state file: ${fileErrorText(err)}`, { cause: err });
          const waiters = [...batch.waiters, ...((this.batch as Batch | undefined)?.waiters ?? [])];
          this.batch = undefined;
          this.inflight = undefined;
          this.planning = undefined;
          this.options.logger.error(
            { err, reason: 'state_write_failed', state_file: this.options.statePath, requests: waiters.length },
            `cannot write the state file: ${fileErrorText(err)}; ${waiters.length} requests not applied`,
          );
          for (const w of waiters) w.reject(failed);
          continue;
        }
        this.stateWriteSeconds.observe(Number(process.hrtime.bigint() - started) / 1e9);
        this.stateWrites.inc({ result: 'ok' });
        this.stateChanges.inc(batch.changes.length);
        for (const change of batch.changes) {
          try {
            this.registry.apply(change);
          } catch (err) {
            // A subscriber that throws (the change itself is applied): the others still heard of it.
            this.options.logger.error({ err, reason: 'apply_failed' }, `applying a durable change: ${(err as Error).message}`);
          }
        }
        this.planningBase += batch.changes.length;
        this.inflight = undefined;
        for (const w of batch.waiters) w.resolve();
        // Between appends, with the state as of the end of the segment.
        if (log.wantsCompaction) await log.compact(this.registry.records());
      }
    } finally {
      this.flushing = undefined;
    }
  }

  // ---- leases ------------------------------------------------------------------

  /** A new or renewed lease that ends before the timer fires re-arms it (without scanning the registry on every change). */
  private leaseMayExpireSooner(response: unknown): void {
    if (this.options.registryStore !== undefined) return;
    const at = Number((response as { lease_expires_at_ms?: number } | null)?.lease_expires_at_ms ?? 0);
    if (at > 0 && (this.leaseTimerAt === null || at < this.leaseTimerAt)) this.armLeaseTimer(at);
  }

  private armLeaseTimer(at: number): void {
    clearTimeout(this.leaseTimer);
    if (this.closing) return;
    // Scans are at least LEASE_SCAN_MS apart: leases end up to that much late, never early.
    const delay = Math.min(Math.max(LEASE_SCAN_MS, at - Date.now() + 5), 2 ** 31 - 1);
    this.leaseTimerAt = Date.now() + delay;
    this.leaseTimer = setTimeout(() => this.expireLeases(), delay);
    this.leaseTimer.unref();
  }

  /** Removes the VMs whose lease ran out, through the same durable path as any mutation. */
  private expireLeases(): void {
    clearTimeout(this.leaseTimer);
    this.leaseTimerAt = null;
    if (this.closing) return;
    const logger = this.options.logger;
    this.mutate((registry) => registry.expireLeases()).then(
      (expired) => {
        if (this.leaseExpiryFailing) logger.info({ reason: 'lease_expiry_recovered' }, 'lease expiry is written again');
        this.leaseExpiryFailing = false;
        for (const vm of expired) logger.info({ vm_id: vm.vmId, hypervisor_id: vm.hypervisorId, reason: 'lease_expired' }, `VM ${vm.vmId} removed: lease not renewed`);
        const next = (this.planning ?? this.registry).nextLeaseExpiry();
        if (next !== null) this.armLeaseTimer(next);
      },
      (err: Error) => {
        // Logged once per outage (the write failure itself is logged by every write); retried until it can be written.
        if (!this.leaseExpiryFailing) logger.error({ err, reason: 'lease_expiry_failed' }, `expired leases not removed: ${err.message}; retrying every ${LEASE_RETRY_MS} ms`);
        this.leaseExpiryFailing = true;
        this.armLeaseTimer(Date.now() + LEASE_RETRY_MS);
      },
    );
  }

  // ---- handlers ----------------------------------------------------------------

  private answer<Res>(method: string, callback: grpc.sendUnaryData<Res>, outcome: { response: Res } | { err: unknown }): void {
    if ('response' in outcome) {
      this.requests.inc({ method, code: 'OK' });
      callback(null, outcome.response);
      return;
    }
    const status = statusOf(outcome.err);
    const name = statusName(status.code);
    this.requests.inc({ method, code: name });
    if (status.code === grpc.status.INTERNAL) this.options.logger.error({ err: outcome.err, method }, 'vm-manager request failed');
    else this.options.logger.info({ method, reason: name.toLowerCase(), detail: status.details }, `${method} rejected: ${status.details}`);
    callback(status);
  }

  /** A call that only reads the (durable) registry, answered at once. */
  private query<Req, Res>(method: string, fn: (request: Req) => Res): grpc.handleUnaryCall<Req, Res> {
    return (call, callback) => {
      let response: Res;
      try {
        response = fn(call.request);
      } catch (err) {
        this.answer(method, callback, { err });
        return;
      }
      this.answer(method, callback, { response });
    };
  }

  /** A call that changes the registry (through mutate()): answered once the change is durable, or refused with nothing applied. */
  private mutation<Req, Res>(method: string, fn: (request: Req) => Promise<Res>): grpc.handleUnaryCall<Req, Res> {
    return (call, callback) => {
      fn(call.request).then(
        (response) => {
          this.leaseMayExpireSooner(response);
          this.answer(method, callback, { response });
        },
        (err: unknown) => this.answer(method, callback, { err }),
      );
    };
  }

  /** Ends a Watch before it starts, counted like a unary refusal. */
  private refuseWatch(call: grpc.ServerWritableStream<unknown, unknown>, err: unknown): void {
    const status = statusOf(err);
    this.requests.inc({ method: 'Watch', code: statusName(status.code) });
    call.emit('error', status);
  }

  private handlers(): VmManagerHandlers {
    const registry = this.registry;
    const logger = this.options.logger;
    return {
      RegisterHypervisor: this.mutation('RegisterHypervisor', async (req) => {
        const h = await this.mutate((r) => r.registerHypervisor(hypervisorFromWire(req.hypervisor)));
        logger.info({ hypervisor_id: h.hypervisorId, vsock_mode: h.vsockMode }, `hypervisor ${h.hypervisorId} registered`);
        return hypervisorToWire(h);
      }),
      RegisterVm: this.mutation('RegisterVm', async (req) => {
        const { vm, changed } = await this.mutate((r) => {
          const before = r.revision;
          return { vm: r.registerVm(vmInputFromWire(req.vm), Number(req.lease_ttl_ms) || undefined), changed: r.revision !== before };
        });
        if (changed) logger.info({ vm_id: vm.vmId, hypervisor_id: vm.hypervisorId, vsock_cid: vm.vsockCid, generation: vm.generation }, `VM ${vm.vmId} registered`);
        return vmToWire(vm);
      }),
      DeregisterVm: this.mutation('DeregisterVm', async (req) => {
        const vm = await this.mutate((r) => r.deregisterVm(req.vm_id));
        logger.info({ vm_id: vm.vmId }, `VM ${vm.vmId} deregistered`);
        return {};
      }),
      MoveVm: this.mutation('MoveVm', async (req) => {
        const vm = await this.mutate((r) => r.moveVm(req.vm_id, req.hypervisor_id, req.vsock_cid || undefined));
        logger.info({ vm_id: vm.vmId, hypervisor_id: vm.hypervisorId, vsock_cid: vm.vsockCid, generation: vm.generation }, `VM ${vm.vmId} moved`);
        return vmToWire(vm);
      }),
      GetVm: this.query('GetVm', (req) => {
        const vm = registry.getVm(req.vm_id);
        if (!vm) throw new NotFoundError(`VM "${req.vm_id}"`);
        return vmToWire(vm);
      }),
      ListVms: this.query('ListVms', (req) => {
        const page = listPage(registry, { pageSize: req.page_size, pageToken: req.page_token });
        return { vms: page.vms.map(vmToWire), hypervisors: page.hypervisors.map(hypervisorToWire), revision: page.revision, next_page_token: page.nextPageToken };
      }),
      Resolve: this.query('Resolve', (req) => {
        const started = process.hrtime.bigint();
        const answer = resolutionToWire(registry.resolve(req.caller_vm_id, destinationFromWire(req)));
        this.resolveSeconds.observe(Number(process.hrtime.bigint() - started) / 1e9);
        return answer;
      }),
      AuthorizeRelay: this.query('AuthorizeRelay', (req) => {
        const a = registry.authorizeRelay(relayRequestFromWire(req));
        return a.allowed ? { allowed: true, reason: '', source: vmToWire(a.source), destination: vmToWire(a.destination) } : { allowed: false, reason: a.reason };
      }),
      Watch: (call) => {
        const stream = call as grpc.ServerWritableStream<unknown, unknown>;
        try {
          checkEpoch(call.request.epoch);
        } catch (err) {
          this.refuseWatch(stream, err);
          return;
        }
        const from = Number(call.request.from_revision);
        if (call.request.epoch !== '' && call.request.epoch !== registry.epoch && from !== 0) {
          this.refuseWatch(stream, new VsockmeshError('OUT_OF_RANGE', `revision ${from} is from another epoch of the registry (restarted without its state); watch from 0`));
          return;
        }
        const registryStore = this.options.registryStore;
        if (registryStore !== undefined && from !== 0) {
          // Every replica answers alike: a revision the store compacted is gone, whatever this one still holds;
          // one it still has but this replica did not see (it started later) is answered with the difference since.
          (async () => {
            if (!(await registryStore.hasHistoryAfter(from))) throw new VsockmeshError('OUT_OF_RANGE', `revision ${from} is compacted in the store (current ${registry.revision}); watch from 0`);
            // A revision another replica gave, ahead of this one's (its open revision, other prefixes' writes): reached, not refused.
            if (from > registry.revision) await registryStore.reach(from);
            const past = registry.hasEventsSince(from) || from > registry.revision ? undefined : await registryStore.pastRegistry(from);
            if (!call.cancelled) this.follow(call, from, past);
          })().catch((err: unknown) => this.refuseWatch(stream, err));
          return;
        }
        this.follow(call, from);
      },
    };
  }

  /** Sends the events after `from` (0: the whole registry; with `past`, the registry then: the difference), then every change, on a Watch stream. */
  private follow(call: grpc.ServerWritableStream<WatchRequest__Output, unknown>, from: number, past?: Registry): void {
    const stream = call as grpc.ServerWritableStream<unknown, unknown>;
    const registry = this.registry;
    if (this.state !== 'serving') {
      call.emit('error', statusOf(new UnavailableError('vm-manager is draining')));
      return;
    }
    const send = (e: VmEvent): void => {
      call.write(eventToWire(e));
    };
    // Subscribing and replaying happen in one tick: no event can fall between them.
    const backlog = from === 0 ? registry.snapshotEvents() : past !== undefined ? registry.eventsFrom(past) : registry.eventsSince(from);
    if (backlog === null) {
      this.refuseWatch(stream, new VsockmeshError('OUT_OF_RANGE', `revision ${from} is no longer kept (current ${registry.revision}); watch from 0`));
      return;
    }
    this.requests.inc({ method: 'Watch', code: 'OK' });
    // Headers now, so the client knows the stream is open even when no event follows for a while.
    const metadata = new grpc.Metadata();
    metadata.set(EPOCH_HEADER, registry.epoch);
    call.sendMetadata(metadata);
    const unsubscribe = registry.subscribe(send);
    this.watches.add(stream);
    const done = (): void => {
      unsubscribe();
      this.watches.delete(stream);
    };
    call.on('cancelled', done);
    call.on('close', done);
    call.on('finish', done);
    for (const e of backlog) send(e);
  }

  // ---- health ------------------------------------------------------------------

  /**
   * The VM manager's status for `service` ('' or its own), undefined for any
   * other. With its registry store out of reach, '' is NOT_SERVING while the
   * VM manager service stays SERVING: it answers reads from the registry it has.
   */
  healthStatus(service: string): HealthStatus | undefined {
    if (service !== '' && service !== VM_MANAGER_SERVICE) return undefined;
    if (this.state !== 'serving') return 'NOT_SERVING';
    return service === '' && this.options.registryStore?.notReady() !== undefined ? 'NOT_SERVING' : 'SERVING';
  }
}
