// Our own services (proto/vsockmesh, proto/grpc) at run time, from their JSON
// descriptors (proto/json/, written by proto/generate.mjs with the typed
// messages in xds/generated/ from the same files; see xds/proto-json.ts).

import { loadGrpcObject } from './proto-json.js';
import type { ProtoGrpcType as HealthProto } from './generated/health.js';
import type { ProtoGrpcType as VmManagerProto } from './generated/vm_manager.js';
import type { ProtoGrpcType as ConfigProto } from './generated/config.js';
import type { ProtoGrpcType as IdentityProto } from './generated/identity.js';

let vmManager: VmManagerProto | undefined;
let health: HealthProto | undefined;
let config: ConfigProto | undefined;

export function vmManagerProto(): VmManagerProto {
  vmManager ??= loadGrpcObject<VmManagerProto>('vm_manager');
  return vmManager;
}

export function healthProto(): HealthProto {
  health ??= loadGrpcObject<HealthProto>('health');
  return health;
}

export function configProto(): ConfigProto {
  config ??= loadGrpcObject<ConfigProto>('config');
  return config;
}

let identity: IdentityProto | undefined;

export function identityProto(): IdentityProto {
  identity ??= loadGrpcObject<IdentityProto>('identity');
  return identity;
}
