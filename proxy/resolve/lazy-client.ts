// The VM manager client, loaded on first use: a sidecar without a VM manager
// (or before its first query) does not carry gRPC in memory.

import type { Destination, HypervisorRecord, RelayAuthorization, Resolution, VmManagerApi, VmRecord, WatchHandlers } from '../../xds/vm-manager/types.js';

type Client = VmManagerApi & { close(): void };

export class LazyVmManagerClient implements VmManagerApi {
  private client: Promise<Client> | undefined;
  private closed = false;

  constructor(readonly address: string) {}

  private get(): Promise<Client> {
    this.client ??= import('../../xds/vm-manager/client.js').then(({ VmManagerClient }) => new VmManagerClient(this.address));
    return this.client;
  }

  async registerVm(vm: Omit<VmRecord, 'generation' | 'leaseExpiresAt'>, leaseTtlMs?: number): Promise<VmRecord> {
    return (await this.get()).registerVm(vm, leaseTtlMs);
  }
  async deregisterVm(vmId: string): Promise<void> {
    return (await this.get()).deregisterVm(vmId);
  }
  async getVm(vmId: string): Promise<VmRecord | undefined> {
    return (await this.get()).getVm(vmId);
  }
  async listVms(): Promise<{ vms: VmRecord[]; hypervisors: HypervisorRecord[]; revision: number }> {
    return (await this.get()).listVms();
  }
  async registerHypervisor(hypervisor: HypervisorRecord): Promise<HypervisorRecord> {
    return (await this.get()).registerHypervisor(hypervisor);
  }
  async moveVm(vmId: string, hypervisorId: string, vsockCid?: number): Promise<VmRecord> {
    return (await this.get()).moveVm(vmId, hypervisorId, vsockCid);
  }
  async resolve(callerVmId: string, destination: Destination, options?: { timeoutMs?: number }): Promise<Resolution> {
    return (await this.get()).resolve(callerVmId, destination, options);
  }
  async authorizeRelay(hypervisorId: string, sourceCid: number, destinationCid: number, destinationPort: number, options?: { timeoutMs?: number }): Promise<RelayAuthorization> {
    return (await this.get()).authorizeRelay(hypervisorId, sourceCid, destinationCid, destinationPort, options);
  }

  watch(fromRevision: number, handlers: WatchHandlers, epoch?: string): { cancel(): void } {
    let inner: { cancel(): void } | undefined;
    let cancelled = false;
    this.get().then(
      (c) => {
        if (!cancelled) inner = c.watch(fromRevision, handlers, epoch);
      },
      (err: Error) => {
        if (!cancelled) handlers.onError(err);
      },
    );
    return {
      cancel: () => {
        cancelled = true;
        inner?.cancel();
      },
    };
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    void this.client?.then((c) => c.close());
  }
}
