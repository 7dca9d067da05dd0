// Envoy's v3 xDS API at run time: loads the pinned subset in proto/vendor/
// (see proto/vendor/VERSION; refreshed by proto/sync-envoy.mjs) from its JSON
// descriptors, proto/json/envoy.json (xds/proto-json.ts), and exposes the ADS service and typed google.protobuf.Any
// packing for the resource types and filter configs vsockmesh uses.
// The conversion (CONVERSION in xds/proto-json.ts) must match proto/generate.mjs, which generates the typed
// messages in xds/generated/envoy/ from the same files.
//
// Wire shapes follow the loader options: field names as in the .proto
// (keepCase), 64-bit integers as numbers, enums as their names, defaults
// filled in, and a virtual field naming the set member of each oneof.
// Caveat: google.protobuf.Struct/Value/ListValue come from protobufjs's
// bundled definitions, whose field names are camelCase even with keepCase
// (Value is { stringValue, numberValue, boolValue, structValue, listValue,
// nullValue, kind }); the wire encoding is the standard one.

import * as grpc from '@grpc/grpc-js';
import { asGrpcObject, loadJsonDefinitions, type JsonPackageDefinition, type MessageDefinition } from '../proto-json.js';
import type { ProtoGrpcType as AdsProto } from '../generated/envoy/ads.js';
import type { ProtoGrpcType as ListenerProto } from '../generated/envoy/listener.js';
import type { ProtoGrpcType as RouteProto } from '../generated/envoy/route.js';
import type { ProtoGrpcType as ClusterProto } from '../generated/envoy/cluster.js';
import type { ProtoGrpcType as EndpointProto } from '../generated/envoy/endpoint.js';
import type { ProtoGrpcType as HcmProto } from '../generated/envoy/http_connection_manager.js';
import type { ProtoGrpcType as RouterProto } from '../generated/envoy/router.js';
import type { ProtoGrpcType as TcpProxyProto } from '../generated/envoy/tcp_proxy.js';
import type { ProtoGrpcType as RbacProto } from '../generated/envoy/rbac.js';
import type { ProtoGrpcType as LeastRequestProto } from '../generated/envoy/least_request.js';
import type { ProtoGrpcType as RoundRobinProto } from '../generated/envoy/round_robin.js';
import type { Any, Any__Output } from '../generated/envoy/google/protobuf/Any.js';
import type {
  AggregatedDiscoveryServiceClient,
  AggregatedDiscoveryServiceDefinition,
} from '../generated/envoy/envoy/service/discovery/v3/AggregatedDiscoveryService.js';
import type { Listener, Listener__Output } from '../generated/envoy/envoy/config/listener/v3/Listener.js';
import type { RouteConfiguration, RouteConfiguration__Output } from '../generated/envoy/envoy/config/route/v3/RouteConfiguration.js';
import type { Cluster, Cluster__Output } from '../generated/envoy/envoy/config/cluster/v3/Cluster.js';
import type {
  ClusterLoadAssignment,
  ClusterLoadAssignment__Output,
} from '../generated/envoy/envoy/config/endpoint/v3/ClusterLoadAssignment.js';
import type {
  HttpConnectionManager,
  HttpConnectionManager__Output,
} from '../generated/envoy/envoy/extensions/filters/network/http_connection_manager/v3/HttpConnectionManager.js';
import type { Router, Router__Output } from '../generated/envoy/envoy/extensions/filters/http/router/v3/Router.js';
import type { TcpProxy, TcpProxy__Output } from '../generated/envoy/envoy/extensions/filters/network/tcp_proxy/v3/TcpProxy.js';
import type { RBAC as NetworkRbac, RBAC__Output as NetworkRbac__Output } from '../generated/envoy/envoy/extensions/filters/network/rbac/v3/RBAC.js';
import type { LeastRequest, LeastRequest__Output } from '../generated/envoy/envoy/extensions/load_balancing_policies/least_request/v3/LeastRequest.js';
import type { RoundRobin, RoundRobin__Output } from '../generated/envoy/envoy/extensions/load_balancing_policies/round_robin/v3/RoundRobin.js';

