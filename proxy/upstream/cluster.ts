// A cluster: a named set of endpoints that an outbound listener balances over.

import type { ClusterConfig, EndpointConfig } from '../config/types.js';

export class Cluster {
  private next = 0;
  constructor(private current: ClusterConfig) {}

  get config(): ClusterConfig {
    return this.current;
  }

  /** New endpoints (xDS): the next connection uses them; open connections are not touched. */
  update(config: ClusterConfig): void {
    this.current = config;
  }

  get name(): string {
    return this.config.name;
  }

  /** Round robin over the endpoints. */
  pick(): EndpointConfig | undefined {
    const { endpoints } = this.current;
    if (endpoints.length === 0) return undefined;
    const endpoint = endpoints[this.next % endpoints.length];
    this.next = (this.next + 1) % endpoints.length;
    return endpoint;
  }
}
