// The ADS server over real gRPC (127.0.0.1, port 0) with a raw client: what
// the I/O adds to the stream rules (test/unit/ads-stream.test.ts): responses
// encoded on the wire, what requests tell the server becoming sync status,
// metrics and log lines, per-node and default snapshots from the cache,
// backpressure, failing streams with a gRPC status, drain. No sleeps: a
// response that must not come is checked on the server's own count of
// responses, which it updates as it writes.

import test from 'ava';
import * as grpc from '@grpc/grpc-js';
import { createLogger } from '../../proxy/runtime/log.js';
import { waitFor } from '../helpers/apps.js';
import { LogCapture } from '../helpers/log-capture.js';
import { assignment, baseResources, CDS, cluster, EDS, LDS, listener, names, RDS, routes, snap } from '../helpers/xds-resources.js';
import { AdsServer } from '../../xds/control-plane/ads-server.js';
import { MAX_NACK_TEXT_BYTES, MAX_XDS_NAMES_PER_STREAM, MAX_XDS_NODE_ID_LENGTH, MAX_XDS_RESOURCE_NAME_LENGTH } from '../../xds/control-plane/bounds.js';
import { SnapshotCache } from '../../xds/control-plane/snapshot-cache.js';
import { AdsClient } from '../../xds/client/ads-client.js';
import { XdsApplier, type XdsApplierHost } from '../../proxy/xds-applier.js';
import {
  createAdsClient,
  packAny,
  unpackAny,
  type AggregatedDiscoveryServiceClient,
  type DeltaDiscoveryRequest,
  type DeltaDiscoveryResponse__Output,
  type DiscoveryRequest,
  type DiscoveryResponse__Output,
  type ResourceTypeUrl,
} from '../../xds/envoy/proto.js';

// ---- server and client ------------------------------------------------------------------

interface Harness {
  cache: SnapshotCache;
  ads: AdsServer;
  logs: LogCapture;
  address: string;
  client(): AggregatedDiscoveryServiceClient;
  sotw(): Stream<DiscoveryRequest, DiscoveryResponse__Output>;
  delta(): Stream<DeltaDiscoveryRequest, DeltaDiscoveryResponse__Output>;
}

async function start(
  t: { teardown(fn: () => void | Promise<void>): void },
  options: { onNodeSeen?: (nodeId: string, cache: SnapshotCache) => void; writeSlots?: { limit: number; holdMs: number } } = {},
): Promise<Harness> {
  const cache = new SnapshotCache();
  const logs = new LogCapture();
  const ads = new AdsServer({
    cache,
    logger: createLogger({ level: 'debug', destination: logs }),
    ...(options.onNodeSeen && { onNodeSeen: (nodeId: string) => options.onNodeSeen!(nodeId, cache) }),
    ...(options.writeSlots && { writeSlots: options.writeSlots }),
  });
  const server = new grpc.Server();
  ads.addTo(server);
  const port = await new Promise<number>((resolve, reject) => {
    server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (err, p) => (err ? reject(err) : resolve(p)));
  });
  const address = `127.0.0.1:${port}`;
  const clients: AggregatedDiscoveryServiceClient[] = [];
  const streams: Array<Stream<unknown, unknown>> = [];
  t.teardown(async () => {
    for (const s of streams) s.cancel();
    for (const c of clients) c.close();
    ads.stop();
    await new Promise<void>((resolve) => {
      const timer = setTimeout(() => {
        server.forceShutdown();
        resolve();
      }, 1_000);
      server.tryShutdown(() => {
        clearTimeout(timer);
        resolve();
      });
    });
  });
  const client = (): AggregatedDiscoveryServiceClient => {
    const c = createAdsClient(address, grpc.credentials.createInsecure());
    clients.push(c);
    return c;
  };
  let shared: AggregatedDiscoveryServiceClient | undefined;
  return {
    cache,
    ads,
    logs,
    address,
    client,
    sotw: () => {
      shared ??= client();
      const s = new Stream<DiscoveryRequest, DiscoveryResponse__Output>(shared.StreamAggregatedResources());
      streams.push(s as Stream<unknown, unknown>);
      return s;
    },
    delta: () => {
      shared ??= client();
      const s = new Stream<DeltaDiscoveryRequest, DeltaDiscoveryResponse__Output>(shared.DeltaAggregatedResources());
      streams.push(s as Stream<unknown, unknown>);
      return s;
    },
  };
}

/** A raw ADS stream: send requests, await responses one by one. */
class Stream<Req, Res> {
  private readonly queue: Res[] = [];
  private waiter: (() => void) | undefined;
  readonly status: Promise<grpc.StatusObject>;
  received = 0;

