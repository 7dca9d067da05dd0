// The VM manager's gRPC client, as the sidecar, the host relay and `ctl` use
// it: the VmManagerApi interface over one channel. A failed call rejects with
// a CallError whose `code` is the gRPC status name (UNAVAILABLE,
// DEADLINE_EXCEEDED, INVALID_ARGUMENT, ...).

import * as grpc from '@grpc/grpc-js';
import type { VmManagerClient as WireClient } from '../generated/vsockmesh/vmmanager/v1/VmManager.js';
import type { AuthorizeRelayResponse__Output } from '../generated/vsockmesh/vmmanager/v1/AuthorizeRelayResponse.js';
import type { ListVmsResponse__Output } from '../generated/vsockmesh/vmmanager/v1/ListVmsResponse.js';
import type { ResolveResponse__Output } from '../generated/vsockmesh/vmmanager/v1/ResolveResponse.js';
import { CallError } from '../call-error.js';
import { callError, unaryCall } from '../grpc-status.js';
import { vmManagerProto } from '../proto.js';
import { channelCredentials, channelOptions, type ControlTransport } from '../security/transport.js';
import { destinationToWire, eventFromWire, relayRequestToWire, hypervisorFromWire, hypervisorToWire, resolutionFromWire, vmFromWire, vmToWire } from './codec.js';
import type { Destination, HypervisorRecord, RelayAuthorization, RelayRequest, Resolution, VmEvent, VmManagerApi, VmRecord, WatchHandlers } from '../../proxy/resolve/types.js';

/** Response header of Watch naming the registry's epoch. */
export const EPOCH_HEADER = 'vsockmesh-epoch';

export interface VmManagerClientOptions {
  /** Mutual TLS with the caller's identity, or plain text when asked for by name. */
  transport: ControlTransport;
  /** Deadline of every call that does not set its own. */
  defaultTimeoutMs?: number;
}

export class VmManagerClient implements VmManagerApi {
  private readonly client: WireClient;
  private readonly defaultTimeoutMs: number;

  constructor(
    readonly address: string,
    options: VmManagerClientOptions,
  ) {
    const Client = vmManagerProto().vsockmesh.vmmanager.v1.VmManager;
    // Fail fast while the VM manager is away (the resolver falls back); reconnect quickly once it is back.
    this.client = new Client(address, channelCredentials(options.transport), {
      ...channelOptions(options.transport),
      'grpc.initial_reconnect_backoff_ms': 100,
      'grpc.max_reconnect_backoff_ms': 2_000,
      'grpc.keepalive_time_ms': 30_000,
    });
    this.defaultTimeoutMs = options.defaultTimeoutMs ?? 5_000;
  }

  private call<Res>(start: (deadline: { deadline: Date }, cb: (err: grpc.ServiceError | null, res?: Res) => void) => void, timeoutMs?: number): Promise<Res> {
    return unaryCall(timeoutMs ?? this.defaultTimeoutMs, start);
  }

  async registerVm(vm: Omit<VmRecord, 'generation' | 'leaseExpiresAt'>, leaseTtlMs?: number): Promise<VmRecord> {
    const wire = vmToWire({ ...vm, generation: 0, leaseExpiresAt: null });
    return vmFromWire(await this.call((o, cb) => this.client.RegisterVm({ vm: wire, lease_ttl_ms: leaseTtlMs ?? 0 }, o, cb)));
  }

  async deregisterVm(vmId: string): Promise<void> {
    await this.call((o, cb) => this.client.DeregisterVm({ vm_id: vmId }, o, cb));
  }

  async getVm(vmId: string): Promise<VmRecord | undefined> {
    try {
      return vmFromWire(await this.call((o, cb) => this.client.GetVm({ vm_id: vmId }, o, cb)));
    } catch (err) {
      if (err instanceof CallError && err.code === 'NOT_FOUND') return undefined;
      throw err;
    }
  }

