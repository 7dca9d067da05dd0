// The VM manager's registry: validation rules (each naming its field),
// placement uniqueness, generations and events, leases on a fake clock,
// Resolve, AuthorizeRelay and the state file round trip.

import test, { type ExecutionContext } from 'ava';
import { NotFoundError } from '../../proxy/runtime/errors.js';
import { Registry, ValidationError, canonicalIp, type PersistedState, type RegistryOptions, type VmInput } from '../../xds/vm-manager/registry.js';
import type { HypervisorRecord, VmEvent } from '../../proxy/resolve/types.js';

const T0 = 1_700_000_000_000;

/** A registry with a fake clock and four hypervisors: hv-1 and hv-2 (host relay), hv-d (direct), hv-l (loopback). */
function setup(options: RegistryOptions = {}) {
  const clock = { now: T0 };
  const registry = new Registry({ now: () => clock.now, ...options });
  registry.registerHypervisor({ hypervisorId: 'hv-1', vsockMode: 'host-relay', relayPort: 15100 });
  registry.registerHypervisor({ hypervisorId: 'hv-2', vsockMode: 'host-relay', relayPort: 15100 });
  registry.registerHypervisor({ hypervisorId: 'hv-d', vsockMode: 'direct', relayPort: 0 });
  registry.registerHypervisor({ hypervisorId: 'hv-l', vsockMode: 'loopback', relayPort: 0 });
  const events: VmEvent[] = [];
  registry.subscribe((e) => events.push(e));
  return { registry, clock, events };
}

let nextIp = 1;
/** A valid VM on hv-1 with a fresh address; `extra` overrides. */
function vm(vmId: string, extra: Partial<VmInput> = {}): VmInput {
  return {
    vmId,
    hypervisorId: 'hv-1',
    vsockCid: 3,
    addresses: [`10.1.${Math.floor(nextIp / 250)}.${(nextIp++ % 250) + 1}`],
    sidecar: { tcpPort: 15001, vsockPort: 15001 },
    services: [],
    labels: {},
    ...extra,
  };
}

/** Events as [type, the VM's or hypervisor's id, revision]. */
const rows = (events: readonly VmEvent[]): Array<[string, string, number]> => events.map((e) => [e.type, 'hypervisor' in e ? e.hypervisor.hypervisorId : e.vm.vmId, e.revision]);

/** Asserts `fn` throws a ValidationError on `field` whose message matches `message`. */
function rejects(t: ExecutionContext, fn: () => unknown, field: string, message?: RegExp | string): void {
  const err = t.throws(fn, { instanceOf: ValidationError }, `expected a ValidationError on ${field}`);
  if (!err) return;
  t.is(err.field, field);
  t.true(err.message.startsWith(`${field}: `), err.message);
  if (typeof message === 'string') t.is(err.message, message);
  else if (message) t.regex(err.message, message);
}

// ---- hypervisors ---------------------------------------------------------------

test('a hypervisor deleted in the store goes with the VMs on it (removed events, then its hypervisor-removed, at the store revision); the others stay; nothing places a VM on it any more', (t) => {
  const { registry, events } = setup();
  registry.registerVm(vm('web-1', { vsockCid: 3 }));
  registry.registerVm(vm('api-1', { vsockCid: 4, services: [{ name: 'api', port: 8080 }] }));
  registry.registerVm(vm('db-1', { hypervisorId: 'hv-2', vsockCid: 3, services: [{ name: 'api', port: 8080 }] }));
  registry.registerVm(vm('lo-1', { hypervisorId: 'hv-l', vsockCid: 1, sidecar: { tcpPort: 0, vsockPort: 16001 } }));
  events.length = 0;
  const at = registry.revision + 5;
  const removed = registry.removeStoredHypervisor('hv-1', at);
  t.deepEqual(removed.map((v) => v.vmId), ['api-1', 'web-1']);
  t.deepEqual(events.map((e) => `${e.type} ${'vm' in e ? e.vm.vmId : e.hypervisor.hypervisorId}@${e.revision}`), [`removed api-1@${at}`, `removed web-1@${at}`, `hypervisor-removed hv-1@${at}`]);
  t.deepEqual(events[2], { type: 'hypervisor-removed', hypervisor: { hypervisorId: 'hv-1', vsockMode: 'host-relay', relayPort: 15100 }, revision: at }, 'its last record');
  t.deepEqual(registry.eventsSince(at - 5)!.map((e) => e.type), ['removed', 'removed', 'hypervisor-removed'], 'in the event log: a Watch resuming from before hears it');
  t.is(registry.revision, at);
  t.false(registry.hasHypervisor('hv-1'));
  t.deepEqual(registry.list().hypervisors.map((h) => h.hypervisorId), ['hv-2', 'hv-d', 'hv-l']);
  t.deepEqual(registry.list().vms.map((v) => v.vmId), ['db-1', 'lo-1']);
  // The service falls to the VM that is left; a caller of the removed VM is no one's neighbour.
  t.like(registry.resolve('web-1', { kind: 'service', name: 'api' }), { found: true, vm: { vmId: 'db-1' }, sameHypervisor: false });
  t.false(registry.resolve('', { kind: 'vm', vmId: 'web-1' }).found);
  t.like(registry.authorizeRelay({ hypervisorId: 'hv-1', sourceCid: 3, destination: { cid: 4, port: 15001 } }), { allowed: false });
  rejects(t, () => registry.registerVm(vm('web-2')), 'hypervisor_id', /unknown hypervisor "hv-1"/);
  // Its CIDs and addresses are free again once it is back.
  registry.registerHypervisor({ hypervisorId: 'hv-1', vsockMode: 'direct', relayPort: 0 });
  t.like(registry.registerVm(vm('web-2', { vsockCid: 3 })), { hypervisorId: 'hv-1', vsockCid: 3 });
  // A loopback hypervisor's VMs leave its port index too: the port is free on it again.
  events.length = 0;
  registry.removeStoredHypervisor('hv-l', at + 1);
  t.deepEqual(events.map((e) => e.type), ['removed', 'hypervisor-removed']);
  registry.registerHypervisor({ hypervisorId: 'hv-l', vsockMode: 'loopback', relayPort: 0 });
  t.like(registry.registerVm(vm('lo-2', { hypervisorId: 'hv-l', vsockCid: 1, sidecar: { tcpPort: 0, vsockPort: 16001 } })), { vmId: 'lo-2' });
  events.length = 0;
  t.deepEqual(registry.removeStoredHypervisor('hv-gone', at + 2), [], 'a hypervisor not here: nothing');
  t.deepEqual(events, [], 'and no event');
});

test('eventsFrom: a hypervisor gone since the past state is hypervisor-removed, after the removed events of its VMs; one back with the same record is no event', (t) => {
  const { registry } = setup();
  registry.registerVm(vm('a', { vsockCid: 3 }));
  registry.registerVm(vm('b', { hypervisorId: 'hv-2', vsockCid: 3 }));
  const past = registry.clone();
  registry.removeStoredHypervisor('hv-1', registry.revision + 1);
  registry.removeStoredHypervisor('hv-d', registry.revision + 1);
  const revision = registry.revision;
  t.deepEqual(
    rows(registry.eventsFrom(past)),
    [
      ['removed', 'a', revision],
      ['hypervisor-removed', 'hv-1', revision],
      ['hypervisor-removed', 'hv-d', revision],
    ],
  );
  t.like(registry.eventsFrom(past)[1], { hypervisor: { vsockMode: 'host-relay', relayPort: 15100 } }, "the hypervisor's record as it was");
  registry.registerHypervisor({ hypervisorId: 'hv-d', vsockMode: 'direct', relayPort: 0 });
  t.deepEqual(
    registry.eventsFrom(past).map((e) => e.type),
    ['removed', 'hypervisor-removed'],
    'hv-d is as it was: nothing about it',
  );
});

test('hypervisor: every field is validated and named', (t) => {
  const r = new Registry();
  const ok: HypervisorRecord = { hypervisorId: 'hv-1', vsockMode: 'host-relay', relayPort: 15100 };
  rejects(t, () => r.registerHypervisor({ ...ok, hypervisorId: '' }), 'hypervisor_id');
  rejects(t, () => r.registerHypervisor({ ...ok, hypervisorId: 'hv 1' }), 'hypervisor_id', /letters, digits/);
  rejects(t, () => r.registerHypervisor({ ...ok, hypervisorId: 'h/1' }), 'hypervisor_id');
  rejects(t, () => r.registerHypervisor({ ...ok, hypervisorId: 'h'.repeat(254) }), 'hypervisor_id');
  rejects(t, () => r.registerHypervisor({ ...ok, vsockMode: 'vmci' as never }), 'vsock_mode', /host-relay, direct or loopback \(got "vmci"\)/);
  for (const relayPort of [0, -1, 1.5, 0xffffffff, Number.NaN]) rejects(t, () => r.registerHypervisor({ ...ok, relayPort }), 'relay_port');
  t.is(r.revision, 0);
  t.deepEqual(r.list().hypervisors, []);
  t.deepEqual(r.registerHypervisor({ ...ok, hypervisorId: 'h'.repeat(253), relayPort: 0xfffffffe }), { hypervisorId: 'h'.repeat(253), vsockMode: 'host-relay', relayPort: 0xfffffffe });
  t.deepEqual(r.registerHypervisor({ hypervisorId: 'A-z.0_9', vsockMode: 'direct', relayPort: 1 }).hypervisorId, 'A-z.0_9');
});

