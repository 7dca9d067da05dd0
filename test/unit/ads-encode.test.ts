// The ADS server sends state-of-the-world responses pre-encoded; they must be
// exactly what the generated serializer would write.

import test from 'ava';
import { SotwEncoder } from '../../xds/envoy/sotw-encoding.js';
import { makeSnapshot } from '../../xds/control-plane/snapshot.js';
import { TYPE_URLS, adsServiceDefinition, packAny } from '../../xds/envoy/proto.js';

const snapshot = makeSnapshot({
  [TYPE_URLS.Cluster]: ['a', 'b', 'c'].map((name) => ({ name, resource: packAny(TYPE_URLS.Cluster, { name, type: 'EDS', eds_cluster_config: { eds_config: { ads: {} } } }) })),
});
const clusters = snapshot.resources[TYPE_URLS.Cluster];
const method = adsServiceDefinition().StreamAggregatedResources;

test('a pre-encoded response is byte for byte what the serializer writes, for all resources and for named ones', (t) => {
  const encoder = new SotwEncoder();
  for (const names of [null, ['c', 'a'], ['a', 'missing']]) {
    const resources = (names ?? [...clusters.keys()]).flatMap((n) => (clusters.has(n) ? [clusters.get(n)!.resource] : []));
    const expected = method.responseSerialize({ version_info: 'v1', resources, type_url: TYPE_URLS.Cluster, nonce: '7' });
    // Twice: the second time the resources part comes from the encoder's cache.
    for (const round of [1, 2]) {
      const actual = encoder.encode(clusters, names, 'v1', TYPE_URLS.Cluster, '7');
      t.deepEqual(actual, expected, `${JSON.stringify(names)}, round ${round}`);
      const decoded = method.responseDeserialize(actual);
      t.is(decoded.nonce, '7');
      t.is(decoded.resources.length, resources.length);
    }
  }
});

test('the resources part is encoded once per resource set and reused', (t) => {
  const encoder = new SotwEncoder();
  const one = encoder.encode(clusters, null, 'v1', TYPE_URLS.Cluster, '1');
  const two = encoder.encode(clusters, null, 'v1', TYPE_URLS.Cluster, '2');
  t.is(one.length, two.length);
  t.notDeepEqual(one, two, 'the nonce differs');
  const three = encoder.encode(clusters, null, 'v1', TYPE_URLS.Cluster, '3');
  t.deepEqual(three.subarray(0, -1), two.subarray(0, -1), 'the same bytes up to the nonce, from the cache');
});
