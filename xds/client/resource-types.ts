// The four resource types as the sidecar's ADS client handles them (in the
// manner of grpc-js-xds's xds-resource-type/): each validates its resources
// into its own domain type (validate.ts) and hands the valid ones, typed, to
// its own entry of the sidecar's PushedConfig; CDS and LDS also name what the
// client subscribes to next (EDS for the EDS clusters, RDS for the route
// configurations the listeners name). Outside this file nothing sees a
// resource as `unknown`.

import type { Any__Output } from '../envoy/proto.js';
import { TYPE_URLS, type ResourceTypeUrl } from '../envoy/proto.js';
import type { PushedConfig, Refusal, StateRefusals } from '../../proxy/dynamic/types.js';
import { validateResources, type RefusedResource, type XdsResourceValues } from './validate.js';

/** What the sidecar made of one response's valid resources. */
export interface Delivered {
  /** Names the type makes the client subscribe to next (EDS after CDS, RDS after LDS). */
  subscribe?: { typeUrl: ResourceTypeUrl; names: string[] };
  /** Valid resources that could not be applied (a listener whose port is taken). */
  refused?: Refusal[];
  /** Why the response is not accepted as a whole although its resources were applied (e.g. node_unknown). */
  problem?: string;
}

/** One response's resources, validated: the refused ones, and the valid ones ready to hand over. */
export interface Validated {
  refused: RefusedResource[];
  /** Hands the valid resources to the type's entry of `config`; rejects if the sidecar could not take them. */
  deliver(config: PushedConfig, refused: StateRefusals, version: string): Promise<Delivered>;
}

export interface ResourceType {
  readonly typeUrl: ResourceTypeUrl;
  /** Subscribed as a wildcard from the start (CDS, LDS); the others by the names another type gives. */
  readonly wildcard: boolean;
  validate(resources: readonly Any__Output[]): Validated;
}

function resourceType<U extends ResourceTypeUrl>(
  typeUrl: U,
  wildcard: boolean,
  deliver: (config: PushedConfig, values: Array<XdsResourceValues[U]>, refused: StateRefusals, version: string) => Delivered | Promise<Delivered>,
): ResourceType {
  return {
    typeUrl,
    wildcard,
    validate(resources) {
      const { values, refused } = validateResources(typeUrl, resources);
      return { refused, deliver: async (config, stateRefused, version) => deliver(config, values, stateRefused, version) };
    },
  };
}

/** The types the client handles, by type URL. */
export const RESOURCE_TYPES: ReadonlyMap<ResourceTypeUrl, ResourceType> = new Map(
  [
    resourceType(TYPE_URLS.Cluster, true, (config, clusters, refused) => ({
      subscribe: { typeUrl: TYPE_URLS.ClusterLoadAssignment, names: config.clusters(clusters, refused).assignmentNames },
    })),
    resourceType(TYPE_URLS.ClusterLoadAssignment, false, (config, assignments) => {
      config.assignments(assignments);
      return {};
    }),
    resourceType(TYPE_URLS.Listener, true, async (config, listeners, refused, version) => {
      const outcome = await config.listeners(listeners, refused, version);
      return { subscribe: { typeUrl: TYPE_URLS.RouteConfiguration, names: outcome.routeNames }, refused: outcome.refused, ...(outcome.problem !== undefined && { problem: outcome.problem }) };
    }),
    resourceType(TYPE_URLS.RouteConfiguration, false, async (config, routes) => {
      await config.routes(routes);
      return {};
    }),
  ].map((t) => [t.typeUrl, t]),
);
