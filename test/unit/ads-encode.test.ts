// The ADS server sends state-of-the-world responses pre-encoded; they must be
// exactly what the generated serializer would write.

import test from 'ava';
import { ENCODED_SETS_PER_MAP, SotwEncoder } from '../../xds/envoy/sotw-encoding.js';
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
      const actual = encoder.encode(clusters, names, 'v1', TYPE_URLS.Cluster, '7').toBuffer();
      t.deepEqual(actual, expected, `${JSON.stringify(names)}, round ${round}`);
      const decoded = method.responseDeserialize(actual);
      t.is(decoded.nonce, '7');
      t.is(decoded.resources.length, resources.length);
    }
  }
});

test('the resources part is encoded once per resource set and reused', (t) => {
  const encoder = new SotwEncoder();
  const one = encoder.encode(clusters, null, 'v1', TYPE_URLS.Cluster, '1').toBuffer();
  const two = encoder.encode(clusters, null, 'v1', TYPE_URLS.Cluster, '2').toBuffer();
  t.is(one.length, two.length);
  t.notDeepEqual(one, two, 'the nonce differs');
  const three = encoder.encode(clusters, null, 'v1', TYPE_URLS.Cluster, '3').toBuffer();
  t.deepEqual(three.subarray(0, -1), two.subarray(0, -1), 'the same bytes up to the nonce, from the cache');
});

test("a response is copied as grpc-js frames it: byteLength, then copy() into the frame after its 5-byte header", (t) => {
  const response = new SotwEncoder().encode(clusters, ['b'], 'v2', TYPE_URLS.Cluster, '9');
  const whole = response.toBuffer();
  t.is(response.byteLength, whole.length);
  const frame = Buffer.alloc(response.byteLength + 5, 0xee);
  t.is(response.copy(frame, 5), whole.length);
  t.deepEqual(frame.subarray(0, 5), Buffer.alloc(5, 0xee), 'the header is left alone');
  t.deepEqual(frame.subarray(5), whole);
  t.is(method.responseDeserialize(frame.subarray(5)).version_info, 'v2');
});

test('the encoded resources kept per resource map are bounded: the oldest name set goes first', (t) => {
  const many = makeSnapshot({
    [TYPE_URLS.Cluster]: Array.from({ length: ENCODED_SETS_PER_MAP + 2 }, (_, i) => ({ name: `c${i}`, resource: packAny(TYPE_URLS.Cluster, { name: `c${i}`, type: 'STATIC' }) })),
  }).resources[TYPE_URLS.Cluster];
  const encoder = new SotwEncoder();
  const resourcesOf = (names: string[]) => encoder.encode(many, names, 'v', TYPE_URLS.Cluster, '1');
  // The part a second encoding of the same set shares with the first: the cached bytes themselves.
  const parts = (r: object) => (r as unknown as { parts: Uint8Array[] }).parts[1]!;
  const sets = Array.from({ length: ENCODED_SETS_PER_MAP + 1 }, (_, i) => [`c${i}`]);
  for (const names of sets) resourcesOf(names); // the first use of the map is not cached
  for (const names of sets) resourcesOf(names);
  const first = parts(resourcesOf(sets[0]!));
  t.is(parts(resourcesOf(sets[0]!)), first, 'the most recent set is kept');
  // Every set once more: the cache holds the last ENCODED_SETS_PER_MAP only, so the first set was dropped and is encoded anew.
  for (const names of sets.slice(1)) resourcesOf(names);
  t.not(parts(resourcesOf(sets[0]!)), first);
});
