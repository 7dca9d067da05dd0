// The sidecar's xDS applier without sockets: a host that "opens" listeners
// unless their port is taken. Each listener applied or refused on its own,
// refused resources keeping their last good version, a node the control plane
// forgot keeping its listeners, removed clusters freed once nothing names them.

import test from 'ava';
import { silentLogger } from '../../proxy/runtime/log.js';
import { ProxyMetrics } from '../../proxy/metrics.js';
import { Admission } from '../../proxy/overload/admission.js';
import { RefusalLog } from '../../proxy/runtime/refusal-log.js';
import type { Listener } from '../../proxy/listeners/listener.js';
import { VsockBreakers } from '../../proxy/upstream/breakers.js';
import type { Cluster } from '../../proxy/upstream/cluster.js';
import type { UpstreamEndpoint } from '../../proxy/upstream/endpoint.js';
import { factsFromXds } from '../../proxy/upstream/endpoint-facts.js';
import { parseSidecarConfig } from '../../proxy/config/load.js';
import { XdsApplier } from '../../proxy/xds-applier.js';
import { HttpOutboundListener } from '../../proxy/http/listener.js';
import type { StateRefusals } from '../../proxy/dynamic/types.js';
import type { XdsCluster, XdsListener } from '../../proxy/dynamic/types.js';
import type { InboundPolicies, RbacFilter } from '../../proxy/policy/rbac.js';

type Port = { config: { port: number } };

class FakeHost {
  readonly taken = new Set<number>();
  /** The next this many opens fail as if another process had just taken the port. */
  failures = 0;
  /** Listener objects the applier opened and has not retired, by name. */
  readonly open = new Map<string, Listener>();
  readonly retired: Listener[] = [];
  /** The policies the applier handed over, after each listener state. */
  readonly policies: InboundPolicies[] = [];
  readonly applier: XdsApplier;

  constructor() {
    const logger = silentLogger();
    this.applier = new XdsApplier({
      addListener: async (listener) => {
        const port = (listener as unknown as Port).config.port;
        const holder = [...this.open.values()].find((l) => (l as unknown as Port).config.port === port);
        if (this.failures > 0) this.failures--;
        else if (!this.taken.has(port) && !holder) {
          this.open.set(listener.name, listener);
          return;
        }
        throw new Error(`listener "${listener.name}": cannot listen on 127.0.0.1 port ${port}: EADDRINUSE`);
      },
      retireListener: (listener) => {
        this.retired.push(listener);
        if (this.open.get(listener.name) === listener) this.open.delete(listener.name);
      },
      applyPolicies: (policies) => this.policies.push(policies),
      outboundOptions: {
        accessLog: false,
        vsock: { enabled: false, breakerWindowMs: 30_000, connectTimeoutMs: 1_000, policy: 'prefer-vsock' },
        breakers: new VsockBreakers(30_000),
        placement: { current: () => this.applier.placement },
      },
      inboundOptions: { accessLog: false },
      listenerContext: { logger, accessLogger: logger, metrics: new ProxyMetrics({ processMetrics: false }), nodeId: 'vm-a', admission: new Admission(null, { shedding: () => false, describe: () => '', follow: () => undefined }), refusals: new RefusalLog(logger) },
    });
  }

  port(name: string): number | undefined {
    const l = this.open.get(name);
    return l && (l as unknown as Port).config.port;
  }

  names(): string[] {
    return [...this.open.keys()].sort();
  }

  dumped(): { clusters: Array<{ name: string }>; listeners: Array<{ name: string; port: number }>; nodeKnown: boolean } {
    return this.applier.dump() as ReturnType<FakeHost['dumped']>;
  }
}

const here = { vmId: 'vm-a', hypervisorId: 'hv-1' };
/** The app addresses of a cluster's endpoints. */
const apps = (cluster: Cluster) => cluster.endpoints.map((e) => e.app);
const outbound = (service: string, port: number, placed: boolean | typeof here = true): XdsListener => ({
  name: `outbound|${service}`,
  kind: 'outbound',
  address: '127.0.0.1',
  port,
  cluster: service,
  ...(placed !== false && { local: placed === true ? here : placed }),
});
const inbound: XdsListener = { name: 'inbound|vm-a', kind: 'inbound', address: '0.0.0.0', port: 15006, ports: [8080], rbac: [] };
const api = (name: string): XdsListener => ({ name, kind: 'api' });
const eds = (name: string): Extract<XdsCluster, { kind: 'eds' }> => ({ name, kind: 'eds', connectTimeoutMs: 2_000, edsServiceName: name });
const refusedNames = (...names: string[]): StateRefusals => ({ names: new Set(names), unnamed: false });

