// The host relay's authorizer against the real registry in process (no gRPC):
// decisions reused for their TTL, one query per key at a time, an outage not
// cached, and decisions dropped once expired so that guests probing many
// destinations do not grow the relay.

import test from 'ava';
import { VsockmeshError } from '../../proxy/runtime/errors.js';
import { ProxyMetrics } from '../../proxy/metrics.js';
import { RelayAuthorizer } from '../../proxy/resolve/relay-authorizer.js';
import type { RelayRequest, VmManagerApi } from '../../proxy/resolve/types.js';
import { Registry } from '../../xds/vm-manager/registry.js';

const TTL = 60_000;

function setup() {
  let now = 1_000_000;
  const registry = new Registry({ now: () => now });
  registry.registerHypervisor({ hypervisorId: 'hv-1', vsockMode: 'host-relay', relayPort: 15100 });
  for (const [vmId, cid] of [['a', 3], ['b', 4]] as const) {
    registry.registerVm({ vmId, hypervisorId: 'hv-1', vsockCid: cid, addresses: [`10.0.0.${cid}`], sidecar: { tcpPort: 15006, vsockPort: 15007 }, services: [], labels: {} });
  }
  const state = { asked: [] as RelayRequest[], down: false, gate: undefined as Promise<void> | undefined };
  const api = {
    authorizeRelay: async (request: RelayRequest) => {
      state.asked.push(request);
      await state.gate;
      if (state.down) throw new VsockmeshError('UNAVAILABLE', 'connection refused');
      return registry.authorizeRelay(request);
    },
  } as Pick<VmManagerApi, 'authorizeRelay'> as VmManagerApi;
  const authorizer = new RelayAuthorizer({ api, hypervisorId: 'hv-1', queryTimeoutMs: 1_000, cacheTtlMs: TTL, now: () => now });
  return { authorizer, state, advance: (ms: number) => (now += ms) };
}

test('the question names the hypervisor, the kernel-given source CID and the destination', async (t) => {
  const { authorizer, state } = setup();
  t.deepEqual(await authorizer.authorize(3, { cid: 4, port: 15007 }), { allowed: true, sourceVmId: 'a' });
  t.deepEqual(state.asked, [{ hypervisorId: 'hv-1', sourceCid: 3, destination: { cid: 4, port: 15007 } }]);
  t.deepEqual(await authorizer.authorize(3, { cid: 4, port: 22 }), { allowed: false, reason: 'destination_not_allowed', detail: "VM manager: port 22 is not VM b's sidecar vsock port 15007" });
});

test('a decision is reused for its TTL, then asked again', async (t) => {
  const { authorizer, advance } = setup();
  await authorizer.authorize(3, { cid: 4, port: 15007 });
  advance(TTL - 1);
  t.deepEqual(authorizer.cached(3, { cid: 4, port: 15007 }), { allowed: true, sourceVmId: 'a' });
  await authorizer.authorize(3, { cid: 4, port: 15007 });
  t.is(authorizer.queries, 1);
  advance(1);
  t.is(authorizer.cached(3, { cid: 4, port: 15007 }), undefined);
  await authorizer.authorize(3, { cid: 4, port: 15007 });
  t.is(authorizer.queries, 2);
});

test('simultaneous authorizations of one destination share one query', async (t) => {
  const { authorizer, state } = setup();
  let open!: () => void;
  state.gate = new Promise((r) => (open = r));
  const pending = [...Array.from({ length: 20 }, () => authorizer.authorize(3, { cid: 4, port: 15007 })), authorizer.authorize(4, { cid: 3, port: 15007 })];
  open();
  const decisions = await Promise.all(pending);
  t.true(decisions.every((d) => d.allowed));
  t.is(authorizer.queries, 2);
});

test('an unreachable VM manager refuses and is not remembered as a denial', async (t) => {
  const { authorizer, state } = setup();
  state.down = true;
  t.like(await authorizer.authorize(3, { cid: 4, port: 15007 }), { allowed: false, reason: 'vm_manager_unavailable' });
  t.is(authorizer.cached(3, { cid: 4, port: 15007 }), undefined);
  t.is(authorizer.size, 0);
  state.down = false;
  t.deepEqual(await authorizer.authorize(3, { cid: 4, port: 15007 }), { allowed: true, sourceVmId: 'a' });
});

test('an expired decision is dropped when read', async (t) => {
  const { authorizer, advance } = setup();
  await authorizer.authorize(3, { cid: 4, port: 15007 });
  t.is(authorizer.size, 1);
  advance(TTL);
  t.is(authorizer.cached(3, { cid: 4, port: 15007 }), undefined);
  t.is(authorizer.size, 0);
});

test('decisions for destinations asked once are swept when the cache is large: a guest probing ports does not grow the relay', async (t) => {
  const { authorizer, advance } = setup();
  for (let port = 1; port <= 10_000; port++) await authorizer.authorize(3, { cid: 4, port });
  t.is(authorizer.size, 10_000);
  advance(TTL);
  await authorizer.authorize(3, { cid: 4, port: 15007 });
  t.is(authorizer.size, 1, 'the expired ones went before the new one was kept');
});

test('/stats of the host relay count the queries and the decisions held', async (t) => {
  const { authorizer, advance } = setup();
  const metrics = new ProxyMetrics({ processMetrics: false });
  metrics.addRelayAuthorizer(authorizer);
  await authorizer.authorize(3, { cid: 4, port: 15007 });
  await authorizer.authorize(4, { cid: 3, port: 15007 });
  await authorizer.authorize(4, { cid: 3, port: 15007 });
  let text = await metrics.render();
  t.regex(text, /^vsockmesh_relay_authorizer_queries_total 2$/m);
  t.regex(text, /^vsockmesh_relay_authorizer_cached_decisions 2$/m);
  advance(TTL);
  authorizer.cached(3, { cid: 4, port: 15007 });
  text = await metrics.render();
  t.regex(text, /^vsockmesh_relay_authorizer_cached_decisions 1$/m);
});
