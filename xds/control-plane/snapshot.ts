// The Snapshot: what one node (or every node without its own) is served, per
// resource type every resource by name with a version, in go-control-plane's
// shape (pkg/cache/v3/snapshot.go): made from named resources, versioned by
// content, and checked for consistency before it is served. Pure: the same
// resources always give the same versions, so a restarted control plane
// serves the versions its sidecars already ACKed.

import { createHash } from 'node:crypto';
import { LayeredMap } from './layered-map.js';
import { messageNameOf, RESOURCE_TYPE_URLS, TYPE_URLS, unpackAny, type Any__Output, type EnvoyMessageOutput, type ResourceTypeUrl } from '../envoy/proto.js';

/** One resource as served: its name, a content version (hash of its bytes), and the encoded Any. */
export interface VersionedResource {
  name: string;
  version: string;
  resource: Any__Output;
}

/**
 * Per type URL, every resource by name, and the type's version (changes when
 * any resource of the type does). Never changed once made: a new state is a
 * new Snapshot (the cache and the streams compare them by identity).
 */
export interface Snapshot {
  resources: Record<ResourceTypeUrl, ReadonlyMap<string, VersionedResource>>;
  versions: Record<ResourceTypeUrl, string>;
}

/** A resource to put in a snapshot. */
export interface NamedResource {
  name: string;
  resource: Any__Output;
}

/**
 * The first 16 hex digits of the SHA-256 of `data`: resource and type
 * versions. Made from the first 8 bytes, not cut from the 64 digits: a cut
 * string would keep its whole parent alive, once per resource of every node.
 */
export function shortHash(data: string | Uint8Array): string {
  return createHash('sha256').update(data).digest().toString('hex', 0, 8);
}

/** A resource's version: a hash of its encoded bytes (same content, same version, across restarts). */
export function resourceVersion(resource: Any__Output): string {
  return shortHash(resource.value);
}

/** A type's version: the hash of its sorted `name:version` pairs (order-independent). */
export function typeVersion(resources: ReadonlyMap<string, VersionedResource>): string {
  const pairs = [...resources.values()].map((r) => `${r.name}:${r.version}`).sort();
  return shortHash(pairs.join('\n'));
}

/** `Cluster` for envoy.config.cluster.v3.Cluster. */
const kindOf = (typeUrl: ResourceTypeUrl): string => messageNameOf(typeUrl).replace(/^.*\./, '');

/**
 * A Snapshot from resources per type. Resource versions are content hashes;
 * a type's version is a hash of its resources' versions unless `versions`
 * gives it. Throws on a duplicate name within a type or a resource whose Any
 * is of another type.
 */
export function makeSnapshot(resources: Partial<Record<ResourceTypeUrl, readonly NamedResource[]>>, versions: Partial<Record<ResourceTypeUrl, string>> = {}): Snapshot {
  const out = {} as Snapshot['resources'];
  const outVersions = {} as Snapshot['versions'];
  for (const typeUrl of RESOURCE_TYPE_URLS) {
    const map = new Map<string, VersionedResource>();
    for (const r of resources[typeUrl] ?? []) {
      if (map.has(r.name)) throw new Error(`snapshot: two ${kindOf(typeUrl)} resources are named "${r.name}"`);
      if (r.resource.type_url !== typeUrl) throw new Error(`snapshot: ${kindOf(typeUrl)} "${r.name}" holds a ${r.resource.type_url}`);
      map.set(r.name, { name: r.name, version: resourceVersion(r.resource), resource: r.resource });
    }
    out[typeUrl] = map;
    outVersions[typeUrl] = versions[typeUrl] ?? typeVersion(map);
  }
  return { resources: out, versions: outVersions };
}

/** A merge made before: `merged` is `base` with the same extra resources, so a type whose base map is still the same object keeps its merged map and version. */
export interface EarlierMerge {
  base: Snapshot;
  merged: Snapshot;
}

/**
 * `base` with `extra` resources added to some types (an extra one of a name
 * `base` has replaces it); the types it adds nothing to keep `base`'s map
 * itself and its version (the ADS server encodes a shared map once for every
 * node), the others lay `extra` over `base`'s map without copying it. With
 * `earlier` (the same `extra` over an earlier base), a type whose base map is
 * the one it had then keeps the earlier layer and version: a change of the
 * assignments alone does not re-hash every node's listeners and clusters.
 */
export function withResources(base: Snapshot, extra: Partial<Record<ResourceTypeUrl, ReadonlyMap<string, VersionedResource>>>, earlier?: EarlierMerge): Snapshot {
  const resources = {} as Snapshot['resources'];
  const versions = {} as Snapshot['versions'];
  for (const typeUrl of RESOURCE_TYPE_URLS) {
    const add = extra[typeUrl];
    if (add === undefined || add.size === 0) {
      resources[typeUrl] = base.resources[typeUrl];
      versions[typeUrl] = base.versions[typeUrl];
    } else if (earlier !== undefined && earlier.base.resources[typeUrl] === base.resources[typeUrl]) {
      resources[typeUrl] = earlier.merged.resources[typeUrl];
      versions[typeUrl] = earlier.merged.versions[typeUrl];
    } else {
      resources[typeUrl] = new LayeredMap(base.resources[typeUrl], add);
      versions[typeUrl] = typeVersion(resources[typeUrl]);
    }
  }
  return { resources, versions };
}

