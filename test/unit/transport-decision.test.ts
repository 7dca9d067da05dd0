// The transport decision over every combination of what can be known of an
// endpoint, from each of the three sources that can know it (a static config
// endpoint, an xDS endpoint's VM metadata, a VM manager resolution), checked
// against one decision table (first matching row wins), plus invariants and
// the equivalence of the sources.

import test from 'ava';
import type { EndpointConfig } from '../../proxy/config/types.js';
import {
  factsFromConfig,
  factsFromResolution,
  factsFromXds,
  factsWithoutResolution,
  type EndpointFacts,
  type LocalPlacement,
} from '../../proxy/upstream/endpoint-facts.js';
import { describeSelection, selectTransport, type Selection, type SelectionReason, type TransportPolicy, type VsockHealth } from '../../proxy/upstream/select.js';
import type { XdsEndpoint } from '../../proxy/dynamic/types.js';
import type { Resolution, VmRecord, VsockMode } from '../../proxy/resolve/types.js';

const DESTINATIONS = ['unknown', 'vm manager unavailable', 'no sidecar', 'sidecar tcp+vsock', 'sidecar vsock only', 'sidecar tcp only'] as const;
const LOCALS = ['local unknown', 'same hypervisor', 'other hypervisor', 'same vm'] as const;
const MODES: VsockMode[] = ['host-relay', 'direct', 'loopback'];
const HEALTH: VsockHealth[] = ['available', 'breaker_open', 'disabled'];
const POLICIES: TransportPolicy[] = ['prefer-vsock', 'tcp-only', 'vsock-only'];
const APPS = ['app address known', 'no app address'] as const;
const SOURCES = ['static', 'xds', 'resolution'] as const;

type Destination = (typeof DESTINATIONS)[number];
type Local = (typeof LOCALS)[number];
type Source = (typeof SOURCES)[number];

interface Case {
  dest: Destination;
  local: Local;
  mode: VsockMode;
  vsock: VsockHealth;
  policy: TransportPolicy;
  app: (typeof APPS)[number];
}

const APP = { address: '10.0.0.2', port: 8080 };
const PORTS: Record<Destination, { tcp: number; vsock: number } | null> = {
  unknown: null,
  'vm manager unavailable': null,
  'no sidecar': null,
  'sidecar tcp+vsock': { tcp: 15006, vsock: 15007 },
  'sidecar vsock only': { tcp: 0, vsock: 15007 },
  'sidecar tcp only': { tcp: 15006, vsock: 0 },
};
const LOCAL: Record<Local, LocalPlacement | null> = {
  'local unknown': null,
  'same hypervisor': { vmId: 'a', hypervisorId: 'hv-1' },
  'other hypervisor': { vmId: 'a', hypervisorId: 'hv-2' },
  'same vm': { vmId: 'b', hypervisorId: 'hv-1' },
};

const VSOCK = { kind: 'vsock', cid: 5, port: 15007 } as const;
const VSOCK_VIA_RELAY = { kind: 'vsock', cid: 5, port: 15007, relay: { cid: 2, port: 15100 } } as const;
const TCP = { kind: 'tcp', address: '10.0.0.2', port: 15006 } as const;
const DIRECT = { kind: 'direct', address: '10.0.0.2', port: 8080 } as const;

/** Which cases a source can express: static endpoints always name the app and never an unknown VM; only a resolution can be unavailable or lack an address. */
function expressible(source: Source, c: Case): boolean {
  if (source === 'resolution') return true;
  if (c.app === 'no app address' || c.dest === 'vm manager unavailable') return false;
  return source === 'xds' || c.dest !== 'unknown';
}

