// The inventory file: parsing (shape, defaults, every problem by path),
// loading into a registry (registry rules, named by entry), and the single-VM
// document of `ctl vms register -f`.

import test from 'ava';
import { InventoryError, loadInventory, parseInventory, parseVmDocument } from '../../xds/vm-manager/inventory.js';
import { Registry, ValidationError } from '../../xds/vm-manager/registry.js';

const VALID = `
# VMs first: loading registers the hypervisors before them anyway.
vms:
  - id: web-1
    hypervisor: hv-1
    cid: 3
    addresses: [10.0.0.11, "2001:db8::11"]
    sidecar: { tcp_port: 15001, vsock_port: 15001 }
    services: [{ name: web, port: 8080 }]
    labels: { team: a }
  - id: db-1
    hypervisor: hv-1
    cid: 4
    addresses: [10.0.0.12]
    sidecar: null
  - id: cache-1
    hypervisor: hv-2
    cid: 3
    addresses: [10.0.0.21]
    sidecar: { tcp_port: 15001 }
    lease_ttl: 2m
  - id: demo-a
    hypervisor: hv-l
    cid: 1
    addresses: [127.0.0.2]
    sidecar: { tcp_port: 15001, vsock_port: 16001 }
hypervisors:
  - id: hv-1
    vsock_mode: host-relay
    relay_port: 15110
  - id: hv-2
    vsock_mode: host-relay
  - id: hv-d
    vsock_mode: direct
  - id: hv-l
    vsock_mode: loopback
`;

/** The problems an InventoryError lists (fails the test if something else is thrown). */
function problemsOf(fn: () => unknown): string[] {
  try {
    fn();
  } catch (err) {
    if (err instanceof InventoryError) return err.problems;
    throw err;
  }
  throw new Error('accepted');
}

test('a valid inventory becomes domain records with the documented defaults', (t) => {
  const inventory = parseInventory(VALID, 'inventory.yaml');
  t.deepEqual(inventory.hypervisors, [
    { hypervisorId: 'hv-1', vsockMode: 'host-relay', relayPort: 15110 },
    { hypervisorId: 'hv-2', vsockMode: 'host-relay', relayPort: 15100 },
    { hypervisorId: 'hv-d', vsockMode: 'direct', relayPort: 0 },
    { hypervisorId: 'hv-l', vsockMode: 'loopback', relayPort: 0 },
  ]);
  t.deepEqual(inventory.vms, [
    {
      vm: {
        vmId: 'web-1',
        hypervisorId: 'hv-1',
        vsockCid: 3,
        addresses: ['10.0.0.11', '2001:db8::11'],
        sidecar: { tcpPort: 15001, vsockPort: 15001 },
        services: [{ name: 'web', port: 8080 }],
        labels: { team: 'a' },
      },
    },
    { vm: { vmId: 'db-1', hypervisorId: 'hv-1', vsockCid: 4, addresses: ['10.0.0.12'], sidecar: null, services: [], labels: {} } },
    {
      vm: { vmId: 'cache-1', hypervisorId: 'hv-2', vsockCid: 3, addresses: ['10.0.0.21'], sidecar: { tcpPort: 15001, vsockPort: 0 }, services: [], labels: {} },
      leaseTtlMs: 120_000,
    },
    { vm: { vmId: 'demo-a', hypervisorId: 'hv-l', vsockCid: 1, addresses: ['127.0.0.2'], sidecar: { tcpPort: 15001, vsockPort: 16001 }, services: [], labels: {} } },
  ]);
});

test('an omitted sidecar means no sidecar; empty files and sections are an empty inventory', (t) => {
  const inventory = parseInventory('vms:\n  - { id: a, hypervisor: h, cid: 3, addresses: [10.0.0.1] }\n', 'inv.yaml');
  t.is(inventory.vms[0]!.vm.sidecar, null);
  t.false('leaseTtlMs' in inventory.vms[0]!);
  t.deepEqual(parseInventory('', 'inv.yaml'), { hypervisors: [], vms: [] });
  t.deepEqual(parseInventory('# nothing yet\n', 'inv.yaml'), { hypervisors: [], vms: [] });
  t.deepEqual(parseInventory('hypervisors: []\n', 'inv.yaml'), { hypervisors: [], vms: [] });
});

