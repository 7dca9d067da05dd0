// The transport decision over every combination of its inputs, checked
// against a decision table (first matching row wins) and invariants.

import test from 'ava';
import { describeSelection, selectTransport, type Selection, type TransportPolicy } from '../../proxy/resolve/select.js';
import type { HypervisorRecord, VmRecord, VsockMode } from '../../proxy/resolve/types.js';

const vm = (id: string, hypervisorId: string, sidecar: VmRecord['sidecar'], cid = 5): VmRecord => ({
  vmId: id,
  hypervisorId,
  vsockCid: cid,
  addresses: ['10.0.0.2'],
  sidecar,
  services: [],
  labels: {},
  generation: 1,
  leaseExpiresAt: null,
});

const destinations = {
  unknown: null,
  'no sidecar': vm('b', 'hv-1', null),
  'sidecar tcp+vsock': vm('b', 'hv-1', { tcpPort: 15006, vsockPort: 15007 }),
  'sidecar vsock only': vm('b', 'hv-1', { tcpPort: 0, vsockPort: 15007 }),
  'sidecar tcp only': vm('b', 'hv-1', { tcpPort: 15006, vsockPort: 0 }),
} as const;
const locals = { 'local unknown': null, 'same hypervisor': vm('a', 'hv-1', { tcpPort: 1, vsockPort: 1 }, 3), 'other hypervisor': vm('a', 'hv-2', { tcpPort: 1, vsockPort: 1 }, 3) } as const;
const modes: VsockMode[] = ['host-relay', 'direct', 'loopback'];
const policies: TransportPolicy[] = ['prefer-vsock', 'tcp-only', 'vsock-only'];
const requesteds = { 'requested 10.0.0.2:8080': { address: '10.0.0.2', port: 8080 }, 'nothing requested': null } as const;

interface Case {
  dest: keyof typeof destinations;
  local: keyof typeof locals;
  mode: VsockMode;
  healthy: boolean;
  policy: TransportPolicy;
  requested: keyof typeof requesteds;
}

const VSOCK = { kind: 'vsock', cid: 5, port: 15007 } as const;
const VSOCK_VIA_RELAY = { kind: 'vsock', cid: 5, port: 15007, relay: { cid: 2, port: 15100 } } as const;
const TCP = { kind: 'tcp', address: '10.0.0.2', port: 15006 } as const;
const DIRECT = { kind: 'direct', address: '10.0.0.2', port: 8080 } as const;

/** The decision table. */
function expected(c: Case): Selection {
  const dest = destinations[c.dest];
  const requested = requesteds[c.requested];
  const directOr = (reason: Extract<Selection, { ok: true }>['reason']): Selection =>
    c.policy === 'vsock-only' ? { ok: false, reason: 'vsock_only_unavailable' } : requested ? { ok: true, hops: [DIRECT], reason } : { ok: false, reason: 'no_address' };
  if (dest === null) return directOr('unknown_destination');
  if (dest.sidecar === null) return directOr('no_sidecar');
  const hasTcp = dest.sidecar.tcpPort > 0;
  const tcpOr = (reason: Extract<Selection, { ok: true }>['reason']): Selection =>
    c.policy === 'vsock-only' ? { ok: false, reason: 'vsock_only_unavailable' } : hasTcp ? { ok: true, hops: [TCP], reason } : directOr(reason);
  if (c.policy === 'tcp-only') return tcpOr('tcp_only_policy');
  if (c.local === 'local unknown') return tcpOr('local_unknown');
  if (c.local === 'other hypervisor') return tcpOr('other_hypervisor');
  if (dest.sidecar.vsockPort === 0) return tcpOr('no_vsock_inbound');
  if (!c.healthy) return tcpOr('vsock_unhealthy');
  const v = c.mode === 'host-relay' ? VSOCK_VIA_RELAY : VSOCK;
  if (c.policy === 'vsock-only' || !hasTcp) return { ok: true, hops: [v], reason: 'same_hypervisor' };
  return { ok: true, hops: [v, TCP], reason: 'same_hypervisor' };
}

