// An endpoint as an outbound listener connects to it: what is known of it
// (whichever source told it), the key of its vsock breaker, and its last
// decisions. A decision is kept per vsock health while our placement and the
// policy stay the same, so a connection costs a map lookup, not a decision
// (the warm path of resolved clusters, and every static or xDS endpoint).

import { vsockBreakerKey, type VsockBreakerKey } from './breakers.js';
import type { EndpointFacts, LocalPlacement } from './endpoint-facts.js';
import { selectTransport, type Selection, type TransportPolicy, type VsockHealth } from './select.js';

export class UpstreamEndpoint {
  /** null: no vsock address is known, so no breaker. */
  readonly breaker: VsockBreakerKey | null;
  private local: LocalPlacement | null | undefined;
  private policy: TransportPolicy | undefined;
  private readonly decisions = new Map<VsockHealth, Selection>();

  constructor(readonly facts: EndpointFacts) {
    const vsock = facts.vm?.sidecar?.vsock;
    this.breaker = vsock ? vsockBreakerKey(vsock) : null;
  }

  decide(local: LocalPlacement | null, vsock: VsockHealth, policy: TransportPolicy): Selection {
    if (local !== this.local || policy !== this.policy) {
      this.local = local;
      this.policy = policy;
      this.decisions.clear();
    }
    let selection = this.decisions.get(vsock);
    if (selection === undefined) {
      selection = selectTransport({ local, endpoint: this.facts, vsock, policy });
      this.decisions.set(vsock, selection);
    }
    return selection;
  }
}