/** The decision table. A static endpoint's vsock address is declared reachable: it decides as if on our hypervisor. */
function expected(c: Case, source: Source): Selection {
  const local = source === 'static' ? 'same hypervisor' : c.local;
  const ports = PORTS[c.dest];
  const hasApp = c.app === 'app address known';
  const directOr = (reason: SelectionReason): Selection =>
    c.policy === 'vsock-only' ? { ok: false, reason: 'vsock_only_unavailable' } : hasApp ? { ok: true, hops: [DIRECT], reason } : { ok: false, reason: 'no_address' };
  if (c.dest === 'unknown') return directOr('unknown_destination');
  if (c.dest === 'vm manager unavailable') return directOr('vm_manager_unavailable');
  if (ports === null) return directOr('no_sidecar');
  const hasTcp = ports.tcp > 0;
  const tcpOr = (reason: SelectionReason): Selection =>
    c.policy === 'vsock-only' ? { ok: false, reason: 'vsock_only_unavailable' } : hasTcp ? { ok: true, hops: [TCP], reason } : directOr(reason);
  if (c.policy === 'tcp-only') return tcpOr('tcp_only_policy');
  if (local === 'local unknown') return tcpOr('local_unknown');
  if (local === 'other hypervisor') return tcpOr('other_hypervisor');
  if (local === 'same vm') return tcpOr('same_vm');
  if (ports.vsock === 0) return tcpOr('no_vsock_inbound');
  if (c.vsock === 'disabled') return tcpOr('vsock_disabled');
  if (c.vsock === 'breaker_open' && hasTcp && c.policy !== 'vsock-only') return { ok: true, hops: [TCP], reason: 'vsock_unhealthy' };
  const v = c.mode === 'host-relay' ? VSOCK_VIA_RELAY : VSOCK;
  if (c.policy === 'vsock-only' || !hasTcp) return { ok: true, hops: [v], reason: 'same_hypervisor' };
  return { ok: true, hops: [v, TCP], reason: 'same_hypervisor' };
}

// ---- each source's own form of a case -------------------------------------------

function staticEndpoint(c: Case): EndpointConfig {
  const ports = PORTS[c.dest];
  const vsock =
    ports && ports.vsock > 0
      ? c.mode === 'host-relay'
        ? ({ mode: 'host-relay', cid: 5, port: ports.vsock, relay: { cid: 2, port: 15100 } } as const)
        : ({ mode: 'direct', cid: 5, port: ports.vsock } as const)
      : undefined;
  return { ...APP, vmId: 'b', ...(ports && ports.tcp > 0 && { peer: { address: '10.0.0.2', port: ports.tcp } }), ...(vsock && { vsock }) };
}

function xdsEndpoint(c: Case): XdsEndpoint {
  if (c.dest === 'unknown') return { ...APP };
  const ports = PORTS[c.dest] ?? { tcp: 0, vsock: 0 };
  return { ...APP, vm: { vmId: 'b', hypervisorId: 'hv-1', vsockCid: 5, vsockPort: ports.vsock, tcpPort: ports.tcp, vsockMode: c.mode, relayPort: c.mode === 'host-relay' ? 15100 : 0 } };
}

function resolution(c: Case): Resolution {
  const local = LOCAL[c.local];
  const ports = PORTS[c.dest];
  const vm: VmRecord = {
    vmId: 'b',
    hypervisorId: 'hv-1',
    vsockCid: 5,
    addresses: ['10.0.0.2'],
    sidecar: ports && { tcpPort: ports.tcp, vsockPort: ports.vsock },
    services: [{ name: 'web', port: 8080 }],
    labels: {},
    generation: 1,
    leaseExpiresAt: null,
  };
  const found = c.dest !== 'unknown';
  return {
    found,
    ...(found && { vm, hypervisor: { hypervisorId: 'hv-1', vsockMode: c.mode, relayPort: c.mode === 'host-relay' ? 15100 : 0 } }),
    sameHypervisor: found && local?.hypervisorId === 'hv-1',
    // Without an app address the question named a VM but no port, and the answer has none either.
    ...(found && c.app === 'app address known' && { port: 8080 }),
    ttlMs: 30_000,
    revision: 1,
  };
}

function facts(source: Source, c: Case): EndpointFacts {
  switch (source) {
    case 'static':
      return factsFromConfig(staticEndpoint(c));
    case 'xds':
      return factsFromXds(xdsEndpoint(c));
    case 'resolution': {
      // The app: an address and port the caller named, or nothing to fall back on (a VM by id without an answer).
      const wanted = c.app === 'app address known' ? { address: APP.address, port: APP.port } : {};
      return c.dest === 'vm manager unavailable' ? factsWithoutResolution(wanted) : factsFromResolution(resolution(c), wanted);
    }
  }
}

