// What the authorization rules (authorize.ts) need from a request, read from
// the decoded message of each method. Pure: where a VM is registered comes
// from `vmHypervisor`, the caller's view of the registry.

import { METHODS, type RequestFacts } from './authorize.js';

/** Where the registry has a VM now (null: not registered). */
export type VmLocator = (vmId: string) => string | null;

type Message = Record<string, unknown> | null | undefined;

const text = (v: unknown): string => (typeof v === 'string' ? v : '');
const field = (m: Message, name: string): Message => (m?.[name] ?? undefined) as Message;

export function requestFacts(method: string, message: unknown, vmHypervisor: VmLocator): RequestFacts {
  const m = message as Message;
  switch (method) {
    case METHODS.streamAggregatedResources:
    case METHODS.deltaAggregatedResources:
      return { nodeId: text(field(m, 'node')?.id) };
    case METHODS.resolve:
      return { callerVmId: text(m?.caller_vm_id) };
    case METHODS.registerHypervisor:
      return { hypervisorId: text(field(m, 'hypervisor')?.hypervisor_id) };
    case METHODS.authorizeRelay:
      return { hypervisorId: text(m?.hypervisor_id) };
    case METHODS.registerVm: {
      const vm = field(m, 'vm');
      return { hypervisorId: text(vm?.hypervisor_id), vmHypervisor: vmHypervisor(text(vm?.vm_id)) };
    }
    case METHODS.moveVm:
      return { hypervisorId: text(m?.hypervisor_id), vmHypervisor: vmHypervisor(text(m?.vm_id)) };
    case METHODS.deregisterVm:
    case METHODS.certifyAttested:
      return { vmHypervisor: vmHypervisor(text(m?.vm_id)) };
    case METHODS.certify:
      return { joinToken: text(m?.join_token) !== '' };
    default:
      return {};
  }
}
