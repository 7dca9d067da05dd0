// The VM manager's bounds: one test per bound, each refused with the field
// named (RESOURCE_EXHAUSTED for capacity), the largest allowed value
// accepted, nothing changed by a refusal, and no oversized value echoed back.

import test, { type ExecutionContext } from 'ava';
import {
  MAX_ADDRESSES_PER_VM,
  MAX_LABEL_BYTES_PER_VM,
  MAX_LABELS_PER_VM,
  MAX_LEASE_TTL_MS,
  MAX_PAGE_SIZE,
  MAX_SERVICES_PER_VM,
  show,
} from '../../xds/vm-manager/bounds.js';
import { loadInventory, parseInventory } from '../../xds/vm-manager/inventory.js';
import { listPage } from '../../xds/vm-manager/pagination.js';
import { CapacityError, Registry, ValidationError, checkEpoch, type VmInput } from '../../xds/vm-manager/registry.js';

const FOUR_MB = 4 * 1024 * 1024;

function setup(options: ConstructorParameters<typeof Registry>[0] = {}) {
  const registry = new Registry(options);
  registry.registerHypervisor({ hypervisorId: 'hv-1', vsockMode: 'host-relay', relayPort: 15100 });
  return registry;
}

let next = 1;
function vm(vmId: string, extra: Partial<VmInput> = {}): VmInput {
  const n = next++;
  return { vmId, hypervisorId: 'hv-1', vsockCid: 2 + n, addresses: [`10.2.${n >> 8}.${n & 255}`], sidecar: null, services: [], labels: {}, ...extra };
}

/** `fn` throws a ValidationError whose whole message is `message`, the registry's revision unchanged, and the message short. */
function refused(t: ExecutionContext, registry: Registry, fn: () => unknown, message: string | RegExp): void {
  const before = registry.revision;
  const err = t.throws(fn, { instanceOf: ValidationError });
  if (typeof message === 'string') t.is(err?.message, message);
  else t.regex(err?.message ?? '', message);
  t.true((err?.message.length ?? 0) < 400, 'the message does not carry the oversized value');
  t.is(registry.revision, before, 'a refusal changes nothing');
}

test('vm_id: at most 253 characters, refused by its size', (t) => {
  const registry = setup();
  refused(t, registry, () => registry.registerVm(vm('v'.repeat(FOUR_MB))), `vm_id: is ${FOUR_MB} characters, at most 253`);
  t.is(registry.registerVm(vm('v'.repeat(253))).vmId.length, 253);
});

test('hypervisor_id: at most 253 characters, for the hypervisor and for the VM naming it', (t) => {
  const registry = setup();
  refused(t, registry, () => registry.registerHypervisor({ hypervisorId: 'h'.repeat(254), vsockMode: 'direct', relayPort: 0 }), 'hypervisor_id: is 254 characters, at most 253');
  refused(t, registry, () => registry.registerVm(vm('a', { hypervisorId: 'h'.repeat(FOUR_MB) })), `hypervisor_id: is ${FOUR_MB} characters, at most 253`);
});

test('addresses: at most 16 per VM, each at most 45 characters', (t) => {
  const registry = setup();
  const many = Array.from({ length: MAX_ADDRESSES_PER_VM + 1 }, (_, i) => `10.3.0.${i + 1}`);
  refused(t, registry, () => registry.registerVm(vm('a', { addresses: many })), 'addresses: 17 addresses, at most 16');
  refused(t, registry, () => registry.registerVm(vm('a', { addresses: ['1'.repeat(FOUR_MB)] })), `addresses[0]: is ${FOUR_MB} characters, at most 45`);
  t.is(registry.registerVm(vm('a', { addresses: many.slice(0, MAX_ADDRESSES_PER_VM) })).addresses.length, 16);
});

test('services: at most 32 per VM', (t) => {
  const registry = setup();
  const services = Array.from({ length: MAX_SERVICES_PER_VM + 1 }, (_, i) => ({ name: `s${i}`, port: 1000 + i }));
  refused(t, registry, () => registry.registerVm(vm('a', { services })), 'services: 33 services, at most 32');
  t.is(registry.registerVm(vm('a', { services: services.slice(0, MAX_SERVICES_PER_VM) })).services.length, 32);
});

