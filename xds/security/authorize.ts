// Who may call what on the control APIs: the caller's mesh identity (from its
// verified client certificate), the method, and the facts of the request that
// matter (the node an ADS request names, the VM a mutation touches and where
// the registry has it) in; allow, or deny with a snake_case reason out. Pure:
// the servers gather the facts and apply the answer (guard.ts).
//
//   sidecar (vm/<vm-id>)        ADS only as its own node; Resolve (as itself) and Watch
//   host agent (hv/<hv-id>)     RegisterHypervisor, AuthorizeRelay for its hypervisor;
//                               RegisterVm/MoveVm/DeregisterVm for VMs on its hypervisor
//                               (before and after); the registry's reads;
//                               CertifyAttested for VMs on its hypervisor
//   operator (operator/<name>)  the config API and the VM manager API (what ctl does)
//   control plane (cp/<name>)   everything: replicas call each other
//   no certificate              Certify with a join token only (a first certificate)
// Every authenticated caller: health checks and WhoAmI. Certify with a
// certificate (a renewal: certify-server.ts signs only the caller's own
// identity): sidecars, host agents, replicas. A method not listed here is
// refused to everyone.

import type { IdentityKind, MeshIdentity } from '../../proxy/identity/spiffe.js';

const VMM = '/vsockmesh.vmmanager.v1.VmManager/';
const CONFIG = '/vsockmesh.config.v1.MeshConfig/';
const ADS = '/envoy.service.discovery.v3.AggregatedDiscoveryService/';
const HEALTH = '/grpc.health.v1.Health/';
const IDENTITY = '/vsockmesh.identity.v1.Identity/';
const TOKENS = '/vsockmesh.identity.v1.JoinTokens/';

export const METHODS = {
  registerHypervisor: `${VMM}RegisterHypervisor`,
  registerVm: `${VMM}RegisterVm`,
  deregisterVm: `${VMM}DeregisterVm`,
  moveVm: `${VMM}MoveVm`,
  getVm: `${VMM}GetVm`,
  listVms: `${VMM}ListVms`,
  resolve: `${VMM}Resolve`,
  authorizeRelay: `${VMM}AuthorizeRelay`,
  watch: `${VMM}Watch`,
  putService: `${CONFIG}PutService`,
  deleteService: `${CONFIG}DeleteService`,
  listServices: `${CONFIG}ListServices`,
  putRoute: `${CONFIG}PutRoute`,
  deleteRoute: `${CONFIG}DeleteRoute`,
  listRoutes: `${CONFIG}ListRoutes`,
  putPolicy: `${CONFIG}PutPolicy`,
  deletePolicy: `${CONFIG}DeletePolicy`,
  listPolicies: `${CONFIG}ListPolicies`,
  getSyncStatus: `${CONFIG}GetSyncStatus`,
  putPeerAuthentication: `${CONFIG}PutPeerAuthentication`,
  deletePeerAuthentication: `${CONFIG}DeletePeerAuthentication`,
  listPeerAuthentications: `${CONFIG}ListPeerAuthentications`,
  whoAmI: `${CONFIG}WhoAmI`,
  streamAggregatedResources: `${ADS}StreamAggregatedResources`,
  deltaAggregatedResources: `${ADS}DeltaAggregatedResources`,
  healthCheck: `${HEALTH}Check`,
  healthWatch: `${HEALTH}Watch`,
  certify: `${IDENTITY}Certify`,
  certifyAttested: `${IDENTITY}CertifyAttested`,
  createJoinToken: `${TOKENS}CreateJoinToken`,
  listJoinTokens: `${TOKENS}ListJoinTokens`,
  revokeJoinToken: `${TOKENS}RevokeJoinToken`,
} as const;

/** The role each identity kind has (the metric label and what `ctl whoami` prints). */
export const ROLES = { vm: 'sidecar', hv: 'host_agent', operator: 'operator', cp: 'control_plane' } as const satisfies Record<IdentityKind, string>;
export type Role = (typeof ROLES)[IdentityKind];

/** What the server read from the request (only what the method's rule needs). */
export interface RequestFacts {
  /** ADS: the node.id the request names ('' or absent: it names none; the stream's first request must, ads-stream.ts). */
  nodeId?: string;
  /** Resolve: the caller_vm_id the request asks as. */
  callerVmId?: string;
  /** RegisterVm, MoveVm, DeregisterVm, CertifyAttested: where the registry has the VM now; null: it does not. */
  vmHypervisor?: string | null;
  /** RegisterVm, MoveVm: the hypervisor the VM goes to; RegisterHypervisor, AuthorizeRelay: the one named. */
  hypervisorId?: string;
  /** Certify: whether the request carries a join token. */
  joinToken?: boolean;
}

export const DENY_REASONS = ['no_identity', 'unknown_method', 'role_not_allowed', 'other_node', 'other_vm', 'other_hypervisor', 'vm_on_other_hypervisor'] as const;
export type DenyReason = (typeof DENY_REASONS)[number];

export type Decision = { allow: true } | { allow: false; reason: DenyReason; message: string };

type Rule = (caller: MeshIdentity, facts: RequestFacts) => Decision;

const ALLOW: Decision = { allow: true };
const deny = (reason: DenyReason, message: string): Decision => ({ allow: false, reason, message });

const anyone: Rule = () => ALLOW;
const only =
  (...kinds: IdentityKind[]): Rule =>
  (caller) =>
    kinds.includes(caller.kind) ? ALLOW : deny('role_not_allowed', `the ${ROLES[caller.kind]} role may not call this method`);
