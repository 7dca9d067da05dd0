import test from 'ava';
import { METHODS, ROLES, authorize, mayCallAnonymously, methodLabel, type DenyReason, type RequestFacts } from '../../xds/security/authorize.js';
import { IDENTITY_KINDS, type IdentityKind, type MeshIdentity } from '../../proxy/identity/spiffe.js';

const who = (kind: IdentityKind, name: string): MeshIdentity => ({ trustDomain: 'vsockmesh.local', kind, name });
const sidecarA = who('vm', 'vm-a');
const hv1 = who('hv', 'hv-1');
const operator = who('operator', 'alice');
const cp = who('cp', 'cp-0');

const reason = (d: ReturnType<typeof authorize>): DenyReason | 'allowed' => (d.allow ? 'allowed' : d.reason);

/** The facts under which each role's conditional rules allow, per caller. */
const friendly: Record<IdentityKind, RequestFacts> = {
  vm: { nodeId: 'vm-a', callerVmId: 'vm-a' },
  hv: { hypervisorId: 'hv-1', vmHypervisor: 'hv-1' },
  operator: {},
  cp: {},
};
const callers: Record<IdentityKind, MeshIdentity> = { vm: sidecarA, hv: hv1, operator, cp };

// Which methods each role may call at all (with friendly facts): the whole table.
const allowed: Record<IdentityKind, string[]> = {
  vm: [METHODS.streamAggregatedResources, METHODS.deltaAggregatedResources, METHODS.resolve, METHODS.watch, METHODS.whoAmI, METHODS.healthCheck, METHODS.healthWatch, METHODS.certify],
  hv: [
    METHODS.registerHypervisor,
    METHODS.registerVm,
    METHODS.moveVm,
    METHODS.deregisterVm,
    METHODS.getVm,
    METHODS.listVms,
    METHODS.resolve,
    METHODS.watch,
    METHODS.authorizeRelay,
    METHODS.whoAmI,
    METHODS.healthCheck,
    METHODS.healthWatch,
    METHODS.certify,
    METHODS.certifyAttested,
  ],
  operator: Object.values(METHODS).filter((m) => m !== METHODS.authorizeRelay && m !== METHODS.streamAggregatedResources && m !== METHODS.deltaAggregatedResources && m !== METHODS.certify && m !== METHODS.certifyAttested),
  // Everything but attesting a VM: only a host agent sees a guest's CID.
  cp: Object.values(METHODS).filter((m) => m !== METHODS.certifyAttested),
};

for (const kind of IDENTITY_KINDS) {
  for (const method of Object.values(METHODS)) {
    const expected = allowed[kind].includes(method) ? 'allowed' : 'role_not_allowed';
    test(`${ROLES[kind]} ${methodLabel(method)}: ${expected}`, (t) => {
      t.is(reason(authorize(callers[kind], method, friendly[kind])), expected);
    });
  }
}

test('no identity: every method refused with no_identity, except Certify with a join token', (t) => {
  for (const method of Object.values(METHODS)) t.is(reason(authorize(null, method, {})), 'no_identity', method);
  for (const method of Object.values(METHODS)) t.is(reason(authorize(null, method, { joinToken: true })), method === METHODS.certify ? 'allowed' : 'no_identity', method);
  t.is(reason(authorize(null, METHODS.certify, { joinToken: false })), 'no_identity');
  t.true(mayCallAnonymously(METHODS.certify));
  t.deepEqual(Object.values(METHODS).filter(mayCallAnonymously), [METHODS.certify]);
});

test('a method not in the table is refused to every role, control plane included', (t) => {
  for (const kind of IDENTITY_KINDS) t.is(reason(authorize(callers[kind], '/vsockmesh.vmmanager.v1.VmManager/DropEverything', {})), 'unknown_method');
  t.is(reason(authorize(cp, 'constructor', {})), 'unknown_method');
});

test('sidecar: ADS only as its own node, on both stream kinds', (t) => {
  for (const method of [METHODS.streamAggregatedResources, METHODS.deltaAggregatedResources]) {
    t.is(reason(authorize(sidecarA, method, { nodeId: 'vm-b' })), 'other_node');
    t.is(reason(authorize(sidecarA, method, { nodeId: 'vm-a' })), 'allowed');
    // A later request that names no node keeps the stream's (checked on its first request).
    t.is(reason(authorize(sidecarA, method, {})), 'allowed');
    t.is(reason(authorize(sidecarA, method, { nodeId: '' })), 'allowed');
  }
});

test('sidecar: Resolve only as itself (or as nobody)', (t) => {
  t.is(reason(authorize(sidecarA, METHODS.resolve, { callerVmId: 'vm-b' })), 'other_vm');
  t.is(reason(authorize(sidecarA, METHODS.resolve, { callerVmId: '' })), 'allowed');
  t.is(reason(authorize(who('vm', 'vm-b'), METHODS.resolve, { callerVmId: 'vm-b' })), 'allowed');
});