test('loadInventory registers hypervisors first, then VMs', (t) => {
  const clock = 1_000_000;
  const registry = new Registry({ now: () => clock });
  const events: string[] = [];
  registry.subscribe((e) => events.push('hypervisor' in e ? `hypervisor ${e.hypervisor.hypervisorId}` : `${e.type} ${e.vm.vmId}`));
  loadInventory(registry, parseInventory(VALID, 'inventory.yaml'));
  t.deepEqual(events, ['hypervisor hv-1', 'hypervisor hv-2', 'hypervisor hv-d', 'hypervisor hv-l', 'added web-1', 'added db-1', 'added cache-1', 'added demo-a']);
  t.is(registry.revision, 8);
  t.is(registry.getVm('cache-1')!.leaseExpiresAt, clock + 120_000);
  t.is(registry.getVm('web-1')!.leaseExpiresAt, null);
  t.is(registry.resolve('web-1', { kind: 'service', name: 'web' }).port, 8080);
});

test('loadInventory: a broken registry rule is a ValidationError naming the entry and field', (t) => {
  const load = (yaml: string) => () => loadInventory(new Registry(), parseInventory(yaml, 'inv.yaml'));
  const hv = 'hypervisors: [{ id: hv-1, vsock_mode: host-relay }, { id: hv-l, vsock_mode: loopback }]\n';

  const clash = t.throws(
    load(`${hv}vms:\n  - { id: web-1, hypervisor: hv-1, cid: 3, addresses: [10.0.0.1] }\n  - { id: web-2, hypervisor: hv-1, cid: 4, addresses: [10.0.0.2] }\n  - { id: web-3, hypervisor: hv-1, cid: 3, addresses: [10.0.0.3] }\n`),
    { instanceOf: ValidationError },
  );
  t.is(clash?.field, 'vms[2].vsock_cid');
  t.is(clash?.message, 'vms[2].vsock_cid: 3 is already used by VM "web-1" on hypervisor "hv-1"');

  const unknown = t.throws(load(`${hv}vms: [{ id: a, hypervisor: hv-9, cid: 3, addresses: [10.0.0.1] }]\n`), { instanceOf: ValidationError });
  t.is(unknown?.field, 'vms[0].hypervisor_id');
  t.regex(unknown!.message, /unknown hypervisor "hv-9"; register it first/);

  const loopback = t.throws(load(`${hv}vms: [{ id: a, hypervisor: hv-l, cid: 3, addresses: [10.0.0.1] }]\n`), { instanceOf: ValidationError });
  t.is(loopback?.field, 'vms[0].vsock_cid');

  const address = t.throws(load(`${hv}vms: [{ id: a, hypervisor: hv-1, cid: 3, addresses: [10.0.0.1] }, { id: b, hypervisor: hv-1, cid: 4, addresses: ["::ffff:10.0.0.1"] }]\n`), {
    instanceOf: ValidationError,
  });
  t.is(address?.field, 'vms[1].addresses[0]');

  const badId = t.throws(load('hypervisors: [{ id: hv-1, vsock_mode: direct }, { id: "hv 2", vsock_mode: direct }]\n'), { instanceOf: ValidationError });
  t.is(badId?.field, 'hypervisors[1].hypervisor_id');
});

