// A cluster: a named set of endpoints that an outbound listener balances over
// (static config endpoints, or pushed over xDS), or a destination resolved
// through the VM manager per connection. Endpoints are kept as their facts
// (endpoint-facts.ts): how to reach one is decided per connection.

import type { ClusterConfig } from '../config/types.js';
import { UpstreamEndpoint } from './endpoint.js';
import { factsFromConfig, type EndpointFacts } from './endpoint-facts.js';
import { pickLeastRequest } from './least-request.js';

/** A cluster's settings: everything but its endpoints. */
export type ClusterSettings = Omit<ClusterConfig, 'endpoints'>;

export class Cluster {
  private next = 0;
  private current: ClusterSettings;
  private members: UpstreamEndpoint[];

  constructor(settings: ClusterSettings, endpoints: EndpointFacts[]) {
    this.current = settings;
    this.members = endpoints.map((e) => new UpstreamEndpoint(e));
  }

  /** A cluster of a config file. */
  static fromConfig(config: ClusterConfig): Cluster {
    const { endpoints, ...settings } = config;
    return new Cluster(settings, endpoints.map(factsFromConfig));
  }

  get settings(): ClusterSettings {
    return this.current;
  }

  get name(): string {
    return this.current.name;
  }

  /** What is known of each endpoint (shown in /config_dump). */
  get endpoints(): EndpointFacts[] {
    return this.members.map((m) => m.facts);
  }

  /** New settings and endpoints (xDS): the next connection uses them; open connections are not touched. */
  update(settings: ClusterSettings, endpoints: EndpointFacts[]): void {
    this.current = settings;
    this.members = endpoints.map((e) => new UpstreamEndpoint(e));
  }

  /** The endpoints in the order round robin picks them from the next connection on (the outbound warm path goes round them in the core). */
  upcoming(): UpstreamEndpoint[] {
    const endpoints = this.members;
    return endpoints.map((_, i) => endpoints[(this.next + i) % endpoints.length]!);
  }

  /**
   * The next endpoint: round robin, or with `lb_policy: least_request` and
   * the caller's count of active requests (HTTP), the less busy of two drawn
   * at random.
   */
  pick(activeRequests?: (endpoint: UpstreamEndpoint) => number, random: () => number = Math.random): UpstreamEndpoint | undefined {
    const endpoints = this.members;
    if (this.current.lbPolicy === 'least_request' && activeRequests) return pickLeastRequest(endpoints, activeRequests, random);
    if (endpoints.length === 0) return undefined;
    const endpoint = endpoints[this.next % endpoints.length];
    this.next = (this.next + 1) % endpoints.length;
    return endpoint;
  }
}