const cases: Case[] = [];
for (const dest of Object.keys(destinations) as Array<keyof typeof destinations>)
  for (const local of Object.keys(locals) as Array<keyof typeof locals>)
    for (const mode of modes)
      for (const healthy of [true, false])
        for (const policy of policies)
          for (const requested of Object.keys(requesteds) as Array<keyof typeof requesteds>) cases.push({ dest, local, mode, healthy, policy, requested });

function run(c: Case): Selection {
  return selectTransport({
    local: locals[c.local],
    destination: destinations[c.dest],
    hypervisor: { hypervisorId: 'hv-1', vsockMode: c.mode, relayPort: 15100 } satisfies HypervisorRecord,
    requested: requesteds[c.requested],
    vsockHealthy: c.healthy,
    policy: c.policy,
  });
}

test(`the table covers every combination of inputs (${cases.length})`, (t) => {
  t.is(cases.length, 5 * 3 * 3 * 2 * 3 * 2);
  const mismatches = cases.filter((c) => JSON.stringify(run(c)) !== JSON.stringify(expected(c)));
  t.deepEqual(mismatches, []);
});

test('every reason and every refusal is reached by some combination', (t) => {
  const reasons = new Set(cases.map((c) => run(c).reason));
  for (const r of ['same_hypervisor', 'other_hypervisor', 'local_unknown', 'unknown_destination', 'no_sidecar', 'no_vsock_inbound', 'vsock_unhealthy', 'tcp_only_policy', 'vsock_only_unavailable', 'no_address']) {
    t.true(reasons.has(r as Selection['reason']), r);
  }
});

test('invariants hold in every combination', (t) => {
  for (const c of cases) {
    const s = run(c);
    const label = JSON.stringify(c);
    if (!s.ok) continue;
    const kinds = s.hops.map((h) => h.kind);
    if (c.policy === 'tcp-only') t.false(kinds.includes('vsock'), `tcp-only never picks vsock: ${label}`);
    if (c.policy === 'vsock-only') t.deepEqual(kinds, ['vsock'], `vsock-only never falls back: ${label}`);
    if (kinds.includes('vsock')) {
      t.is(c.local, 'same hypervisor', `vsock only on the same hypervisor: ${label}`);
      t.true(c.healthy, `vsock only while healthy: ${label}`);
      const relay = s.hops[0]!.kind === 'vsock' ? s.hops[0]!.relay : undefined;
      t.is(relay !== undefined, c.mode === 'host-relay', `host relay exactly in host-relay mode: ${label}`);
    }
  }
});

test('a same-hypervisor peer goes over vsock with TCP as the fallback', (t) => {
  const s = run({ dest: 'sidecar tcp+vsock', local: 'same hypervisor', mode: 'direct', healthy: true, policy: 'prefer-vsock', requested: 'requested 10.0.0.2:8080' });
  t.deepEqual(s, { ok: true, hops: [VSOCK, TCP], reason: 'same_hypervisor' });
  t.is(describeSelection(s), 'vsock 5:15007 (same_hypervisor), fallback tcp 10.0.0.2:15006');
});

test('describeSelection names the relay and refusals', (t) => {
  const relayed = run({ dest: 'sidecar vsock only', local: 'same hypervisor', mode: 'host-relay', healthy: true, policy: 'prefer-vsock', requested: 'nothing requested' });
  t.is(describeSelection(relayed), 'vsock 5:15007 via host relay 2:15100 (same_hypervisor)');
  const refused = run({ dest: 'unknown', local: 'same hypervisor', mode: 'direct', healthy: true, policy: 'vsock-only', requested: 'nothing requested' });
  t.is(describeSelection(refused), 'refused (vsock_only_unavailable)');
});