/** A node's snapshot from the shared one and its own part; shared resources are the same objects, not copies. `earlier`: the same own part merged over an earlier shared snapshot (see withResources). */
export function mergeSnapshots(shared: Snapshot, own: Snapshot, earlier?: EarlierMerge): Snapshot {
  return withResources(shared, own.resources, earlier);
}

/** Some of a snapshot's resources by type (a type left out: none of it). */
export type SomeResources = Partial<Record<ResourceTypeUrl, ReadonlyMap<string, VersionedResource>>>;

function decodeAll<U extends ResourceTypeUrl>(resources: SomeResources, typeUrl: U, problems: string[], kind: string) {
  const out: Array<{ name: string; message: EnvoyMessageOutput<U> }> = [];
  for (const r of resources[typeUrl]?.values() ?? []) {
    try {
      out.push({ name: r.name, message: unpackAny(r.resource, typeUrl) });
    } catch (err) {
      problems.push(`${kind} "${r.name}": ${err instanceof Error ? err.message : String(err)}`);
    }
  }
  return out;
}

/**
 * What makes a snapshot inconsistent (go-control-plane's Consistent()): a
 * route to a cluster not in it, an EDS cluster without its
 * ClusterLoadAssignment, a listener's TCP proxy to a missing cluster, an API
 * listener's RDS to a missing route configuration. Empty: consistent.
 * With `only`, only those resources are looked at (what they refer to is
 * looked up in the whole snapshot): a node's own part laid over a shared
 * snapshot known to be consistent is all there is to check, since laying
 * resources over a snapshot removes no name its resources refer to.
 */
export function inconsistencies(snapshot: Snapshot, only: SomeResources = snapshot.resources): string[] {
  const problems: string[] = [];
  const clusters = snapshot.resources[TYPE_URLS.Cluster];
  const assignments = snapshot.resources[TYPE_URLS.ClusterLoadAssignment];
  const routes = snapshot.resources[TYPE_URLS.RouteConfiguration];

  for (const { name, message } of decodeAll(only, TYPE_URLS.Cluster, problems, 'cluster')) {
    if (message.type !== 'EDS') continue;
    const edsName = message.eds_cluster_config?.service_name || name;
    if (!assignments.has(edsName)) problems.push(`cluster "${name}": EDS cluster has no ClusterLoadAssignment "${edsName}"`);
  }

  for (const { name, message } of decodeAll(only, TYPE_URLS.RouteConfiguration, problems, 'route_configuration')) {
    message.virtual_hosts.forEach((host, i) =>
      host.routes.forEach((route, j) => {
        const action = route.route;
        const targets =
          action?.cluster_specifier === 'weighted_clusters'
            ? (action.weighted_clusters?.clusters ?? []).map((c) => c.name)
            : action?.cluster_specifier === 'cluster'
              ? [action.cluster ?? '']
              : [];
        for (const target of targets) {
          if (!clusters.has(target)) problems.push(`route_configuration "${name}": virtual_hosts[${i}].routes[${j}]: cluster "${target}" is not in the snapshot`);
        }
      }),
    );
  }

  for (const { name, message } of decodeAll(only, TYPE_URLS.Listener, problems, 'listener')) {
    /** An HTTP connection manager's RDS route configuration must be served too. */
    const rdsRoutes = (any: NonNullable<typeof message.api_listener>['api_listener'], at: string): void => {
      try {
        const hcm = unpackAny(any!, TYPE_URLS.HttpConnectionManager);
        const rds = hcm.rds?.route_config_name;
        if (hcm.route_specifier === 'rds' && rds !== undefined && !routes.has(rds)) problems.push(`${at}: route configuration "${rds}" is not in the snapshot`);
      } catch (err) {
        problems.push(`${at}: ${err instanceof Error ? err.message : String(err)}`);
      }
    };
    const api = message.api_listener?.api_listener;
    if (api) rdsRoutes(api, `listener "${name}": api_listener`);
    message.filter_chains.forEach((chain, i) =>
      chain.filters.forEach((filter, j) => {
        const at = `listener "${name}": filter_chains[${i}].filters[${j}]`;
        if (filter.typed_config?.type_url === TYPE_URLS.HttpConnectionManager) rdsRoutes(filter.typed_config, at);
        if (filter.typed_config?.type_url !== TYPE_URLS.TcpProxy) return;
        try {
          const cluster = unpackAny(filter.typed_config, TYPE_URLS.TcpProxy).cluster;
          if (cluster !== undefined && !clusters.has(cluster)) problems.push(`${at}: tcp_proxy cluster "${cluster}" is not in the snapshot`);
        } catch (err) {
          problems.push(`${at}: ${err instanceof Error ? err.message : String(err)}`);
        }
      }),
    );
  }
  return problems;
}

/** Throws `inconsistent snapshot: <every problem>` unless the snapshot is consistent. */
export function assertConsistent(snapshot: Snapshot, only?: SomeResources): void {
  const problems = inconsistencies(snapshot, only);
  if (problems.length > 0) throw new Error(`inconsistent snapshot: ${problems.join('; ')}`);
}