/** Per kind, a rule; a kind not named is refused. */
const byKind =
  (rules: Partial<Record<IdentityKind, Rule>>): Rule =>
  (caller, facts) =>
    (rules[caller.kind] ?? only())(caller, facts);

const ownNode: Rule = (caller, { nodeId }) =>
  nodeId === undefined || nodeId === '' || nodeId === caller.name ? ALLOW : deny('other_node', `${caller.name} may open ADS only as node "${caller.name}", not "${nodeId}"`);
const asItself: Rule = (caller, { callerVmId }) =>
  callerVmId === undefined || callerVmId === '' || callerVmId === caller.name ? ALLOW : deny('other_vm', `${caller.name} may resolve only as itself, not as "${callerVmId}"`);
const namesOwnHypervisor: Rule = (caller, { hypervisorId }) =>
  hypervisorId === caller.name ? ALLOW : deny('other_hypervisor', `host agent ${caller.name} may act only for its own hypervisor, not "${hypervisorId ?? ''}"`);
const vmOnOwnHypervisor =
  (unregistered: 'allow' | 'deny'): Rule =>
  (caller, { vmHypervisor }) => {
    if (vmHypervisor === caller.name || (vmHypervisor === null && unregistered === 'allow')) return ALLOW;
    return deny('vm_on_other_hypervisor', vmHypervisor === null || vmHypervisor === undefined ? `host agent ${caller.name} may act only on VMs registered on its hypervisor` : `the VM is on hypervisor "${vmHypervisor}", not ${caller.name}`);
  };
const both =
  (...rules: Rule[]): Rule =>
  (caller, facts) => {
    for (const rule of rules) {
      const decision = rule(caller, facts);
      if (!decision.allow) return decision;
    }
    return ALLOW;
  };

const admin = { operator: anyone, cp: anyone };
const registryRead = byKind({ ...admin, hv: anyone });

const RULES: Record<string, Rule> = {
  [METHODS.registerHypervisor]: byKind({ ...admin, hv: namesOwnHypervisor }),
  [METHODS.registerVm]: byKind({ ...admin, hv: both(namesOwnHypervisor, vmOnOwnHypervisor('allow')) }),
  [METHODS.moveVm]: byKind({ ...admin, hv: both(vmOnOwnHypervisor('deny'), namesOwnHypervisor) }),
  [METHODS.deregisterVm]: byKind({ ...admin, hv: vmOnOwnHypervisor('deny') }),
  [METHODS.getVm]: registryRead,
  [METHODS.listVms]: registryRead,
  [METHODS.resolve]: byKind({ ...admin, hv: anyone, vm: asItself }),
  [METHODS.watch]: byKind({ ...admin, hv: anyone, vm: anyone }),
  [METHODS.authorizeRelay]: byKind({ cp: anyone, hv: namesOwnHypervisor }),
  [METHODS.putService]: only('operator', 'cp'),
  [METHODS.deleteService]: only('operator', 'cp'),
  [METHODS.listServices]: only('operator', 'cp'),
  [METHODS.putRoute]: only('operator', 'cp'),
  [METHODS.deleteRoute]: only('operator', 'cp'),
  [METHODS.listRoutes]: only('operator', 'cp'),
  [METHODS.putPolicy]: only('operator', 'cp'),
  [METHODS.deletePolicy]: only('operator', 'cp'),
  [METHODS.listPolicies]: only('operator', 'cp'),
  [METHODS.getSyncStatus]: only('operator', 'cp'),
  [METHODS.putPeerAuthentication]: only('operator', 'cp'),
  [METHODS.deletePeerAuthentication]: only('operator', 'cp'),
  [METHODS.listPeerAuthentications]: only('operator', 'cp'),
  [METHODS.whoAmI]: anyone,
  [METHODS.streamAggregatedResources]: byKind({ cp: anyone, vm: ownNode }),
  [METHODS.deltaAggregatedResources]: byKind({ cp: anyone, vm: ownNode }),
  [METHODS.healthCheck]: anyone,
  [METHODS.healthWatch]: anyone,
  [METHODS.certify]: byKind({ vm: anyone, hv: anyone, cp: anyone }),
  // The CA checks the CID and the CSR too (identity/attested-check.ts); here: only a VM of the caller's own hypervisor.
  [METHODS.certifyAttested]: byKind({ hv: vmOnOwnHypervisor('deny') }),
  [METHODS.createJoinToken]: only('operator', 'cp'),
  [METHODS.listJoinTokens]: only('operator', 'cp'),
  [METHODS.revokeJoinToken]: only('operator', 'cp'),
};

/** Whether `method` may be called without a client certificate at all (the guard lets the call reach its first message). */
export function mayCallAnonymously(method: string): boolean {
  return method === METHODS.certify;
}

export function authorize(caller: MeshIdentity | null, method: string, facts: RequestFacts): Decision {
  if (caller === null) {
    if (mayCallAnonymously(method) && facts.joinToken === true) return ALLOW;
    return deny('no_identity', mayCallAnonymously(method) ? 'no verified client certificate and no join token' : 'no verified client certificate');
  }
  const rule = Object.hasOwn(RULES, method) ? RULES[method]! : undefined;
  if (rule === undefined) return deny('unknown_method', `${method} is not a method of the control APIs`);
  return rule(caller, facts);
}

/** `VmManager/MoveVm`: the method as metrics and logs name it. */
export function methodLabel(method: string): string {
  const slash = method.lastIndexOf('/');
  const service = method.slice(1, slash);
  return `${service.slice(service.lastIndexOf('.') + 1)}/${method.slice(slash + 1)}`;
}