test('hypervisor: a relay port on a direct or loopback hypervisor is stored as 0', (t) => {
  const r = new Registry();
  t.is(r.registerHypervisor({ hypervisorId: 'hv-d', vsockMode: 'direct', relayPort: 15100 }).relayPort, 0);
  t.is(r.registerHypervisor({ hypervisorId: 'hv-l', vsockMode: 'loopback', relayPort: 0xffffffff }).relayPort, 0);
  t.deepEqual(
    r.list().hypervisors.map((h) => h.relayPort),
    [0, 0],
  );
});

test('hypervisor: re-register with a change emits one hypervisor event; an identical one emits none', (t) => {
  const { registry, events } = setup();
  t.is(registry.revision, 4);
  registry.registerHypervisor({ hypervisorId: 'hv-1', vsockMode: 'host-relay', relayPort: 15100 });
  t.is(registry.revision, 4);
  t.deepEqual(events, []);
  registry.registerHypervisor({ hypervisorId: 'hv-1', vsockMode: 'host-relay', relayPort: 15200 });
  t.is(registry.revision, 5);
  t.deepEqual(events, [{ type: 'hypervisor', hypervisor: { hypervisorId: 'hv-1', vsockMode: 'host-relay', relayPort: 15200 }, revision: 5 }]);
  t.is(registry.list().hypervisors.find((h) => h.hypervisorId === 'hv-1')!.relayPort, 15200);
});

test('hypervisor: a mode change must keep its VMs valid', (t) => {
  const { registry } = setup();
  registry.registerVm(vm('web-1', { vsockCid: 3 }));
  registry.registerVm(vm('db-1', { hypervisorId: 'hv-l', vsockCid: 1 }));
  const before = registry.revision;
  rejects(t, () => registry.registerHypervisor({ hypervisorId: 'hv-1', vsockMode: 'loopback', relayPort: 0 }), 'vsock_mode', /cannot change to loopback while VM "web-1".*must be 1/);
  rejects(t, () => registry.registerHypervisor({ hypervisorId: 'hv-l', vsockMode: 'direct', relayPort: 0 }), 'vsock_mode', /VM "db-1".*guest context ID/);
  t.is(registry.revision, before);
  t.deepEqual(
    registry.list().hypervisors.map((h) => h.vsockMode),
    ['host-relay', 'host-relay', 'direct', 'loopback'],
  );
  // host-relay and direct share the CID rules: switching keeps the VMs valid.
  t.is(registry.registerHypervisor({ hypervisorId: 'hv-1', vsockMode: 'direct', relayPort: 0 }).vsockMode, 'direct');
  // An empty hypervisor may take any mode.
  t.is(registry.registerHypervisor({ hypervisorId: 'hv-2', vsockMode: 'loopback', relayPort: 0 }).vsockMode, 'loopback');
  t.is(registry.revision, before + 2);
});

// ---- VM validation ---------------------------------------------------------------

test('VM: vm_id and hypervisor_id', (t) => {
  const { registry } = setup();
  rejects(t, () => registry.registerVm(vm('')), 'vm_id');
  rejects(t, () => registry.registerVm(vm('web 1')), 'vm_id');
  rejects(t, () => registry.registerVm(vm('w'.repeat(254))), 'vm_id');
  t.is(registry.registerVm(vm('w'.repeat(253))).vmId, 'w'.repeat(253));
  rejects(t, () => registry.registerVm(vm('web-1', { hypervisorId: 'hv-x' })), 'hypervisor_id', 'hypervisor_id: unknown hypervisor "hv-x"; register it first');
  rejects(t, () => registry.registerVm(vm('web-1', { hypervisorId: '' })), 'hypervisor_id');
});

test('VM: vsock_cid on host-relay and direct hypervisors is 3..0xFFFFFFFE', (t) => {
  const { registry } = setup();
  for (const hypervisorId of ['hv-1', 'hv-d']) {
    for (const vsockCid of [0, 1, 2, 0xffffffff, 3.5, -3]) rejects(t, () => registry.registerVm(vm(`x-${hypervisorId}`, { hypervisorId, vsockCid })), 'vsock_cid', /guest context ID 3\.\.4294967294/);
  }
  t.is(registry.registerVm(vm('low', { vsockCid: 3 })).vsockCid, 3);
  t.is(registry.registerVm(vm('high', { vsockCid: 0xfffffffe })).vsockCid, 0xfffffffe);
});

test('VM: vsock_cid is unique per hypervisor, and may repeat on another hypervisor', (t) => {
  const { registry } = setup();
  registry.registerVm(vm('web-2', { vsockCid: 5 }));
  rejects(t, () => registry.registerVm(vm('web-3', { vsockCid: 5 })), 'vsock_cid', 'vsock_cid: 5 is already used by VM "web-2" on hypervisor "hv-1"');
  t.is(registry.registerVm(vm('web-4', { hypervisorId: 'hv-2', vsockCid: 5 })).vsockCid, 5);
  registry.registerVm(vm('d-1', { hypervisorId: 'hv-d', vsockCid: 5 }));
  rejects(t, () => registry.registerVm(vm('d-2', { hypervisorId: 'hv-d', vsockCid: 5 })), 'vsock_cid', /already used by VM "d-1" on hypervisor "hv-d"/);
  // Once web-2 is gone its CID is free again.
  registry.deregisterVm('web-2');
  t.is(registry.registerVm(vm('web-3', { vsockCid: 5 })).vsockCid, 5);
});

test('VM: on a loopback hypervisor every VM is CID 1 and the sidecar vsock port tells them apart', (t) => {
  const { registry } = setup();
  rejects(t, () => registry.registerVm(vm('l-1', { hypervisorId: 'hv-l', vsockCid: 3 })), 'vsock_cid', /must be 1 on loopback hypervisor "hv-l"/);
  registry.registerVm(vm('l-1', { hypervisorId: 'hv-l', vsockCid: 1, sidecar: { tcpPort: 15001, vsockPort: 16001 } }));
  registry.registerVm(vm('l-2', { hypervisorId: 'hv-l', vsockCid: 1, sidecar: { tcpPort: 15001, vsockPort: 16002 } }));
  rejects(
    t,
    () => registry.registerVm(vm('l-3', { hypervisorId: 'hv-l', vsockCid: 1, sidecar: { tcpPort: 15002, vsockPort: 16001 } })),
    'sidecar.vsock_port',
    /16001 is already used by VM "l-1" on loopback hypervisor "hv-l"/,
  );
  // No vsock listener (no sidecar, or port 0): nothing to tell apart.
  registry.registerVm(vm('l-4', { hypervisorId: 'hv-l', vsockCid: 1, sidecar: null }));
  registry.registerVm(vm('l-5', { hypervisorId: 'hv-l', vsockCid: 1, sidecar: null }));
  registry.registerVm(vm('l-6', { hypervisorId: 'hv-l', vsockCid: 1, sidecar: { tcpPort: 15001, vsockPort: 0 } }));
  registry.registerVm(vm('l-7', { hypervisorId: 'hv-l', vsockCid: 1, sidecar: { tcpPort: 15001, vsockPort: 0 } }));
  // The port is unique per loopback hypervisor only.
  registry.registerVm(vm('relay-vm', { hypervisorId: 'hv-1', vsockCid: 3, sidecar: { tcpPort: 1, vsockPort: 16001 } }));
  registry.registerHypervisor({ hypervisorId: 'hv-l2', vsockMode: 'loopback', relayPort: 0 });
  t.is(registry.registerVm(vm('other-l', { hypervisorId: 'hv-l2', vsockCid: 1, sidecar: { tcpPort: 1, vsockPort: 16001 } })).sidecar!.vsockPort, 16001);
});

