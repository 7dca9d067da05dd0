// State-of-the-world responses written already encoded. With many nodes most
// responses carry the same resources (the shared snapshot's maps), so the
// `resources` part of a DiscoveryResponse is encoded once per resource set and
// reused; only version, type URL and nonce are encoded per response. The
// bytes are exactly what the generated serializer writes (unit-tested).
// A response stays in its parts until grpc-js copies it into its frame: joined
// first, a 2 MiB response (10,000 endpoints) was allocated twice per stream,
// and those allocations drove most of the garbage collection of a sync.

import type * as grpc from '@grpc/grpc-js';
import { adsServiceDefinition, type DeltaDiscoveryRequest__Output, type DeltaDiscoveryResponse, type DiscoveryRequest__Output } from './proto.js';

/** A resource as a response carries it: a google.protobuf.Any. */
export interface EncodableResource {
  resource: { type_url: string; value: Uint8Array };
}

/** protobuf: a length-delimited field (wire type 2). */
function lengthDelimited(field: number, payload: Uint8Array): Buffer {
  return Buffer.concat([varint((field << 3) | 2), varint(payload.length), payload]);
}

function varint(n: number): Buffer {
  const bytes: number[] = [];
  while (n > 0x7f) {
    bytes.push((n & 0x7f) | 0x80);
    n = Math.floor(n / 128);
  }
  bytes.push(n);
  return Buffer.from(bytes);
}

/** Name sets whose encoded resources are kept per resource map (the most recently encoded; streams mostly ask for the same few). */
export const ENCODED_SETS_PER_MAP = 8;

/**
 * A DiscoveryResponse as its encoded parts. grpc-js's server
 * (server-interceptors.js, serializeMessage) reads only `byteLength` and
 * `copy(frame, 5)` of what a method's serializer returns: the parts are copied
 * once, straight into the gRPC frame.
 */
export class EncodedSotwResponse {
  readonly byteLength: number;

  constructor(private readonly parts: readonly Uint8Array[]) {
    this.byteLength = parts.reduce((n, p) => n + p.length, 0);
  }

  /** Copies the response into `target` at `targetStart` (Buffer.copy's contract); returns the bytes copied. */
  copy(target: Uint8Array, targetStart = 0): number {
    let at = targetStart;
    for (const part of this.parts) {
      target.set(part, at);
      at += part.length;
    }
    return this.byteLength;
  }

  /** The response in one buffer. */
  toBuffer(): Buffer {
    return Buffer.concat(this.parts);
  }
}

export class SotwEncoder {
  /** The encoded `resources` fields (DiscoveryResponse field 2, each an Any) by resource map and names sent (at most ENCODED_SETS_PER_MAP). */
  private readonly encoded = new WeakMap<ReadonlyMap<string, EncodableResource>, Map<string, Buffer>>();
  /** Resource maps encoded once already: a map is cached from its second use on (a node's own map is used by one stream only). */
  private readonly encodedOnce = new WeakSet<ReadonlyMap<string, EncodableResource>>();

  /** A DiscoveryResponse, encoded: version_info (1), resources (2: those of `all` named by `names`, or all of them), type_url (4), nonce (5). */
  encode(all: ReadonlyMap<string, EncodableResource>, names: readonly string[] | null, version: string, typeUrl: string, nonce: string): EncodedSotwResponse {
    return new EncodedSotwResponse([lengthDelimited(1, Buffer.from(version)), this.resources(all, names), lengthDelimited(4, Buffer.from(typeUrl)), lengthDelimited(5, Buffer.from(nonce))]);
  }

  private resources(all: ReadonlyMap<string, EncodableResource>, names: readonly string[] | null): Buffer {
    const key = names === null ? '*' : names.join('\0');
    let encoded = this.encoded.get(all)?.get(key);
    if (encoded === undefined) {
      const parts: Buffer[] = [];
      for (const r of names === null ? all.values() : names.map((n) => all.get(n))) {
        if (r === undefined) continue;
        const any = Buffer.concat([lengthDelimited(1, Buffer.from(r.resource.type_url)), lengthDelimited(2, r.resource.value)]);
        parts.push(lengthDelimited(2, any));
      }
      encoded = Buffer.concat(parts);
      if (this.encodedOnce.has(all)) {
        let byNames = this.encoded.get(all);
        if (!byNames) this.encoded.set(all, (byNames = new Map()));
        if (byNames.size >= ENCODED_SETS_PER_MAP) byNames.delete(byNames.keys().next().value!);
        byNames.set(key, encoded);
      } else this.encodedOnce.add(all);
    }
    return encoded;
  }
}

/** The ADS handlers when state-of-the-world responses are written as SotwEncoder bytes. */
export interface PreEncodedAdsHandlers extends grpc.UntypedServiceImplementation {
  StreamAggregatedResources: grpc.handleBidiStreamingCall<DiscoveryRequest__Output, EncodedSotwResponse>;
  DeltaAggregatedResources: grpc.handleBidiStreamingCall<DeltaDiscoveryRequest__Output, DeltaDiscoveryResponse>;
}

/** envoy.service.discovery.v3.AggregatedDiscoveryService whose StreamAggregatedResources writes the EncodedSotwResponse it is given. */
export function preEncodedAdsService(): grpc.ServiceDefinition {
  const definition = adsServiceDefinition();
  // Not a Buffer, but all of one grpc-js's server uses (EncodedSotwResponse).
  const responseSerialize = (value: EncodedSotwResponse): Buffer => value as unknown as Buffer;
  return { ...definition, StreamAggregatedResources: { ...definition.StreamAggregatedResources, responseSerialize } };
}
