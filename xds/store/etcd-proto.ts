// Loads etcd's v3 API subset (proto/etcd/, as JSON descriptors in
// proto/json/etcd.json) at run time. int64 fields come as decimal strings:
// lease ids use all 64 bits (revisions fit a Number and are converted where
// read). The conversion must match ETCD_OPTIONS in proto/generate.mjs.

import { CONVERSION, loadGrpcObject } from '../proto-json.js';
import type { ProtoGrpcType as EtcdProto } from '../generated/etcd/rpc.js';

let loaded: EtcdProto | undefined;

export function etcdProto(): EtcdProto {
  loaded ??= loadGrpcObject<EtcdProto>('etcd', { ...CONVERSION, longs: String });
  return loaded;
}