test('VM: addresses are IP literals, at least one, without duplicates', (t) => {
  const { registry } = setup();
  rejects(t, () => registry.registerVm(vm('a', { addresses: [] })), 'addresses', /at least one/);
  rejects(t, () => registry.registerVm(vm('a', { addresses: ['10.0.0.1', 'web.local'] })), 'addresses[1]', /"web.local" is not an IPv4 or IPv6 address/);
  rejects(t, () => registry.registerVm(vm('a', { addresses: ['010.0.0.1'] })), 'addresses[0]');
  rejects(t, () => registry.registerVm(vm('a', { addresses: ['10.0.0.256'] })), 'addresses[0]');
  rejects(t, () => registry.registerVm(vm('a', { addresses: [7 as unknown as string] })), 'addresses[0]');
  rejects(t, () => registry.registerVm(vm('a', { addresses: ['fe80::1%eth0'] })), 'addresses[0]', /zone/);
  rejects(t, () => registry.registerVm(vm('a', { addresses: ['10.0.0.1', '10.0.0.1'] })), 'addresses[1]', /duplicate of addresses\[0\]/);
  rejects(t, () => registry.registerVm(vm('a', { addresses: ['2001:db8::1', '2001:DB8:0:0::1'] })), 'addresses[1]', /duplicate of addresses\[0\]/);
  rejects(t, () => registry.registerVm(vm('a', { addresses: ['10.0.0.1', '::ffff:10.0.0.1'] })), 'addresses[1]', /duplicate/);
  t.deepEqual(registry.registerVm(vm('a', { addresses: ['10.0.0.1', 'fd00::1'] })).addresses, ['10.0.0.1', 'fd00::1']);
});

test('VM: an address belongs to one VM across the whole registry, in any IPv6 spelling', (t) => {
  const { registry } = setup();
  registry.registerVm(vm('web-1', { vsockCid: 3, addresses: ['10.0.0.1', '2001:db8::a'] }));
  // Another hypervisor does not make the same address acceptable.
  rejects(t, () => registry.registerVm(vm('web-2', { hypervisorId: 'hv-2', addresses: ['10.0.0.1'] })), 'addresses[0]', 'addresses[0]: 10.0.0.1 is already used by VM "web-1"');
  rejects(t, () => registry.registerVm(vm('web-2', { vsockCid: 4, addresses: ['10.0.0.2', '2001:DB8:0000::A'] })), 'addresses[1]', /already used by VM "web-1"/);
  rejects(t, () => registry.registerVm(vm('web-2', { vsockCid: 4, addresses: ['::ffff:10.0.0.1'] })), 'addresses[0]', /already used by VM "web-1"/);
  rejects(t, () => registry.registerVm(vm('web-2', { vsockCid: 4, addresses: ['::FFFF:a00:1'] })), 'addresses[0]', /already used by VM "web-1"/);
  t.is(registry.registerVm(vm('web-2', { vsockCid: 4, addresses: ['10.0.0.2', '2001:db8::b'] })).vmId, 'web-2');
});

test('canonicalIp: one spelling per address', (t) => {
  t.is(canonicalIp('10.0.0.1'), '10.0.0.1');
  t.is(canonicalIp('2001:DB8:0:0:0:0:0:1'), '2001:db8::1');
  t.is(canonicalIp('::ffff:10.0.0.1'), '10.0.0.1');
  t.is(canonicalIp('0:0:0:0:0:ffff:0a00:0001'), '10.0.0.1');
  t.is(canonicalIp('::10.0.0.1'), '::a00:1'); // IPv4-compatible is not IPv4-mapped
  t.is(canonicalIp('web'), undefined);
  t.is(canonicalIp(''), undefined);
});

test('VM: sidecar ports', (t) => {
  const { registry } = setup();
  for (const tcpPort of [-1, 65536, 1.5]) rejects(t, () => registry.registerVm(vm('a', { sidecar: { tcpPort, vsockPort: 1 } })), 'sidecar.tcp_port');
  for (const vsockPort of [-1, 0xffffffff, 2.5]) rejects(t, () => registry.registerVm(vm('a', { sidecar: { tcpPort: 1, vsockPort } })), 'sidecar.vsock_port');
  rejects(t, () => registry.registerVm(vm('a', { sidecar: 5 as never })), 'sidecar');
  t.deepEqual(registry.registerVm(vm('a', { sidecar: { tcpPort: 0, vsockPort: 0 } })).sidecar, { tcpPort: 0, vsockPort: 0 });
  t.deepEqual(registry.registerVm(vm('b', { vsockCid: 4, sidecar: { tcpPort: 65535, vsockPort: 0xfffffffe } })).sidecar, { tcpPort: 65535, vsockPort: 0xfffffffe });
  t.is(registry.registerVm(vm('c', { vsockCid: 5, sidecar: null })).sidecar, null);
});

test('VM: services', (t) => {
  const { registry } = setup();
  rejects(t, () => registry.registerVm(vm('a', { services: [{ name: '', port: 80 }] })), 'services[0].name');
  rejects(t, () => registry.registerVm(vm('a', { services: [{ name: 'web', port: 80 }, { name: 'x', port: 0 }] })), 'services[1].port');
  rejects(t, () => registry.registerVm(vm('a', { services: [{ name: 'web', port: 65536 }] })), 'services[0].port');
  rejects(t, () => registry.registerVm(vm('a', { services: [{ name: 'web', port: 80 }, { name: 'web', port: 81 }] })), 'services[1].name', /"web" is a duplicate of services\[0\]/);
  rejects(t, () => registry.registerVm(vm('a', { services: 'web' as never })), 'services');
  const services = [
    { name: 'web', port: 1 },
    { name: 'admin', port: 65535 },
  ];
  t.deepEqual(registry.registerVm(vm('a', { services })).services, services);
});

test('VM: labels', (t) => {
  const { registry } = setup();
  const many = (n: number) => Object.fromEntries(Array.from({ length: n }, (_, i) => [`k${i}`, 'v']));
  rejects(t, () => registry.registerVm(vm('a', { labels: many(65) })), 'labels', /at most 64 labels \(got 65\)/);
  rejects(t, () => registry.registerVm(vm('a', { labels: { '': 'v' } })), 'labels', /keys must not be empty/);
  rejects(t, () => registry.registerVm(vm('a', { labels: { team: 3 as unknown as string } })), 'labels["team"]');
  rejects(t, () => registry.registerVm(vm('a', { labels: ['x'] as never })), 'labels');
  t.is(Object.keys(registry.registerVm(vm('a', { labels: many(64) })).labels).length, 64);
});

test('VM: lease_ttl is none (undefined or 0) or at least 1000 ms', (t) => {
  const { registry, clock } = setup();
  for (const ttl of [999, -1000, 1500.5, Number.NaN]) rejects(t, () => registry.registerVm(vm('a'), ttl), 'lease_ttl');
  t.is(registry.getVm('a'), undefined);
  t.is(registry.registerVm(vm('a'), 0).leaseExpiresAt, null);
  t.is(registry.registerVm(vm('b', { vsockCid: 4 })).leaseExpiresAt, null);
  t.is(registry.registerVm(vm('c', { vsockCid: 5 }), 1000).leaseExpiresAt, clock.now + 1000);
});

test('VM: a failed registration changes nothing', (t) => {
  const { registry, events } = setup();
  const web = registry.registerVm(vm('web-1', { vsockCid: 3 }));
  const revision = registry.revision;
  rejects(t, () => registry.registerVm({ ...web, vsockCid: 0 }), 'vsock_cid');
  rejects(t, () => registry.registerVm(vm('web-2', { vsockCid: 3 })), 'vsock_cid');
  t.is(registry.revision, revision);
  t.is(events.length, 1);
  t.deepEqual(registry.getVm('web-1'), web);
  t.is(registry.getVm('web-2'), undefined);
});

// ---- generations and events ----------------------------------------------------------

test('register: a new VM is generation 1 with an added event at the next revision', (t) => {
  const { registry, events } = setup();
  const input = vm('web-1', { vsockCid: 7, services: [{ name: 'web', port: 8080 }], labels: { team: 'a' } });
  const record = registry.registerVm(input);
  t.deepEqual(record, { ...input, generation: 1, leaseExpiresAt: null });
  t.is(registry.revision, 5);
  t.deepEqual(events, [{ type: 'added', vm: record, revision: 5 }]);
  t.deepEqual(registry.getVm('web-1'), record);
});

test('register again: identical renews silently, a change bumps the generation with updated or moved', (t) => {
  const { registry, events } = setup();
  const input = vm('web-1', { vsockCid: 3, labels: { a: '1', b: '2' } });
  registry.registerVm(input);

  // Identical (labels in another order are the same labels): no event, same generation and revision.
  const same = registry.registerVm({ ...input, labels: { b: '2', a: '1' } });
  t.is(same.generation, 1);
  t.is(registry.revision, 5);
  t.is(events.length, 1);

  const updated = registry.registerVm({ ...input, labels: { a: '1' } });
  t.is(updated.generation, 2);
  t.is(registry.revision, 6);
  t.like(events[1], { type: 'updated', revision: 6, vm: { generation: 2, labels: { a: '1' } } });

  const sidecarChanged = registry.registerVm({ ...input, labels: { a: '1' }, sidecar: null });
  t.is(sidecarChanged.generation, 3);
  t.is(events[2]!.type, 'updated');

  const newCid = registry.registerVm({ ...input, labels: { a: '1' }, sidecar: null, vsockCid: 9 });
  t.is(newCid.generation, 4);
  t.deepEqual(events[3], { type: 'moved', vm: newCid, previous: sidecarChanged, revision: 8 });

  const newHypervisor = registry.registerVm({ ...input, labels: { a: '1' }, sidecar: null, vsockCid: 9, hypervisorId: 'hv-2' });
  t.is(newHypervisor.generation, 5);
  t.deepEqual(events[4], { type: 'moved', vm: newHypervisor, previous: newCid, revision: 9 });
  t.is(registry.revision, 9);
  t.is(events.length, 5);
});

