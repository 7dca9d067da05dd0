// The ADS server over real gRPC (127.0.0.1, port 0) with a raw client:
// state-of-the-world and delta protocol (subscriptions, ACK/NACK, stale
// nonces, push order, EDS after CDS, removals, reconnect with
// initial_resource_versions), per-node and default snapshots, backpressure,
// drain; plus the SnapshotCache and the Debouncer on their own.

import test from 'ava';
import { Writable } from 'node:stream';
import * as grpc from '@grpc/grpc-js';
import { createLogger } from '../../proxy/runtime/log.js';
import { waitFor } from '../helpers/apps.js';
import { AdsServer } from '../../xds/control-plane/ads-server.js';
import { MAX_NACK_TEXT_BYTES, MAX_XDS_NAMES_PER_STREAM, MAX_XDS_NODE_ID_LENGTH, MAX_XDS_RESOURCE_NAME_LENGTH } from '../../xds/control-plane/bounds.js';
import { Debouncer, SnapshotCache, makeSnapshot, type NamedResource, type Timers } from '../../xds/control-plane/snapshot-cache.js';
import type { Snapshot } from '../../xds/control-plane/types.js';
import {
  createAdsClient,
  packAny,
  TYPE_URLS,
  unpackAny,
  type AggregatedDiscoveryServiceClient,
  type Any__Output,
  type DeltaDiscoveryRequest,
  type DeltaDiscoveryResponse__Output,
  type DiscoveryRequest,
  type DiscoveryResponse__Output,
  type ResourceTypeUrl,
} from '../../xds/envoy/proto.js';

const CDS = TYPE_URLS.Cluster;
const EDS = TYPE_URLS.ClusterLoadAssignment;
const LDS = TYPE_URLS.Listener;
const RDS = TYPE_URLS.RouteConfiguration;

// ---- resources ----------------------------------------------------------------------

function cluster(name: string, timeoutSeconds = 1, altStatName = ''): NamedResource {
  return {
    name,
    resource: packAny(CDS, {
      name,
      type: 'EDS',
      connect_timeout: { seconds: timeoutSeconds },
      lb_policy: 'ROUND_ROBIN',
      eds_cluster_config: { service_name: name, eds_config: { ads: {}, resource_api_version: 'V3' } },
      ...(altStatName !== '' && { alt_stat_name: altStatName }),
    }),
  };
}

function assignment(name: string, ip: string, port = 8080): NamedResource {
  return {
    name,
    resource: packAny(EDS, {
      cluster_name: name,
      endpoints: [
        {
          lb_endpoints: [
            {
              endpoint: { address: { socket_address: { address: ip, port_value: port } } },
              metadata: {
                filter_metadata: {
                  vsockmesh: { fields: { vm_id: { stringValue: `vm-${name}` }, hypervisor_id: { stringValue: 'hv-1' }, vsock_cid: { numberValue: 3 }, vsock_port: { numberValue: 15001 }, tcp_port: { numberValue: port } } },
                },
              },
            },
          ],
        },
      ],
    }),
  };
}

function listener(name: string, port: number, clusterName = 'c1'): NamedResource {
  return {
    name,
    resource: packAny(LDS, {
      name,
      address: { socket_address: { address: '127.0.0.1', port_value: port } },
      filter_chains: [{ filters: [{ name: 'envoy.filters.network.tcp_proxy', typed_config: packAny(TYPE_URLS.TcpProxy, { stat_prefix: name, cluster: clusterName }) }] }],
    }),
  };
}

function routes(name: string, clusterName = 'c1', prefix = '/'): NamedResource {
  return {
    name,
    resource: packAny(RDS, {
      name,
      virtual_hosts: [{ name: 'all', domains: ['*'], routes: [{ match: { prefix }, route: { cluster: clusterName } }] }],
    }),
  };
}

type Versions = Partial<Record<ResourceTypeUrl, string>>;

