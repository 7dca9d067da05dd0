// `vsockmesh vm-manager`: the VM manager's gRPC API over the registry, plus
// the standard gRPC health service. Mutations are written to the state file
// (when configured) before they are answered, so a restart loses nothing;
// concurrent mutations share one write (group commit).

import { rename, writeFile } from 'node:fs/promises';
import * as grpc from '@grpc/grpc-js';
import { Counter, Gauge, Histogram, Registry as MetricsRegistry, collectDefaultMetrics } from 'prom-client';
import type { Logger } from '../../proxy/log.js';
import { settledWithin } from '../../proxy/within.js';
import type { HealthCheckRequest__Output } from '../generated/grpc/health/v1/HealthCheckRequest.js';
import type { HealthCheckResponse } from '../generated/grpc/health/v1/HealthCheckResponse.js';
import type { HealthHandlers } from '../generated/grpc/health/v1/Health.js';
import type { VmManagerHandlers } from '../generated/vsockmesh/vmmanager/v1/VmManager.js';
import { healthProto, vmManagerProto } from '../proto.js';
import {
  WireError,
  destinationFromWire,
  eventToWire,
  hypervisorFromWire,
  hypervisorToWire,
  resolutionToWire,
  vmInputFromWire,
  vmToWire,
} from './codec.js';
import { EPOCH_HEADER } from './client.js';
import { NotFoundError, Registry, ValidationError } from './registry.js';
import type { VmEvent } from './types.js';

export const VM_MANAGER_SERVICE = 'vsockmesh.vmmanager.v1.VmManager';

/** Lease expiry scans the registry; scans are at least this far apart. */
const LEASE_SCAN_MS = 250;

export interface VmManagerServerOptions {
  registry: Registry;
  logger: Logger;
  /** Where the registry is persisted (JSON); undefined: memory only. */
  statePath?: string;
  /** Collect Node process metrics (the CLI does; tests do not). */
  processMetrics?: boolean;
  /** Serve on this gRPC server (the control plane's, one port for both) instead of an own one: start() then binds nothing. */
  grpcServer?: grpc.Server;
}

export type VmManagerState = 'new' | 'serving' | 'draining' | 'stopped';

type Status = { code: grpc.status; details: string };

/** Registry and wire errors become INVALID_ARGUMENT / NOT_FOUND naming the field; anything else is INTERNAL. */
function toStatus(err: unknown): Status {
  if (err instanceof ValidationError || err instanceof WireError) return { code: grpc.status.INVALID_ARGUMENT, details: err.message };
  if (err instanceof NotFoundError) return { code: grpc.status.NOT_FOUND, details: err.message };
  return { code: grpc.status.INTERNAL, details: `internal error: ${(err as Error).message}` };
}

export class VmManagerServer {
  readonly metrics = new MetricsRegistry();
  private readonly server: grpc.Server;
  private readonly shared: boolean;
  private readonly watches = new Set<grpc.ServerWritableStream<unknown, unknown>>();
  private readonly healthWatches = new Set<grpc.ServerWritableStream<HealthCheckRequest__Output, HealthCheckResponse>>();
  private readonly requests: Counter<'method' | 'code'>;
  private readonly resolveSeconds: Histogram<string>;
  private leaseTimer: NodeJS.Timeout | undefined;
  private leaseTimerAt: number | null = null;
  private flushing: Promise<void> | null = null;
  private queued: Promise<void> | null = null;
  private boundPort = 0;
  state: VmManagerState = 'new';

  constructor(private readonly options: VmManagerServerOptions) {
    this.server = options.grpcServer ?? new grpc.Server();
    this.shared = options.grpcServer !== undefined;
    const registers = [this.metrics];
    if (options.processMetrics) collectDefaultMetrics({ register: this.metrics });
    this.requests = new Counter({ name: 'vsockmesh_vm_manager_requests_total', help: 'VM manager API calls by method and gRPC status', labelNames: ['method', 'code'], registers });
    this.resolveSeconds = new Histogram({
      name: 'vsockmesh_vm_manager_resolve_seconds',
      help: 'Time to answer Resolve (in the server)',
      buckets: [0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.01],
      registers,
    });
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
    new Gauge({
      name: 'vsockmesh_vm_manager_watch_streams',
      help: 'Open Watch streams',
      registers,
      collect() {
        this.set(watches.size);
      },
    });
    this.server.addService(vmManagerProto().vsockmesh.vmmanager.v1.VmManager.service, this.handlers());
    this.server.addService(healthProto().grpc.health.v1.Health.service, this.healthHandlers());
  }