test('parse errors: every problem, each as source: path: message', (t) => {
  const yaml = `
hypervisors:
  - id: hv-1
    vsock_mode: vmci
  - id: hv-2
    vsock_mode: direct
    relay_port: 15100
  - id: hv-3
    vsock_mode: host-relay
    relay_port: 0
    zone: eu
vms:
  - id: a
    hypervisor: hv-1
    cid: 0
    addresses: []
    services: [{ name: "", port: 0 }]
    labels: { team: 1 }
  - id: b
    cid: three
    addresses: [web.local]
    sidecar: { tcp_port: 70000, vsock_port: -1, extra: 1 }
    lease_ttl: 5q
  - hypervisor: hv-1
    cid: 3
    addresses: 10.0.0.1
    services: [{ name: web, port: 80, proto: tcp }]
owner: me
`;
  const err = t.throws(() => parseInventory(yaml, 'inv.yaml'), { instanceOf: InventoryError });
  t.is(err?.source, 'inv.yaml');
  const expected = [
    'hypervisors[0].vsock_mode: must be one of "host-relay", "direct", "loopback" (got "vmci")',
    'hypervisors[1].relay_port: only a host-relay hypervisor has a relay port (this one is direct)',
    'hypervisors[2].relay_port: must be a vsock port 1..4294967294',
    'hypervisors[2]: unknown field "zone"',
    'vms[0].cid: must be a context ID 1..4294967294',
    'vms[0].addresses: must list at least one IP address',
    'vms[0].services[0].name: must not be empty',
    'vms[0].services[0].port: must be an integer 1..65535',
    'vms[0].labels.team: must be a string',
    'vms[1].hypervisor: required',
    'vms[1].cid: must be a context ID 1..4294967294',
    'vms[1].addresses[0]: must be an IPv4 or IPv6 address (host names are not resolved)',
    'vms[1].sidecar.tcp_port: must be an integer 0..65535 (0: none)',
    'vms[1].sidecar.vsock_port: must be an integer 0..4294967294 (0: none)',
    'vms[1].sidecar: unknown field "extra"',
    'vms[1].lease_ttl: must be milliseconds or a duration such as "30s", "5m" (0: no lease, else at least 1s) (got "5q")',
    'vms[2].id: required',
    'vms[2].addresses: must be a list of IP addresses',
    'vms[2].services[0]: unknown field "proto"',
    '(top level): unknown field "owner"',
  ];
  t.deepEqual([...err!.problems].sort(), [...expected].sort());
  t.deepEqual(
    err!.message.split('\n').sort(),
    expected.map((p) => `inv.yaml: ${p}`).sort(),
  );
});

test('parse errors: duplicate ids are reported (loading would silently merge them)', (t) => {
  const yaml = `
hypervisors: [{ id: hv-1, vsock_mode: direct }, { id: hv-1, vsock_mode: host-relay }]
vms:
  - { id: a, hypervisor: hv-1, cid: 3, addresses: [10.0.0.1] }
  - { id: b, hypervisor: hv-1, cid: 4, addresses: [10.0.0.2] }
  - { id: a, hypervisor: hv-1, cid: 5, addresses: [10.0.0.3] }
`;
  t.deepEqual(problemsOf(() => parseInventory(yaml, 'inv.yaml')), ['hypervisors[1].id: duplicate hypervisor id "hv-1" (first at [0])', 'vms[2].id: duplicate VM id "a" (first at [0])']);
});

test('parse errors: YAML syntax errors give the line', (t) => {
  const problems = problemsOf(() => parseInventory('vms:\n  - id: a\n   bad: [\n', 'inv.yaml'));
  t.true(problems.length > 0);
  t.regex(problems[0]!, /^line \d+, column \d+: /);
  t.throws(() => parseInventory('vms: [\n', 'inv.yaml'), { instanceOf: InventoryError, message: /^inv\.yaml: line \d+, column \d+: / });
});

test('parse errors: the wrong shapes at the top', (t) => {
  t.deepEqual(problemsOf(() => parseInventory('- a\n- b\n', 'inv.yaml')), ['(top level): must be object (got array)']);
  t.deepEqual(problemsOf(() => parseInventory('vms: {}\n', 'inv.yaml')), ['vms: must be array (got object)']);
  t.deepEqual(problemsOf(() => parseInventory('hypervisors:\n  - web\n', 'inv.yaml')), ['hypervisors[0]: must be object (got string)']);
});