test('a listener that cannot be opened is refused alone: the others of the state are applied, its previous version keeps serving', async (t) => {
  const h = new FakeHost();
  t.deepEqual(await h.applier.applyListeners([outbound('web', 18080), outbound('db', 15432)]), { refused: [] });
  const webBefore = h.open.get('outbound|web');
  h.taken.add(19090);
  const result = await h.applier.applyListeners([outbound('web', 19090), outbound('db', 15432), outbound('api', 18081)]);
  t.deepEqual(result.refused.map((r) => r.name), ['outbound|web']);
  t.regex(result.refused[0]!.error, /^listener "outbound\|web": cannot listen on .*EADDRINUSE/);
  t.is(h.open.get('outbound|web'), webBefore, 'the same listener object still serves');
  t.is(h.port('outbound|web'), 18080);
  t.is(h.port('outbound|api'), 18081, 'the other new listener was opened');
  t.false(h.retired.includes(webBefore!));
  t.deepEqual(
    h.dumped().listeners.map((l) => [l.name, l.port]),
    [
      ['outbound|web', 18080],
      ['outbound|db', 15432],
      ['outbound|api', 18081],
    ],
  );
  // Once the port is free, the same state applies in full.
  h.taken.delete(19090);
  t.deepEqual(await h.applier.applyListeners([outbound('web', 19090), outbound('db', 15432), outbound('api', 18081)]), { refused: [] });
  t.is(h.port('outbound|web'), 19090);
  t.true(h.retired.includes(webBefore!), 'the old version retired after the new one opened');
});

test('a listener new in the state whose port is taken is refused; nothing else changes', async (t) => {
  const h = new FakeHost();
  await h.applier.applyListeners([outbound('web', 18080)]);
  h.taken.add(7000);
  const result = await h.applier.applyListeners([outbound('web', 18080), outbound('blocked', 7000)]);
  t.deepEqual(result.refused.map((r) => r.name), ['outbound|blocked']);
  t.deepEqual(h.names(), ['outbound|web']);
  t.is(h.retired.length, 0);
});

test('a changed listener on the same port takes the port over; if it still cannot open, its previous version is opened again', async (t) => {
  const h = new FakeHost();
  await h.applier.applyListeners([outbound('web', 18080)]);
  const first = h.open.get('outbound|web')!;
  // The cluster changes, the port stays: the old listener gives the port up first.
  t.deepEqual(await h.applier.applyListeners([{ ...outbound('web', 18080), cluster: 'web-v2' } as XdsListener]), { refused: [] });
  t.true(h.retired.includes(first));
  t.is((h.open.get('outbound|web') as unknown as { config: { cluster: string } }).config.cluster, 'web-v2');
  // Now another process takes the port between the old listener closing and the new one opening.
  const second = h.open.get('outbound|web')!;
  h.failures = 1;
  const result = await h.applier.applyListeners([{ ...outbound('web', 18080), cluster: 'web-v3' } as XdsListener]);
  t.deepEqual(result.refused.map((r) => r.name), ['outbound|web']);
  t.regex(result.refused[0]!.error, /\(its previous version was opened again\)$/);
  t.true(h.retired.includes(second));
  t.is((h.open.get('outbound|web') as unknown as { config: { cluster: string } }).config.cluster, 'web-v2', 'the last good version serves');
});

test('a listener refused by validation keeps its last good version and is not taken as removed; an unreadable one stops every removal', async (t) => {
  const h = new FakeHost();
  await h.applier.applyListeners([outbound('web', 18080), outbound('db', 15432), inbound]);
  // outbound|web came but was invalid: kept; outbound|db left the state: removed.
  t.deepEqual(await h.applier.applyListeners([inbound, outbound('api', 18081)], refusedNames('outbound|web')), { refused: [] });
  t.deepEqual(h.names(), ['inbound|vm-a', 'outbound|api', 'outbound|web']);
  // A resource whose name could not be read: the state may be leaving out that one, so nothing goes.
  await h.applier.applyListeners([outbound('api', 18081)], { names: new Set(), unnamed: true });
  t.deepEqual(h.names(), ['inbound|vm-a', 'outbound|api', 'outbound|web']);
  await h.applier.applyListeners([outbound('api', 18081)]);
  t.deepEqual(h.names(), ['outbound|api']);
});