test('register again: a re-register keeps its own CID and addresses (it does not conflict with itself)', (t) => {
  const { registry } = setup();
  const input = vm('web-1', { vsockCid: 3, addresses: ['10.0.0.1', '2001:db8::1'] });
  registry.registerVm(input);
  t.is(registry.registerVm({ ...input, addresses: ['2001:DB8::1', '10.0.0.1'] }).generation, 2);
  // The old spelling's slot was released and the new one taken: another VM still cannot use it.
  rejects(t, () => registry.registerVm(vm('web-2', { vsockCid: 4, addresses: ['2001:db8::1'] })), 'addresses[0]', /VM "web-1"/);
});

test('register again: an address a VM drops becomes free', (t) => {
  const { registry } = setup();
  registry.registerVm(vm('web-1', { addresses: ['10.0.0.1', '10.0.0.2'] }));
  registry.registerVm(vm('web-1', { addresses: ['10.0.0.2'] }));
  t.is(registry.registerVm(vm('web-2', { vsockCid: 4, addresses: ['10.0.0.1'] })).addresses[0], '10.0.0.1');
  t.is(registry.resolve('', { kind: 'ip', ip: '10.0.0.1' }).vm?.vmId, 'web-2');
  t.is(registry.resolve('', { kind: 'ip', ip: '10.0.0.2' }).vm?.vmId, 'web-1');
});

test('deregister: removed event, address and CID freed; unknown VM is NotFoundError', (t) => {
  const { registry, events } = setup();
  const web = registry.registerVm(vm('web-1', { addresses: ['10.0.0.1'], services: [{ name: 'web', port: 80 }] }));
  t.deepEqual(registry.deregisterVm('web-1'), web);
  t.deepEqual(events[1], { type: 'removed', vm: web, revision: 6 });
  t.is(registry.getVm('web-1'), undefined);
  t.false(registry.resolve('', { kind: 'ip', ip: '10.0.0.1' }).found);
  t.false(registry.resolve('', { kind: 'service', name: 'web' }).found);
  const err = t.throws(() => registry.deregisterVm('web-1'), { instanceOf: NotFoundError });
  t.is(err?.what, 'VM "web-1"');
  t.is(err?.message, 'VM "web-1" not found');
  t.is(registry.revision, 6);
});

test('list: VMs and hypervisors sorted by id, with the revision', (t) => {
  const { registry } = setup();
  registry.registerVm(vm('c', { vsockCid: 3 }));
  registry.registerVm(vm('a', { vsockCid: 4 }));
  registry.registerVm(vm('b', { hypervisorId: 'hv-2', vsockCid: 3 }));
  const listed = registry.list();
  t.deepEqual(
    listed.vms.map((v) => v.vmId),
    ['a', 'b', 'c'],
  );
  t.deepEqual(
    listed.hypervisors.map((h) => h.hypervisorId),
    ['hv-1', 'hv-2', 'hv-d', 'hv-l'],
  );
  t.is(listed.revision, 7);
});

test('move: keeps the CID by default, bumps the generation, emits moved with the previous record', (t) => {
  const { registry, events, clock } = setup();
  const before = registry.registerVm(vm('web-1', { vsockCid: 5 }), 60_000);
  clock.now += 1000;
  const moved = registry.moveVm('web-1', 'hv-2');
  t.like(moved, { hypervisorId: 'hv-2', vsockCid: 5, generation: 2, leaseExpiresAt: T0 + 60_000 });
  t.deepEqual(events.at(-1), { type: 'moved', vm: moved, previous: before, revision: 6 });
  const renumbered = registry.moveVm('web-1', 'hv-2', 6);
  t.like(renumbered, { hypervisorId: 'hv-2', vsockCid: 6, generation: 3 });
  t.is(events.at(-1)!.type, 'moved');
  t.is(registry.revision, 7);
});

test('move: the placement must be valid on the target; a move to where it is already is a no-op', (t) => {
  const { registry, events } = setup();
  registry.registerVm(vm('web-1', { vsockCid: 5 }));
  registry.registerVm(vm('web-2', { hypervisorId: 'hv-2', vsockCid: 5 }));
  rejects(t, () => registry.moveVm('web-1', 'hv-2'), 'vsock_cid', /5 is already used by VM "web-2" on hypervisor "hv-2"/);
  rejects(t, () => registry.moveVm('web-1', 'hv-x'), 'hypervisor_id', /unknown hypervisor "hv-x"/);
  rejects(t, () => registry.moveVm('web-1', 'hv-l'), 'vsock_cid', /must be 1 on loopback/);
  rejects(t, () => registry.moveVm('web-1', 'hv-1', 2), 'vsock_cid');
  t.throws(() => registry.moveVm('nope', 'hv-1'), { instanceOf: NotFoundError });
  t.is(registry.getVm('web-1')!.hypervisorId, 'hv-1');
  const revision = registry.revision;
  t.is(registry.moveVm('web-1', 'hv-1').generation, 1);
  t.is(registry.moveVm('web-1', 'hv-1', 5).generation, 1);
  t.is(registry.revision, revision);
  t.is(events.length, 2);
  t.like(registry.moveVm('web-1', 'hv-l', 1), { hypervisorId: 'hv-l', vsockCid: 1, generation: 2 });
});

test('revision: +1 per event, unchanged by reads and rejected calls', (t) => {
  const { registry } = setup();
  const start = registry.revision;
  registry.registerVm(vm('a', { vsockCid: 3 }));
  registry.registerVm(vm('b', { vsockCid: 4 }));
  registry.moveVm('a', 'hv-2');
  registry.deregisterVm('b');
  t.is(registry.revision, start + 4);
  registry.getVm('a');
  registry.list();
  registry.resolve('a', { kind: 'vm', vmId: 'a' });
  registry.authorizeRelay({ hypervisorId: 'hv-2', sourceCid: 3, destination: { cid: 4, port: 1 } });
  registry.eventsSince(0);
  t.throws(() => registry.deregisterVm('b'));
  t.is(registry.revision, start + 4);
  t.deepEqual(
    registry.eventsSince(0)!.map((e) => e.revision),
    [1, 2, 3, 4, 5, 6, 7, 8],
  );
});

// ---- event log -------------------------------------------------------------------------

test('eventsSince: the events after a revision, in order; [] when current; null for the future', (t) => {
  const { registry } = setup();
  registry.registerVm(vm('a', { vsockCid: 3 }));
  registry.registerVm(vm('b', { vsockCid: 4 }));
  registry.deregisterVm('a');
  const all = registry.eventsSince(0)!;
  t.deepEqual(
    all.map((e) => e.type),
    ['hypervisor', 'hypervisor', 'hypervisor', 'hypervisor', 'added', 'added', 'removed'],
  );
  t.deepEqual(
    registry.eventsSince(5)!.map((e) => [e.type, e.revision]),
    [
      ['added', 6],
      ['removed', 7],
    ],
  );
  t.deepEqual(registry.eventsSince(7), []);
  t.is(registry.eventsSince(8), null);
  t.is(registry.eventsSince(-1), null);
  t.is(registry.eventsSince(2.5), null);
});

test('eventsSince: a small log forgets old events and says so with null', (t) => {
  const registry = new Registry({ eventLogSize: 3 });
  registry.registerHypervisor({ hypervisorId: 'hv-1', vsockMode: 'direct', relayPort: 0 });
  for (let i = 0; i < 6; i++) registry.registerVm(vm(`vm-${i}`, { hypervisorId: 'hv-1', vsockCid: 10 + i }));
  t.is(registry.revision, 7);
  t.deepEqual(
    registry.eventsSince(4)!.map((e) => e.revision),
    [5, 6, 7],
  );
  t.deepEqual(
    registry.eventsSince(6)!.map((e) => (e.type === 'added' ? e.vm.vmId : '')),
    ['vm-5'],
  );
  t.is(registry.eventsSince(3), null);
  t.is(registry.eventsSince(0), null);
  // Many times round the ring: still the newest three, in order.
  for (let i = 0; i < 20; i++) registry.moveVm('vm-0', 'hv-1', 100 + i);
  t.deepEqual(
    registry.eventsSince(24)!.map((e) => [e.revision, e.type === 'moved' && e.vm.vsockCid]),
    [
      [25, 117],
      [26, 118],
      [27, 119],
    ],
  );
  t.is(registry.eventsSince(23), null);
});