function decide(source: Source, c: Case): Selection {
  return selectTransport({ local: LOCAL[c.local], endpoint: facts(source, c), vsock: c.vsock, policy: c.policy });
}

const cases: Case[] = [];
for (const dest of DESTINATIONS)
  for (const local of LOCALS)
    for (const mode of MODES)
      for (const vsock of HEALTH) for (const policy of POLICIES) for (const app of APPS) cases.push({ dest, local, mode, vsock, policy, app });

for (const source of SOURCES) {
  test(`decision table, ${source} endpoints: every expressible combination decides as the table says`, (t) => {
    const mine = cases.filter((c) => expressible(source, c));
    t.true(mine.length >= 324, `${mine.length} cases`);
    const mismatches = mine.flatMap((c) => {
      const got = decide(source, c);
      const want = expected(c, source);
      return JSON.stringify(got) === JSON.stringify(want) ? [] : [{ case: c, got, want }];
    });
    t.deepEqual(mismatches, []);
  });
}

test(`the table covers every combination of inputs (${cases.length}) and every reason and refusal is reached`, (t) => {
  t.is(cases.length, 6 * 4 * 3 * 3 * 3 * 2);
  const reasons = new Set(SOURCES.flatMap((s) => cases.filter((c) => expressible(s, c)).map((c) => decide(s, c).reason)));
  const all: Array<Selection['reason']> = [
    'same_hypervisor',
    'other_hypervisor',
    'local_unknown',
    'same_vm',
    'unknown_destination',
    'vm_manager_unavailable',
    'no_sidecar',
    'no_vsock_inbound',
    'vsock_disabled',
    'vsock_unhealthy',
    'tcp_only_policy',
    'vsock_only_unavailable',
    'no_address',
  ];
  t.deepEqual([...reasons].sort(), [...all].sort());
});

test('the same facts give the same decision whichever source they came from', (t) => {
  let compared = 0;
  for (const c of cases) {
    if (!expressible('xds', c)) continue;
    // xDS metadata and a resolution describe a VM the same way: the same facts, the same decision.
    t.deepEqual(facts('xds', c), facts('resolution', c), JSON.stringify(c));
    t.deepEqual(decide('xds', c), decide('resolution', c), JSON.stringify(c));
    // A static endpoint declares what the registry would say of a VM on our hypervisor.
    if (c.local === 'same hypervisor' && expressible('static', c)) {
      t.deepEqual(decide('static', c), decide('xds', c), JSON.stringify(c));
      compared++;
    }
  }
  t.true(compared > 100);
});

test('invariants hold in every combination of every source', (t) => {
  for (const source of SOURCES) {
    for (const c of cases.filter((x) => expressible(source, x))) {
      const s = decide(source, c);
      const label = `${source} ${JSON.stringify(c)}`;
      if (!s.ok) continue;
      const kinds = s.hops.map((h) => h.kind);
      if (c.policy === 'tcp-only') t.false(kinds.includes('vsock'), `tcp-only never picks vsock: ${label}`);
      if (c.policy === 'vsock-only') t.deepEqual(kinds, ['vsock'], `vsock-only never falls back: ${label}`);
      if (kinds.includes('vsock')) {
        if (source !== 'static') t.is(c.local, 'same hypervisor', `vsock only on the same hypervisor, never to ourselves: ${label}`);
        t.not(c.vsock, 'disabled', `never vsock when it is off: ${label}`);
        if (c.vsock === 'breaker_open') t.true(PORTS[c.dest]!.tcp === 0 || c.policy === 'vsock-only', `an open breaker skips vsock whenever a TCP path may be taken: ${label}`);
        const relay = s.hops[0]!.kind === 'vsock' ? s.hops[0]!.relay : undefined;
        t.is(relay !== undefined, c.mode === 'host-relay', `host relay exactly in host-relay mode: ${label}`);
      }
      if (kinds.includes('direct')) t.deepEqual(kinds, ['direct'], `a direct hop is the only hop: ${label}`);
    }
  }
});