export type { Any, Any__Output };
export type { AggregatedDiscoveryServiceClient, AggregatedDiscoveryServiceDefinition };
export type { Listener, Listener__Output, RouteConfiguration, RouteConfiguration__Output, Cluster, Cluster__Output };
export type { ClusterLoadAssignment, ClusterLoadAssignment__Output, HttpConnectionManager, HttpConnectionManager__Output };
export type { Router, Router__Output, TcpProxy, TcpProxy__Output, NetworkRbac, NetworkRbac__Output };
export type { LeastRequest, LeastRequest__Output, RoundRobin, RoundRobin__Output };
export type {
  DiscoveryRequest,
  DiscoveryRequest__Output,
} from '../generated/envoy/envoy/service/discovery/v3/DiscoveryRequest.js';
export type {
  DiscoveryResponse,
  DiscoveryResponse__Output,
} from '../generated/envoy/envoy/service/discovery/v3/DiscoveryResponse.js';
export type {
  DeltaDiscoveryRequest,
  DeltaDiscoveryRequest__Output,
} from '../generated/envoy/envoy/service/discovery/v3/DeltaDiscoveryRequest.js';
export type {
  DeltaDiscoveryResponse,
  DeltaDiscoveryResponse__Output,
} from '../generated/envoy/envoy/service/discovery/v3/DeltaDiscoveryResponse.js';
export type { Resource, Resource__Output } from '../generated/envoy/envoy/service/discovery/v3/Resource.js';

const TYPE_URL_PREFIX = 'type.googleapis.com/';

/** Type URLs of the xDS resources and typed filter configs vsockmesh uses. */
export const TYPE_URLS = {
  Listener: 'type.googleapis.com/envoy.config.listener.v3.Listener',
  RouteConfiguration: 'type.googleapis.com/envoy.config.route.v3.RouteConfiguration',
  Cluster: 'type.googleapis.com/envoy.config.cluster.v3.Cluster',
  ClusterLoadAssignment: 'type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment',
  HttpConnectionManager: 'type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager',
  Router: 'type.googleapis.com/envoy.extensions.filters.http.router.v3.Router',
  TcpProxy: 'type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy',
  NetworkRbac: 'type.googleapis.com/envoy.extensions.filters.network.rbac.v3.RBAC',
  LeastRequest: 'type.googleapis.com/envoy.extensions.load_balancing_policies.least_request.v3.LeastRequest',
  RoundRobin: 'type.googleapis.com/envoy.extensions.load_balancing_policies.round_robin.v3.RoundRobin',
} as const;

/** The four xDS resource types, in the order a control plane pushes them (CDS, EDS, LDS, RDS). */
export const RESOURCE_TYPE_URLS = [TYPE_URLS.Cluster, TYPE_URLS.ClusterLoadAssignment, TYPE_URLS.Listener, TYPE_URLS.RouteConfiguration] as const;

export type EnvoyTypeUrl = (typeof TYPE_URLS)[keyof typeof TYPE_URLS];
export type ResourceTypeUrl = (typeof RESOURCE_TYPE_URLS)[number];

/** Short names of the resource types, for metrics and logs. */
export const TYPE_SHORT_NAMES: Record<ResourceTypeUrl, 'cds' | 'eds' | 'lds' | 'rds'> = {
  [TYPE_URLS.Cluster]: 'cds',
  [TYPE_URLS.ClusterLoadAssignment]: 'eds',
  [TYPE_URLS.Listener]: 'lds',
  [TYPE_URLS.RouteConfiguration]: 'rds',
};

/** Message types by type URL: what packAny takes (`input`) and unpackAny returns (`output`). */
export interface EnvoyMessages {
  'type.googleapis.com/envoy.config.listener.v3.Listener': { input: Listener; output: Listener__Output };
  'type.googleapis.com/envoy.config.route.v3.RouteConfiguration': { input: RouteConfiguration; output: RouteConfiguration__Output };
  'type.googleapis.com/envoy.config.cluster.v3.Cluster': { input: Cluster; output: Cluster__Output };
  'type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment': { input: ClusterLoadAssignment; output: ClusterLoadAssignment__Output };
  'type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager': {
    input: HttpConnectionManager;
    output: HttpConnectionManager__Output;
  };
  'type.googleapis.com/envoy.extensions.filters.http.router.v3.Router': { input: Router; output: Router__Output };
  'type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy': { input: TcpProxy; output: TcpProxy__Output };
  'type.googleapis.com/envoy.extensions.filters.network.rbac.v3.RBAC': { input: NetworkRbac; output: NetworkRbac__Output };
  'type.googleapis.com/envoy.extensions.load_balancing_policies.least_request.v3.LeastRequest': { input: LeastRequest; output: LeastRequest__Output };
  'type.googleapis.com/envoy.extensions.load_balancing_policies.round_robin.v3.RoundRobin': { input: RoundRobin; output: RoundRobin__Output };
}
export type EnvoyMessage<U extends EnvoyTypeUrl> = EnvoyMessages[U]['input'];
export type EnvoyMessageOutput<U extends EnvoyTypeUrl> = EnvoyMessages[U]['output'];