test('applyStored: the store revisions (gaps, several changes at one), eventsSince by revision, a small log and a re-read forget what came before', (t) => {
  const registry = Registry.restore({ epoch: 'etcd-1', revision: 40 }, { eventLogSize: 3 });
  registry.applyStored({ hypervisor: { hypervisorId: 'hv-1', vsockMode: 'direct', relayPort: 0 } }, 42);
  registry.applyStored({ vm: { ...vm('a', { hypervisorId: 'hv-1', vsockCid: 3 }), generation: 1, leaseExpiresAt: null } }, 45);
  registry.applyStored({ vm: { ...vm('b', { hypervisorId: 'hv-1', vsockCid: 4 }), generation: 1, leaseExpiresAt: null } }, 45);
  t.is(registry.revision, 45);
  t.deepEqual(
    registry.eventsSince(40)!.map((e) => [e.type, e.revision]),
    [
      ['hypervisor', 42],
      ['added', 45],
      ['added', 45],
    ],
  );
  t.deepEqual(
    registry.eventsSince(43)!.map((e) => [e.type, e.revision]),
    [
      ['added', 45],
      ['added', 45],
    ],
    'a revision in a gap: what came after it',
  );
  t.is(registry.eventsSince(39), null, 'before the registry was read');
  // A record that breaks a rule applies nothing, but the revision moves on.
  t.throws(() => registry.applyStored({ vm: { ...vm('c', { hypervisorId: 'hv-1', vsockCid: 3 }), generation: 1, leaseExpiresAt: null } }, 50), { message: /vsock_cid: 3 is already used by VM "a"/ });
  t.is(registry.revision, 50);
  t.is(registry.getVm('c'), undefined);
  registry.applyStored({ removed: 'a' }, 52);
  t.deepEqual(
    registry.eventsSince(45)!.map((e) => [e.type, e.revision]),
    [['removed', 52]],
  );
  t.deepEqual(
    registry.eventsSince(42)!.map((e) => e.revision),
    [45, 45, 52],
  );
  t.is(registry.eventsSince(41), null, 'the ring of 3 dropped the event of revision 42: what came after 41 is no longer complete');
  registry.advanceTo(60, true);
  t.is(registry.revision, 60);
  t.is(registry.eventsSince(52), null, 'read again as a whole: what came before is not in the log');
  t.deepEqual(registry.eventsSince(60), []);
});

test('eventsFrom: the events that take a past state to this one, at the current revision; none between equal states', (t) => {
  const { registry } = setup();
  const a = vm('a', { vsockCid: 3 });
  const b = vm('b', { vsockCid: 4 });
  const c = vm('c', { vsockCid: 5 });
  registry.registerVm(a);
  registry.registerVm(b);
  registry.registerVm(c, 60_000);
  const past = registry.clone();
  t.deepEqual(registry.eventsFrom(past), [], 'the same state: no event');
  registry.registerHypervisor({ hypervisorId: 'hv-2', vsockMode: 'host-relay', relayPort: 15200 });
  registry.moveVm('a', 'hv-2');
  registry.registerVm({ ...b, labels: { team: 'x' } });
  registry.registerVm(c, 60_000); // a renewal: no event
  registry.deregisterVm('c');
  registry.registerVm(vm('d', { vsockCid: 6 }));
  const revision = registry.revision;
  t.deepEqual(
    rows(registry.eventsFrom(past)),
    [
      ['hypervisor', 'hv-2', revision],
      ['moved', 'a', revision],
      ['updated', 'b', revision],
      ['added', 'd', revision],
      ['removed', 'c', revision],
    ],
  );
  const moved = registry.eventsFrom(past)[1]!;
  t.like(moved, { type: 'moved', vm: { hypervisorId: 'hv-2' }, previous: { hypervisorId: 'hv-1' } });
});

test('eventLogSize must be a positive integer', (t) => {
  t.throws(() => new Registry({ eventLogSize: 0 }), { instanceOf: RangeError });
});

test('snapshotEvents: every hypervisor then every VM, sorted, at the current revision', (t) => {
  const { registry } = setup();
  const b = registry.registerVm(vm('b', { vsockCid: 3 }));
  const a = registry.registerVm(vm('a', { hypervisorId: 'hv-2', vsockCid: 3 }));
  const snapshot = registry.snapshotEvents();
  t.deepEqual(
    rows(snapshot),
    [
      ['hypervisor', 'hv-1', 6],
      ['hypervisor', 'hv-2', 6],
      ['hypervisor', 'hv-d', 6],
      ['hypervisor', 'hv-l', 6],
      ['added', 'a', 6],
      ['added', 'b', 6],
    ],
  );
  t.deepEqual(snapshot[4], { type: 'added', vm: a, revision: 6 });
  t.deepEqual(snapshot[5], { type: 'added', vm: b, revision: 6 });
  t.deepEqual(new Registry().snapshotEvents(), []);
});

test('subscribe: listeners hear each event synchronously until they unsubscribe', (t) => {
  const registry = new Registry();
  const heard: string[] = [];
  const stop = registry.subscribe((e) => heard.push(`${e.type}@${e.revision}`));
  registry.registerHypervisor({ hypervisorId: 'hv-1', vsockMode: 'direct', relayPort: 0 });
  t.deepEqual(heard, ['hypervisor@1']);
  registry.registerVm(vm('a', { vsockCid: 3 }));
  t.deepEqual(heard, ['hypervisor@1', 'added@2']);
  stop();
  registry.deregisterVm('a');
  t.deepEqual(heard, ['hypervisor@1', 'added@2']);
});

test('subscribe: a throwing listener does not undo the change nor silence the others', (t) => {
  const { registry } = setup();
  const heard: string[] = [];
  registry.subscribe(() => {
    throw new Error('listener broke');
  });
  registry.subscribe((e) => heard.push(e.type));
  t.throws(() => registry.registerVm(vm('a')), { message: 'listener broke' });
  t.deepEqual(heard, ['added']);
  t.is(registry.getVm('a')!.generation, 1);
  t.is(registry.revision, 5);
});

// ---- leases ----------------------------------------------------------------------------

test('leases: expire at leaseExpiresAt, with removed events', (t) => {
  const { registry, clock, events } = setup();
  t.is(registry.nextLeaseExpiry(), null);
  registry.registerVm(vm('a', { vsockCid: 3 }), 10_000);
  registry.registerVm(vm('b', { vsockCid: 4 }), 5_000);
  registry.registerVm(vm('forever', { vsockCid: 5 }));
  t.is(registry.getVm('a')!.leaseExpiresAt, T0 + 10_000);
  t.is(registry.nextLeaseExpiry(), T0 + 5_000);

  clock.now = T0 + 4_999;
  t.deepEqual(registry.expireLeases(), []);
  clock.now = T0 + 5_000; // expiry is inclusive
  t.deepEqual(
    registry.expireLeases().map((v) => v.vmId),
    ['b'],
  );
  t.like(events.at(-1), { type: 'removed', vm: { vmId: 'b' }, revision: 8 });
  t.is(registry.getVm('b'), undefined);
  t.is(registry.nextLeaseExpiry(), T0 + 10_000);

  clock.now = T0 + 1_000_000;
  t.deepEqual(
    registry.expireLeases().map((v) => v.vmId),
    ['a'],
  );
  t.is(registry.nextLeaseExpiry(), null);
  t.truthy(registry.getVm('forever'));
  t.is(registry.revision, 9);
});

test('leases: several expire at once in vmId order, one revision each', (t) => {
  const { registry, clock, events } = setup();
  registry.registerVm(vm('z', { vsockCid: 3 }), 1000);
  registry.registerVm(vm('m', { vsockCid: 4 }), 2000);
  clock.now += 2000;
  t.deepEqual(
    registry.expireLeases().map((v) => v.vmId),
    ['m', 'z'],
  );
  t.deepEqual(
    events.slice(-2).map((e) => [e.type, e.revision]),
    [
      ['removed', 7],
      ['removed', 8],
    ],
  );
});

test('leases: an identical re-register renews without an event; one without a TTL clears the lease', (t) => {
  const { registry, clock, events } = setup();
  const input = vm('a', { vsockCid: 3 });
  registry.registerVm(input, 10_000);
  clock.now = T0 + 8_000;
  const renewed = registry.registerVm(input, 10_000);
  t.is(renewed.leaseExpiresAt, T0 + 18_000);
  t.is(renewed.generation, 1);
  t.is(events.length, 1);
  t.is(registry.nextLeaseExpiry(), T0 + 18_000);
  clock.now = T0 + 12_000; // the first lease would have run out
  t.deepEqual(registry.expireLeases(), []);

  t.is(registry.registerVm(input).leaseExpiresAt, null);
  t.is(registry.nextLeaseExpiry(), null);
  clock.now = T0 + 10_000_000;
  t.deepEqual(registry.expireLeases(), []);
  t.is(events.length, 1);
});

