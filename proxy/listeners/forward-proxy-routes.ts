// How a forward proxy routes plain requests (`GET http://web.mesh/a`): one
// virtual host per cluster it can reach, named by the two names a CONNECT
// would use (`web`, `web.mesh`), with the routes the sidecar runs for that
// service (its HTTP listener's route configuration from the control plane),
// or else every path to the cluster. Pure.

import { DEFAULT_ROUTE_TIMEOUT_MS, RouteTable, domainProblem, type RouteConfig, type VirtualHost } from '../http/route-table.js';

/** The route configuration of forward proxy `name` over `clusters`; `routesOf(cluster)`: the route configuration of the cluster's service, if it has one. */
export function forwardProxyRoutes(name: string, clusters: Iterable<string>, routesOf: (cluster: string) => RouteConfig | undefined): RouteConfig {
  const virtualHosts: VirtualHost[] = [];
  for (const cluster of clusters) {
    // A cluster name no Host could carry is reachable by CONNECT only.
    if (domainProblem(cluster) !== undefined || cluster.includes('*')) continue;
    const domains = [cluster, `${cluster}.mesh`];
    const own = routesOf(cluster);
    // The virtual host the service's own configuration gives a request that names it.
    const host = own && new RouteTable(own).virtualHost(`${cluster}.mesh`);
    const routes = host?.routes ?? [{ path: { kind: 'prefix' as const, value: '/' }, headers: [], clusters: [{ name: cluster, weight: 1 }], timeoutMs: DEFAULT_ROUTE_TIMEOUT_MS }];
    virtualHosts.push({ name: cluster, domains, routes });
  }
  return { name, virtualHosts };
}