  constructor(private readonly call: grpc.ClientDuplexStream<Req, Res>) {
    call.on('data', (m: Res) => {
      this.received++;
      this.queue.push(m);
      this.waiter?.();
    });
    call.on('error', () => undefined); // the status promise reports it
    this.status = new Promise((resolve) => call.on('status', resolve));
  }

  send(req: Req): void {
    this.call.write(req);
  }

  async next(timeoutMs = 10_000): Promise<Res> {
    const deadline = Date.now() + timeoutMs;
    while (this.queue.length === 0) {
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`no response within ${timeoutMs} ms`);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, left);
        this.waiter = () => {
          clearTimeout(timer);
          resolve();
        };
      });
      this.waiter = undefined;
    }
    return this.queue.shift()!;
  }

  /** Responses received and not yet taken by next(). */
  get unread(): number {
    return this.queue.length;
  }

  cancel(): void {
    this.call.cancel();
  }
}

const NODE = { id: 'node-a', cluster: 'test' };
const WAIT_MS = 10_000;

function ack(res: DiscoveryResponse__Output, resourceNames: string[] = []): DiscoveryRequest {
  return { type_url: res.type_url, version_info: res.version_info, response_nonce: res.nonce, resource_names: resourceNames };
}

function statusOf(ads: AdsServer, nodeId: string, typeUrl: ResourceTypeUrl) {
  return ads.syncStatus().find((s) => s.nodeId === nodeId && s.typeUrl === typeUrl);
}

async function counter(ads: AdsServer, name: string, labels: Record<string, string> = {}): Promise<number> {
  const metric = await ads.metrics.getSingleMetric(name)?.get();
  const values = metric?.values.filter((v) => Object.entries(labels).every(([k, l]) => v.labels[k] === l)) ?? [];
  return values.reduce((sum, v) => sum + v.value, 0);
}

/** Responses the server has written (it counts as it writes). */
const written = (ads: AdsServer, kind: 'sotw' | 'delta' = 'sotw'): Promise<number> => counter(ads, 'vsockmesh_xds_responses_total', { kind });

// ---- state of the world -------------------------------------------------------------------

test('sotw: responses carry the snapshot\'s resources as encoded Anys; the sync status and metrics follow', async (t) => {
  const h = await start(t);
  h.cache.setSnapshot('node-a', snap(baseResources(), 'v1'));
  const s = h.sotw();
  s.send({ node: NODE, type_url: CDS, resource_names: [] });
  const cds = await s.next();
  t.is(cds.type_url, CDS);
  t.is(cds.version_info, 'v1');
  t.deepEqual(names(cds.resources), ['c1', 'c2']);
  t.is(unpackAny(cds.resources[0]!, CDS).eds_cluster_config?.service_name, 'c1');
  s.send({ type_url: EDS, resource_names: ['c1', 'missing'] });
  const eds = await s.next();
  t.is(eds.type_url, EDS);
  t.deepEqual(names(eds.resources), ['c1'], 'only the named assignments that exist');
  const lb = unpackAny(eds.resources[0]!, EDS).endpoints[0]!.lb_endpoints[0]!;
  t.is(lb.metadata?.filter_metadata.vsockmesh?.fields.vm_id?.stringValue, 'vm-c1');
  t.true(Number(eds.nonce) > Number(cds.nonce), 'nonces increase on the stream');
  t.like(statusOf(h.ads, 'node-a', CDS), { lastSentVersion: 'v1', lastAckVersion: null, lastNack: null });
  t.is(await counter(h.ads, 'vsockmesh_xds_streams', { kind: 'sotw' }), 1);
  t.is(await counter(h.ads, 'vsockmesh_xds_responses_total', { kind: 'sotw', type: 'eds' }), 1);
});

test('sotw: an ACK is recorded and counted, and nothing is sent for it', async (t) => {
  const h = await start(t);
  h.cache.setSnapshot('node-a', snap(baseResources(), 'v1'));
  const s = h.sotw();
  s.send({ node: NODE, type_url: CDS });
  const cds = await s.next();
  s.send(ack(cds));
  await waitFor(() => statusOf(h.ads, 'node-a', CDS)?.lastAckVersion === 'v1', 'the ACK', WAIT_MS);
  t.like(statusOf(h.ads, 'node-a', CDS), { lastSentVersion: 'v1', lastAckVersion: 'v1', lastNack: null });
  t.is(await counter(h.ads, 'vsockmesh_xds_acks_total', { type: 'cds' }), 1);
  t.is(await written(h.ads), 1, 'no resend');
});