// ---- single VM document ----------------------------------------------------------------

const VM_DOC = `
id: web-9
hypervisor: hv-1
cid: 12
addresses: [10.0.0.99]
sidecar: { tcp_port: 15001, vsock_port: 15001 }
services: [{ name: web, port: 8080 }]
labels: { env: prod }
`;

test('parseVmDocument: one VM in the inventory format', (t) => {
  t.deepEqual(parseVmDocument(VM_DOC, 'vm.yaml'), {
    vm: {
      vmId: 'web-9',
      hypervisorId: 'hv-1',
      vsockCid: 12,
      addresses: ['10.0.0.99'],
      sidecar: { tcpPort: 15001, vsockPort: 15001 },
      services: [{ name: 'web', port: 8080 }],
      labels: { env: 'prod' },
    },
  });
});

test('parseVmDocument: lease_ttl in milliseconds or as a duration; 0 is no lease', (t) => {
  const ttl = (value: string) => parseVmDocument(`${VM_DOC}lease_ttl: ${value}\n`, 'vm.yaml').leaseTtlMs;
  t.is(ttl('30s'), 30_000);
  t.is(ttl('1.5m'), 90_000);
  t.is(ttl('1h'), 3_600_000);
  t.is(ttl('45000'), 45_000);
  t.is(ttl('1000'), 1_000);
  t.is(ttl('"2500ms"'), 2_500);
  t.is(ttl('0'), undefined);
  t.is(ttl('0s'), undefined);
  for (const bad of ['5q', '999', '500ms', '-1000', '1500.5', 'true', '[1]', '30']) {
    const problems = problemsOf(() => parseVmDocument(`${VM_DOC}lease_ttl: ${bad}\n`, 'vm.yaml'));
    t.is(problems.length, 1, bad);
    t.true(problems[0]!.startsWith('lease_ttl: must be milliseconds or a duration'), `${bad}: ${problems[0]}`);
  }
});

test('parseVmDocument: problems are listed with the source, unknown keys included', (t) => {
  const err = t.throws(() => parseVmDocument('id: a\ncid: 3\naddresses: [10.0.0.1]\nhypervisors: []\n', 'vm.yaml'), { instanceOf: InventoryError });
  t.deepEqual(err?.message.split('\n'), ['vm.yaml: hypervisor: required', 'vm.yaml: (top level): unknown field "hypervisors"']);
  t.deepEqual(problemsOf(() => parseVmDocument('', 'vm.yaml')), ['(top level): must be object (got null)']);
  t.deepEqual(problemsOf(() => parseVmDocument('[]', 'vm.yaml')), ['(top level): must be object (got array)']);
});

test('parseVmDocument output registers as is', (t) => {
  const registry = new Registry({ now: () => 5_000 });
  registry.registerHypervisor({ hypervisorId: 'hv-1', vsockMode: 'host-relay', relayPort: 15100 });
  const doc = parseVmDocument(`${VM_DOC}lease_ttl: 10s\n`, 'vm.yaml');
  const vm = registry.registerVm(doc.vm, doc.leaseTtlMs);
  t.like(vm, { vmId: 'web-9', vsockCid: 12, generation: 1, leaseExpiresAt: 15_000 });
});

test('the example inventory in deploy/ loads', async (t) => {
  const { readFile } = await import('node:fs/promises');
  const path = new URL('../../deploy/examples/inventory.yaml', import.meta.url);
  const registry = new Registry();
  loadInventory(registry, parseInventory(await readFile(path, 'utf8'), 'deploy/examples/inventory.yaml'));
  const { vms, hypervisors } = registry.list();
  t.deepEqual(hypervisors.map((h) => h.hypervisorId), ['hv-1', 'hv-2']);
  t.deepEqual(vms.map((v) => v.vmId), ['legacy-1', 'vm-a', 'vm-b', 'vm-c']);
  t.like(registry.resolve('vm-a', { kind: 'service', name: 'web' }), { found: true, sameHypervisor: true, port: 8080 });
});