/** c1, c2 (EDS clusters) with assignments, listener l1, routes r1; per-type versions `v` unless overridden. */
function baseResources(): Record<ResourceTypeUrl, NamedResource[]> {
  return {
    [CDS]: [cluster('c1'), cluster('c2')],
    [EDS]: [assignment('c1', '10.0.0.1'), assignment('c2', '10.0.0.2')],
    [LDS]: [listener('l1', 15001)],
    [RDS]: [routes('r1')],
  };
}

function snap(resources: Partial<Record<ResourceTypeUrl, NamedResource[]>>, v: string, versions: Versions = {}): Snapshot {
  return makeSnapshot(resources, { [CDS]: v, [EDS]: v, [LDS]: v, [RDS]: v, ...versions });
}

function names(resources: Any__Output[]): string[] {
  return resources.map((r) => {
    const m = unpackAny<{ name?: string; cluster_name?: string }>(r);
    return m.cluster_name ?? m.name ?? '';
  });
}

// ---- server and client ------------------------------------------------------------------

class Lines extends Writable {
  readonly lines: Array<Record<string, unknown>> = [];
  override _write(chunk: Buffer, _encoding: BufferEncoding, done: () => void): void {
    for (const line of chunk.toString('utf8').split('\n')) if (line) this.lines.push(JSON.parse(line) as Record<string, unknown>);
    done();
  }
}

interface Harness {
  cache: SnapshotCache;
  ads: AdsServer;
  logs: Lines;
  address: string;
  client(): AggregatedDiscoveryServiceClient;
  sotw(): Stream<DiscoveryRequest, DiscoveryResponse__Output>;
  delta(): Stream<DeltaDiscoveryRequest, DeltaDiscoveryResponse__Output>;
}