test('sotw: a snapshot change is written in the order CDS, EDS, LDS, RDS', async (t) => {
  const h = await start(t);
  h.cache.setSnapshot('node-a', snap(baseResources(), 'v1'));
  const s = h.sotw();
  for (const [typeUrl, resourceNames] of [[RDS, ['r1']], [LDS, []], [EDS, ['c1']], [CDS, []]] as const) {
    s.send({ node: NODE, type_url: typeUrl, resource_names: [...resourceNames] });
    const r = await s.next();
    s.send(ack(r, [...resourceNames]));
  }
  s.send(ack(await s.next(), ['c1'])); // the EDS after the first CDS
  const next = baseResources();
  next[CDS] = [cluster('c1', 2), cluster('c2')];
  next[EDS] = [assignment('c1', '10.0.0.9'), assignment('c2', '10.0.0.2')];
  next[LDS] = [listener('l1', 15001), listener('l2', 15002)];
  next[RDS] = [routes('r1', 'c2')];
  h.cache.setSnapshot('node-a', snap(next, 'v2'));
  const pushed = [await s.next(), await s.next(), await s.next(), await s.next()];
  t.deepEqual(
    pushed.map((r) => [r.type_url, r.version_info]),
    [
      [CDS, 'v2'],
      [EDS, 'v2'],
      [LDS, 'v2'],
      [RDS, 'v2'],
    ],
  );
  t.deepEqual(names(pushed[2]!.resources), ['l1', 'l2']);
  t.is(await written(h.ads), 9, 'four subscriptions, the EDS after the first CDS, four pushes');
});

test('sotw: a change to one service\'s endpoints sends only its assignment; our ADS client keeps the others', async (t) => {
  const h = await start(t);
  const services = ['s1', 's2', 's3'];
  // Endpoints our sidecar accepts (the transport facts it needs are in their metadata).
  const endpoint = (name: string, ip: string) => {
    const a = unpackAny(assignment(name, ip).resource, EDS);
    a.endpoints[0]!.lb_endpoints[0]!.metadata!.filter_metadata.vsockmesh!.fields = {
      ...a.endpoints[0]!.lb_endpoints[0]!.metadata!.filter_metadata.vsockmesh!.fields,
      vsock_mode: { stringValue: 'direct' },
      relay_port: { numberValue: 0 },
    };
    return { name, resource: packAny(EDS, a) };
  };
  const resources = (s2ip: string) => ({ [CDS]: services.map((s) => cluster(s)), [EDS]: services.map((s) => endpoint(s, s === 's2' ? s2ip : `10.0.0.${s.slice(1)}`)) });
  h.cache.setSnapshot('node-a', snap(resources('10.0.0.2'), 'v1'));

  // A raw client: subscribed to every assignment, everything ACKed.
  const s = h.sotw();
  s.send({ node: NODE, type_url: CDS });
  s.send(ack(await s.next()));
  s.send({ type_url: EDS, resource_names: services });
  const first = await s.next();
  t.deepEqual(names(first.resources), services, 'a new subscription gets every assignment');
  s.send(ack(first, services));
  await waitFor(() => statusOf(h.ads, 'node-a', EDS)?.lastAckVersion === 'v1', 'the EDS ACK', WAIT_MS);

  // Our sidecar's client, applying into the sidecar's XdsApplier.
  const applier = new XdsApplier({
    addListener: () => Promise.reject(new Error('no listener in this test')),
    retireListener: () => undefined,
    applyPolicies: () => undefined,
  } as unknown as XdsApplierHost);
  const client = new AdsClient({
    addresses: [h.address],
    node: { id: 'node-b', cluster: 'test' },
    logger: createLogger({ level: 'silent' }),
    transport: { insecure: true },
    config: {
      clusters: (clusters, refused) => ({ assignmentNames: applier.applyClusters(clusters, refused) }),
      assignments: (assignments) => applier.applyAssignments(assignments),
      listeners: async (listeners, refused) => ({ refused: (await applier.applyListeners(listeners, refused)).refused, routeNames: applier.routeNames() }),
      routes: async (routes) => void (await applier.applyRoutes(routes)),
    },
  });
  t.teardown(() => client.stop());
  h.cache.setSnapshot('node-b', h.cache.get('node-a')!);
  const endpoints = () => services.map((name) => applier.clusters.get(name)?.endpoints.map((e) => e.app?.address) ?? []);
  client.start();
  await waitFor(() => statusOf(h.ads, 'node-b', EDS)?.lastAckVersion === 'v1', 'the client\'s EDS ACK', WAIT_MS);
  t.deepEqual(endpoints(), [['10.0.0.1'], ['10.0.0.2'], ['10.0.0.3']]);

  const before = await counter(h.ads, 'vsockmesh_xds_responses_total', { type: 'eds' });
  const next = snap(resources('10.0.9.2'), 'v1', { [EDS]: 'v2' });
  h.cache.setSnapshot('node-a', next);
  h.cache.setSnapshot('node-b', next);
  const pushed = await s.next();
  t.deepEqual([pushed.type_url, pushed.version_info, names(pushed.resources)], [EDS, 'v2', ['s2']], 'only the changed assignment');
  await waitFor(() => statusOf(h.ads, 'node-b', EDS)?.lastAckVersion === 'v2', 'the client\'s ACK of v2', WAIT_MS);
  t.deepEqual(endpoints(), [['10.0.0.1'], ['10.0.9.2'], ['10.0.0.3']], 'the client has s1 and s3 still, and the new s2');
  t.is((await counter(h.ads, 'vsockmesh_xds_responses_total', { type: 'eds' })) - before, 2, 'one EDS response per stream');
  t.is(s.unread, 0);
});

