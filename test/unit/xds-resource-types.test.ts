// The ADS client's resource types: each validates its own resources and
// hands the valid ones, as domain objects, to its own entry of the sidecar's
// pushed config; CDS and LDS name what to subscribe to next.

import test from 'ava';
import type { ListenersOutcome, PushedConfig, StateRefusals, XdsCluster, XdsClusterLoadAssignment, XdsListener, XdsRouteConfig } from '../../proxy/dynamic/types.js';
import { RESOURCE_TYPES } from '../../xds/client/resource-types.js';
import { packAny, TYPE_URLS } from '../../xds/envoy/proto.js';
import { assignment, cluster, listener, routes } from '../helpers/xds-resources.js';

/** A pushed config that records what each entry was given. */
function recorder(outcome: Partial<ListenersOutcome> = {}) {
  const got: Array<[string, unknown, StateRefusals | undefined, string | undefined]> = [];
  const config: PushedConfig = {
    clusters: (clusters: XdsCluster[], refused) => {
      got.push(['clusters', clusters, refused, undefined]);
      return { assignmentNames: clusters.map((c) => `eds-${c.name}`) };
    },
    assignments: (assignments: XdsClusterLoadAssignment[]) => void got.push(['assignments', assignments, undefined, undefined]),
    listeners: async (listeners: XdsListener[], refused, version) => {
      got.push(['listeners', listeners, refused, version]);
      return { refused: [], routeNames: ['r1'], ...outcome };
    },
    routes: async (rs: XdsRouteConfig[]) => void got.push(['routes', rs, undefined, undefined]),
  };
  return { config, got };
}

const none: StateRefusals = { names: new Set(), unnamed: false };

test('CDS and LDS are wildcards, EDS and RDS named; every type has its entry', (t) => {
  t.deepEqual(
    [...RESOURCE_TYPES.values()].map((r) => [r.typeUrl, r.wildcard]),
    [
      [TYPE_URLS.Cluster, true],
      [TYPE_URLS.ClusterLoadAssignment, false],
      [TYPE_URLS.Listener, true],
      [TYPE_URLS.RouteConfiguration, false],
    ],
  );
});

test('clusters reach the clusters entry as domain objects; the EDS names it returns are the next subscription', async (t) => {
  const { config, got } = recorder();
  const bad = packAny(TYPE_URLS.Cluster, { name: 'bad', type: 'EDS', lb_policy: 'MAGLEV', eds_cluster_config: { eds_config: { ads: {} } } });
  const validated = RESOURCE_TYPES.get(TYPE_URLS.Cluster)!.validate([cluster('c1').resource, bad]);
  t.deepEqual(validated.refused.map((r) => r.name), ['bad']);
  const refused = { names: new Set(['bad']), unnamed: false };
  t.deepEqual(await validated.deliver(config, refused, 'v1'), { subscribe: { typeUrl: TYPE_URLS.ClusterLoadAssignment, names: ['eds-c1'] } });
  t.deepEqual(got, [['clusters', [{ name: 'c1', kind: 'eds', connectTimeoutMs: 1_000, edsServiceName: 'c1' }], refused, undefined]]);
});

test('listeners reach the listeners entry with the version; its refusals and problem come back with the RDS names', async (t) => {
  const { config, got } = recorder({ refused: [{ name: 'l1', error: 'listener "l1": port taken' }], problem: 'node_unknown: ...' });
  const validated = RESOURCE_TYPES.get(TYPE_URLS.Listener)!.validate([listener('l1', 15001).resource]);
  t.deepEqual(await validated.deliver(config, none, 'v7'), {
    subscribe: { typeUrl: TYPE_URLS.RouteConfiguration, names: ['r1'] },
    refused: [{ name: 'l1', error: 'listener "l1": port taken' }],
    problem: 'node_unknown: ...',
  });
  t.deepEqual(got, [['listeners', [{ name: 'l1', kind: 'outbound', address: '127.0.0.1', port: 15001, cluster: 'c1' }], none, 'v7']]);
});

test('assignments and route configurations reach their entries; an entry that throws rejects the delivery', async (t) => {
  const { config, got } = recorder();
  const plain = packAny(TYPE_URLS.ClusterLoadAssignment, { cluster_name: 'c1', endpoints: [{ lb_endpoints: [{ endpoint: { address: { socket_address: { address: '10.0.0.1', port_value: 8080 } } } }] }] });
  const assignments = RESOURCE_TYPES.get(TYPE_URLS.ClusterLoadAssignment)!.validate([plain, assignment('c2', '10.0.0.2').resource]);
  t.deepEqual(
    assignments.refused.map((r) => r.name),
    ['c2'],
    'VM facts without vsock_mode and relay_port are refused',
  );
  t.deepEqual(await assignments.deliver(config, none, 'v1'), {});
  t.deepEqual(await RESOURCE_TYPES.get(TYPE_URLS.RouteConfiguration)!.validate([routes('r1').resource]).deliver(config, none, 'v1'), {});
  t.deepEqual(
    got.map(([entry, values]) => [entry, (values as Array<{ clusterName?: string; name?: string }>).map((v) => v.clusterName ?? v.name)]),
    [
      ['assignments', ['c1']],
      ['routes', ['r1']],
    ],
  );
  const throwing: PushedConfig = {
    ...config,
    assignments: () => {
      throw new Error('cannot apply');
    },
  };
  await t.throwsAsync(RESOURCE_TYPES.get(TYPE_URLS.ClusterLoadAssignment)!.validate([]).deliver(throwing, none, 'v2'), { message: 'cannot apply' });
});
