import test from 'ava';
import { readFileSync } from 'node:fs';
import * as protoLoader from '@grpc/proto-loader';
import { CONVERSION, loadJsonDefinitions, protoJsonPath, type ConversionOptions, type MessageDefinition } from '../../xds/proto-json.js';

// The definitions loaded from proto/json/ against what @grpc/proto-loader
// makes of the same JSON descriptors: the same names, the same service
// methods, and for every message type the same decoding and encoding.
// (That proto/json/ matches the .proto files is checked by .ci/run: npm run
// gen:proto leaves no difference.)
const SETS: Array<[string, ConversionOptions]> = [
  ['envoy', CONVERSION],
  ['vm_manager', CONVERSION],
  ['config', CONVERSION],
  ['identity', CONVERSION],
  ['health', CONVERSION],
  ['etcd', { ...CONVERSION, longs: String }],
];

for (const [name, conversion] of SETS) {
  test(`${name}: the same names, kinds and service methods as proto-loader's definition of the same descriptors`, (t) => {
    const ours = loadJsonDefinitions(name, conversion);
    const theirs = protoLoader.fromJSON(JSON.parse(readFileSync(protoJsonPath(name), 'utf8')) as object, { keepCase: true, ...conversion });
    t.deepEqual(Object.keys(ours).sort(), Object.keys(theirs).sort());
    let services = 0;
    for (const [key, definition] of Object.entries(theirs)) {
      const mine = ours[key]!;
      if ('format' in definition) {
        t.is((mine as { format?: unknown }).format, definition.format, key);
        continue;
      }
      services++;
      const methods = mine as Record<string, protoLoader.MethodDefinition<object, object>>;
      t.deepEqual(Object.keys(methods), Object.keys(definition), key);
      for (const [method, m] of Object.entries(definition)) {
        const { path, requestStream, responseStream, originalName } = methods[method]!;
        t.deepEqual({ path, requestStream, responseStream, originalName }, { path: m.path, requestStream: m.requestStream, responseStream: m.responseStream, originalName: m.originalName }, `${key}.${method}`);
      }
    }
    t.true(services > 0, 'each set has a service');
  });

  test(`${name}: every message type decodes and encodes as proto-loader's serializers do`, (t) => {
    const ours = loadJsonDefinitions(name, conversion);
    const theirs = protoLoader.fromJSON(JSON.parse(readFileSync(protoJsonPath(name), 'utf8')) as object, { keepCase: true, ...conversion });
    let messages = 0;
    for (const [key, definition] of Object.entries(theirs)) {
      if (!('format' in definition) || definition.format !== 'Protocol Buffer 3 DescriptorProto') continue;
      const mine = ours[key] as MessageDefinition;
      const empty = definition.deserialize(Buffer.alloc(0));
      t.deepEqual(mine.deserialize(Buffer.alloc(0)), empty, `${key}: the decoded empty message (defaults, enum names, oneof fields)`);
      t.deepEqual(Buffer.from(mine.serialize(empty)), Buffer.from(definition.serialize(empty)), `${key}: its encoding`);
      messages++;
    }
    t.true(messages > 0);
  });
}

test('a message in an Envoy response decodes with every field as proto-loader decodes it', (t) => {
  const theirs = protoLoader.fromJSON(JSON.parse(readFileSync(protoJsonPath('envoy'), 'utf8')) as object, { keepCase: true, ...CONVERSION });
  const ours = loadJsonDefinitions('envoy');
  const name = 'envoy.config.cluster.v3.Cluster';
  const cluster = { name: 'web', type: 'EDS', connect_timeout: { seconds: 3, nanos: 5 }, lb_policy: 'LEAST_REQUEST', eds_cluster_config: { service_name: 'web', eds_config: { ads: {}, resource_api_version: 'V3' } }, per_connection_buffer_limit_bytes: { value: 65_536 } };
  const bytes = (theirs[name] as protoLoader.MessageTypeDefinition<object, object>).serialize(cluster);
  t.deepEqual(Buffer.from((ours[name] as MessageDefinition).serialize(cluster)), Buffer.from(bytes));
  t.deepEqual((ours[name] as MessageDefinition).deserialize(Buffer.from(bytes)), (theirs[name] as protoLoader.MessageTypeDefinition<object, object>).deserialize(Buffer.from(bytes)));
});

test('a name with no descriptors is a clear error', (t) => {
  t.throws(() => loadJsonDefinitions('no-such-set'), { message: /protocol buffer descriptors not found .*no-such-set\.json.*npm run gen:proto/ });
});
