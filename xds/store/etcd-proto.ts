// Loads etcd's v3 API subset (proto/etcd/) at run time. int64 fields come as
// decimal strings: lease ids use all 64 bits (revisions fit a Number and are
// converted where read). The options must match ETCD_OPTIONS in proto/generate.mjs.

import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import type { ProtoGrpcType as EtcdProto } from '../generated/etcd/rpc.js';

let loaded: EtcdProto | undefined;

/** proto/etcd from the sources (xds/store/) and from the build output (dist/xds/store/). */
function etcdProtoRoot(): string {
  const candidates = ['../../proto/etcd', '../../../proto/etcd'].map((p) => fileURLToPath(new URL(p, import.meta.url)));
  const root = candidates.find((p) => existsSync(`${p}/etcdserverpb/rpc.proto`));
  if (root === undefined) throw new Error(`etcd .proto files not found (looked in ${candidates.join(', ')})`);
  return root;
}

export function etcdProto(): EtcdProto {
  loaded ??= grpc.loadPackageDefinition(
    protoLoader.loadSync('etcdserverpb/rpc.proto', { keepCase: true, longs: String, enums: String, defaults: true, oneofs: true, includeDirs: [etcdProtoRoot()] }),
  ) as unknown as EtcdProto;
  return loaded;
}