test('services[].name: a DNS label of at most 63 characters', (t) => {
  const registry = setup();
  refused(t, registry, () => registry.registerVm(vm('a', { services: [{ name: 's'.repeat(FOUR_MB), port: 80 }] })), `services[0].name: is ${FOUR_MB} characters, at most 63`);
  refused(t, registry, () => registry.registerVm(vm('a', { services: [{ name: 's'.repeat(64), port: 80 }] })), 'services[0].name: is 64 characters, at most 63');
  for (const name of ['Web', 'web_1', 'web.mesh', '-web', 'web-', 'wéb']) {
    refused(t, registry, () => registry.registerVm(vm('a', { services: [{ name: 'ok', port: 1 }, { name, port: 80 }] })), /^services\[1\]\.name: must be a DNS label/);
  }
  t.is(registry.registerVm(vm('a', { services: [{ name: `a${'-'.repeat(61)}z`, port: 80 }] })).services[0]!.name.length, 63);
});

test('labels: at most 64', (t) => {
  const registry = setup();
  const labels = Object.fromEntries(Array.from({ length: MAX_LABELS_PER_VM + 1 }, (_, i) => [`k${i}`, 'v']));
  refused(t, registry, () => registry.registerVm(vm('a', { labels })), 'labels: at most 64 labels (got 65)');
});

test('labels: a key is at most 63 bytes', (t) => {
  const registry = setup();
  refused(t, registry, () => registry.registerVm(vm('a', { labels: { ['k'.repeat(FOUR_MB)]: 'v' } })), new RegExp(`^labels: key "k{64}"… \\(${FOUR_MB} characters\\) is ${FOUR_MB} bytes, at most 63$`));
  // Bytes, not characters: 32 two-byte characters are 64 bytes.
  refused(t, registry, () => registry.registerVm(vm('a', { labels: { ['é'.repeat(32)]: 'v' } })), /^labels: key "é{32}" is 64 bytes, at most 63$/);
  t.deepEqual(registry.registerVm(vm('a', { labels: { ['k'.repeat(63)]: 'v' } })).labels, { ['k'.repeat(63)]: 'v' });
});

test('labels: a value is at most 63 bytes, the label named', (t) => {
  const registry = setup();
  refused(t, registry, () => registry.registerVm(vm('a', { labels: { x: 'v'.repeat(FOUR_MB) } })), `labels["x"]: value is ${FOUR_MB} bytes, at most 63`);
  t.is(registry.registerVm(vm('a', { labels: { x: 'v'.repeat(63) } })).labels.x!.length, 63);
});

test('labels: keys and values of one VM are at most 4096 bytes together', (t) => {
  const registry = setup();
  // 64 labels of 62 + 3 bytes: every one within its own bounds, 4160 bytes together.
  const labels = Object.fromEntries(Array.from({ length: 64 }, (_, i) => [`${String(i).padStart(2, '0')}${'k'.repeat(60)}`, 'vvv']));
  refused(t, registry, () => registry.registerVm(vm('a', { labels })), `labels: keys and values are 4160 bytes together, at most ${MAX_LABEL_BYTES_PER_VM}`);
  const fits = Object.fromEntries(Object.entries(labels).slice(0, 63));
  t.is(Object.keys(registry.registerVm(vm('a', { labels: fits })).labels).length, 63);
});

test('lease_ttl: at most 7 days (an expiry must stay a safe integer in the state file)', (t) => {
  const registry = setup();
  refused(t, registry, () => registry.registerVm(vm('a'), MAX_LEASE_TTL_MS + 1), /^lease_ttl: must be 0 \(no lease\) or an integer number of milliseconds 1000\.\.604800000/);
  refused(t, registry, () => registry.registerVm(vm('a'), 2 ** 64), /^lease_ttl: /);
  t.truthy(registry.registerVm(vm('a'), MAX_LEASE_TTL_MS).leaseExpiresAt);
});

test('capacity: a full registry refuses a new VM (RESOURCE_EXHAUSTED) but still updates and removes the ones it has', (t) => {
  const registry = setup({ capacity: { vms: 2 } });
  const a = registry.registerVm(vm('a'));
  registry.registerVm(vm('b'));
  const err = t.throws(() => registry.registerVm(vm('c')), { instanceOf: CapacityError });
  t.is(err?.message, 'vm_id: the registry holds 2 VMs, at most 2');
  t.is(registry.getVm('c'), undefined);
  t.is(registry.registerVm({ ...a, labels: { changed: 'yes' } }).generation, 2, 'an update of a registered VM is not a new one');
  registry.deregisterVm('b');
  t.is(registry.registerVm(vm('c')).vmId, 'c');
});

