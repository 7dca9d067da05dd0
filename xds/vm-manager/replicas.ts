// The VM manager's replicas (processes on one store) as one VmManagerApi: calls
// go to the current replica; a call that cannot reach it (UNAVAILABLE) moves
// to the next one and is retried there once, within what is left of its
// deadline. A Watch that ends UNAVAILABLE moves too: the follower reconnects
// to the next replica from its revision (replicas on one store share
// revisions and the epoch; another epoch makes it start over).

import { CallError } from '../call-error.js';
import type { ControlTransport } from '../security/transport.js';
import { VmManagerClient } from './client.js';
import type { Destination, RelayRequest, VmManagerApi, VmRecord, WatchHandlers } from '../../proxy/resolve/types.js';

const DEFAULT_TIMEOUT_MS = 5_000;

const unreachable = (err: unknown): boolean => err instanceof CallError && err.code === 'UNAVAILABLE';

export class ReplicaVmManagerClient implements VmManagerApi {
  private readonly clients: VmManagerClient[];
  private readonly defaultTimeoutMs: number;
  private current = 0;

  constructor(addresses: readonly string[], options: { transport: ControlTransport; defaultTimeoutMs?: number }) {
    if (addresses.length === 0) throw new Error('a VM manager client needs at least one address');
    this.clients = addresses.map((a) => new VmManagerClient(a, options));
    this.defaultTimeoutMs = options.defaultTimeoutMs ?? DEFAULT_TIMEOUT_MS;
  }

  /** The address of the replica calls go to now. */
  get replica(): string {
    return this.clients[this.current]!.address;
  }

  /** Moves to the next replica, unless another call already moved away from `from`. */
  private failedOver(from: number): void {
    if (this.current === from) this.current = (from + 1) % this.clients.length;
  }

  private async call<T>(timeoutMs: number | undefined, run: (client: VmManagerClient, timeoutMs: number) => Promise<T>): Promise<T> {
    const budget = timeoutMs ?? this.defaultTimeoutMs;
    const started = Date.now();
    const from = this.current;
    try {
      return await run(this.clients[from]!, budget);
    } catch (err) {
      if (!unreachable(err) || this.clients.length === 1) throw err;
      this.failedOver(from);
      const left = budget - (Date.now() - started);
      if (left <= 0) throw err;
      return run(this.clients[this.current]!, left);
    }
  }

  registerVm(vm: Omit<VmRecord, 'generation' | 'leaseExpiresAt'>, leaseTtlMs?: number) {
    return this.call(undefined, (c) => c.registerVm(vm, leaseTtlMs));
  }

  deregisterVm(vmId: string) {
    return this.call(undefined, (c) => c.deregisterVm(vmId));
  }

  getVm(vmId: string) {
    return this.call(undefined, (c) => c.getVm(vmId));
  }

  listVms() {
    return this.call(undefined, (c) => c.listVms());
  }

  registerHypervisor(hypervisor: Parameters<VmManagerApi['registerHypervisor']>[0]) {
    return this.call(undefined, (c) => c.registerHypervisor(hypervisor));
  }

  moveVm(vmId: string, hypervisorId: string, vsockCid?: number) {
    return this.call(undefined, (c) => c.moveVm(vmId, hypervisorId, vsockCid));
  }

  resolve(callerVmId: string, destination: Destination, options: { timeoutMs?: number } = {}) {
    return this.call(options.timeoutMs, (c, timeoutMs) => c.resolve(callerVmId, destination, { timeoutMs }));
  }

  authorizeRelay(request: RelayRequest, options: { timeoutMs?: number } = {}) {
    return this.call(options.timeoutMs, (c, timeoutMs) => c.authorizeRelay(request, { timeoutMs }));
  }

  watch(fromRevision: number, handlers: WatchHandlers, epoch = ''): { cancel(): void } {
    const from = this.current;
    return this.clients[from]!.watch(
      fromRevision,
      {
        ...handlers,
        onError: (err) => {
          if (unreachable(err)) this.failedOver(from);
          handlers.onError(err);
        },
      },
      epoch,
    );
  }

  /** Starts connecting to the current replica now (see VmManagerClient.connect). */
  connect(): void {
    this.clients[this.current]!.connect();
  }

  close(): void {
    for (const c of this.clients) c.close();
  }
}
