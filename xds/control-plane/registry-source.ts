// Where the control plane reads the VM registry from, behind one interface:
// the registry of the VM manager it serves in process, or a mirror of a VM
// manager elsewhere kept current over Watch (proxy/resolve/watch-follower.ts:
// resume by revision within the epoch, start over on OUT_OF_RANGE or a new
// epoch, reconnect with backoff).

import { WatchFollower } from '../../proxy/resolve/watch-follower.js';
import type { HypervisorRecord, VmEvent, VmManagerApi, VmRecord } from '../../proxy/resolve/types.js';
import type { Logger } from '../../proxy/runtime/log.js';
import type { Registry } from '../vm-manager/registry.js';
import type { RegistryView } from './translate.js';

/** The registry at one moment, with the VMs by id; made once per change, not once per node. */
export interface RegistryState extends RegistryView {
  byId: ReadonlyMap<string, VmRecord>;
}

export interface RegistrySource {
  /** For the log: "in process" or the VM manager's address. */
  readonly where: string;
  start(): void;
  stop(): void;
  state(): RegistryState;
}

/** The registry of the VM manager this process serves; `onChange` after each of its events. */
export class LocalRegistry implements RegistrySource {
  readonly where = 'in process';
  private cached: { revision: number; state: RegistryState } | undefined;
  private unsubscribe: (() => void) | undefined;

  constructor(
    private readonly registry: Registry,
    private readonly onChange: () => void,
  ) {
    this.unsubscribe = registry.subscribe(() => this.onChange());
  }

  start(): void {}

  stop(): void {
    this.unsubscribe?.();
    this.unsubscribe = undefined;
  }

  state(): RegistryState {
    if (this.cached?.revision !== this.registry.revision) {
      // The stored records, frozen, not copies: unchanged VMs stay the same objects from one change to the next (shared-snapshot.ts).
      const { vms, hypervisors, revision } = this.registry.records();
      this.cached = { revision, state: { vms, hypervisors, byId: new Map(vms.map((vm) => [vm.vmId, vm])) } };
    }
    return this.cached.state;
  }
}

/**
 * A copy of a remote VM manager's registry, from its Watch stream; while the
 * stream is down it serves the last known VMs. `onChange` after each event.
 */
export class RegistryMirror implements RegistrySource {
  private readonly vms = new Map<string, VmRecord>();
  private readonly hypervisors = new Map<string, HypervisorRecord>();
  private readonly follower: WatchFollower;
  private cached: RegistryState | undefined;

  constructor(
    private readonly api: Pick<VmManagerApi, 'watch' | 'close'>,
    readonly where: string,
    private readonly onChange: () => void,
    logger: Logger,
  ) {
    this.follower = new WatchFollower({
      api,
      name: 'registry mirror',
      logger,
      onEvent: (e) => this.apply(e),
      onReset: () => this.reset(),
      onEnded: (err, retryMs) =>
        logger.warn({ reason: 'vm_manager_watch', error: err.message, retry_ms: retryMs, vm_manager: where }, 'VM manager watch ended; serving the last known VMs, reconnecting'),
    });
  }

  start(): void {
    this.follower.start();
  }

  stop(): void {
    this.follower.stop();
    this.api.close();
  }

  state(): RegistryState {
    this.cached ??= { vms: [...this.vms.values()], hypervisors: [...this.hypervisors.values()], byId: new Map(this.vms) };
    return this.cached;
  }

  private reset(): void {
    this.cached = undefined;
    this.vms.clear();
    this.hypervisors.clear();
  }

  private apply(e: VmEvent): void {
    this.cached = undefined;
    if (e.type === 'hypervisor') this.hypervisors.set(e.hypervisor.hypervisorId, e.hypervisor);
    else if (e.type === 'hypervisor-removed') this.hypervisors.delete(e.hypervisor.hypervisorId);
    else if (e.type === 'removed') this.vms.delete(e.vm.vmId);
    else this.vms.set(e.vm.vmId, e.vm);
    this.onChange();
  }
}
