// The sidecar's authorization of inbound connections: the policies the
// control plane pushed (one table for every inbound listener, TCP and vsock,
// by destination port), checked when a connection's principal and
// destination are known and before any byte is relayed; and the open
// connections, checked again whenever the policies change (those no longer
// allowed are closed: policy_revoked). Every decision is counted; refusals
// and shadow denials are logged (sampled per listener and reason).

import type { ProxyMetrics } from '../metrics.js';
import type { RefusalLog } from '../runtime/refusal-log.js';
import { NO_POLICIES, authorize, type InboundPolicies } from './rbac.js';
import { warmInvalidate } from '../native/warm.js';

/** An inbound connection as the policies see it. */
export interface InboundRequest {
  listener: string;
  /** The destination port of its PROXY v2 header (the port a policy selects). */
  port: number;
  principal: string;
  /** What the log lines say of it (src, dst, peer, source_vm, ...). */
  fields: Record<string, unknown>;
}

/** What admit() decided. */
export type Admitted = false | 'unselected' | 'allowed' | 'shadowed';

/** An admitted connection still open, and how to close it. */
export interface OpenConnection extends InboundRequest {
  close(): void;
}

export class InboundAuthorization {
  private policies: InboundPolicies = NO_POLICIES;
  private readonly open = new Set<OpenConnection>();
  /** Open connections others hold and list on demand (the warm path's, in the core). */
  private readonly followed = new Set<() => Iterable<OpenConnection>>();

  constructor(private readonly context: { refusals: RefusalLog; metrics: ProxyMetrics }) {}

  get current(): InboundPolicies {
    return this.policies;
  }

  /**
   * Whether the connection may go on (false: refused, counted and logged
   * here; the caller closes it), and if so how it was decided: `unselected`,
   * no policy selects its port; `allowed`, its port's policies allowed its
   * principal and none is a shadow (the same answer for every connection of
   * that principal to that port until the policies change: the warm path may
   * replay it, counting rbac_allowed_total per connection); `shadowed`,
   * allowed, but a shadow filter on its port is evaluated (and may log) per
   * connection.
   */
  admit(request: InboundRequest): Admitted {
    const filters = this.policies.get(request.port);
    if (filters === undefined) return 'unselected';
    const { metrics, refusals } = this.context;
    const { listener, principal, port, fields } = request;
    const verdict = authorize(this.policies, port, principal);
    if (verdict.shadowDenied !== null) {
      metrics.rbacShadowDenied.inc({ listener, policy: verdict.shadowDenied });
      refusals.warn(
        { ...fields, listener, principal, policy: verdict.shadowDenied, reason: 'policy_shadow_denied' },
        `shadow policy ${verdict.shadowDenied} would refuse ${principal} to port ${port}; let through (dry run)`,
      );
    }
    if (!verdict.allowed) {
      metrics.rbacDenied.inc({ listener, policy: verdict.policy });
      metrics.refused.inc({ listener, reason: 'policy_denied' });
      refusals.warn({ ...fields, listener, principal, policy: verdict.policy, reason: 'policy_denied' }, `refused: ${principal} may not reach port ${port} (policy ${verdict.policy})`);
      return false;
    }
    metrics.rbacAllowed.inc({ listener });
    return filters.some((f) => f.shadowRules !== null) ? 'shadowed' : 'allowed';
  }

  /** Follows an admitted connection until it closes (call the returned function then): a policy change may close it. */
  watch(request: InboundRequest, close: () => void): () => void {
    const entry: OpenConnection = { ...request, close };
    this.open.add(entry);
    return () => this.open.delete(entry);
  }

  /** Open connections listed by `list` when the policies change, re-decided and closed as the watched ones (call the returned function to stop). */
  follow(list: () => Iterable<OpenConnection>): () => void {
    this.followed.add(list);
    return () => this.followed.delete(list);
  }

  /** New policies: open connections they no longer allow are closed, counted and logged; the others continue. */
  replace(policies: InboundPolicies): void {
    warmInvalidate();
    this.policies = policies;
    const { metrics, refusals } = this.context;
    for (const entry of [...this.open, ...[...this.followed].flatMap((list) => [...list()])]) {
      const verdict = authorize(policies, entry.port, entry.principal);
      if (verdict.allowed) continue;
      this.open.delete(entry);
      metrics.rbacRevoked.inc({ listener: entry.listener, policy: verdict.policy });
      refusals.warn(
        { ...entry.fields, listener: entry.listener, principal: entry.principal, policy: verdict.policy, reason: 'policy_revoked' },
        `closed: ${entry.principal} may no longer reach port ${entry.port} (policy ${verdict.policy})`,
      );
      entry.close();
    }
  }
}