async function start(t: { teardown(fn: () => void | Promise<void>): void }, cache = new SnapshotCache()): Promise<Harness> {
  const logs = new Lines();
  const ads = new AdsServer({ cache, logger: createLogger({ level: 'debug', destination: logs }) });
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
    ads.closeStreams();
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

/** A raw ADS stream: send requests, await responses one by one, or assert that none comes. */
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

  async next(timeoutMs = 3_000): Promise<Res> {
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

  /** Resolves with what arrived within `ms` (expected: nothing). */
  async quiet(ms = 200): Promise<Res[]> {
    await new Promise((resolve) => setTimeout(resolve, ms));
    return this.queue.splice(0);
  }

  cancel(): void {
    this.call.cancel();
  }
}

const NODE = { id: 'node-a', cluster: 'test' };

function ack(res: DiscoveryResponse__Output, resourceNames: string[] = []): DiscoveryRequest {
  return { type_url: res.type_url, version_info: res.version_info, response_nonce: res.nonce, resource_names: resourceNames };
}

function statusOf(ads: AdsServer, nodeId: string, typeUrl: ResourceTypeUrl) {
  return ads.syncStatus().find((s) => s.nodeId === nodeId && s.typeUrl === typeUrl);
}

async function counter(ads: AdsServer, name: string, labels: Record<string, string>): Promise<number> {
  const metric = await ads.metrics.getSingleMetric(name)?.get();
  const values = metric?.values.filter((v) => Object.entries(labels).every(([k, l]) => v.labels[k] === l)) ?? [];
  return values.reduce((sum, v) => sum + v.value, 0);
}

/** A SotW stream subscribed to CDS (wildcard), EDS [c1], LDS (wildcard), RDS [r1], everything ACKed. */
async function subscribedSotw(h: Harness): Promise<{ s: Stream<DiscoveryRequest, DiscoveryResponse__Output>; last: Record<string, DiscoveryResponse__Output> }> {
  const s = h.sotw();
  s.send({ node: NODE, type_url: CDS });
  const cds = await s.next();
  s.send(ack(cds));
  s.send({ type_url: EDS, resource_names: ['c1'] });
  const eds = await s.next();
  s.send(ack(eds, ['c1']));
  s.send({ type_url: LDS });
  const lds = await s.next();
  s.send(ack(lds));
  s.send({ type_url: RDS, resource_names: ['r1'] });
  const rds = await s.next();
  s.send(ack(rds, ['r1']));
  return { s, last: { [CDS]: cds, [EDS]: eds, [LDS]: lds, [RDS]: rds } };
}

// ---- state of the world -------------------------------------------------------------------

test('sotw: a wildcard CDS request gets every cluster, a named EDS request the named assignment', async (t) => {
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
  t.is(eds.version_info, 'v1');
  t.deepEqual(names(eds.resources), ['c1'], 'only the named assignments that exist');
  const lb = unpackAny(eds.resources[0]!, EDS).endpoints[0]!.lb_endpoints[0]!;
  t.is(lb.metadata?.filter_metadata.vsockmesh?.fields.vm_id?.stringValue, 'vm-c1');
  t.true(Number(eds.nonce) > Number(cds.nonce), 'nonces increase on the stream');
  t.like(statusOf(h.ads, 'node-a', CDS), { lastSentVersion: 'v1', lastAckVersion: null, lastNack: null });
  t.is(await counter(h.ads, 'vsockmesh_xds_streams', { kind: 'sotw' }), 1);
  t.is(await counter(h.ads, 'vsockmesh_xds_responses_total', { kind: 'sotw', type: 'eds' }), 1);
});

test('sotw: an ACK is recorded and triggers no resend', async (t) => {
  const h = await start(t);
  h.cache.setSnapshot('node-a', snap(baseResources(), 'v1'));
  const s = h.sotw();
  s.send({ node: NODE, type_url: CDS });
  const cds = await s.next();
  s.send(ack(cds));
  t.deepEqual(await s.quiet(), []);
  t.like(statusOf(h.ads, 'node-a', CDS), { lastSentVersion: 'v1', lastAckVersion: 'v1', lastNack: null });
  t.is(await counter(h.ads, 'vsockmesh_xds_acks_total', { type: 'cds' }), 1);
});

test('sotw: a snapshot change is pushed in the order CDS, EDS, LDS, RDS, only for changed types', async (t) => {
  const h = await start(t);
  h.cache.setSnapshot('node-a', snap(baseResources(), 'v1'));
  // Subscribe in another order than the push order.
  const s = h.sotw();
  s.send({ node: NODE, type_url: RDS, resource_names: ['r1'] });
  const rds = await s.next();
  s.send(ack(rds, ['r1']));
  s.send({ type_url: LDS });
  const lds = await s.next();
  s.send(ack(lds));
  s.send({ type_url: EDS, resource_names: ['c1'] });
  const eds = await s.next();
  s.send(ack(eds, ['c1']));
  s.send({ type_url: CDS });
  const cds1 = await s.next();
  t.is(cds1.type_url, CDS);
  const edsAfter = await s.next();
  t.is(edsAfter.type_url, EDS, 'the first CDS response is followed by EDS too');
  s.send(ack(cds1));
  s.send(ack(edsAfter, ['c1']));
  t.deepEqual(await s.quiet(), []);

  const next = baseResources();
  next[CDS] = [cluster('c1', 2), cluster('c2')];
  next[EDS] = [assignment('c1', '10.0.0.9'), assignment('c2', '10.0.0.2')];
  next[LDS] = [listener('l1', 15001), listener('l2', 15002)];
  next[RDS] = [routes('r1', 'c2')];
  h.cache.setSnapshot('node-a', snap(next, 'v2'));
  const pushed = [await s.next(), await s.next(), await s.next(), await s.next()];
  t.deepEqual(
    pushed.map((r) => r.type_url),
    [CDS, EDS, LDS, RDS],
  );
  t.true(pushed.every((r) => r.version_info === 'v2'));
  t.deepEqual(names(pushed[2]!.resources), ['l1', 'l2'], 'LDS is the full state');
  t.deepEqual(await s.quiet(), [], 'EDS changed and followed CDS: sent once');
  for (const r of pushed) s.send(ack(r, r.type_url === EDS ? ['c1'] : r.type_url === RDS ? ['r1'] : []));

  // Only EDS and RDS change: only they are pushed, EDS first.
  next[EDS] = [assignment('c1', '10.0.0.10'), assignment('c2', '10.0.0.2')];
  next[RDS] = [routes('r1', 'c1')];
  h.cache.setSnapshot('node-a', snap(next, 'v2', { [EDS]: 'v3', [RDS]: 'v3' }));
  const second = [await s.next(), await s.next()];
  t.deepEqual(
    second.map((r) => [r.type_url, r.version_info]),
    [
      [EDS, 'v3'],
      [RDS, 'v3'],
    ],
  );
  t.deepEqual(await s.quiet(), []);
});

test('sotw: EDS is sent again after every CDS push, even unchanged', async (t) => {
  const h = await start(t);
  h.cache.setSnapshot('node-a', snap(baseResources(), 'v1'));
  const { s, last } = await subscribedSotw(h);
  const next = baseResources();
  next[CDS] = [cluster('c1', 5), cluster('c2')];
  h.cache.setSnapshot('node-a', snap(next, 'v1', { [CDS]: 'v2' }));
  const cds = await s.next();
  t.like(cds, { type_url: CDS, version_info: 'v2' });
  const eds = await s.next();
  t.like(eds, { type_url: EDS, version_info: 'v1' });
  t.deepEqual(names(eds.resources), ['c1']);
  t.not(eds.nonce, last[EDS]!.nonce);
  t.deepEqual(await s.quiet(), [], 'LDS and RDS did not change');
  s.send(ack(cds));
  s.send(ack(eds, ['c1']));
  t.deepEqual(await s.quiet(), []);
  t.like(statusOf(h.ads, 'node-a', EDS), { lastSentVersion: 'v1', lastAckVersion: 'v1' });
});

test('sotw: a NACK is recorded with its message, logged, and the version is not resent', async (t) => {
  const h = await start(t);
  h.cache.setSnapshot('node-a', snap(baseResources(), 'v1'));
  const s = h.sotw();
  s.send({ node: NODE, type_url: LDS });
  const lds = await s.next();
  s.send({ type_url: LDS, version_info: '', response_nonce: lds.nonce, error_detail: { code: grpc.status.INVALID_ARGUMENT, message: 'listeners[0].address.port_value: must be 1..65535' } });
  t.deepEqual(await s.quiet(), [], 'not resent');
  const st = statusOf(h.ads, 'node-a', LDS)!;
  t.like(st, { lastSentVersion: 'v1', lastAckVersion: null });
  t.like(st.lastNack, { version: 'v1', error: 'listeners[0].address.port_value: must be 1..65535' });
  t.is(await counter(h.ads, 'vsockmesh_xds_nacks_total', { kind: 'sotw', type: 'lds' }), 1);
  const line = h.logs.lines.find((l) => l.reason === 'nack');
  t.like(line, { level: 'warn', node_id: 'node-a', type_url: LDS, version: 'v1', error: 'listeners[0].address.port_value: must be 1..65535' });

  // Re-setting the same version pushes nothing; a new version is pushed and can be ACKed.
  h.cache.setSnapshot('node-a', snap(baseResources(), 'v1'));
  t.deepEqual(await s.quiet(), []);
  h.cache.setSnapshot('node-a', snap({ ...baseResources(), [LDS]: [listener('l1', 15009)] }, 'v1', { [LDS]: 'v2' }));
  const fixed = await s.next();
  t.is(fixed.version_info, 'v2');
  s.send(ack(fixed));
  await s.quiet(100);
  t.like(statusOf(h.ads, 'node-a', LDS), { lastAckVersion: 'v2', lastNack: { version: 'v1' } });
});

test('sotw: a request with a stale nonce is ignored entirely', async (t) => {
  const h = await start(t);
  h.cache.setSnapshot('node-a', snap(baseResources(), 'v1'));
  const s = h.sotw();
  s.send({ node: NODE, type_url: EDS, resource_names: ['c1'] });
  const first = await s.next();
  h.cache.setSnapshot('node-a', snap(baseResources(), 'v1', { [EDS]: 'v2' }));
  const second = await s.next();
  t.is(second.version_info, 'v2');
  // The ACK of the first response (and a new subscription on it) comes after the second was sent: stale.
  s.send(ack(first, ['c1', 'c2']));
  s.send({ type_url: EDS, version_info: 'v1', response_nonce: first.nonce, resource_names: ['c2'], error_detail: { code: 3, message: 'late NACK' } });
  s.send({ type_url: EDS, version_info: 'v1', response_nonce: 'no-such-nonce', resource_names: ['c2'] });
  t.deepEqual(await s.quiet(), []);
  t.like(statusOf(h.ads, 'node-a', EDS), { lastSentVersion: 'v2', lastAckVersion: null, lastNack: null });
  t.is(await counter(h.ads, 'vsockmesh_xds_stale_requests_total', { type: 'eds' }), 3);
  s.send(ack(second, ['c1']));
  t.deepEqual(await s.quiet(), []);
  t.like(statusOf(h.ads, 'node-a', EDS), { lastAckVersion: 'v2' });
});

test('sotw: changing the EDS subscription is answered with the assignments of the new names', async (t) => {
  const h = await start(t);
  h.cache.setSnapshot('node-a', snap(baseResources(), 'v1'));
  const s = h.sotw();
  s.send({ node: NODE, type_url: EDS, resource_names: ['c1'] });
  const r1 = await s.next();
  t.deepEqual(names(r1.resources), ['c1']);
  s.send(ack(r1, ['c1', 'c2']));
  const r2 = await s.next();
  t.deepEqual(names(r2.resources), ['c1', 'c2']);
  t.is(r2.version_info, 'v1');
  s.send(ack(r2, ['c2']));
  const r3 = await s.next();
  t.deepEqual(names(r3.resources), ['c2']);
  s.send(ack(r3, ['c2']));
  t.deepEqual(await s.quiet(), [], 'the same names again: an ACK, no answer');
  t.like(statusOf(h.ads, 'node-a', EDS), { lastAckVersion: 'v1' });
  // Only c2 is subscribed now: a change of c1 still bumps the type version, so EDS is pushed with c2.
  h.cache.setSnapshot('node-a', snap({ ...baseResources(), [EDS]: [assignment('c1', '10.9.9.9'), assignment('c2', '10.0.0.2')] }, 'v1', { [EDS]: 'v2' }));
  const r4 = await s.next();
  t.deepEqual(names(r4.resources), ['c2']);
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

// Serial: requests of 32,768 names keep the event loop busy, which the timing of the concurrent tests below would feel.
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
  const names = (n: number, prefix: string): string[] => Array.from({ length: n }, (_, i) => `${prefix}${i}`);
  const atBound = h.sotw();
  atBound.send({ node: NODE, type_url: EDS, resource_names: ['c1', ...names(MAX_XDS_NAMES_PER_STREAM - 1, 'x')] });
  t.is((await atBound.next(10_000)).resources.length, 1, 'at the bound: served (the one name that exists)');
  const over = h.sotw();
  over.send({ node: NODE, type_url: EDS, resource_names: names(MAX_XDS_NAMES_PER_STREAM + 1, 'x') });
  t.like(await over.status, { code: grpc.status.RESOURCE_EXHAUSTED, details: `resource_names: ${MAX_XDS_NAMES_PER_STREAM + 1} names, more than ${MAX_XDS_NAMES_PER_STREAM}` });

  // Delta subscriptions add up across requests and types.
  const half = MAX_XDS_NAMES_PER_STREAM / 2;
  const d = h.delta();
  d.send({ node: NODE, type_url: EDS, resource_names_subscribe: names(half, 'e') });
  await d.next(10_000);
  d.send({ type_url: RDS, resource_names_subscribe: names(half, 'r') });
  await d.next(10_000);
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
  await waitFor(() => statusOf(h.ads, 'node-a', CDS)?.lastNack != null, 'the NACK', 10_000);
  const kept = statusOf(h.ads, 'node-a', CDS)!.lastNack!.error;
  t.is(kept, `${error.slice(0, MAX_NACK_TEXT_BYTES)}... (truncated, ${error.length} bytes)`);
  t.is(h.logs.lines.find((l) => l.reason === 'nack')?.error, kept);
});

test('sotw: a node waits for a snapshot, and switches from the default to its own', async (t) => {
  const h = await start(t);
  const s = h.sotw();
  s.send({ node: { id: 'node-x' }, type_url: LDS });
  t.deepEqual(await s.quiet(), [], 'no snapshot yet: no answer');
  h.cache.setDefault(snap({ [LDS]: [listener('default-l', 15100)] }, 'd1'));
  const d = await s.next();
  t.deepEqual(names(d.resources), ['default-l']);
  s.send(ack(d));
  h.cache.setSnapshot('node-x', snap({ [LDS]: [listener('own-l', 15101)] }, 'x1'));
  const own = await s.next();
  t.deepEqual([own.version_info, names(own.resources)], ['x1', ['own-l']]);
});

test('sotw: a stream that cannot write coalesces pushes: the latest state arrives, not every version', async (t) => {
  const h = await start(t);
  const big = 'x'.repeat(64 * 1024);
  h.cache.setSnapshot('node-a', snap({ [CDS]: [cluster('c1', 1, big)] }, 'v0'));
  const s = h.sotw();
  s.send({ node: NODE, type_url: CDS });
  const first = await s.next();
  s.send(ack(first));
  await s.quiet(100);
  const before = s.received;
  const versions = 200;
  for (let i = 1; i <= versions; i++) h.cache.setSnapshot('node-a', snap({ [CDS]: [cluster('c1', 1, `${big}${i}`)] }, `v${i}`));
  let last = await s.next();
  while (last.version_info !== `v${versions}`) last = await s.next(5_000);
  t.deepEqual(await s.quiet(300), [], 'nothing after the latest version');
  const received = s.received - before;
  t.log(`${received} responses for ${versions} versions`);
  t.true(received < versions / 2, `${received} responses for ${versions} versions`);
  t.is(unpackAny(last.resources[0]!, CDS).alt_stat_name, `${big}${versions}`);
  t.like(statusOf(h.ads, 'node-a', CDS), { lastSentVersion: `v${versions}` });
});

// ---- delta -------------------------------------------------------------------------------

test('delta: subscribe, only changed resources, unsubscribe, removal, ACK and NACK', async (t) => {
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
  t.deepEqual(await d.quiet(), []);
  t.like(statusOf(h.ads, 'node-a', CDS), { lastSentVersion: 'v1', lastAckVersion: 'v1' });
  t.is(await counter(h.ads, 'vsockmesh_xds_acks_total', { kind: 'delta' }), 2);

  // Only c2's cluster changes: only c2 is sent (and no EDS after CDS in delta).
  const r2 = baseResources();
  r2[CDS] = [cluster('c1'), cluster('c2', 7)];
  h.cache.setSnapshot('node-a', snap(r2, 'v1', { [CDS]: 'v2' }));
  const cds2 = await d.next();
  t.deepEqual(
    cds2.resources.map((r) => r.name),
    ['c2'],
  );
  t.is(cds2.system_version_info, 'v2');
  t.deepEqual(await d.quiet(), []);
  d.send({ type_url: CDS, response_nonce: cds2.nonce });

  // Unsubscribe from c1's assignment: a change of c1 is not sent, a change of c2 is.
  d.send({ type_url: EDS, resource_names_unsubscribe: ['c1'], response_nonce: eds.nonce });
  t.deepEqual(await d.quiet(), [], 'an unsubscribe needs no answer');
  r2[EDS] = [assignment('c1', '10.1.1.1'), assignment('c2', '10.0.0.2')];
  h.cache.setSnapshot('node-a', snap(r2, 'v1', { [CDS]: 'v2', [EDS]: 'v2' }));
  t.deepEqual(await d.quiet(), [], 'no update for an unsubscribed name');
  r2[EDS] = [assignment('c1', '10.1.1.1'), assignment('c2', '10.2.2.2')];
  h.cache.setSnapshot('node-a', snap(r2, 'v1', { [CDS]: 'v2', [EDS]: 'v3' }));
  const eds3 = await d.next();
  t.deepEqual(
    eds3.resources.map((r) => r.name),
    ['c2'],
  );

  // Removing cluster c2 and its assignment: removed_resources.
  h.cache.setSnapshot('node-a', snap({ [CDS]: [cluster('c1')], [EDS]: [assignment('c1', '10.1.1.1')] }, 'v4'));
  const cds4 = await d.next();
  t.like(cds4, { type_url: CDS, system_version_info: 'v4', resources: [], removed_resources: ['c2'] });
  const eds4 = await d.next();
  t.like(eds4, { type_url: EDS, resources: [], removed_resources: ['c2'] });
  d.send({ type_url: CDS, response_nonce: cds4.nonce, error_detail: { code: 3, message: 'cannot remove c2: in use' } });
  t.deepEqual(await d.quiet(), [], 'a NACK is not answered');
  t.like(statusOf(h.ads, 'node-a', CDS), { lastAckVersion: 'v2', lastNack: { version: 'v4', error: 'cannot remove c2: in use' } });
  t.is(await counter(h.ads, 'vsockmesh_xds_nacks_total', { kind: 'delta', type: 'cds' }), 1);
  t.truthy(h.logs.lines.find((l) => l.reason === 'nack' && l.kind === 'delta'));
  d.send({ type_url: EDS, response_nonce: 'stale' });
  d.send({ type_url: EDS, response_nonce: eds4.nonce });
  await d.quiet(100);
  t.like(statusOf(h.ads, 'node-a', EDS), { lastAckVersion: 'v4' });
});

test('delta: a reconnect with initial_resource_versions gets only what changed and removals', async (t) => {
  const h = await start(t);
  const s1 = snap({ ...baseResources(), [CDS]: [cluster('c1'), cluster('c2'), cluster('c3')] }, 'v1');
  h.cache.setSnapshot('node-a', s1);
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
  await d2.quiet(100);
  t.like(statusOf(h.ads, 'node-a', CDS), { lastSentVersion: 'v2', lastAckVersion: 'v2' });

  // A client that is up to date gets an empty response (the version), and ACKs it.
  const d3 = h.delta();
  d3.send({ node: NODE, type_url: CDS, initial_resource_versions: { c1: s2.resources[CDS].get('c1')!.version, c2: s2.resources[CDS].get('c2')!.version } });
  const same = await d3.next();
  t.like(same, { system_version_info: 'v2', resources: [], removed_resources: [] });
  // Named EDS with an initial version for a name not subscribed: ignored.
  d3.send({ type_url: EDS, resource_names_subscribe: ['c1'], initial_resource_versions: { c1: s2.resources[EDS].get('c1')!.version, zz: 'x' } });
  const eds = await d3.next();
  t.like(eds, { resources: [], removed_resources: [] });
});

// ---- nodes, drain -------------------------------------------------------------------------

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
  t.deepEqual(await streams[0]!.quiet(), []);
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

// ---- snapshot cache and debouncer ------------------------------------------------------------

test('snapshot cache: watchers hear of their node and of the default; a failed check changes nothing', (t) => {
  const cache = new SnapshotCache({
    check: (s) => {
      if (s.versions[LDS] === 'bad') throw new Error('route to a missing cluster');
    },
  });
  const seen: string[] = [];
  const stop = cache.watch('n1', (s) => seen.push(s?.versions[LDS] ?? 'none'));
  cache.watch('n2', (s) => seen.push(`n2:${s?.versions[LDS] ?? 'none'}`));
  const d1 = snap({}, 'd1');
  cache.setDefault(d1);
  t.deepEqual(seen.splice(0), ['d1', 'n2:d1']);
  cache.setSnapshot('n1', snap({}, 'own'));
  t.deepEqual(seen.splice(0), ['own']);
  cache.setDefault(snap({}, 'd2'));
  t.deepEqual(seen.splice(0), ['n2:d2'], 'a node with its own snapshot ignores the default');
  t.throws(() => cache.setSnapshot('n1', snap({}, 'bad')), { message: /missing cluster/ });
  t.is(cache.get('n1')?.versions[LDS], 'own');
  cache.clearSnapshot('n1');
  t.deepEqual(seen.splice(0), ['d2']);
  t.is(cache.get('n3')?.versions[LDS], 'd2');
  stop();
  cache.setSnapshot('n1', snap({}, 'again'));
  t.deepEqual(seen, []);
  // Content versions: same bytes, same version; the type version follows its resources.
  const a = makeSnapshot({ [CDS]: [cluster('c1')] });
  const b = makeSnapshot({ [CDS]: [cluster('c1')] });
  const c = makeSnapshot({ [CDS]: [cluster('c1', 2)] });
  t.is(a.versions[CDS], b.versions[CDS]);
  t.not(a.versions[CDS], c.versions[CDS]);
  t.is(a.versions[LDS], c.versions[LDS]);
  t.throws(() => makeSnapshot({ [CDS]: [cluster('c1'), cluster('c1')] }), { message: /twice/ });
  t.throws(() => makeSnapshot({ [LDS]: [cluster('c1')] }), { message: /holds/ });
});

class FakeTimers implements Timers {
  private t = 0;
  private seq = 0;
  private readonly pending = new Map<number, { at: number; fn: () => void }>();
  now(): number {
    return this.t;
  }
  setTimeout(fn: () => void, ms: number): unknown {
    const id = ++this.seq;
    this.pending.set(id, { at: this.t + ms, fn });
    return id;
  }
  clearTimeout(handle: unknown): void {
    this.pending.delete(handle as number);
  }
  /** Moves the clock, firing due timers in order. */
  async advance(ms: number): Promise<void> {
    const end = this.t + ms;
    for (;;) {
      const due = [...this.pending.entries()].filter(([, p]) => p.at <= end).sort((x, y) => x[1].at - y[1].at)[0];
      if (due === undefined) break;
      this.pending.delete(due[0]);
      this.t = due[1].at;
      due[1].fn();
      await new Promise((resolve) => setImmediate(resolve));
    }
    this.t = end;
  }
}

test('debouncer: a burst runs once after the quiet time, a long burst at most every maxMs', async (t) => {
  const timers = new FakeTimers();
  const runs: number[] = [];
  const d = new Debouncer(() => void runs.push(timers.now()), { quietMs: 100, maxMs: 1000, timers });
  d.trigger();
  await timers.advance(50);
  d.trigger();
  await timers.advance(99);
  t.deepEqual(runs, []);
  await timers.advance(1);
  t.deepEqual(runs, [150]);
  // Triggers every 50 ms for 2.5 s: runs at the max interval, then once after the last.
  runs.length = 0;
  for (let i = 0; i < 50; i++) {
    d.trigger();
    await timers.advance(50);
  }
  await timers.advance(200);
  t.deepEqual(runs, [1150, 2150, 2700], 'bursts from 150 and 1150 run at their max; the last after the quiet time');
  t.false(d.pending);
  d.close();
});

test('debouncer: runs never overlap; triggers during a run and errors are handled', async (t) => {
  const timers = new FakeTimers();
  let release!: () => void;
  let active = 0;
  let maxActive = 0;
  const errors: unknown[] = [];
  let fail = false;
  const d = new Debouncer(
    async () => {
      active++;
      maxActive = Math.max(maxActive, active);
      await new Promise<void>((resolve) => (release = resolve));
      active--;
      if (fail) throw new Error('rebuild failed');
    },
    { quietMs: 10, maxMs: 100, timers, onError: (err) => errors.push(err) },
  );
  d.trigger();
  await timers.advance(10);
  t.is(d.runs, 1);
  d.trigger();
  await timers.advance(50);
  t.is(d.runs, 1, 'no second run while the first is in progress');
  fail = true;
  release();
  await new Promise((resolve) => setImmediate(resolve));
  await timers.advance(10);
  t.is(d.runs, 2);
  t.is(maxActive, 1);
  release();
  await d.flush();
  t.is((errors[0] as Error).message, 'rebuild failed');
  d.trigger();
  t.true(d.pending);
  const flushed = d.flush();
  release();
  await flushed;
  t.is(d.runs, 3, 'flush runs a pending burst at once');
  d.close();
  d.trigger();
  await timers.advance(1000);
  t.is(d.runs, 3, 'closed: triggers are ignored');
});
