// Protocol buffer definitions at run time, from the JSON descriptors that
// proto/generate.mjs writes to proto/json/ (protobufjs's `root.toJSON()` of
// the same .proto files, parsed once at generation): protobufjs's light build
// reads them, with no .proto parser loaded. The result has the shape of
// @grpc/proto-loader's package definition (the same names, service method
// definitions and per-message serialize/deserialize with the same conversion
// options), which is all grpc-js and packAny/unpackAny read; it leaves out
// what proto-loader adds for reflection: a DescriptorProto per message type
// and every file's encoded FileDescriptorProto. Loading Envoy's xDS API
// through proto-loader's loadSync (parse the .proto text, then those
// descriptors) made an xDS sidecar ~7 MiB larger.

import { existsSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import * as grpc from '@grpc/grpc-js';
import protobuf from 'protobufjs/light.js';

/** protobufjs's toObject options: how decoded messages look (field names are as in the .proto: the JSON keeps their case). */
export type ConversionOptions = protobuf.IConversionOptions;

/** Field names as in the .proto, 64-bit integers as numbers, enums as names, defaults filled in, oneof virtual fields. */
export const CONVERSION: ConversionOptions = { longs: Number, enums: String, defaults: true, oneofs: true };

export interface MessageDefinition<Input = object, Output = object> {
  format: 'Protocol Buffer 3 DescriptorProto';
  serialize(message: Input): Buffer;
  deserialize(bytes: Buffer): Output;
}

export interface EnumDefinition {
  format: 'Protocol Buffer 3 EnumDescriptorProto';
}

/** Fully qualified name → message, enum or service definition (top-level declarations of each package, as proto-loader lists them). */
export type JsonPackageDefinition = Record<string, MessageDefinition | EnumDefinition | grpc.ServiceDefinition>;

/** proto/json/ from the sources (xds/) and from the build output (dist/xds/). */
export function protoJsonPath(name: string): string {
  const candidates = ['../proto/json', '../../proto/json'].map((p) => fileURLToPath(new URL(`${p}/${name}.json`, import.meta.url)));
  const file = candidates.find((p) => existsSync(p));
  if (file === undefined) throw new Error(`protocol buffer descriptors not found (looked in ${candidates.join(', ')}; run npm run gen:proto)`);
  return file;
}

function serializer(type: protobuf.Type): (message: object) => Buffer {
  return (message) => {
    if (Array.isArray(message)) throw new Error(`Failed to serialize message: expected object with ${type.name} structure, got array instead`);
    return type.encode(type.fromObject(message)).finish() as Buffer;
  };
}

function deserializer(type: protobuf.Type, conversion: ConversionOptions): (bytes: Buffer) => object {
  return (bytes) => type.toObject(type.decode(bytes), conversion);
}

function serviceDefinition(service: protobuf.Service, name: string, conversion: ConversionOptions): grpc.ServiceDefinition {
  const methods: Record<string, grpc.MethodDefinition<object, object>> = {};
  for (const method of service.methodsArray) {
    const request = method.resolvedRequestType!;
    const response = method.resolvedResponseType!;
    methods[method.name] = {
      path: `/${name}/${method.name}`,
      requestStream: method.requestStream === true,
      responseStream: method.responseStream === true,
      requestSerialize: serializer(request),
      requestDeserialize: deserializer(request, conversion),
      responseSerialize: serializer(response),
      responseDeserialize: deserializer(response, conversion),
      // proto-loader's camelCase of the method name; ours are all PascalCase words.
      originalName: method.name.charAt(0).toLowerCase() + method.name.slice(1),
    };
  }
  return methods;
}

/** Every top-level message, enum and service of `namespace`'s packages, by fully qualified name. */
function collect(namespace: protobuf.NamespaceBase, prefix: string, conversion: ConversionOptions, into: JsonPackageDefinition): void {
  for (const object of namespace.nestedArray) {
    const name = prefix === '' ? object.name : `${prefix}.${object.name}`;
    if (object instanceof protobuf.Service) into[name] = serviceDefinition(object, name, conversion);
    else if (object instanceof protobuf.Type) into[name] = { format: 'Protocol Buffer 3 DescriptorProto', serialize: serializer(object), deserialize: deserializer(object, conversion) };
    else if (object instanceof protobuf.Enum) into[name] = { format: 'Protocol Buffer 3 EnumDescriptorProto' };
    else if (object instanceof protobuf.Namespace) collect(object, name, conversion, into);
  }
}

/** The package definition of proto/json/<name>.json, its messages decoded with `conversion`. */
export function loadJsonDefinitions(name: string, conversion: ConversionOptions = CONVERSION): JsonPackageDefinition {
  const root = protobuf.Root.fromJSON(JSON.parse(readFileSync(protoJsonPath(name), 'utf8')) as protobuf.INamespace);
  root.resolveAll();
  const definitions: JsonPackageDefinition = {};
  collect(root, '', conversion, definitions);
  return definitions;
}

/**
 * Definitions as grpc-js objects (service client constructors, message
 * definitions), what grpc.loadPackageDefinition makes of proto-loader's
 * definition: it reads the service method definitions and tells messages from
 * services by their `format` only, never the reflection descriptors its
 * parameter type also names.
 */
export function asGrpcObject<T>(definitions: JsonPackageDefinition): T {
  return grpc.loadPackageDefinition(definitions as unknown as Parameters<typeof grpc.loadPackageDefinition>[0]) as unknown as T;
}

/** proto/json/<name>.json as grpc-js objects. */
export function loadGrpcObject<T>(name: string, conversion: ConversionOptions = CONVERSION): T {
  return asGrpcObject<T>(loadJsonDefinitions(name, conversion));
}