test('leases: a changed re-register sets the new lease too', (t) => {
  const { registry, clock } = setup();
  registry.registerVm(vm('a', { vsockCid: 3 }), 10_000);
  clock.now += 1_000;
  const updated = registry.registerVm(vm('a', { vsockCid: 4 }), 30_000);
  t.is(updated.leaseExpiresAt, clock.now + 30_000);
  t.is(updated.generation, 2);
});

// ---- resolve ---------------------------------------------------------------------------

/** web-1 (hv-1), web-2 (hv-2) and api-1 (hv-2) with addresses and services; client on hv-1. */
function world(options: RegistryOptions = {}) {
  const s = setup(options);
  const r = s.registry;
  r.registerVm(vm('client', { vsockCid: 3, addresses: ['10.0.0.10'] }));
  r.registerVm(vm('web-2', { hypervisorId: 'hv-2', vsockCid: 3, addresses: ['10.0.0.2', '2001:db8::2'], services: [{ name: 'web', port: 8082 }] }));
  r.registerVm(vm('web-1', { vsockCid: 4, addresses: ['10.0.0.1'], services: [{ name: 'web', port: 8081 }, { name: 'metrics', port: 9100 }] }));
  r.registerVm(vm('api-2', { hypervisorId: 'hv-2', vsockCid: 5, addresses: ['10.0.0.5'], services: [{ name: 'api', port: 9002 }] }));
  r.registerVm(vm('api-1', { hypervisorId: 'hv-2', vsockCid: 4, addresses: ['10.0.0.4'], services: [{ name: 'api', port: 9001 }] }));
  return s;
}

test('resolve by VM id: the record, its hypervisor, the caller, same hypervisor', (t) => {
  const { registry } = world();
  const answer = registry.resolve('client', { kind: 'vm', vmId: 'web-1' });
  t.deepEqual(answer, {
    found: true,
    vm: registry.getVm('web-1'),
    hypervisor: { hypervisorId: 'hv-1', vsockMode: 'host-relay', relayPort: 15100 },
    caller: registry.getVm('client'),
    sameHypervisor: true,
    ttlMs: 30_000,
    revision: registry.revision,
  });
  const other = registry.resolve('client', { kind: 'vm', vmId: 'web-2' });
  t.false(other.sameHypervisor);
  t.is(other.hypervisor!.hypervisorId, 'hv-2');
  t.is(other.port, undefined);
});

test('resolve by IP: any address of the VM, in any spelling, IPv4-mapped included', (t) => {
  const { registry } = world();
  t.is(registry.resolve('client', { kind: 'ip', ip: '10.0.0.2' }).vm!.vmId, 'web-2');
  t.is(registry.resolve('client', { kind: 'ip', ip: '2001:DB8:0::2' }).vm!.vmId, 'web-2');
  t.is(registry.resolve('client', { kind: 'ip', ip: '::ffff:10.0.0.1' }).vm!.vmId, 'web-1');
  t.is(registry.resolve('client', { kind: 'ip', ip: '::ffff:a00:1' }).vm!.vmId, 'web-1');
  t.is(registry.resolve('client', { kind: 'ip', ip: '10.0.0.1' }).port, undefined);
  t.false(registry.resolve('client', { kind: 'ip', ip: '10.0.0.99' }).found);
  t.false(registry.resolve('client', { kind: 'ip', ip: 'not-an-ip' }).found);
});

test('resolve by IP and port: the port is echoed, found or not', (t) => {
  const { registry } = world();
  const answer = registry.resolve('client', { kind: 'ip_port', ip: '10.0.0.1', port: 8081 });
  t.like(answer, { found: true, port: 8081, sameHypervisor: true, vm: { vmId: 'web-1' } });
  const unknown = registry.resolve('client', { kind: 'ip_port', ip: '192.0.2.1', port: 443 });
  t.like(unknown, { found: false, port: 443 });
  t.is(unknown.vm, undefined);
});

test('resolve by service: the caller hypervisor first, then the lowest vmId; port from the service', (t) => {
  const { registry } = world();
  // web-1 is on the client's hypervisor: it wins over web-2 despite ordering.
  t.like(registry.resolve('client', { kind: 'service', name: 'web' }), { found: true, vm: { vmId: 'web-1' }, port: 8081, sameHypervisor: true });
  // A caller on hv-2 gets web-2.
  t.like(registry.resolve('api-1', { kind: 'service', name: 'web' }), { vm: { vmId: 'web-2' }, port: 8082, sameHypervisor: true });
  // Neither api VM is local to the client: the lowest vmId.
  t.like(registry.resolve('client', { kind: 'service', name: 'api' }), { vm: { vmId: 'api-1' }, port: 9001, sameHypervisor: false });
  // Unknown caller: no preference, lowest vmId.
  t.like(registry.resolve('nobody', { kind: 'service', name: 'web' }), { vm: { vmId: 'web-1' }, port: 8081 });
  t.like(registry.resolve('client', { kind: 'service', name: 'metrics' }), { vm: { vmId: 'web-1' }, port: 9100 });
  const none = registry.resolve('client', { kind: 'service', name: 'nope' });
  t.false(none.found);
  t.is(none.port, undefined);
});

test('resolve: an unknown caller gets no caller and never sameHypervisor', (t) => {
  const { registry } = world();
  const answer = registry.resolve('stranger', { kind: 'vm', vmId: 'web-1' });
  t.true(answer.found);
  t.is(answer.caller, undefined);
  t.false(answer.sameHypervisor);
  t.false(registry.resolve('', { kind: 'ip', ip: '10.0.0.1' }).sameHypervisor);
});

test('resolve: not found carries the TTL, the revision, the caller and nothing else', (t) => {
  const { registry } = world({ resolveTtlMs: 5_000 });
  t.deepEqual(registry.resolve('client', { kind: 'vm', vmId: 'ghost' }), {
    found: false,
    caller: registry.getVm('client'),
    sameHypervisor: false,
    ttlMs: 5_000,
    revision: registry.revision,
  });
  t.is(registry.resolve('client', { kind: 'vm', vmId: 'web-1' }).ttlMs, 5_000);
});

test('resolve: answers follow moves and carry the new revision', (t) => {
  const { registry } = world();
  t.true(registry.resolve('client', { kind: 'vm', vmId: 'web-2' }).sameHypervisor === false);
  registry.moveVm('web-2', 'hv-1', 9);
  const answer = registry.resolve('client', { kind: 'ip', ip: '10.0.0.2' });
  t.like(answer, { sameHypervisor: true, vm: { vsockCid: 9, generation: 2 }, hypervisor: { hypervisorId: 'hv-1' }, revision: registry.revision });
});

// ---- authorizeRelay --------------------------------------------------------------------

function relayWorld() {
  const s = setup();
  const r = s.registry;
  r.registerVm(vm('a', { vsockCid: 3, sidecar: { tcpPort: 15001, vsockPort: 15007 } }));
  r.registerVm(vm('b', { vsockCid: 4, sidecar: { tcpPort: 15001, vsockPort: 15007 } }));
  r.registerVm(vm('bare', { vsockCid: 5, sidecar: null }));
  r.registerVm(vm('tcp-only', { vsockCid: 6, sidecar: { tcpPort: 15001, vsockPort: 0 } }));
  r.registerVm(vm('elsewhere', { hypervisorId: 'hv-2', vsockCid: 7, sidecar: { tcpPort: 15001, vsockPort: 15007 } }));
  r.registerVm(vm('d', { hypervisorId: 'hv-d', vsockCid: 3 }));
  return s;
}

const denied = (reason: string | RegExp) => (t: ExecutionContext, answer: ReturnType<Registry['authorizeRelay']>) => {
  t.false(answer.allowed);
  if (!answer.allowed) {
    if (typeof reason === 'string') t.is(answer.reason, reason);
    else t.regex(answer.reason, reason);
  }
};

test('authorizeRelay (host-relay): allowed to the destination sidecar vsock port', (t) => {
  const { registry } = relayWorld();
  const answer = registry.authorizeRelay({ hypervisorId: 'hv-1', sourceCid: 3, destination: { cid: 4, port: 15007 } });
  t.deepEqual(answer, { allowed: true, source: registry.getVm('a')!, destination: registry.getVm('b')! });
  t.true(registry.authorizeRelay({ hypervisorId: 'hv-1', sourceCid: 4, destination: { cid: 3, port: 15007 } }).allowed);
});

