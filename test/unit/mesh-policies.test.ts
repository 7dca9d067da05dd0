import test from 'ava';
import { meshProblems } from '../helpers/config-problems.js';
import type { VmRecord } from '../../proxy/resolve/types.js';
import { MAX_POLICIES, MAX_PORTS_PER_POLICY, MAX_PRINCIPALS_PER_POLICY } from '../../xds/control-plane/bounds.js';
import { parseMeshConfig } from '../../xds/control-plane/mesh.js';
import { buildNodeResources } from '../../xds/control-plane/translate.js';
import { validateListener } from '../../xds/client/validate.js';
import { packAny, TYPE_URLS, type Listener } from '../../xds/envoy/proto.js';
import { authorize, inboundPolicies, DEFAULT_DENY } from '../../proxy/policy/rbac.js';
import { vm } from '../helpers/vm-manager.js';

const problems = meshProblems;

const services = [
  { name: 'db', port: 5432 },
  { name: 'web', port: 8080 },
];
const policy = (extra: Record<string, unknown> = {}) => ({ name: 'db-from-web', service: 'db', action: 'ALLOW', principals: ['spiffe://td/vm/web-a'], ...extra });

// ---- mesh config -------------------------------------------------------------------

test('policies parse: principals exact, prefix (trailing * or prefix:), any authenticated, unauthenticated; ports sorted; shadow defaults to false', (t) => {
  const mesh = parseMeshConfig({
    services,
    policies: [policy({ ports: [9000, 5432, 9000], principals: ['spiffe://td/vm/web-a', 'spiffe://td/vm/web-*', 'prefix:spiffe://td/hv/', '*', 'unauthenticated'] }), policy({ name: 'dry', action: 'DENY', shadow: true })],
  });
  t.deepEqual(mesh.policies, [
    {
      name: 'db-from-web',
      service: 'db',
      ports: [5432, 9000],
      action: 'ALLOW',
      principals: [
        { kind: 'exact', id: 'spiffe://td/vm/web-a' },
        { kind: 'prefix', prefix: 'spiffe://td/vm/web-' },
        { kind: 'prefix', prefix: 'spiffe://td/hv/' },
        { kind: 'authenticated' },
        { kind: 'unauthenticated' },
      ],
      shadow: false,
    },
    { name: 'dry', service: 'db', ports: null, action: 'DENY', principals: [{ kind: 'exact', id: 'spiffe://td/vm/web-a' }], shadow: true },
  ]);
});

test('a bad policy is refused naming each field', (t) => {
  t.deepEqual(
    problems({
      services,
      policies: [
        policy({ action: 'allow', principals: ['web-a', 'spiffe://td/vm/*-a*', 'prefix:http://x'], ports: [0], shadow: 'yes', extra: 1 }),
        policy({ service: 'nope', principals: [] }),
        policy({ name: 'Bad_Name', ports: [] }),
        policy(),
      ],
    }),
    [
      'policies[0].ports[0]: must be an integer 1..65535',
      'policies[0].action: must be "ALLOW" or "DENY" (got "allow")',
      'policies[0].principals[0]: "web-a": must be a SPIFFE ID (spiffe://<trust-domain>/<path>), a prefix ("spiffe://.../vm/web-*" or "prefix:spiffe://..."), "*" or "unauthenticated" (a SPIFFE ID starts with "spiffe://" (lowercase))',
      'policies[0].principals[1]: "spiffe://td/vm/*-a*": a prefix must start with "spiffe://" and have no other "*"',
      'policies[0].principals[2]: "prefix:http://x": a prefix must start with "spiffe://" and have no other "*"',
      'policies[0].shadow: must be true or false',
      'policies[0]: unknown field "extra"',
      'policies[1].principals: must list at least one principal',
      'policies[2].name: must be a DNS label: 1-63 lowercase letters, digits or "-", starting and ending with a letter or digit',
      'policies[2].ports: must list at least one port (leave ports out for the service port)',
      'policies[1].name: duplicate policy name "db-from-web" (also policies[0])',
      'policies[1].service: unknown service "nope"',
      'policies[3].name: duplicate policy name "db-from-web" (also policies[0])',
    ],
  );
});