test('sotw: a NACK is recorded with its message, counted and logged, and the version is not resent', async (t) => {
  const h = await start(t);
  h.cache.setSnapshot('node-a', snap(baseResources(), 'v1'));
  const s = h.sotw();
  s.send({ node: NODE, type_url: LDS });
  const lds = await s.next();
  s.send({ type_url: LDS, version_info: '', response_nonce: lds.nonce, error_detail: { code: grpc.status.INVALID_ARGUMENT, message: 'listeners[0].address.port_value: must be 1..65535' } });
  await waitFor(() => statusOf(h.ads, 'node-a', LDS)?.lastNack != null, 'the NACK', WAIT_MS);
  t.is(await written(h.ads), 1, 'not resent');
  const st = statusOf(h.ads, 'node-a', LDS)!;
  t.like(st, { lastSentVersion: 'v1', lastAckVersion: null });
  t.like(st.lastNack, { version: 'v1', error: 'listeners[0].address.port_value: must be 1..65535' });
  t.is(await counter(h.ads, 'vsockmesh_xds_nacks_total', { kind: 'sotw', type: 'lds' }), 1);
  const line = h.logs.withReason('nack')[0];
  t.like(line, { level: 'warn', node_id: 'node-a', type_url: LDS, version: 'v1', error: 'listeners[0].address.port_value: must be 1..65535' });

  // Re-setting the same version pushes nothing; a new version is pushed and can be ACKed.
  h.cache.setSnapshot('node-a', snap(baseResources(), 'v1'));
  t.is(await written(h.ads), 1);
  h.cache.setSnapshot('node-a', snap({ ...baseResources(), [LDS]: [listener('l1', 15009)] }, 'v1', { [LDS]: 'v2' }));
  const fixed = await s.next();
  t.is(fixed.version_info, 'v2');
  s.send(ack(fixed));
  await waitFor(() => statusOf(h.ads, 'node-a', LDS)?.lastAckVersion === 'v2', 'the ACK of v2', WAIT_MS);
  t.like(statusOf(h.ads, 'node-a', LDS), { lastAckVersion: 'v2', lastNack: { version: 'v1' } });
});

test('sotw: requests with a stale nonce are counted and change nothing', async (t) => {
  const h = await start(t);
  h.cache.setSnapshot('node-a', snap(baseResources(), 'v1'));
  const s = h.sotw();
  s.send({ node: NODE, type_url: EDS, resource_names: ['c1'] });
  const first = await s.next();
  h.cache.setSnapshot('node-a', snap(baseResources(), 'v1', { [EDS]: 'v2' }));
  const second = await s.next();
  t.is(second.version_info, 'v2');
  s.send(ack(first, ['c1', 'c2']));
  s.send({ type_url: EDS, version_info: 'v1', response_nonce: first.nonce, resource_names: ['c2'], error_detail: { code: 3, message: 'late NACK' } });
  s.send({ type_url: EDS, version_info: 'v1', response_nonce: 'no-such-nonce', resource_names: ['c2'] });
  await waitFor(async () => (await counter(h.ads, 'vsockmesh_xds_stale_requests_total', { type: 'eds' })) === 3, 'three stale requests', WAIT_MS);
  t.is(await written(h.ads), 2);
  t.like(statusOf(h.ads, 'node-a', EDS), { lastSentVersion: 'v2', lastAckVersion: null, lastNack: null });
  t.true(h.logs.lines.some((l) => l.msg === 'stale xDS nonce ignored' && l.latest_nonce === second.nonce));
  s.send(ack(second, ['c1']));
  await waitFor(() => statusOf(h.ads, 'node-a', EDS)?.lastAckVersion === 'v2', 'the ACK of v2', WAIT_MS);
  t.is(await written(h.ads), 2);
});

test('sotw: a node waits for a snapshot, and switches from the default to its own', async (t) => {
  const h = await start(t);
  const s = h.sotw();
  s.send({ node: { id: 'node-x' }, type_url: LDS });
  await waitFor(() => statusOf(h.ads, 'node-x', LDS) !== undefined, 'the request', WAIT_MS);
  t.is(await written(h.ads), 0, 'no snapshot yet: no answer');
  h.cache.setDefault(snap({ [LDS]: [listener('default-l', 15100)] }, 'd1'));
  const d = await s.next();
  t.deepEqual(names(d.resources), ['default-l']);
  s.send(ack(d));
  h.cache.setSnapshot('node-x', snap({ [LDS]: [listener('own-l', 15101)] }, 'x1'));
  const own = await s.next();
  t.deepEqual([own.version_info, names(own.resources)], ['x1', ['own-l']]);
});