  get registry(): Registry {
    return this.options.registry;
  }

  get port(): number {
    return this.boundPort;
  }

  /** Listens on `host:port` (port 0: any free port; see .port). */
  async start(address: string): Promise<number> {
    if (!this.shared) this.boundPort = await new Promise<number>((resolve, reject) => {
      this.server.bindAsync(address, grpc.ServerCredentials.createInsecure(), (err, port) => {
        if (err) reject(new Error(`vm-manager: cannot listen on ${address}: ${err.message}`));
        else resolve(port);
      });
    });
    this.state = 'serving';
    this.expireLeases();
    this.options.logger.info({ address, port: this.boundPort, vms: this.registry.size, revision: this.registry.revision, state_file: this.options.statePath ?? null }, 'vm-manager serving');
    return this.boundPort;
  }

  /** Health goes NOT_SERVING, Watch streams end (clients reconnect elsewhere), unary calls in flight finish. */
  async drain(timeoutMs = 5_000): Promise<void> {
    if (this.state !== 'serving') return;
    this.state = 'draining';
    this.sendHealth();
    for (const call of this.watches) call.end();
    this.watches.clear();
    for (const call of this.healthWatches) call.end();
    this.healthWatches.clear();
    if (!this.shared) await settledWithin(new Promise<void>((resolve) => this.server.tryShutdown(() => resolve())), timeoutMs);
    await this.flushing;
    await this.queued;
  }

  async stop(): Promise<void> {
    clearTimeout(this.leaseTimer);
    for (const call of [...this.watches, ...this.healthWatches]) call.end();
    this.watches.clear();
    this.healthWatches.clear();
    if (!this.shared) this.server.forceShutdown();
    await this.flushing;
    await this.queued;
    this.state = 'stopped';
  }

  /** Writes the registry to the state file; mutations arriving during a write share the next one. */
  persist(): Promise<void> {
    const path = this.options.statePath;
    if (path === undefined) return Promise.resolve();
    if (this.queued) return this.queued;
    const write = async (): Promise<void> => {
      const tmp = `${path}.tmp`;
      await writeFile(tmp, `${JSON.stringify(this.registry.toJSON())}\n`, { mode: 0o600 });
      await rename(tmp, path);
    };
    const run = (): Promise<void> => {
      const p = write().finally(() => {
        if (this.flushing === p) this.flushing = null;
      });
      this.flushing = p;
      return p;
    };
    if (!this.flushing) return run();
    const queued = this.flushing
      .catch(() => undefined)
      .then(() => {
        this.queued = null;
        return run();
      });
    this.queued = queued;
    return queued;
  }

  // ---- leases ------------------------------------------------------------------

  /** A new or renewed lease that ends before the timer fires re-arms it (without scanning the registry on every change). */
  private leaseMayExpireSooner(response: unknown): void {
    const at = Number((response as { lease_expires_at_ms?: number } | null)?.lease_expires_at_ms ?? 0);
    if (at > 0 && (this.leaseTimerAt === null || at < this.leaseTimerAt)) this.armLeaseTimer(at);
  }

  private armLeaseTimer(at: number): void {
    clearTimeout(this.leaseTimer);
    // Scans are at least LEASE_SCAN_MS apart: leases end up to that much late, never early.
    const delay = Math.min(Math.max(LEASE_SCAN_MS, at - Date.now() + 5), 2 ** 31 - 1);
    this.leaseTimerAt = Date.now() + delay;
    this.leaseTimer = setTimeout(() => this.expireLeases(), delay);
    this.leaseTimer.unref();
  }