test('policy bounds: policies, principals, ports, principal length', (t) => {
  const many = Array.from({ length: MAX_POLICIES + 1 }, (_, i) => policy({ name: `p${i}` }));
  t.true(problems({ services, policies: many }).includes(`policies: must list at most ${MAX_POLICIES} policies`));
  t.deepEqual(problems({ services, policies: [policy({ principals: Array.from({ length: MAX_PRINCIPALS_PER_POLICY + 1 }, (_, i) => `spiffe://td/vm/v${i}`) })] }), [
    `policies[0].principals: must list at most ${MAX_PRINCIPALS_PER_POLICY} principals`,
  ]);
  t.deepEqual(problems({ services, policies: [policy({ ports: Array.from({ length: MAX_PORTS_PER_POLICY + 1 }, (_, i) => i + 1) })] }), [`policies[0].ports: must list at most ${MAX_PORTS_PER_POLICY} ports`]);
  t.deepEqual(problems({ services, policies: [policy({ principals: [`spiffe://td/vm/${'a'.repeat(2100)}`] })] }), ['policies[0].principals[0]: must be at most 2048 characters']);
});

test('a service a policy names cannot be deleted from under it', (t) => {
  t.deepEqual(problems({ services: [services[1]], policies: [policy()] }), ['policies[0].service: unknown service "db"']);
});

// ---- translate -> wire -> validate, round trip --------------------------------------

const dbVm = vm({
  vmId: 'db-1',
  hypervisorId: 'hv-1',
  vsockCid: 3,
  addresses: ['10.0.0.3'],
  sidecar: { tcpPort: 15006, vsockPort: 15007 },
  services: [
    { name: 'db', port: 5432 },
    { name: 'web', port: 8080 },
  ],
}) as VmRecord;

function inboundOf(policies: unknown[]): Listener {
  const mesh = parseMeshConfig({ services, policies });
  return buildNodeResources(mesh, dbVm).listeners.find((l) => l.name === 'inbound|db-1')!;
}

function pushed(policies: unknown[]) {
  const result = validateListener(packAny(TYPE_URLS.Listener, inboundOf(policies)));
  if (!result.ok) throw new Error(result.errors.join('\n'));
  if (result.value.kind !== 'inbound') throw new Error('not inbound');
  return result.value;
}

test('the inbound listener carries RBAC filters before the TCP proxy: DENY, ALLOW, then shadow, on the selected ports only', (t) => {
  const l = inboundOf([
    policy({ name: 'allow-web' }),
    policy({ name: 'no-b', action: 'DENY', principals: ['spiffe://td/vm/web-b'] }),
    policy({ name: 'dry', action: 'DENY', shadow: true, principals: ['unauthenticated'] }),
  ]);
  const db = l.filter_chains!.find((c) => c.name === 'inbound|5432|tls')!;
  t.deepEqual(
    db.filters!.map((f) => f.name),
    ['envoy.filters.network.rbac', 'envoy.filters.network.rbac', 'envoy.filters.network.rbac', 'envoy.filters.network.tcp_proxy'],
  );
  t.deepEqual(db.filters![0]!.typed_config, packAny(TYPE_URLS.NetworkRbac, {
    stat_prefix: 'inbound|5432.deny.',
    rules: { action: 'DENY', policies: { 'no-b': { permissions: [{ any: true }], principals: [{ authenticated: { principal_name: { exact: 'spiffe://td/vm/web-b' } } }] } } },
  }));
  t.deepEqual(db.filters![2]!.typed_config, packAny(TYPE_URLS.NetworkRbac, {
    stat_prefix: 'inbound|5432.shadow_deny.',
    shadow_rules: { action: 'DENY', policies: { dry: { permissions: [{ any: true }], principals: [{ not_id: { authenticated: {} } }] } } },
    shadow_rules_stat_prefix: 'inbound|5432.shadow_deny.',
  }));
  const web = l.filter_chains!.find((c) => c.name === 'inbound|8080|tls')!;
  t.deepEqual(web.filters!.map((f) => f.name), ['envoy.filters.network.tcp_proxy'], 'the web port is not selected by db policies');
});