  /**
   * The whole registry, every page of ListVms. Pages are read one after the
   * other, not at one instant: `revision` is the first page's, so a Watch from
   * it sees every change made while the pages were read.
   */
  async listVms(): Promise<{ vms: VmRecord[]; hypervisors: HypervisorRecord[]; revision: number }> {
    const all: { vms: VmRecord[]; hypervisors: HypervisorRecord[]; revision: number } = { vms: [], hypervisors: [], revision: 0 };
    let pageToken = '';
    let first = true;
    do {
      const token = pageToken;
      const r = (await this.call<ListVmsResponse__Output>((o, cb) => this.client.ListVms({ page_token: token }, o, cb)))!;
      for (const vm of r.vms) all.vms.push(vmFromWire(vm));
      for (const h of r.hypervisors) all.hypervisors.push(hypervisorFromWire(h));
      if (first) all.revision = r.revision;
      first = false;
      pageToken = r.next_page_token;
    } while (pageToken !== '');
    return all;
  }

  async registerHypervisor(hypervisor: HypervisorRecord): Promise<HypervisorRecord> {
    return hypervisorFromWire(await this.call((o, cb) => this.client.RegisterHypervisor({ hypervisor: hypervisorToWire(hypervisor) }, o, cb)));
  }

  async moveVm(vmId: string, hypervisorId: string, vsockCid?: number): Promise<VmRecord> {
    return vmFromWire(await this.call((o, cb) => this.client.MoveVm({ vm_id: vmId, hypervisor_id: hypervisorId, vsock_cid: vsockCid ?? 0 }, o, cb)));
  }

  async resolve(callerVmId: string, destination: Destination, options: { timeoutMs?: number } = {}): Promise<Resolution> {
    const r = await this.call<ResolveResponse__Output>((o, cb) => this.client.Resolve({ caller_vm_id: callerVmId, ...destinationToWire(destination) }, o, cb), options.timeoutMs);
    return resolutionFromWire(r!);
  }

  async authorizeRelay(request: RelayRequest, options: { timeoutMs?: number } = {}): Promise<RelayAuthorization> {
    const r = await this.call<AuthorizeRelayResponse__Output>(
      (o, cb) => this.client.AuthorizeRelay(relayRequestToWire(request), o, cb),
      options.timeoutMs,
    );
    if (r!.allowed && r!.source && r!.destination) return { allowed: true, source: vmFromWire(r!.source), destination: vmFromWire(r!.destination) };
    return { allowed: false, reason: r!.reason || 'denied' };
  }

  watch(fromRevision: number, handlers: WatchHandlers, epoch = ''): { cancel(): void } {
    const stream = this.client.Watch({ from_revision: fromRevision, epoch });
    let cancelled = false;
    let ended = false;
    const end = (err: Error): void => {
      if (ended || cancelled) return;
      ended = true;
      handlers.onError(err);
    };
    stream.on('metadata', (metadata: grpc.Metadata) => {
      if (!cancelled && !ended) handlers.onOpen?.(String(metadata.get(EPOCH_HEADER)[0] ?? ''));
    });
    stream.on('data', (wire) => {
      let event: VmEvent;
      try {
        event = eventFromWire(wire);
      } catch (err) {
        end(err as Error);
        stream.cancel();
        return;
      }
      handlers.onEvent(event);
    });
    stream.on('error', (err: grpc.ServiceError) => end(callError(err)));
    stream.on('end', () => end(new CallError('UNAVAILABLE', 'watch stream ended by the VM manager')));
    return {
      cancel: () => {
        cancelled = true;
        stream.cancel();
      },
    };
  }

  /**
   * Starts connecting now, without waiting: the first query of a process
   * (e.g. a relayed connection's, with its 500 ms budget) must not pay for
   * the TLS handshake and the channel's setup.
   */
  connect(): void {
    this.client.getChannel().getConnectivityState(true);
  }

  /** Resolves once the channel is connected, or rejects after timeoutMs. */
  waitForReady(timeoutMs: number): Promise<void> {
    return new Promise((resolve, reject) => {
      this.client.waitForReady(new Date(Date.now() + timeoutMs), (err) => (err ? reject(new CallError('UNAVAILABLE', `no VM manager at ${this.address}: ${err.message}`)) : resolve()));
    });
  }

  close(): void {
    this.client.close();
  }
}