test('a state with listeners but none of ours, after we were placed: the node is unknown, every listener keeps serving, until a state names it again', async (t) => {
  const h = new FakeHost();
  t.false(h.applier.nodeKnown, 'nothing known before the first state');
  await h.applier.applyListeners([api('web'), outbound('web', 18080), inbound]);
  t.true(h.applier.nodeKnown);
  // What the control plane sends a node it does not know: the shared API listeners only.
  const result = await h.applier.applyListeners([api('web'), api('db')]);
  t.deepEqual(result, { refused: [], nodeUnknown: { kept: ['inbound|vm-a', 'outbound|web'] } });
  t.false(h.applier.nodeKnown);
  t.false(h.dumped().nodeKnown);
  t.deepEqual(h.names(), ['inbound|vm-a', 'outbound|web']);
  t.is(h.retired.length, 0);
  t.deepEqual(h.applier.routeNames().sort(), ['db', 'web'], 'the rest of the state is applied');
  // Known again: a normal state of the world (outbound|web left out this time, so it goes).
  t.deepEqual(await h.applier.applyListeners([api('db'), outbound('db', 15432), inbound]), { refused: [] });
  t.true(h.applier.nodeKnown);
  t.deepEqual(h.names(), ['inbound|vm-a', 'outbound|db']);
  // An empty state (no service left in the mesh): every cluster goes with it, so the listeners go too.
  t.deepEqual(await h.applier.applyListeners([]), { refused: [] });
  t.deepEqual(h.names(), []);
});

test('no placement is not "unknown" when the state still names one of our listeners, nor for a node that was never placed', async (t) => {
  const h = new FakeHost();
  await h.applier.applyListeners([outbound('web', 18080), inbound]);
  // The node's outbound listeners are gone (say, the service was deleted) but its inbound stays: a normal removal.
  t.deepEqual(await h.applier.applyListeners([inbound]), { refused: [] });
  t.deepEqual(h.names(), ['inbound|vm-a']);
  t.true(h.applier.nodeKnown);

  const fresh = new FakeHost();
  t.deepEqual(await fresh.applier.applyListeners([api('web'), outbound('web', 18080, false)]), { refused: [] });
  t.deepEqual(await fresh.applier.applyListeners([api('web')]), { refused: [] }, 'a control plane that never places us: plain state of the world');
  t.deepEqual(fresh.names(), []);
  t.false(fresh.applier.nodeKnown);
});

test('a cluster removed from CDS is freed at once when no listener names it, else kept without endpoints until its listener goes', async (t) => {
  const h = new FakeHost();
  const names = () => [...h.applier.clusters.keys()].sort();
  t.deepEqual(h.applier.applyClusters([eds('web'), eds('db'), eds('old')]), ['web', 'db', 'old']);
  h.applier.applyAssignments([
    { clusterName: 'web', endpoints: [{ address: '10.0.0.1', port: 80 }] },
    { clusterName: 'db', endpoints: [{ address: '10.0.0.2', port: 5432 }] },
  ]);
  await h.applier.applyListeners([outbound('web', 18080), outbound('db', 15432)]);
  t.deepEqual(h.applier.applyClusters([eds('web')]), ['web']);
  t.deepEqual(names(), ['db', 'web'], '"old" is freed; "db" is still named by outbound|db');
  t.deepEqual(apps(h.applier.clusters.get('db')!), [], 'db refuses connections (no endpoint)');
  t.deepEqual(
    h.dumped().clusters.map((c) => c.name),
    ['web', 'db'],
  );
  // The listener goes: so does the cluster.
  await h.applier.applyListeners([outbound('web', 18080)]);
  t.deepEqual(names(), ['web']);
  t.deepEqual(
    h.dumped().clusters.map((c) => c.name),
    ['web'],
  );
  // Back in CDS: a new cluster, without the old assignment (it went with the cluster) until EDS sends one.
  h.applier.applyClusters([eds('web'), eds('db')]);
  t.deepEqual(apps(h.applier.clusters.get('db')!), []);
  h.applier.applyAssignments([{ clusterName: 'db', endpoints: [{ address: '10.0.0.3', port: 5432 }] }]);
  t.deepEqual(apps(h.applier.clusters.get('db')!), [{ address: '10.0.0.3', port: 5432 }]);
});