test('round trip: what the control plane sends is what the sidecar enforces', (t) => {
  const listener = pushed([
    policy({ name: 'allow-web', principals: ['spiffe://td/vm/web-*', 'unauthenticated'] }),
    policy({ name: 'no-b', action: 'DENY', principals: ['spiffe://td/vm/web-b'] }),
    policy({ name: 'dry', action: 'ALLOW', shadow: true, principals: ['spiffe://td/vm/web-a'] }),
  ]);
  t.deepEqual(listener.rbac, [
    {
      port: 5432,
      filters: [
        { rules: { action: 'DENY', policies: [{ name: 'no-b', principals: [{ kind: 'exact', id: 'spiffe://td/vm/web-b' }] }] }, shadowRules: null },
        { rules: { action: 'ALLOW', policies: [{ name: 'allow-web', principals: [{ kind: 'prefix', prefix: 'spiffe://td/vm/web-' }, { kind: 'unauthenticated' }] }] }, shadowRules: null },
        { rules: null, shadowRules: { action: 'ALLOW', policies: [{ name: 'dry', principals: [{ kind: 'exact', id: 'spiffe://td/vm/web-a' }] }] } },
      ],
    },
  ]);
  const table = inboundPolicies(listener.rbac);
  t.deepEqual(authorize(table, 5432, 'spiffe://td/vm/web-a'), { allowed: true, shadowDenied: null });
  t.deepEqual(authorize(table, 5432, 'spiffe://td/vm/web-b'), { allowed: false, policy: 'no-b', shadowDenied: null });
  t.deepEqual(authorize(table, 5432, 'unauthenticated'), { allowed: true, shadowDenied: DEFAULT_DENY });
  t.deepEqual(authorize(table, 5432, 'spiffe://td/vm/db-2'), { allowed: false, policy: DEFAULT_DENY, shadowDenied: null });
  t.deepEqual(authorize(table, 8080, 'spiffe://td/vm/db-2'), { allowed: true, shadowDenied: null });
});

test('ports: a policy with ports selects those destination ports of the VMs serving its service', (t) => {
  const listener = pushed([policy({ ports: [8080] })]);
  t.deepEqual(listener.rbac.map((r) => r.port), [8080]);
  const elsewhere = vm({ vmId: 'web-9', hypervisorId: 'hv-1', vsockCid: 4, addresses: ['10.0.0.4'], sidecar: { tcpPort: 15006, vsockPort: 0 }, services: [{ name: 'web', port: 8080 }] }) as VmRecord;
  const l = buildNodeResources(parseMeshConfig({ services, policies: [policy({ ports: [8080] })] }), elsewhere).listeners.find((x) => x.name === 'inbound|web-9')!;
  t.deepEqual(l.filter_chains![0]!.filters!.map((f) => f.name), ['envoy.filters.network.tcp_proxy'], 'a VM not serving db is not selected');
});

test('peer modes and policies on one port: each transport chain of a PERMISSIVE port carries the same RBAC filters before its TCP proxy; the sidecar takes them once, with the mode', (t) => {
  const mesh = parseMeshConfig({ services, policies: [policy({ name: 'allow-web' })], peer_authentication: [{ name: 'db', service: 'db', mode: 'PERMISSIVE' }] });
  const l = buildNodeResources(mesh, dbVm).listeners.find((x) => x.name === 'inbound|db-1')!;
  const db = l.filter_chains!.filter((c) => c.filter_chain_match?.destination_port?.value === 5432);
  t.deepEqual(db.map((c) => c.filter_chain_match?.transport_protocol), ['tls', 'raw_buffer']);
  for (const chain of db) t.deepEqual(chain.filters!.map((f) => f.name), ['envoy.filters.network.rbac', 'envoy.filters.network.tcp_proxy']);
  const r = validateListener(packAny(TYPE_URLS.Listener, l));
  if (!r.ok || r.value.kind !== 'inbound') throw new Error(JSON.stringify(r));
  t.deepEqual(r.value.rbac.map((x) => x.port), [5432], 'one set of filters for the port, not one per chain');
  t.is(r.value.peerModes?.[5432], 'permissive');
  t.is(r.value.peerModes?.[8080], 'strict');
  // The plain-text chain without the policy: a peer could choose its transport to escape it.
  const raw = l.filter_chains!.findIndex((c) => c.filter_chain_match?.destination_port?.value === 5432 && c.filter_chain_match.transport_protocol === 'raw_buffer');
  l.filter_chains![raw]!.filters = l.filter_chains![raw]!.filters!.slice(-1);
  t.deepEqual(errors(l), [`listener "inbound|db-1": filter_chains[${raw}].filters: the RBAC filters must be those of filter_chains[${raw - 1}] (every chain of port 5432 is under the same policies)`]);
});