test('regression: an open breaker with no TCP peer still tries vsock, from every source alike (it used to depend on the source)', (t) => {
  const c: Case = { dest: 'sidecar vsock only', local: 'same hypervisor', mode: 'direct', vsock: 'breaker_open', policy: 'prefer-vsock', app: 'app address known' };
  for (const source of SOURCES) t.deepEqual(decide(source, c), { ok: true, hops: [VSOCK], reason: 'same_hypervisor' }, source);
  const withTcp: Case = { ...c, dest: 'sidecar tcp+vsock' };
  for (const source of SOURCES) t.deepEqual(decide(source, withTcp), { ok: true, hops: [TCP], reason: 'vsock_unhealthy' }, source);
});

test('describeSelection names the hops, the relay, the fallback and refusals', (t) => {
  const same: Case = { dest: 'sidecar tcp+vsock', local: 'same hypervisor', mode: 'direct', vsock: 'available', policy: 'prefer-vsock', app: 'app address known' };
  t.is(describeSelection(decide('xds', same)), 'vsock 5:15007 (same_hypervisor), fallback tcp 10.0.0.2:15006');
  t.is(describeSelection(decide('xds', { ...same, mode: 'host-relay', dest: 'sidecar vsock only' })), 'vsock 5:15007 via host relay 2:15100 (same_hypervisor)');
  t.is(describeSelection(decide('resolution', { ...same, dest: 'unknown', policy: 'vsock-only' })), 'refused (vsock_only_unavailable)');
  t.is(
    describeSelection(selectTransport({ local: null, endpoint: { app: { address: 'fd00::5', port: 80 }, vm: null }, vsock: 'available', policy: 'prefer-vsock' })),
    'direct [fd00::5]:80 (unknown_destination)',
  );
});

// ---- what the three decisions it replaces said, carried over ---------------------

test('a same-hypervisor peer resolved through the VM manager goes over vsock with TCP as the fallback; without an app address, through the relay', (t) => {
  const same: Case = { dest: 'sidecar tcp+vsock', local: 'same hypervisor', mode: 'direct', vsock: 'available', policy: 'prefer-vsock', app: 'app address known' };
  const s = decide('resolution', same);
  t.deepEqual(s, { ok: true, hops: [VSOCK, TCP], reason: 'same_hypervisor' });
  t.is(describeSelection(s), 'vsock 5:15007 (same_hypervisor), fallback tcp 10.0.0.2:15006');
  const relayed = decide('resolution', { ...same, dest: 'sidecar vsock only', mode: 'host-relay', app: 'no app address' });
  t.is(describeSelection(relayed), 'vsock 5:15007 via host relay 2:15100 (same_hypervisor)');
});

test('static endpoints: every combination planHops had (vsock address none/direct/host-relay, TCP peer, vsock on, breaker open), its reasons renamed', (t) => {
  // planHops said vsock, vsock_breaker_open, vsock_disabled, tcp_peer and direct; the one reason union says:
  const rows: Array<[string, EndpointConfig, VsockHealth, Selection]> = [];
  const app = { address: '10.0.0.2', port: 8080 };
  const peer = { address: '10.0.0.2', port: 15006 };
  for (const [name, vsock, hop] of [
    ['no vsock', undefined, undefined],
    ['vsock direct', { mode: 'direct', cid: 5, port: 15007 }, VSOCK],
    ['vsock via host relay', { mode: 'host-relay', cid: 5, port: 15007, relay: { cid: 2, port: 15100 } }, VSOCK_VIA_RELAY],
  ] as const) {
    for (const withPeer of [false, true]) {
      for (const health of ['disabled', 'available', 'breaker_open'] as const) {
        const endpoint: EndpointConfig = { ...app, ...(withPeer && { peer }), ...(vsock && { vsock }) };
        let want: Selection;
        if (hop && health !== 'disabled' && !withPeer) want = { ok: true, hops: [hop], reason: 'same_hypervisor' }; // was vsock (the breaker too: no TCP to move to)
        else if (hop && health === 'breaker_open') want = { ok: true, hops: [TCP], reason: 'vsock_unhealthy' }; // was vsock_breaker_open
        else if (hop && health === 'available') want = { ok: true, hops: [hop, TCP], reason: 'same_hypervisor' }; // was vsock
        else if (withPeer) want = { ok: true, hops: [TCP], reason: hop ? 'vsock_disabled' : 'no_vsock_inbound' }; // was vsock_disabled, tcp_peer
        else want = { ok: true, hops: [DIRECT], reason: hop ? 'vsock_disabled' : 'no_sidecar' }; // was direct
        rows.push([`${name}, ${withPeer ? 'TCP peer' : 'no TCP peer'}, vsock ${health}`, endpoint, health, want]);
      }
    }
  }
  t.is(new Set(rows.map(([title]) => title)).size, 18, 'planHops\'s 24 rows: vsock off with the breaker open or closed is one row here');
  for (const [title, endpoint, vsock, want] of rows) {
    // Placement does not matter to a static endpoint: its vsock address is declared reachable.
    for (const local of [null, LOCAL['other hypervisor']]) t.deepEqual(selectTransport({ local, endpoint: factsFromConfig(endpoint), vsock, policy: 'prefer-vsock' }), want, title);
  }
});

