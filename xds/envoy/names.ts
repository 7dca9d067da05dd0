// Envoy names both sides of the stream use: the control plane writes them
// into the resources it serves, the sidecar's validator (xds/client) looks
// for them.

/** The key of the VM facts in LbEndpoint.metadata.filter_metadata (and of the node's placement in its outbound listeners'). */
export const VSOCKMESH_METADATA_KEY = 'vsockmesh';
export const TCP_PROXY_FILTER = 'envoy.filters.network.tcp_proxy';
export const PROXY_PROTOCOL_LISTENER_FILTER = 'envoy.filters.listener.proxy_protocol';
/** An outbound listener of an HTTP service: routes each request (by a RouteConfiguration over RDS). */
export const HTTP_CONNECTION_MANAGER_FILTER = 'envoy.filters.network.http_connection_manager';
export const ROUTER_FILTER = 'envoy.filters.http.router';
/** Authorization of a connection by its peer's principal (the inbound listener's policies). */
export const RBAC_NETWORK_FILTER = 'envoy.filters.network.rbac';
/** Load balancing policies of a Cluster's load_balancing_policy list. */
export const LEAST_REQUEST_POLICY = 'envoy.load_balancing_policies.least_request';
export const ROUND_ROBIN_POLICY = 'envoy.load_balancing_policies.round_robin';
/** The endpoints least_request draws and compares per request: two, as Envoy's default (the sidecar implements only this). */
export const LEAST_REQUEST_CHOICES = 2;