test('a cluster still named by a listener gets its endpoints back when CDS brings it back', async (t) => {
  const h = new FakeHost();
  h.applier.applyClusters([eds('db')]);
  await h.applier.applyListeners([outbound('db', 15432)]);
  const cluster = h.applier.clusters.get('db')!;
  h.applier.applyClusters([]);
  t.is(h.applier.clusters.get('db'), cluster, 'the listener keeps its cluster object');
  h.applier.applyClusters([eds('db')]);
  h.applier.applyAssignments([{ clusterName: 'db', endpoints: [{ address: '10.0.0.2', port: 5432 }] }]);
  t.is(h.applier.clusters.get('db'), cluster);
  t.deepEqual(apps(cluster), [{ address: '10.0.0.2', port: 5432 }]);
});

test("a cluster's lb_policy is applied in place: the same cluster object balances by least_request, then round robin again", (t) => {
  const h = new FakeHost();
  h.applier.applyClusters([eds('web')]);
  const cluster = h.applier.clusters.get('web')!;
  h.applier.applyAssignments([{ clusterName: 'web', endpoints: [{ address: '10.0.0.1', port: 80 }, { address: '10.0.0.2', port: 80 }] }]);
  // One endpoint is busy: least_request never picks it (two endpoints are always both drawn), round robin alternates.
  const busy = (e: UpstreamEndpoint) => (e.facts.app?.address === '10.0.0.1' ? 5 : 0);
  const picks = () => Array.from({ length: 4 }, () => cluster.pick(busy)!.facts.app?.address);
  t.deepEqual(picks(), ['10.0.0.1', '10.0.0.2', '10.0.0.1', '10.0.0.2']);
  h.applier.applyClusters([{ ...eds('web'), lbPolicy: 'least_request' }]);
  t.is(h.applier.clusters.get('web'), cluster);
  t.is(cluster.settings.lbPolicy, 'least_request');
  t.deepEqual(picks(), ['10.0.0.2', '10.0.0.2', '10.0.0.2', '10.0.0.2']);
  h.applier.applyClusters([eds('web')]);
  t.is(cluster.settings.lbPolicy, undefined);
  t.deepEqual(new Set(picks()), new Set(['10.0.0.1', '10.0.0.2']));
});

test('a cluster refused by validation keeps its last good version and its EDS subscription; an assignment for a cluster we do not have is dropped', (t) => {
  const h = new FakeHost();
  h.applier.applyClusters([eds('web'), { ...eds('db'), edsServiceName: 'db-v1' }]);
  h.applier.applyAssignments([{ clusterName: 'db-v1', endpoints: [{ address: '10.0.0.2', port: 5432 }] }]);
  t.deepEqual(h.applier.applyClusters([eds('web')], refusedNames('db')), ['web', 'db-v1']);
  t.deepEqual(apps(h.applier.clusters.get('db')!), [{ address: '10.0.0.2', port: 5432 }]);
  h.applier.applyAssignments([{ clusterName: 'gone', endpoints: [{ address: '10.0.0.9', port: 1 }] }]);
  t.deepEqual([...h.applier.clusters.keys()].sort(), ['db', 'web']);
  // An unreadable cluster in the state: nothing is removed.
  t.deepEqual(h.applier.applyClusters([], { names: new Set(), unnamed: true }), ['web', 'db-v1']);
});

test('an EDS or RDS response that leaves some subscribed resources out keeps theirs (the control plane sends only what changed)', async (t) => {
  const h = new FakeHost();
  h.applier.applyClusters([eds('web'), eds('db')]);
  h.applier.applyAssignments([
    { clusterName: 'web', endpoints: [{ address: '10.0.0.1', port: 80 }] },
    { clusterName: 'db', endpoints: [{ address: '10.0.0.2', port: 5432 }] },
  ]);
  h.applier.applyAssignments([{ clusterName: 'web', endpoints: [{ address: '10.0.0.9', port: 80 }] }]);
  t.deepEqual(apps(h.applier.clusters.get('web')!), [{ address: '10.0.0.9', port: 80 }]);
  t.deepEqual(apps(h.applier.clusters.get('db')!), [{ address: '10.0.0.2', port: 5432 }], 'db is not in the response: its endpoints stay');
  h.applier.applyAssignments([]);
  t.deepEqual(apps(h.applier.clusters.get('db')!), [{ address: '10.0.0.2', port: 5432 }], 'an empty response removes nothing');

  await h.applier.applyListeners([api('web'), api('db')]);
  const db = { name: 'db', virtualHosts: [] };
  const web2 = { name: 'web', virtualHosts: [] };
  await h.applier.applyRoutes([{ name: 'web', virtualHosts: [] }, db]);
  await h.applier.applyRoutes([web2]);
  t.is(h.applier.routes.get('web'), web2);
  t.is(h.applier.routes.get('db'), db, 'db is not in the response: its route configuration stays');
});