test('onNodeSeen runs when a stream names its node, before the stream reads the node\'s snapshot', async (t) => {
  const seen: string[] = [];
  const h = await start(t, {
    onNodeSeen: (nodeId, cache) => {
      seen.push(nodeId);
      cache.setSnapshot(nodeId, snap({ [LDS]: [listener(`own-${nodeId}`, 15200)] }, 'own'));
    },
  });
  h.cache.setDefault(snap({ [LDS]: [listener('default-l', 15100)] }, 'd1'));
  const s = h.sotw();
  s.send({ node: { id: 'node-y' }, type_url: LDS });
  const first = await s.next();
  t.deepEqual([first.version_info, names(first.resources)], ['own', ['own-node-y']], 'the own snapshot, never the default');
  s.send({ type_url: CDS });
  await s.next();
  t.deepEqual(seen, ['node-y'], 'once per stream');
});

test('sotw: a stream that cannot write coalesces pushes: the latest state arrives, not every version', async (t) => {
  const h = await start(t);
  const big = 'x'.repeat(64 * 1024);
  h.cache.setSnapshot('node-a', snap({ [CDS]: [cluster('c1', 1, big)] }, 'v0'));
  const s = h.sotw();
  s.send({ node: NODE, type_url: CDS });
  const first = await s.next();
  s.send(ack(first));
  await waitFor(() => statusOf(h.ads, 'node-a', CDS)?.lastAckVersion === 'v0', 'the ACK', WAIT_MS);
  const before = s.received;
  const versions = 200;
  for (let i = 1; i <= versions; i++) h.cache.setSnapshot('node-a', snap({ [CDS]: [cluster('c1', 1, `${big}${i}`)] }, `v${i}`));
  let last = await s.next();
  while (last.version_info !== `v${versions}`) last = await s.next();
  t.is(s.unread, 0, 'nothing after the latest version');
  t.is(await written(h.ads), s.received, 'every response written has arrived');
  const received = s.received - before;
  t.log(`${received} responses for ${versions} versions`);
  t.true(received < versions / 2, `${received} responses for ${versions} versions`);
  t.is(unpackAny(last.resources[0]!, CDS).alt_stat_name, `${big}${versions}`);
  t.like(statusOf(h.ads, 'node-a', CDS), { lastSentVersion: `v${versions}` });
});

test('sotw: with one write slot for the whole server, every stream still gets the first response and every change, one write at a time', async (t) => {
  // holdMs of an hour: each slot comes back only when its write completed, so this runs on the write callbacks alone.
  const h = await start(t, { writeSlots: { limit: 1, holdMs: 3_600_000 } });
  const nodes = Array.from({ length: 12 }, (_, i) => `node-${i}`);
  const big = 'x'.repeat(32 * 1024);
  for (const n of nodes) h.cache.setSnapshot(n, snap({ [CDS]: [cluster('c1', 1, `${big}${n}`)] }, 'v0'));
  const streams = nodes.map((n) => {
    const s = h.sotw();
    s.send({ node: { id: n, cluster: 'test' }, type_url: CDS });
    return s;
  });
  for (const [i, s] of streams.entries()) {
    const first = await s.next(WAIT_MS);
    t.is(first.version_info, 'v0');
    t.is(unpackAny(first.resources[0]!, CDS).alt_stat_name, `${big}${nodes[i]}`);
    s.send(ack(first));
  }
  await waitFor(() => nodes.every((n) => statusOf(h.ads, n, CDS)?.lastAckVersion === 'v0'), 'every ACK', WAIT_MS);
  for (const n of nodes) h.cache.setSnapshot(n, snap({ [CDS]: [cluster('c1', 1, `${big}${n}-1`)] }, 'v1'));
  for (const [i, s] of streams.entries()) {
    const pushed = await s.next(WAIT_MS);
    t.is(pushed.version_info, 'v1');
    t.is(unpackAny(pushed.resources[0]!, CDS).alt_stat_name, `${big}${nodes[i]}-1`);
  }
  t.is(await written(h.ads), 2 * nodes.length, 'one response per stream and version');
});

// ---- delta -------------------------------------------------------------------------------