test('capacity: a full registry refuses a new hypervisor', (t) => {
  const registry = setup({ capacity: { hypervisors: 1 } });
  const err = t.throws(() => registry.registerHypervisor({ hypervisorId: 'hv-2', vsockMode: 'direct', relayPort: 0 }), { instanceOf: CapacityError });
  t.is(err?.message, 'hypervisor_id: the registry holds 1 hypervisors, at most 1');
  t.is(registry.registerHypervisor({ hypervisorId: 'hv-1', vsockMode: 'host-relay', relayPort: 15200 }).relayPort, 15200, 'a registered hypervisor still changes');
});

test('Resolve: every argument is bounded, each refused by name', (t) => {
  const registry = setup();
  refused(t, registry, () => registry.resolve('c'.repeat(254), { kind: 'vm', vmId: 'a' }), 'caller_vm_id: is 254 characters, at most 253');
  refused(t, registry, () => registry.resolve('', { kind: 'ip', ip: '1'.repeat(46) }), 'ip: is 46 characters, at most 45');
  refused(t, registry, () => registry.resolve('', { kind: 'ip_port', ip: '1'.repeat(46), port: 80 }), 'ip_port.ip: is 46 characters, at most 45');
  for (const port of [0, 65536]) refused(t, registry, () => registry.resolve('', { kind: 'ip_port', ip: '10.0.0.1', port }), `ip_port.port: must be an integer 1..65535 (got ${port})`);
  refused(t, registry, () => registry.resolve('', { kind: 'vm', vmId: 'v'.repeat(254) }), 'vm_id: is 254 characters, at most 253');
  refused(t, registry, () => registry.resolve('', { kind: 'service', name: 's'.repeat(64) }), 'service: is 64 characters, at most 63');
  t.false(registry.resolve('c'.repeat(253), { kind: 'service', name: 's'.repeat(63) }).found, 'at the bounds: answered');
});

test('GetVm, DeregisterVm, MoveVm and AuthorizeRelay: ids at most 253 characters', (t) => {
  const registry = setup();
  const long = 'v'.repeat(FOUR_MB);
  refused(t, registry, () => registry.getVm(long), `vm_id: is ${FOUR_MB} characters, at most 253`);
  refused(t, registry, () => registry.deregisterVm(long), `vm_id: is ${FOUR_MB} characters, at most 253`);
  refused(t, registry, () => registry.moveVm(long, 'hv-1'), `vm_id: is ${FOUR_MB} characters, at most 253`);
  registry.registerVm(vm('a'));
  refused(t, registry, () => registry.moveVm('a', long), `hypervisor_id: is ${FOUR_MB} characters, at most 253`);
  refused(t, registry, () => registry.authorizeRelay({ hypervisorId: long, sourceCid: 3, destination: { cid: 4, port: 5 } }), `hypervisor_id: is ${FOUR_MB} characters, at most 253`);
});

test('Watch: the epoch is at most 64 characters', (t) => {
  t.throws(() => checkEpoch('e'.repeat(65)), { instanceOf: ValidationError, message: 'epoch: is 65 characters, at most 64' });
  t.notThrows(() => checkEpoch('e'.repeat(64)));
});

test('ListVms: page_size at most 1000, page_token at most 1024 characters and one ListVms made', (t) => {
  const registry = setup();
  t.throws(() => listPage(registry, { pageSize: MAX_PAGE_SIZE + 1, pageToken: '' }), { instanceOf: ValidationError, message: 'page_size: must be 0 (the default, 500) or at most 1000 (got 1001)' });
  t.throws(() => listPage(registry, { pageSize: 0, pageToken: 'x'.repeat(1025) }), { instanceOf: ValidationError, message: 'page_token: is 1025 characters, at most 1024' });
  for (const token of ['not a token', Buffer.from('["x","a"]').toString('base64url'), Buffer.from('{}').toString('base64url')]) {
    t.throws(() => listPage(registry, { pageSize: 0, pageToken: token }), { instanceOf: ValidationError, message: /^page_token: not a page token from ListVms/ });
  }
});

test('an inventory goes through the same bounds, the entry named', (t) => {
  const yaml = `hypervisors: [{ id: hv-1, vsock_mode: direct }]\nvms:\n  - { id: a, hypervisor: hv-1, cid: 3, addresses: [10.0.0.1], labels: { x: "${'v'.repeat(64)}" } }\n`;
  const err = t.throws(() => loadInventory(new Registry(), parseInventory(yaml, 'inv.yaml')), { instanceOf: ValidationError });
  t.is(err?.message, 'vms[0].labels["x"]: value is 64 bytes, at most 63');
});

test('show: values in messages are cut to 64 characters, with their length', (t) => {
  t.is(show('abc'), '"abc"');
  t.is(show(7), '7');
  t.is(show('x'.repeat(100)), `"${'x'.repeat(64)}"… (100 characters)`);
});