test('route configurations follow the API listeners; a refused API listener keeps its subscription; a route configuration goes with its listener', async (t) => {
  const h = new FakeHost();
  const route = (name: string) => ({ name, virtualHosts: [] });
  await h.applier.applyListeners([api('web'), api('db')]);
  t.deepEqual(h.applier.routeNames().sort(), ['db', 'web']);
  await h.applier.applyRoutes([route('web'), route('db'), route('other')]);
  t.deepEqual([...h.applier.routes.keys()].sort(), ['db', 'web'], 'one no listener names is dropped');
  await h.applier.applyListeners([api('web')], refusedNames('db'));
  t.deepEqual(h.applier.routeNames().sort(), ['db', 'web']);
  t.deepEqual([...h.applier.routes.keys()].sort(), ['db', 'web']);
  await h.applier.applyListeners([api('web')]);
  t.deepEqual(h.applier.routeNames(), ['web']);
  t.deepEqual([...h.applier.routes.keys()], ['web']);
});

test('our placement is the one the control plane sends with our outbound listeners; endpoints keep their VM facts whatever it is (the decision is per connection)', async (t) => {
  const h = new FakeHost();
  t.is(h.applier.placement, null, 'not placed before the first state');
  h.applier.applyClusters([eds('web')]);
  const endpoint = { address: '10.0.0.4', port: 80, vm: { vmId: 'vm-b', hypervisorId: 'hv-1', vsockCid: 4, vsockPort: 15007, tcpPort: 15006, vsockMode: 'direct', relayPort: 0 } } as const;
  h.applier.applyAssignments([{ clusterName: 'web', endpoints: [endpoint] }]);
  const facts = h.applier.clusters.get('web')!.endpoints;
  t.deepEqual(facts, [factsFromXds(endpoint)]);
  await h.applier.applyListeners([outbound('web', 18080)]);
  const placed = h.applier.placement;
  t.deepEqual(placed, here);
  await h.applier.applyListeners([outbound('web', 18080, { ...here })]);
  t.is(h.applier.placement, placed, 'an unchanged placement stays the same object (decisions are kept per placement object)');
  await h.applier.applyListeners([outbound('web', 18080, { vmId: 'vm-a', hypervisorId: 'hv-2' })]);
  t.deepEqual(h.applier.placement, { vmId: 'vm-a', hypervisorId: 'hv-2' });
  t.deepEqual(h.applier.clusters.get('web')!.endpoints, facts, 'the endpoints are not recomputed for a placement');
  t.deepEqual((h.dumped() as unknown as { local: unknown }).local, { vmId: 'vm-a', hypervisorId: 'hv-2' });
});

test("an xDS listener gets every setting it does not carry from the defaults a config file's listener gets", async (t) => {
  const h = new FakeHost();
  t.deepEqual(await h.applier.applyListeners([outbound('web', 18080), inbound]), { refused: [] });
  const file = parseSidecarConfig({
    node: { id: 'vm-a' },
    listeners: [
      { kind: 'outbound', name: 'web', port: 18080, cluster: 'web' },
      { kind: 'inbound', name: 'in', port: 15006, ports: [8080] },
    ],
    clusters: [{ name: 'web', endpoints: [{ address: '127.0.0.1', port: 1 }] }],
  }).listeners;
  const config = (name: string) => (h.open.get(name) as unknown as { config: unknown }).config;
  t.deepEqual(config('outbound|web'), { ...file[0], name: 'outbound|web' });
  t.deepEqual(config('inbound|vm-a'), { ...file[1], name: 'inbound|vm-a' });
});