test('delta: resources with their versions, removals, ACK and NACK recorded, counted and logged', async (t) => {
  const h = await start(t);
  const s0 = snap(baseResources(), 'v1');
  h.cache.setSnapshot('node-a', s0);
  const d = h.delta();
  d.send({ node: NODE, type_url: CDS });
  const cds = await d.next();
  t.is(cds.type_url, CDS);
  t.is(cds.system_version_info, 'v1');
  t.deepEqual(
    cds.resources.map((r) => [r.name, r.version]),
    [
      ['c1', s0.resources[CDS].get('c1')!.version],
      ['c2', s0.resources[CDS].get('c2')!.version],
    ],
  );
  t.is(unpackAny(cds.resources[0]!.resource!, CDS).name, 'c1');
  t.deepEqual(cds.removed_resources, []);
  d.send({ type_url: CDS, response_nonce: cds.nonce });
  d.send({ type_url: EDS, resource_names_subscribe: ['c1', 'c2'] });
  const eds = await d.next();
  t.deepEqual(
    eds.resources.map((r) => r.name),
    ['c1', 'c2'],
  );
  d.send({ type_url: EDS, response_nonce: eds.nonce });
  await waitFor(async () => (await counter(h.ads, 'vsockmesh_xds_acks_total', { kind: 'delta' })) === 2, 'two ACKs', WAIT_MS);
  t.like(statusOf(h.ads, 'node-a', CDS), { lastSentVersion: 'v1', lastAckVersion: 'v1' });
  t.like(statusOf(h.ads, 'node-a', EDS), { lastSentVersion: 'v1', lastAckVersion: 'v1' });
  t.is(await written(h.ads, 'delta'), 2, 'an ACK needs no answer');

  // Removing cluster c2 and its assignment: removed_resources.
  h.cache.setSnapshot('node-a', snap({ [CDS]: [cluster('c1')], [EDS]: [assignment('c1', '10.1.1.1')] }, 'v4'));
  const cds4 = await d.next();
  t.like(cds4, { type_url: CDS, system_version_info: 'v4', resources: [], removed_resources: ['c2'] });
  const eds4 = await d.next();
  t.like(eds4, { type_url: EDS, removed_resources: ['c2'] });
  t.deepEqual(
    eds4.resources.map((r) => r.name),
    ['c1'],
  );
  d.send({ type_url: CDS, response_nonce: cds4.nonce, error_detail: { code: 3, message: 'cannot remove c2: in use' } });
  await waitFor(() => statusOf(h.ads, 'node-a', CDS)?.lastNack != null, 'the NACK', WAIT_MS);
  t.like(statusOf(h.ads, 'node-a', CDS), { lastAckVersion: 'v1', lastNack: { version: 'v4', error: 'cannot remove c2: in use' } });
  t.is(await counter(h.ads, 'vsockmesh_xds_nacks_total', { kind: 'delta', type: 'cds' }), 1);
  t.truthy(h.logs.withReason('nack').find((l) => l.kind === 'delta'));
  t.is(await written(h.ads, 'delta'), 4, 'a NACK is not answered');
  d.send({ type_url: EDS, response_nonce: 'stale' });
  d.send({ type_url: EDS, response_nonce: eds4.nonce });
  await waitFor(() => statusOf(h.ads, 'node-a', EDS)?.lastAckVersion === 'v4', 'the EDS ACK', WAIT_MS);
  t.like(statusOf(h.ads, 'node-a', EDS), { lastSentVersion: 'v4', lastAckVersion: 'v4', lastNack: null });
  t.is(await counter(h.ads, 'vsockmesh_xds_stale_requests_total', { kind: 'delta', type: 'eds' }), 1);
  t.is(await counter(h.ads, 'vsockmesh_xds_acks_total', { kind: 'delta' }), 3);
});

test('delta: a new stream with initial_resource_versions gets only what changed and removals', async (t) => {
  const h = await start(t);
  h.cache.setSnapshot('node-a', snap({ ...baseResources(), [CDS]: [cluster('c1'), cluster('c2'), cluster('c3')] }, 'v1'));
  const d1 = h.delta();
  d1.send({ node: NODE, type_url: CDS, resource_names_subscribe: ['*'] });
  const first = await d1.next();
  t.is(first.resources.length, 3);
  const had = Object.fromEntries(first.resources.map((r) => [r.name, r.version]));
  d1.cancel();
  await d1.status;

  // While the client is away: c2 changes, c3 goes.
  const s2 = snap({ ...baseResources(), [CDS]: [cluster('c1'), cluster('c2', 9)] }, 'v2');
  h.cache.setSnapshot('node-a', s2);
  const d2 = h.delta();
  d2.send({ node: NODE, type_url: CDS, initial_resource_versions: had });
  const resync = await d2.next();
  t.deepEqual(
    resync.resources.map((r) => [r.name, r.version]),
    [['c2', s2.resources[CDS].get('c2')!.version]],
  );
  t.deepEqual(resync.removed_resources, ['c3']);
  t.is(resync.system_version_info, 'v2');
  d2.send({ type_url: CDS, response_nonce: resync.nonce });
  await waitFor(() => statusOf(h.ads, 'node-a', CDS)?.lastAckVersion === 'v2', 'the ACK', WAIT_MS);
  t.like(statusOf(h.ads, 'node-a', CDS), { lastSentVersion: 'v2', lastAckVersion: 'v2' });
});