test('authorizeRelay (host-relay): every refusal says why', (t) => {
  const { registry } = relayWorld();
  denied('unknown hypervisor "hv-x"')(t, registry.authorizeRelay({ hypervisorId: 'hv-x', sourceCid: 3, destination: { cid: 4, port: 15007 } }));
  denied('hypervisor hv-d uses direct vsock; it has no relay')(t, registry.authorizeRelay({ hypervisorId: 'hv-d', sourceCid: 3, destination: { cid: 3, port: 15001 } }));
  denied('no VM with source CID 9 on hypervisor hv-1')(t, registry.authorizeRelay({ hypervisorId: 'hv-1', sourceCid: 9, destination: { cid: 4, port: 15007 } }));
  denied('no VM with destination CID 9 on hypervisor hv-1')(t, registry.authorizeRelay({ hypervisorId: 'hv-1', sourceCid: 3, destination: { cid: 9, port: 15007 } }));
  // CID 7 is a VM, but on hv-2: CIDs only mean something on their own hypervisor.
  denied(/no VM with destination CID 7 on hypervisor hv-1/)(t, registry.authorizeRelay({ hypervisorId: 'hv-1', sourceCid: 3, destination: { cid: 7, port: 15007 } }));
  denied(/no VM with source CID 7 on hypervisor hv-1/)(t, registry.authorizeRelay({ hypervisorId: 'hv-1', sourceCid: 7, destination: { cid: 3, port: 15007 } }));
  denied(/same VM a/)(t, registry.authorizeRelay({ hypervisorId: 'hv-1', sourceCid: 3, destination: { cid: 3, port: 15007 } }));
  denied('VM bare has no sidecar vsock listener')(t, registry.authorizeRelay({ hypervisorId: 'hv-1', sourceCid: 3, destination: { cid: 5, port: 15007 } }));
  denied('VM tcp-only has no sidecar vsock listener')(t, registry.authorizeRelay({ hypervisorId: 'hv-1', sourceCid: 3, destination: { cid: 6, port: 0 } }));
  denied("port 22 is not VM b's sidecar vsock port 15007")(t, registry.authorizeRelay({ hypervisorId: 'hv-1', sourceCid: 3, destination: { cid: 4, port: 22 } }));
});

test('authorizeRelay (loopback): CID 1 both ways, the destination found by its sidecar port', (t) => {
  const { registry } = setup();
  denied('no VM is registered on loopback hypervisor hv-l')(t, registry.authorizeRelay({ hypervisorId: 'hv-l', sourceCid: 1, destination: { cid: 1, port: 16001 } }));
  registry.registerVm(vm('l-b', { hypervisorId: 'hv-l', vsockCid: 1, sidecar: { tcpPort: 1, vsockPort: 16002 } }));
  registry.registerVm(vm('l-a', { hypervisorId: 'hv-l', vsockCid: 1, sidecar: { tcpPort: 1, vsockPort: 16001 } }));
  registry.registerVm(vm('l-c', { hypervisorId: 'hv-l', vsockCid: 1, sidecar: null }));
  const answer = registry.authorizeRelay({ hypervisorId: 'hv-l', sourceCid: 1, destination: { cid: 1, port: 16002 } });
  t.deepEqual(answer, { allowed: true, source: registry.getVm('l-a')!, destination: registry.getVm('l-b')! });
  // The source is any VM there (lowest id), even the destination itself.
  t.like(registry.authorizeRelay({ hypervisorId: 'hv-l', sourceCid: 1, destination: { cid: 1, port: 16001 } }), { allowed: true, source: { vmId: 'l-a' }, destination: { vmId: 'l-a' } });
  denied(/source CID 3 is not 1/)(t, registry.authorizeRelay({ hypervisorId: 'hv-l', sourceCid: 3, destination: { cid: 1, port: 16001 } }));
  denied(/destination CID 2 is not 1/)(t, registry.authorizeRelay({ hypervisorId: 'hv-l', sourceCid: 1, destination: { cid: 2, port: 16001 } }));
  denied('no VM on loopback hypervisor hv-l has sidecar vsock port 16009')(t, registry.authorizeRelay({ hypervisorId: 'hv-l', sourceCid: 1, destination: { cid: 1, port: 16009 } }));
  denied(/has sidecar vsock port 0/)(t, registry.authorizeRelay({ hypervisorId: 'hv-l', sourceCid: 1, destination: { cid: 1, port: 0 } }));
});

// ---- persistence -----------------------------------------------------------------------

/** The registry as the version 1 state file held it: one JSON object, records by id. */
function v1State(registry: Registry): PersistedState {
  const { epoch, revision, hypervisors, vms } = registry.records();
  const sorted = <T>(list: T[], id: (x: T) => string): T[] => [...list].sort((a, b) => (id(a) < id(b) ? -1 : 1));
  return JSON.parse(JSON.stringify({ version: 1, epoch, revision, hypervisors: sorted(hypervisors, (h) => h.hypervisorId), vms: sorted(vms, (v) => v.vmId) })) as PersistedState;
}

test('fromState (the version 1 state file): a round trip keeps records, generations, leases and the revision', (t) => {
  const { registry, clock } = world();
  registry.moveVm('web-2', 'hv-1', 9);
  registry.registerVm(vm('leased', { vsockCid: 20, addresses: ['fd00::20'] }), 60_000);
  registry.registerVm(vm('l-1', { hypervisorId: 'hv-l', vsockCid: 1, sidecar: { tcpPort: 1, vsockPort: 16001 } }));
  const state = v1State(registry);
  t.is(state.version, 1);
  t.is(state.revision, registry.revision);
  // Through JSON text, as the state file does.
  const restored = Registry.fromState(JSON.parse(JSON.stringify(state)) as PersistedState, { now: () => clock.now });
  t.deepEqual(v1State(restored), state);
  t.is(restored.revision, registry.revision);
  t.is(restored.getVm('web-2')!.generation, 2);
  t.is(restored.nextLeaseExpiry(), T0 + 60_000);
  // The indexes are rebuilt: lookups and uniqueness work.
  t.is(restored.resolve('client', { kind: 'ip', ip: 'FD00::20' }).vm!.vmId, 'leased');
  t.is(restored.resolve('client', { kind: 'service', name: 'api' }).vm!.vmId, 'api-1');
  t.true(restored.authorizeRelay({ hypervisorId: 'hv-l', sourceCid: 1, destination: { cid: 1, port: 16001 } }).allowed);
  rejects(t, () => restored.registerVm(vm('dup', { vsockCid: 9 })), 'vsock_cid', /VM "web-2"/);
  rejects(t, () => restored.registerVm(vm('dup', { vsockCid: 30, addresses: ['10.0.0.1'] })), 'addresses[0]');
  // The event log starts empty: older watchers must take a snapshot; the revision carries on.
  t.deepEqual(restored.eventsSince(restored.revision), []);
  t.is(restored.eventsSince(restored.revision - 1), null);
  restored.deregisterVm('leased');
  t.is(restored.revision, state.revision + 1);
  t.deepEqual(
    restored.eventsSince(state.revision)!.map((e) => e.type),
    ['removed'],
  );
});

test('fromState: corrupted content is rejected naming the record and field', (t) => {
  const { registry } = world();
  const good = (): PersistedState => v1State(registry);
  t.notThrows(() => Registry.fromState(good()));
  const broken = (edit: (s: PersistedState) => void): PersistedState => {
    const s = good();
    edit(s);
    return s;
  };
  rejects(t, () => Registry.fromState(broken((s) => ((s as { version: number }).version = 2))), 'version');
  rejects(t, () => Registry.fromState(broken((s) => (s.revision = -1))), 'revision');
  rejects(t, () => Registry.fromState(broken((s) => (s.revision = 1.5))), 'revision');
  rejects(t, () => Registry.fromState(broken((s) => ((s as { vms: unknown }).vms = {}))), 'vms');
  rejects(t, () => Registry.fromState(broken((s) => ((s as { hypervisors: unknown }).hypervisors = null))), 'hypervisors');
  rejects(t, () => Registry.fromState(null as unknown as PersistedState), 'state');
  rejects(t, () => Registry.fromState(broken((s) => (s.hypervisors[1]!.vsockMode = 'x' as never))), 'hypervisors[1].vsock_mode');
  rejects(t, () => Registry.fromState(broken((s) => s.hypervisors.push({ ...s.hypervisors[0]! }))), 'hypervisors[4].hypervisor_id', /duplicate hypervisor "hv-1"/);
  // vms are sorted: api-1, api-2, client, web-1, web-2.
  rejects(t, () => Registry.fromState(broken((s) => (s.vms[1]!.vsockCid = 4))), 'vms[1].vsock_cid', /already used by VM "api-1"/);
  rejects(t, () => Registry.fromState(broken((s) => (s.vms[0]!.hypervisorId = 'hv-gone'))), 'vms[0].hypervisor_id', /unknown hypervisor "hv-gone"/);
  rejects(t, () => Registry.fromState(broken((s) => (s.vms[2]!.addresses = ['10.0.0.1']))), 'vms[3].addresses[0]', /already used by VM "client"/);
  rejects(t, () => Registry.fromState(broken((s) => (s.vms[3]!.generation = 0))), 'vms[3].generation');
  rejects(t, () => Registry.fromState(broken((s) => (s.vms[3]!.leaseExpiresAt = 'soon' as never))), 'vms[3].lease_expires_at');
  rejects(t, () => Registry.fromState(broken((s) => s.vms.push({ ...s.vms[0]!, addresses: ['192.0.2.1'], vsockCid: 99 }))), 'vms[5].vm_id', /duplicate VM "api-1"/);
  rejects(t, () => Registry.fromState(broken((s) => (s.vms[4]!.labels = { '': 'x' }))), 'vms[4].labels');
});

