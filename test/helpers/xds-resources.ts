// xDS resources for tests: small hand-made Envoy resources and snapshots of
// them (with readable type versions), and everything the control plane
// serves one node as one set of resources (the shared ones, then the node's
// own when it is a registered VM), for tests that hand a snapshot to a
// SnapshotCache directly or compare a merged snapshot with it.

import { makeSnapshot, type NamedResource, type Snapshot } from '../../xds/control-plane/snapshot.js';
import type { MeshConfig } from '../../xds/control-plane/types.js';
import { buildNodeResources, buildSharedResources, type MeshResources, type RegistryView } from '../../xds/control-plane/translate.js';
import { packAny, TYPE_URLS, unpackAny, type Any__Output, type ResourceTypeUrl } from '../../xds/envoy/proto.js';

export const CDS = TYPE_URLS.Cluster;
export const EDS = TYPE_URLS.ClusterLoadAssignment;
export const LDS = TYPE_URLS.Listener;
export const RDS = TYPE_URLS.RouteConfiguration;

/** An EDS cluster over ADS; `altStatName` makes it as large as wanted. */
export function cluster(name: string, timeoutSeconds = 1, altStatName = ''): NamedResource {
  return {
    name,
    resource: packAny(CDS, {
      name,
      type: 'EDS',
      connect_timeout: { seconds: timeoutSeconds },
      lb_policy: 'ROUND_ROBIN',
      eds_cluster_config: { service_name: name, eds_config: { ads: {}, resource_api_version: 'V3' } },
      ...(altStatName !== '' && { alt_stat_name: altStatName }),
    }),
  };
}

/** One endpoint with VM facts (vm_id "vm-<name>"). */
export function assignment(name: string, ip: string, port = 8080): NamedResource {
  return {
    name,
    resource: packAny(EDS, {
      cluster_name: name,
      endpoints: [
        {
          lb_endpoints: [
            {
              endpoint: { address: { socket_address: { address: ip, port_value: port } } },
              metadata: {
                filter_metadata: {
                  vsockmesh: { fields: { vm_id: { stringValue: `vm-${name}` }, hypervisor_id: { stringValue: 'hv-1' }, vsock_cid: { numberValue: 3 }, vsock_port: { numberValue: 15001 }, tcp_port: { numberValue: port } } },
                },
              },
            },
          ],
        },
      ],
    }),
  };
}

/** A TCP proxy listener on 127.0.0.1:`port` to `clusterName`. */
export function listener(name: string, port: number, clusterName = 'c1'): NamedResource {
  return {
    name,
    resource: packAny(LDS, {
      name,
      address: { socket_address: { address: '127.0.0.1', port_value: port } },
      filter_chains: [{ filters: [{ name: 'envoy.filters.network.tcp_proxy', typed_config: packAny(TYPE_URLS.TcpProxy, { stat_prefix: name, cluster: clusterName }) }] }],
    }),
  };
}

/** Every domain, `prefix` to `clusterName`. */
export function routes(name: string, clusterName = 'c1', prefix = '/'): NamedResource {
  return {
    name,
    resource: packAny(RDS, {
      name,
      virtual_hosts: [{ name: 'all', domains: ['*'], routes: [{ match: { prefix }, route: { cluster: clusterName } }] }],
    }),
  };
}

/** c1, c2 (EDS clusters) with assignments, listener l1, routes r1. */
export function baseResources(): Record<ResourceTypeUrl, NamedResource[]> {
  return {
    [CDS]: [cluster('c1'), cluster('c2')],
    [EDS]: [assignment('c1', '10.0.0.1'), assignment('c2', '10.0.0.2')],
    [LDS]: [listener('l1', 15001)],
    [RDS]: [routes('r1')],
  };
}

/** A snapshot whose type versions are all `v` unless `versions` says otherwise. */
export function snap(resources: Partial<Record<ResourceTypeUrl, NamedResource[]>>, v: string, versions: Partial<Record<ResourceTypeUrl, string>> = {}): Snapshot {
  return makeSnapshot(resources, { [CDS]: v, [EDS]: v, [LDS]: v, [RDS]: v, ...versions });
}

/** The names of encoded resources (cluster_name for assignments). */
export function names(resources: Any__Output[]): string[] {
  return resources.map((r) => {
    const m = unpackAny<{ name?: string; cluster_name?: string }>(r);
    return m.cluster_name ?? m.name ?? '';
  });
}

export function nodeResources(mesh: MeshConfig, view: RegistryView, nodeId: string): MeshResources {
  const shared = buildSharedResources(mesh, view);
  const vm = view.vms.find((v) => v.vmId === nodeId);
  if (vm === undefined) return shared;
  const own = buildNodeResources(mesh, vm);
  return {
    clusters: [...shared.clusters, ...own.clusters],
    endpoints: [...shared.endpoints, ...own.endpoints],
    listeners: [...shared.listeners, ...own.listeners],
    routes: [...shared.routes, ...own.routes],
  };
}