// ---- nodes, errors, drain -------------------------------------------------------------------

test('per-node snapshots: two nodes get different listeners; unknown nodes get the default', async (t) => {
  const h = await start(t);
  h.cache.setSnapshot('node-a', snap({ ...baseResources(), [LDS]: [listener('la', 15001)] }, 'a1'));
  h.cache.setSnapshot('node-b', snap({ ...baseResources(), [LDS]: [listener('lb', 15002)] }, 'b1'));
  h.cache.setDefault(snap({ ...baseResources(), [LDS]: [listener('ld', 15003)] }, 'd1'));
  const got: Record<string, string[]> = {};
  const streams = [];
  for (const id of ['node-a', 'node-b', 'node-unknown']) {
    const s = h.sotw();
    streams.push(s);
    s.send({ node: { id }, type_url: LDS });
    const r = await s.next();
    got[id] = [r.version_info, ...names(r.resources)];
  }
  t.deepEqual(got, { 'node-a': ['a1', 'la'], 'node-b': ['b1', 'lb'], 'node-unknown': ['d1', 'ld'] });
  // A change for node-b reaches node-b only; a new default reaches the unknown node only.
  h.cache.setSnapshot('node-b', snap({ ...baseResources(), [LDS]: [listener('lb', 15002), listener('lb2', 15004)] }, 'b2'));
  const b2 = await streams[1]!.next();
  t.deepEqual(names(b2.resources), ['lb', 'lb2']);
  h.cache.setDefault(snap({ ...baseResources(), [LDS]: [] }, 'd2'));
  const d2 = await streams[2]!.next();
  t.like(d2, { version_info: 'd2', resources: [] });
  t.is(await written(h.ads), 5, 'node-a was sent nothing more');
  t.deepEqual(
    h.ads
      .syncStatus()
      .filter((s) => s.typeUrl === LDS)
      .map((s) => [s.nodeId, s.lastSentVersion]),
    [
      ['node-a', 'a1'],
      ['node-b', 'b2'],
      ['node-unknown', 'd2'],
    ],
  );
});

test('closeStreams ends every stream with OK and refuses new ones', async (t) => {
  const h = await start(t);
  h.cache.setDefault(snap(baseResources(), 'v1'));
  const s = h.sotw();
  s.send({ node: NODE, type_url: CDS });
  await s.next();
  const d = h.delta();
  d.send({ node: NODE, type_url: CDS });
  await d.next();
  t.is(h.ads.streamCount, 2);
  h.ads.closeStreams();
  t.is((await s.status).code, grpc.status.OK);
  t.is((await d.status).code, grpc.status.OK);
  t.is(h.ads.streamCount, 0);
  t.is(await counter(h.ads, 'vsockmesh_xds_streams', { kind: 'delta' }), 0);
  const late = h.sotw();
  late.send({ node: NODE, type_url: CDS });
  t.is((await late.status).code, grpc.status.UNAVAILABLE);
});

test('sotw and delta: a stream whose first request has no node id fails with INVALID_ARGUMENT', async (t) => {
  const h = await start(t);
  h.cache.setDefault(snap(baseResources(), 'v1'));
  const s = h.sotw();
  s.send({ type_url: CDS });
  const status = await s.status;
  t.is(status.code, grpc.status.INVALID_ARGUMENT);
  t.regex(status.details, /node\.id/);
  const d = h.delta();
  d.send({ node: { cluster: 'no-id' }, type_url: CDS });
  t.is((await d.status).code, grpc.status.INVALID_ARGUMENT);
  // Later requests may omit the node.
  const ok = h.sotw();
  ok.send({ node: NODE, type_url: CDS });
  const cds = await ok.next();
  ok.send({ type_url: EDS, resource_names: ['c2'] });
  const eds = await ok.next();
  t.deepEqual([names(cds.resources), names(eds.resources)], [['c1', 'c2'], ['c2']]);
});