  private expireLeases(): void {
    clearTimeout(this.leaseTimer);
    this.leaseTimerAt = null;
    const expired = this.registry.expireLeases();
    for (const vm of expired) this.options.logger.info({ vm_id: vm.vmId, hypervisor_id: vm.hypervisorId, reason: 'lease_expired' }, `VM ${vm.vmId} removed: lease not renewed`);
    if (expired.length > 0) void this.persistLogged('lease expiry');
    const next = this.registry.nextLeaseExpiry();
    if (next === null || this.state === 'stopped') return;
    this.armLeaseTimer(next);
  }

  private async persistLogged(what: string): Promise<void> {
    try {
      await this.persist();
    } catch (err) {
      this.options.logger.error({ err, reason: 'persist_failed', state_file: this.options.statePath }, `cannot write the state file after ${what}`);
    }
  }

  // ---- handlers ----------------------------------------------------------------

  /** A unary handler: runs `fn`, persists if it mutated, answers, counts. */
  private unary<Req, Res>(method: string, mutates: boolean, fn: (request: Req) => Res): grpc.handleUnaryCall<Req, Res> {
    return (call, callback) => {
      let response: Res;
      try {
        response = fn(call.request);
      } catch (err) {
        const status = toStatus(err);
        this.requests.inc({ method, code: grpc.status[status.code] });
        if (status.code === grpc.status.INTERNAL) this.options.logger.error({ err, method }, 'vm-manager request failed');
        else this.options.logger.info({ method, reason: grpc.status[status.code].toLowerCase(), detail: status.details }, `${method} rejected: ${status.details}`);
        callback(status);
        return;
      }
      if (!mutates) {
        this.requests.inc({ method, code: 'OK' });
        callback(null, response);
        return;
      }
      this.leaseMayExpireSooner(response);
      this.persist().then(
        () => {
          this.requests.inc({ method, code: 'OK' });
          callback(null, response);
        },
        (err: Error) => {
          this.requests.inc({ method, code: 'UNAVAILABLE' });
          this.options.logger.error({ err, method, reason: 'persist_failed', state_file: this.options.statePath }, 'cannot write the state file');
          callback({ code: grpc.status.UNAVAILABLE, details: `applied but not persisted: ${err.message}` });
        },
      );
    };
  }