// ---- copies ------------------------------------------------------------------------------

test('returned records and events are copies: mutating them changes nothing inside', (t) => {
  const { registry, events } = setup();
  const input = vm('a', { addresses: ['10.0.0.1'], services: [{ name: 'web', port: 80 }], labels: { team: 'a' } });
  const mutate = (v: { addresses: string[]; services: { port: number }[]; labels: Record<string, string>; sidecar: { vsockPort: number } | null; vsockCid: number }) => {
    v.addresses.push('10.9.9.9');
    v.addresses[0] = '10.8.8.8';
    v.services[0]!.port = 1;
    v.labels.team = 'evil';
    if (v.sidecar) v.sidecar.vsockPort = 1;
    v.vsockCid = 99;
  };
  const registered = registry.registerVm(input);
  const snapshot = structuredClone(registered);
  mutate(input);
  mutate(registered);
  mutate(registry.getVm('a')!);
  mutate(registry.list().vms[0]!);
  mutate(registry.resolve('a', { kind: 'vm', vmId: 'a' }).vm!);
  mutate(registry.resolve('a', { kind: 'vm', vmId: 'a' }).caller!);
  const logged = registry.eventsSince(4)![0]!;
  if (logged.type === 'added') mutate(logged.vm);
  const heard = events[0]!;
  if (heard.type === 'added') mutate(heard.vm);
  const snap = registry.snapshotEvents().at(-1)!;
  if (snap.type === 'added') mutate(snap.vm);
  registry.list().hypervisors[0]!.relayPort = 1;
  registry.registerHypervisor({ hypervisorId: 'hv-1', vsockMode: 'host-relay', relayPort: 15100 }).relayPort = 2;

  t.deepEqual(registry.getVm('a'), snapshot);
  t.deepEqual(registry.eventsSince(4), [{ type: 'added', vm: snapshot, revision: 5 }]);
  t.is(registry.list().hypervisors[0]!.relayPort, 15100);
  t.is(registry.resolve('', { kind: 'ip', ip: '10.0.0.1' }).vm!.vmId, 'a');
  t.false(registry.resolve('', { kind: 'ip', ip: '10.9.9.9' }).found);
});

test('each listener gets its own copy of an event', (t) => {
  const { registry } = setup();
  const seen: VmEvent[] = [];
  registry.subscribe((e) => {
    if (e.type === 'added') e.vm.labels.tampered = 'yes';
  });
  registry.subscribe((e) => seen.push(e));
  registry.registerVm(vm('a'));
  t.like(seen[0], { type: 'added' });
  t.deepEqual(seen[0]!.type === 'added' && seen[0].vm.labels, {});
});

test('unknown fields in the input are not stored', (t) => {
  const { registry } = setup();
  registry.registerVm({ ...vm('a'), secret: 'x', generation: 7, leaseExpiresAt: 5 } as VmInput);
  const stored = registry.records().vms[0]!;
  t.false('secret' in stored);
  t.is(stored.generation, 1);
  t.is(stored.leaseExpiresAt, null);
});

test('every registry has its own epoch; the state file carries it across a restart', (t) => {
  const a = new Registry();
  const b = new Registry();
  t.not(a.epoch, b.epoch);
  t.regex(a.epoch, /^[0-9a-f-]{36}$/);
  const state = v1State(a);
  t.is(state.epoch, a.epoch);
  t.is(Registry.fromState(state).epoch, a.epoch);
  const { epoch: _dropped, ...older } = state;
  void _dropped;
  t.not(Registry.fromState(older).epoch, a.epoch, 'a state file without an epoch gets a new one');
});

// ---- changes: planned on a clone, applied to the original ---------------------------

test('recordChanges: a mutation yields its changes, each with the revision after it; a refused one yields none', (t) => {
  const { registry } = setup();
  const added = registry.recordChanges(() => registry.registerVm(vm('a', { vsockCid: 7 }), 60_000));
  t.deepEqual(added.changes, [{ vm: { ...added.result }, revision: 5 }]);
  const renewed = registry.recordChanges(() => registry.registerVm(vm('a', { vsockCid: 7, addresses: added.result.addresses }), 120_000));
  t.is(renewed.changes.length, 1, 'a renewal is a change (the lease is stored) ...');
  t.is(renewed.changes[0]!.revision, 5, '... without a revision');
  t.deepEqual(registry.recordChanges(() => registry.moveVm('a', 'hv-1')).changes, [], 'moving to where it is changes nothing');
  t.throws(() => registry.recordChanges(() => registry.registerVm(vm('b', { vsockCid: 7 }))), { instanceOf: ValidationError });
  t.deepEqual(
    registry.recordChanges(() => registry.deregisterVm('a')).changes,
    [{ removed: 'a', revision: 6 }],
  );
});

test('changes planned on a clone bring the original to the same state, with the same events, and the clone never touches it', (t) => {
  const { registry, clock, events } = world();
  events.splice(0);
  const planning = registry.clone();
  const before = registry.list();
  const planned = planning.recordChanges(() => {
    planning.registerVm(vm('new-1', { hypervisorId: 'hv-d', vsockCid: 3, addresses: ['10.0.9.1'] }), 5_000);
    planning.moveVm('web-1', 'hv-2', 9);
    planning.registerVm({ ...planning.getVm('web-2')!, labels: { changed: 'yes' } });
    planning.registerHypervisor({ hypervisorId: 'hv-1', vsockMode: 'direct', relayPort: 0 });
    planning.deregisterVm('api-2');
    clock.now += 10_000;
    planning.expireLeases();
  });
  t.deepEqual(registry.list(), before, 'planning changed nothing in the original');
  t.is(events.length, 0);
  for (const change of planned.changes) registry.apply(change);
  t.deepEqual(registry.list(), planning.list());
  t.is(registry.revision, planning.revision);
  t.deepEqual(
    events.map((e) => [e.type, e.revision]),
    [
      ['added', 10],
      ['moved', 11],
      ['updated', 12],
      ['hypervisor', 13],
      ['removed', 14],
      ['removed', 15],
    ],
  );
  t.like(registry.resolve('client', { kind: 'vm', vmId: 'web-1' }), { sameHypervisor: false, vm: { vsockCid: 9 } }, 'the indexes follow');
  t.throws(() => registry.apply({ removed: 'web-2', revision: 99 }), { message: /out of step/ });
});

test('stored records are frozen (the planning registry shares them)', (t) => {
  const { registry } = world();
  const record = registry.records().vms[0]!;
  t.true(Object.isFrozen(record) && Object.isFrozen(record.addresses) && Object.isFrozen(record.labels) && Object.isFrozen(record.services));
  t.throws(() => {
    (record as { vsockCid: number }).vsockCid = 99;
  });
});

test('recordChanges: registering a VM again exactly as it is (no lease) changes nothing, so nothing is written', (t) => {
  const { registry } = setup();
  const input = vm('a', { vsockCid: 7 });
  registry.registerVm(input);
  t.deepEqual(registry.recordChanges(() => registry.registerVm(input)).changes, []);
});

test('the event log shares the stored records, and hands out copies: changing an event got from eventsSince or a listener changes neither the registry nor the log', (t) => {
  const { registry, events } = setup();
  registry.registerVm(vm('a', { vsockCid: 3, labels: { tier: 'web' } }));
  registry.moveVm('a', 'hv-2');
  const heard = events.filter((e) => e.type === 'added' || e.type === 'moved');
  const logged = registry.eventsSince(0)!.filter((e) => e.type === 'added' || e.type === 'moved');
  for (const e of [...heard, ...logged]) {
    if (e.type !== 'added' && e.type !== 'moved') continue;
    // Plain, mutable copies (a shared stored record is frozen: these assignments would throw).
    e.vm.vsockCid = 999;
    e.vm.addresses.push('192.0.2.99');
    e.vm.labels.tier = 'changed';
    if (e.type === 'moved') e.previous.hypervisorId = 'hv-x';
  }
  const again = registry.eventsSince(0)!.filter((e) => e.type === 'added' || e.type === 'moved');
  t.deepEqual(
    again.map((e) => (e.type === 'moved' ? [e.type, e.vm.vsockCid, e.vm.labels.tier, e.previous.hypervisorId] : e.type === 'added' ? [e.type, e.vm.vsockCid, e.vm.labels.tier] : [e.type])),
    [
      ['added', 3, 'web'],
      ['moved', 3, 'web', 'hv-1'],
    ],
  );
  t.is(registry.getVm('a')!.vsockCid, 3);
  t.false(registry.getVm('a')!.addresses.includes('192.0.2.99'));
  t.false(again.some((e) => (e.type === 'added' || e.type === 'moved') && e.vm.addresses.includes('192.0.2.99')));
  t.is(registry.getVm('a')!.hypervisorId, 'hv-2');
});
