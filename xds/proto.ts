// Loads the .proto files in proto/ at run time (protobufjs through
// @grpc/proto-loader). The loader options must match proto/generate.mjs, which
// generates the typed messages in xds/generated/ from the same files.

import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import type { ProtoGrpcType as HealthProto } from './generated/health.js';
import type { ProtoGrpcType as VmManagerProto } from './generated/vm_manager.js';
import type { ProtoGrpcType as ConfigProto } from './generated/config.js';
import type { ProtoGrpcType as IdentityProto } from './generated/identity.js';

const LOADER_OPTIONS: protoLoader.Options = { keepCase: true, longs: Number, enums: String, defaults: true, oneofs: true };

/** proto/ from the sources (xds/) and from the build output (dist/xds/). */
function protoRoot(): string {
  const candidates = ['../proto', '../../proto'].map((p) => fileURLToPath(new URL(p, import.meta.url)));
  const root = candidates.find((p) => existsSync(`${p}/vsockmesh`));
  if (root === undefined) throw new Error(`vsockmesh .proto files not found (looked in ${candidates.join(', ')})`);
  return root;
}

function load<T>(file: string): T {
  const definition = protoLoader.loadSync(file, { ...LOADER_OPTIONS, includeDirs: [protoRoot()] });
  return grpc.loadPackageDefinition(definition) as unknown as T;
}

let vmManager: VmManagerProto | undefined;
let health: HealthProto | undefined;
let config: ConfigProto | undefined;

export function vmManagerProto(): VmManagerProto {
  vmManager ??= load<VmManagerProto>('vsockmesh/vmmanager/v1/vm_manager.proto');
  return vmManager;
}

export function healthProto(): HealthProto {
  health ??= load<HealthProto>('grpc/health/v1/health.proto');
  return health;
}

export function configProto(): ConfigProto {
  config ??= load<ConfigProto>('vsockmesh/config/v1/config.proto');
  return config;
}

let identity: IdentityProto | undefined;

export function identityProto(): IdentityProto {
  identity ??= load<IdentityProto>('vsockmesh/identity/v1/identity.proto');
  return identity;
}