/** What grpc.loadPackageDefinition returns for the loaded files (all roots' namespaces merged). */
export type EnvoyProtoGrpcType = AdsProto & ListenerProto & RouteProto & ClusterProto & EndpointProto & HcmProto & RouterProto & TcpProxyProto & RbacProto & LeastRequestProto & RoundRobinProto;

let packageDefinition: JsonPackageDefinition | undefined;
let grpcObject: EnvoyProtoGrpcType | undefined;

/** The package definition of all the roots (loaded once, synchronously). */
export function envoyPackageDefinition(): JsonPackageDefinition {
  packageDefinition ??= loadJsonDefinitions('envoy');
  return packageDefinition;
}

/** The loaded namespaces as @grpc/grpc-js objects (service client constructors, message type definitions). */
export function envoyProto(): EnvoyProtoGrpcType {
  grpcObject ??= asGrpcObject<EnvoyProtoGrpcType>(envoyPackageDefinition());
  return grpcObject;
}

/** envoy.service.discovery.v3.AggregatedDiscoveryService, for `server.addService(adsServiceDefinition(), handlers)`. */
export function adsServiceDefinition(): AggregatedDiscoveryServiceDefinition {
  return envoyProto().envoy.service.discovery.v3.AggregatedDiscoveryService.service;
}

/** A client of the ADS service at `address` (host:port, or any grpc-js target). */
export function createAdsClient(
  address: string,
  credentials: grpc.ChannelCredentials,
  options?: grpc.ChannelOptions,
): AggregatedDiscoveryServiceClient {
  const Client = envoyProto().envoy.service.discovery.v3.AggregatedDiscoveryService;
  return new Client(address, credentials, options);
}

/** The fully qualified message name of a type URL (the part after the last '/'). */
export function messageNameOf(typeUrl: string): string {
  return typeUrl.slice(typeUrl.lastIndexOf('/') + 1);
}

/** `type.googleapis.com/<name>` for a fully qualified message name. */
export function typeUrlOf(messageName: string): string {
  return `${TYPE_URL_PREFIX}${messageName}`;
}

function messageType(typeUrl: string): MessageDefinition {
  const name = messageNameOf(typeUrl);
  const definition = name === '' ? undefined : envoyPackageDefinition()[name];
  if (definition === undefined || !('format' in definition) || definition.format !== 'Protocol Buffer 3 DescriptorProto') {
    throw new Error(`unknown message type ${JSON.stringify(typeUrl)}`);
  }
  return definition;
}

function asBuffer(bytes: Buffer | Uint8Array | string): Buffer {
  if (Buffer.isBuffer(bytes)) return bytes;
  if (typeof bytes === 'string') return Buffer.from(bytes, 'base64');
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

/** Encodes `message` as a google.protobuf.Any of the type `typeUrl`. Throws if the message does not fit the type. */
export function packAny<U extends EnvoyTypeUrl>(typeUrl: U, message: EnvoyMessage<U>): Any__Output {
  return { type_url: typeUrl, value: asBuffer(messageType(typeUrl).serialize(message)) };
}

/**
 * Decodes a google.protobuf.Any. With `expected`, checks that the Any holds that
 * type and returns it typed; without, decodes whatever loaded type its
 * type_url names (the caller asserts the type). Throws on a type mismatch, an
 * unknown type, or bytes that do not decode.
 */
export function unpackAny<U extends EnvoyTypeUrl>(any: Any | Any__Output, expected: U): EnvoyMessageOutput<U>;
export function unpackAny<T = unknown>(any: Any | Any__Output): T;
export function unpackAny(any: Any | Any__Output, expected?: string): unknown {
  if ('@type' in any) throw new Error('unpackAny: expected { type_url, value }, got an expanded Any (@type)');
  if (expected !== undefined && any.type_url !== expected) {
    throw new Error(`unpackAny: expected ${expected}, got ${JSON.stringify(any.type_url)}`);
  }
  const type = messageType(any.type_url);
  try {
    return type.deserialize(asBuffer(any.value));
  } catch (err) {
    throw new Error(`unpackAny: cannot decode ${any.type_url}: ${err instanceof Error ? err.message : String(err)}`, { cause: err });
  }
}