test('sidecar: no mutation, no config API, whatever the facts', (t) => {
  for (const method of [METHODS.moveVm, METHODS.registerVm, METHODS.deregisterVm, METHODS.registerHypervisor, METHODS.putRoute, METHODS.putService, METHODS.getSyncStatus, METHODS.authorizeRelay]) {
    t.is(reason(authorize(sidecarA, method, { hypervisorId: 'vm-a', vmHypervisor: 'vm-a', nodeId: 'vm-a' })), 'role_not_allowed', method);
  }
});

test('host agent: RegisterVm only onto its hypervisor, and not taking over a VM of another', (t) => {
  t.is(reason(authorize(hv1, METHODS.registerVm, { hypervisorId: 'hv-1', vmHypervisor: null })), 'allowed');
  t.is(reason(authorize(hv1, METHODS.registerVm, { hypervisorId: 'hv-1', vmHypervisor: 'hv-1' })), 'allowed');
  t.is(reason(authorize(hv1, METHODS.registerVm, { hypervisorId: 'hv-2', vmHypervisor: null })), 'other_hypervisor');
  t.is(reason(authorize(hv1, METHODS.registerVm, { hypervisorId: 'hv-1', vmHypervisor: 'hv-2' })), 'vm_on_other_hypervisor');
  t.is(reason(authorize(hv1, METHODS.registerVm, {})), 'other_hypervisor');
});

test('host agent: MoveVm only of a VM on its hypervisor and onto it', (t) => {
  t.is(reason(authorize(hv1, METHODS.moveVm, { hypervisorId: 'hv-1', vmHypervisor: 'hv-1' })), 'allowed');
  t.is(reason(authorize(hv1, METHODS.moveVm, { hypervisorId: 'hv-2', vmHypervisor: 'hv-1' })), 'other_hypervisor');
  t.is(reason(authorize(hv1, METHODS.moveVm, { hypervisorId: 'hv-1', vmHypervisor: 'hv-2' })), 'vm_on_other_hypervisor');
  t.is(reason(authorize(hv1, METHODS.moveVm, { hypervisorId: 'hv-1', vmHypervisor: null })), 'vm_on_other_hypervisor');
});

test('host agent: DeregisterVm only of a VM registered on its hypervisor', (t) => {
  t.is(reason(authorize(hv1, METHODS.deregisterVm, { vmHypervisor: 'hv-1' })), 'allowed');
  t.is(reason(authorize(hv1, METHODS.deregisterVm, { vmHypervisor: 'hv-2' })), 'vm_on_other_hypervisor');
  t.is(reason(authorize(hv1, METHODS.deregisterVm, { vmHypervisor: null })), 'vm_on_other_hypervisor');
});

test('host agent: RegisterHypervisor and AuthorizeRelay only for its own hypervisor', (t) => {
  for (const method of [METHODS.registerHypervisor, METHODS.authorizeRelay]) {
    t.is(reason(authorize(hv1, method, { hypervisorId: 'hv-1' })), 'allowed');
    t.is(reason(authorize(hv1, method, { hypervisorId: 'hv-2' })), 'other_hypervisor');
  }
});

test('host agent: CertifyAttested only for a VM the registry places on its hypervisor', (t) => {
  t.is(reason(authorize(hv1, METHODS.certifyAttested, { vmHypervisor: 'hv-1' })), 'allowed');
  t.is(reason(authorize(hv1, METHODS.certifyAttested, { vmHypervisor: 'hv-2' })), 'vm_on_other_hypervisor');
  t.is(reason(authorize(hv1, METHODS.certifyAttested, { vmHypervisor: null })), 'vm_on_other_hypervisor');
  t.is(reason(authorize(who('hv', 'hv-2'), METHODS.certifyAttested, { vmHypervisor: 'hv-1' })), 'vm_on_other_hypervisor');
  t.is(reason(authorize(null, METHODS.certifyAttested, { vmHypervisor: 'hv-1', joinToken: true })), 'no_identity');
});

test('operator and control plane: mutations whatever the hypervisors', (t) => {
  for (const caller of [operator, cp]) {
    for (const method of [METHODS.moveVm, METHODS.registerVm, METHODS.deregisterVm]) {
      t.is(reason(authorize(caller, method, { hypervisorId: 'hv-2', vmHypervisor: 'hv-1' })), 'allowed');
    }
  }
});

test('every refusal carries a message', (t) => {
  const d = authorize(hv1, METHODS.moveVm, { hypervisorId: 'hv-2', vmHypervisor: 'hv-1' });
  t.false(d.allow);
  if (!d.allow) t.regex(d.message, /hv-2/);
});

test('method labels', (t) => {
  t.is(methodLabel(METHODS.moveVm), 'VmManager/MoveVm');
  t.is(methodLabel(METHODS.streamAggregatedResources), 'AggregatedDiscoveryService/StreamAggregatedResources');
});