test("xDS endpoints: every branch the applier's endpointConfig had, now decided per connection from the VM facts and our placement", (t) => {
  const vm = (over: Partial<NonNullable<XdsEndpoint['vm']>> = {}): XdsEndpoint => ({
    address: '10.0.0.4',
    port: 80,
    vm: { vmId: 'b', hypervisorId: 'hv-1', vsockCid: 4, vsockPort: 15007, tcpPort: 15006, vsockMode: 'host-relay', relayPort: 15100, ...over },
  });
  const here: LocalPlacement = { vmId: 'a', hypervisorId: 'hv-1' };
  const run = (e: XdsEndpoint, local: LocalPlacement | null = here): Selection => selectTransport({ local, endpoint: factsFromXds(e), vsock: 'available', policy: 'prefer-vsock' });
  const tcp = { kind: 'tcp', address: '10.0.0.4', port: 15006 } as const;
  // No VM facts: straight to the app.
  t.deepEqual(run({ address: '10.0.0.9', port: 80 }), { ok: true, hops: [{ kind: 'direct', address: '10.0.0.9', port: 80 }], reason: 'unknown_destination' });
  // Same hypervisor, host-relay mode: vsock through the relay on CID 2, TCP to the sidecar as fallback.
  t.deepEqual(run(vm()), { ok: true, hops: [{ kind: 'vsock', cid: 4, port: 15007, relay: { cid: 2, port: 15100 } }, tcp], reason: 'same_hypervisor' });
  // Direct and loopback modes: vsock straight to the CID.
  for (const mode of ['direct', 'loopback'] as const) t.deepEqual(run(vm({ vsockMode: mode })), { ok: true, hops: [{ kind: 'vsock', cid: 4, port: 15007 }, tcp], reason: 'same_hypervisor' }, mode);
  // Other hypervisor, unknown placement, or our own VM: TCP to its sidecar, no vsock.
  for (const [what, local, e, reason] of [
    ['other hypervisor', here, vm({ hypervisorId: 'hv-2' }), 'other_hypervisor'],
    ['placement unknown', null, vm(), 'local_unknown'],
    ['the endpoint is this VM', { vmId: 'b', hypervisorId: 'hv-1' }, vm(), 'same_vm'],
  ] as const) {
    t.deepEqual(run(e, local), { ok: true, hops: [tcp], reason }, what);
  }
  // No vsock inbound: TCP to the sidecar; no sidecar inbound at all: the app; vsock only: no TCP fallback.
  t.deepEqual(run(vm({ vsockPort: 0 })), { ok: true, hops: [tcp], reason: 'no_vsock_inbound' });
  t.deepEqual(run(vm({ vsockPort: 0, tcpPort: 0 })), { ok: true, hops: [{ kind: 'direct', address: '10.0.0.4', port: 80 }], reason: 'no_sidecar' });
  t.deepEqual(run(vm({ tcpPort: 0 })), { ok: true, hops: [{ kind: 'vsock', cid: 4, port: 15007, relay: { cid: 2, port: 15100 } }], reason: 'same_hypervisor' }, 'vsock only, no TCP fallback');
  // The facts name the VM (the destination-VM TLV) whatever the decision.
  t.is(factsFromXds(vm()).vm?.vmId, 'b');
});