test('a listener whose policies alone change keeps serving; the new policies are handed over for a re-check', async (t) => {
  const host = new FakeHost();
  const allowA: RbacFilter = { rules: { action: 'ALLOW', policies: [{ name: 'a', principals: [{ kind: 'exact', id: 'spiffe://td/vm/a' }] }] }, shadowRules: null };
  await host.applier.applyListeners([inbound]);
  const first = host.open.get('inbound|vm-a');
  t.deepEqual([...host.policies.at(-1)!], []);
  await host.applier.applyListeners([{ ...inbound, rbac: [{ port: 8080, filters: [allowA] }] }]);
  t.is(host.open.get('inbound|vm-a'), first, 'not reopened');
  t.deepEqual(host.retired, []);
  t.deepEqual([...host.policies.at(-1)!], [[8080, [allowA]]]);
  t.like(host.dumped().listeners[0], { name: 'inbound|vm-a', rbac: [{ port: 8080 }] }, 'the dump shows the policies in service');
  await host.applier.applyListeners([{ ...inbound, port: 15007, rbac: [{ port: 8080, filters: [allowA] }] }]);
  t.not(host.open.get('inbound|vm-a'), first, 'a change of anything else reopens it');
  t.deepEqual([...host.policies.at(-1)!], [[8080, [allowA]]], 'with its policies');
  await host.applier.applyListeners([]);
  t.deepEqual([...host.policies.at(-1)!], [], 'a removed inbound listener takes its policies with it');
});

const httpOutbound = (service: string, port: number): XdsListener => ({ name: `outbound|${service}`, kind: 'http_outbound', address: '127.0.0.1', port, routeConfigName: `outbound|${service}`, local: here });
const toCluster = (name: string, cluster: string) => ({ name, virtualHosts: [{ name, domains: ['*'], routes: [{ path: { kind: 'prefix' as const, value: '/' }, headers: [], clusters: [{ name: cluster, weight: 1 }], timeoutMs: 0 }] }] });

test('an HTTP listener warms until its route configuration comes, then opens with it; a new version is swapped into the same listener', async (t) => {
  const h = new FakeHost();
  await h.applier.applyListeners([httpOutbound('web', 18080)]);
  t.deepEqual(h.names(), [], 'not opened without its routes');
  t.deepEqual(h.applier.routeNames(), ['outbound|web'], 'its routes are subscribed while it warms');
  t.like(h.dumped().listeners[0], { name: 'outbound|web', warming: true });
  await h.applier.applyRoutes([toCluster('outbound|web', 'web')]);
  t.deepEqual(h.names(), ['outbound|web']);
  const listener = h.open.get('outbound|web') as HttpOutboundListener;
  t.true(listener instanceof HttpOutboundListener);
  t.is(listener.routes.virtualHosts[0]!.routes[0]!.clusters[0]!.name, 'web');
  await h.applier.applyRoutes([toCluster('outbound|web', 'web-canary')]);
  t.is(h.open.get('outbound|web'), listener, 'the same listener (its connections stay)');
  t.is(listener.routes.virtualHosts[0]!.routes[0]!.clusters[0]!.name, 'web-canary');
  t.deepEqual(h.retired, []);
  // The same listener state again: nothing reopens.
  await h.applier.applyListeners([httpOutbound('web', 18080)]);
  t.is(h.open.get('outbound|web'), listener);
});

test('a changed HTTP listener warms while its previous version serves; a warming listener the state drops is forgotten', async (t) => {
  const h = new FakeHost();
  await h.applier.applyListeners([outbound('web', 18080)]);
  const tcp = h.open.get('outbound|web');
  await h.applier.applyListeners([httpOutbound('web', 18080)]);
  t.is(h.open.get('outbound|web'), tcp, 'the TCP version serves until the routes come');
  await h.applier.applyRoutes([toCluster('outbound|web', 'web')]);
  t.true(h.open.get('outbound|web') instanceof HttpOutboundListener);
  t.deepEqual(h.retired, [tcp]);
  await h.applier.applyListeners([httpOutbound('api', 18081)]);
  await h.applier.applyListeners([]);
  t.deepEqual(h.applier.routeNames(), []);
  await h.applier.applyRoutes([toCluster('outbound|api', 'api')]);
  t.deepEqual(h.names(), [], 'a dropped warming listener does not open later');
});

test('a warmed HTTP listener that cannot open is refused; its routes stay subscribed', async (t) => {
  const h = new FakeHost();
  h.taken.add(18080);
  await h.applier.applyListeners([httpOutbound('web', 18080)]);
  const refused = await h.applier.applyRoutes([toCluster('outbound|web', 'web')]);
  t.is(refused.length, 1);
  t.regex(refused[0]!.error, /EADDRINUSE/);
  t.deepEqual(h.names(), []);
});