// ---- what the sidecar cannot enforce is NACKed ------------------------------------------

function withRbac(config: Record<string, unknown>, name = 'envoy.filters.network.rbac'): Listener {
  const l = inboundOf([]);
  const chain = l.filter_chains!.find((c) => c.name === 'inbound|5432|tls')!;
  chain.filters = [{ name, typed_config: packAny(TYPE_URLS.NetworkRbac, config) }, ...chain.filters!];
  return l;
}
const errors = (l: Listener): string[] => {
  const r = validateListener(packAny(TYPE_URLS.Listener, l));
  return r.ok ? [] : r.errors;
};
const anyPerm = [{ any: true }];

test('RBAC the sidecar cannot enforce refuses the listener, naming the field', (t) => {
  const at = 'listener "inbound|db-1": filter_chains[0].filters[0].typed_config';
  t.deepEqual(errors(withRbac({ rules: { action: 'LOG', policies: { p: { permissions: anyPerm, principals: [{ any: true }] } } } })), [`${at}.rules.action: LOG cannot be enforced by this sidecar (only ALLOW and DENY)`]);
  t.deepEqual(errors(withRbac({ rules: { action: 'ALLOW', policies: { p: { permissions: anyPerm, principals: [{ source_ip: { address_prefix: '10.0.0.0', prefix_len: { value: 8 } } }] } } } })), [
    `${at}.rules.policies["p"].principals[0]: source_ip cannot be enforced by this sidecar (only authenticated, any, not_id of authenticated)`,
  ]);
  t.deepEqual(errors(withRbac({ rules: { action: 'ALLOW', policies: { p: { permissions: anyPerm, principals: [{ authenticated: { principal_name: { suffix: '/web' } } }] } } } })), [
    `${at}.rules.policies["p"].principals[0].authenticated.principal_name: suffix cannot be enforced by this sidecar (only a non-empty exact or prefix)`,
  ]);
  t.deepEqual(errors(withRbac({ rules: { action: 'ALLOW', policies: { p: { permissions: [{ destination_ip: { address_prefix: '10.0.0.1', prefix_len: { value: 32 } } }], principals: [{ any: true }] } } } })), [
    `${at}.rules.policies["p"].permissions[0]: destination_ip cannot be enforced by this sidecar (only any and destination_port)`,
  ]);
  t.deepEqual(errors(withRbac({ shadow_rules: { action: 'DENY', policies: { p: { permissions: anyPerm, principals: [{ not_id: { any: true } }] } } } })), [
    `${at}.shadow_rules.policies["p"].principals[0].not_id: cannot be enforced by this sidecar (only not_id of authenticated without principal_name: a peer with no identity)`,
  ]);
  t.deepEqual(errors(withRbac({ rules: { action: 'ALLOW', policies: {} } }, 'envoy.filters.network.echo')), [
    'listener "inbound|db-1": filter_chains[0].filters[0].name: must be envoy.filters.network.rbac for an RBAC config (got "envoy.filters.network.echo")',
  ]);
});

test('a destination_port permission applies the policy on that port only; a port-less ALLOW set still denies by default', (t) => {
  const r = validateListener(packAny(TYPE_URLS.Listener, withRbac({ rules: { action: 'ALLOW', policies: { other: { permissions: [{ destination_port: 9999 }], principals: [{ any: true }] }, here: { permissions: [{ destination_port: 5432 }], principals: [{ authenticated: { principal_name: { exact: 'spiffe://td/vm/a' } } }] } } } })));
  if (!r.ok || r.value.kind !== 'inbound') throw new Error(JSON.stringify(r));
  t.deepEqual(r.value.rbac, [{ port: 5432, filters: [{ rules: { action: 'ALLOW', policies: [{ name: 'here', principals: [{ kind: 'exact', id: 'spiffe://td/vm/a' }] }] }, shadowRules: null }] }]);
});