// Serial: requests of 32,768 names keep the event loop busy, which the timing of the concurrent tests would feel.
test.serial('bounds: a node id, resource name or version beyond its bound fails the stream with INVALID_ARGUMENT naming the field, logged with a reason', async (t) => {
  const h = await start(t);
  h.cache.setDefault(snap(baseResources(), 'v1'));
  const longId = h.sotw();
  longId.send({ node: { id: 'n'.repeat(MAX_XDS_NODE_ID_LENGTH + 1) }, type_url: CDS });
  t.like(await longId.status, { code: grpc.status.INVALID_ARGUMENT, details: `node.id: ${MAX_XDS_NODE_ID_LENGTH + 1} characters, more than ${MAX_XDS_NODE_ID_LENGTH}` });
  const atBound = h.sotw();
  atBound.send({ node: { id: 'n'.repeat(MAX_XDS_NODE_ID_LENGTH) }, type_url: CDS });
  t.deepEqual(names((await atBound.next()).resources), ['c1', 'c2'], 'a node id at the bound is served');

  const longName = h.sotw();
  longName.send({ node: NODE, type_url: EDS, resource_names: ['c1', 'c'.repeat(MAX_XDS_RESOURCE_NAME_LENGTH + 1)] });
  t.like(await longName.status, { code: grpc.status.INVALID_ARGUMENT, details: `resource_names[1]: ${MAX_XDS_RESOURCE_NAME_LENGTH + 1} characters, more than ${MAX_XDS_RESOURCE_NAME_LENGTH}` });
  const longVersion = h.delta();
  longVersion.send({ node: NODE, type_url: CDS, initial_resource_versions: { c1: 'v'.repeat(MAX_XDS_RESOURCE_NAME_LENGTH + 1) } });
  t.like(await longVersion.status, { code: grpc.status.INVALID_ARGUMENT, details: `initial_resource_versions (versions)[0]: ${MAX_XDS_RESOURCE_NAME_LENGTH + 1} characters, more than ${MAX_XDS_RESOURCE_NAME_LENGTH}` });

  t.deepEqual(
    h.logs.lines.filter((l) => l.msg?.toString().startsWith('xDS stream refused')).map((l) => [l.level, l.reason]),
    [
      ['warn', 'node_id_too_long'],
      ['warn', 'resource_name_too_long'],
      ['warn', 'resource_name_too_long'],
    ],
  );
  t.is(await counter(h.ads, 'vsockmesh_xds_requests_refused_total', { reason: 'resource_name_too_long' }), 2);
});

test.serial('bounds: a request naming, or a stream subscribed to, more resource names than the bound fails with RESOURCE_EXHAUSTED', async (t) => {
  const h = await start(t);
  h.cache.setDefault(snap(baseResources(), 'v1'));
  const many = (n: number, prefix: string): string[] => Array.from({ length: n }, (_, i) => `${prefix}${i}`);
  const atBound = h.sotw();
  atBound.send({ node: NODE, type_url: EDS, resource_names: ['c1', ...many(MAX_XDS_NAMES_PER_STREAM - 1, 'x')] });
  t.is((await atBound.next()).resources.length, 1, 'at the bound: served (the one name that exists)');
  const over = h.sotw();
  over.send({ node: NODE, type_url: EDS, resource_names: many(MAX_XDS_NAMES_PER_STREAM + 1, 'x') });
  t.like(await over.status, { code: grpc.status.RESOURCE_EXHAUSTED, details: `resource_names: ${MAX_XDS_NAMES_PER_STREAM + 1} names, more than ${MAX_XDS_NAMES_PER_STREAM}` });

  // Delta subscriptions add up across requests and types.
  const half = MAX_XDS_NAMES_PER_STREAM / 2;
  const d = h.delta();
  d.send({ node: NODE, type_url: EDS, resource_names_subscribe: many(half, 'e') });
  await d.next();
  d.send({ type_url: RDS, resource_names_subscribe: many(half, 'r') });
  await d.next();
  d.send({ type_url: RDS, resource_names_subscribe: ['one-more'] });
  t.like(await d.status, { code: grpc.status.RESOURCE_EXHAUSTED, details: `the stream's subscriptions: ${MAX_XDS_NAMES_PER_STREAM + 1} names, more than ${MAX_XDS_NAMES_PER_STREAM}` });
  t.is(await counter(h.ads, 'vsockmesh_xds_requests_refused_total', { reason: 'too_many_resource_names' }), 2);
  t.true(h.logs.lines.some((l) => l.reason === 'too_many_resource_names' && l.node_id === 'node-a' && l.level === 'warn'));
});

test('a NACK\'s error text is kept and logged cut to 4 KiB, marked as truncated', async (t) => {
  const h = await start(t);
  h.cache.setDefault(snap(baseResources(), 'v1'));
  const s = h.sotw();
  s.send({ node: NODE, type_url: CDS });
  const cds = await s.next();
  const error = `clusters[0]: ${'bad '.repeat(25_000)}`;
  s.send({ type_url: CDS, version_info: '', response_nonce: cds.nonce, error_detail: { code: 3, message: error } });
  await waitFor(() => statusOf(h.ads, 'node-a', CDS)?.lastNack != null, 'the NACK', WAIT_MS);
  const kept = statusOf(h.ads, 'node-a', CDS)!.lastNack!.error;
  t.is(kept, `${error.slice(0, MAX_NACK_TEXT_BYTES)}... (truncated, ${error.length} bytes)`);
  t.is(h.logs.withReason('nack')[0]?.error, kept);
});
