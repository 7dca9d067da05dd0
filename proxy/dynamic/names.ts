// The names a control plane gives the resources it makes for one sidecar, in
// Envoy's `direction|what` style. Defined here, once: the control plane
// (xds/control-plane/translate.ts) names its resources with them and the
// sidecar's inbound listener labels its traffic with the same cluster name.

/** Listener `outbound|<service>`: apps on the node connect to it on 127.0.0.1. */
export const outboundListenerName = (service: string): string => `outbound|${service}`;

/** Listener `inbound|<vm id>`: peers' PROXY v2 hops to the VM's sidecar. */
export const inboundListenerName = (vmId: string): string => `inbound|${vmId}`;

/** Cluster `inbound|<port>`: the local app on that port (also the label of inbound traffic to it). */
export const inboundClusterName = (port: number): string => `inbound|${port}`;