  private handlers(): VmManagerHandlers {
    const registry = this.registry;
    const logger = this.options.logger;
    return {
      RegisterHypervisor: this.unary('RegisterHypervisor', true, (req) => {
        const h = registry.registerHypervisor(hypervisorFromWire(req.hypervisor));
        logger.info({ hypervisor_id: h.hypervisorId, vsock_mode: h.vsockMode }, `hypervisor ${h.hypervisorId} registered`);
        return hypervisorToWire(h);
      }),
      RegisterVm: this.unary('RegisterVm', true, (req) => {
        const before = registry.revision;
        const vm = registry.registerVm(vmInputFromWire(req.vm), Number(req.lease_ttl_ms) || undefined);
        if (registry.revision !== before) logger.info({ vm_id: vm.vmId, hypervisor_id: vm.hypervisorId, vsock_cid: vm.vsockCid, generation: vm.generation }, `VM ${vm.vmId} registered`);
        return vmToWire(vm);
      }),
      DeregisterVm: this.unary('DeregisterVm', true, (req) => {
        const vm = registry.deregisterVm(req.vm_id);
        logger.info({ vm_id: vm.vmId }, `VM ${vm.vmId} deregistered`);
        return {};
      }),
      GetVm: this.unary('GetVm', false, (req) => {
        const vm = registry.getVm(req.vm_id);
        if (!vm) throw new NotFoundError(`VM "${req.vm_id}"`);
        return vmToWire(vm);
      }),
      ListVms: this.unary('ListVms', false, () => {
        const { vms, hypervisors, revision } = registry.list();
        return { vms: vms.map(vmToWire), hypervisors: hypervisors.map(hypervisorToWire), revision };
      }),
      MoveVm: this.unary('MoveVm', true, (req) => {
        const vm = registry.moveVm(req.vm_id, req.hypervisor_id, req.vsock_cid || undefined);
        logger.info({ vm_id: vm.vmId, hypervisor_id: vm.hypervisorId, vsock_cid: vm.vsockCid, generation: vm.generation }, `VM ${vm.vmId} moved`);
        return vmToWire(vm);
      }),
      Resolve: this.unary('Resolve', false, (req) => {
        const started = process.hrtime.bigint();
        const answer = resolutionToWire(registry.resolve(req.caller_vm_id, destinationFromWire(req)));
        this.resolveSeconds.observe(Number(process.hrtime.bigint() - started) / 1e9);
        return answer;
      }),
      AuthorizeRelay: this.unary('AuthorizeRelay', false, (req) => {
        const a = registry.authorizeRelay(req.hypervisor_id, req.source_cid, req.destination_cid, req.destination_port);
        return a.allowed ? { allowed: true, reason: '', source: vmToWire(a.source), destination: vmToWire(a.destination) } : { allowed: false, reason: a.reason };
      }),
      Watch: (call) => {
        if (this.state !== 'serving') {
          call.emit('error', { code: grpc.status.UNAVAILABLE, details: 'vm-manager is draining' });
          return;
        }
        const from = Number(call.request.from_revision);
        if (call.request.epoch !== '' && call.request.epoch !== registry.epoch && from !== 0) {
          this.requests.inc({ method: 'Watch', code: 'OUT_OF_RANGE' });
          call.emit('error', { code: grpc.status.OUT_OF_RANGE, details: `revision ${from} is from another epoch of the registry (restarted without its state); watch from 0` });
          return;
        }
        const send = (e: VmEvent): void => {
          call.write(eventToWire(e));
        };
        // Subscribing and replaying happen in one tick: no event can fall between them.
        const backlog = from === 0 ? registry.snapshotEvents() : registry.eventsSince(from);
        if (backlog === null) {
          this.requests.inc({ method: 'Watch', code: 'OUT_OF_RANGE' });
          call.emit('error', { code: grpc.status.OUT_OF_RANGE, details: `revision ${from} is no longer kept (current ${registry.revision}); watch from 0` });
          return;
        }
        this.requests.inc({ method: 'Watch', code: 'OK' });
        // Headers now, so the client knows the stream is open even when no event follows for a while.
        const metadata = new grpc.Metadata();
        metadata.set(EPOCH_HEADER, registry.epoch);
        call.sendMetadata(metadata);
        const unsubscribe = registry.subscribe(send);
        this.watches.add(call as grpc.ServerWritableStream<unknown, unknown>);
        const done = (): void => {
          unsubscribe();
          this.watches.delete(call as grpc.ServerWritableStream<unknown, unknown>);
        };
        call.on('cancelled', done);
        call.on('close', done);
        call.on('finish', done);
        for (const e of backlog) send(e);
      },
    };
  }

  // ---- health ------------------------------------------------------------------

  private healthStatus(service: string): HealthCheckResponse['status'] | undefined {
    if (service !== '' && service !== VM_MANAGER_SERVICE) return undefined;
    return this.state === 'serving' ? 'SERVING' : 'NOT_SERVING';
  }

  private sendHealth(): void {
    for (const call of this.healthWatches) call.write({ status: this.healthStatus(call.request.service) ?? 'SERVICE_UNKNOWN' });
  }

  private healthHandlers(): HealthHandlers {
    return {
      Check: (call, callback) => {
        const status = this.healthStatus(call.request.service);
        if (status === undefined) callback({ code: grpc.status.NOT_FOUND, details: `unknown service "${call.request.service}"` });
        else callback(null, { status });
      },
      Watch: (call) => {
        this.healthWatches.add(call);
        call.on('cancelled', () => this.healthWatches.delete(call));
        call.write({ status: this.healthStatus(call.request.service) ?? 'SERVICE_UNKNOWN' });
      },
    };
  }
}
