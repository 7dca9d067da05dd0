// Authorization policies as the data plane holds them, and their evaluation,
// pure. The shape is Envoy's RBAC network filter
// (envoy.extensions.filters.network.rbac.v3.RBAC, validated from the wire by
// xds/client/validate-rbac.ts): a filter chain per destination port holds
// RBAC filters in order; each filter has enforced `rules` and/or dry-run
// `shadowRules`, each an action (ALLOW or DENY) over named policies. The
// first enforced filter that denies decides; no filter, no denial.
// The control plane puts DENY before ALLOW, so a DENY wins (Istio's order).

import { UNAUTHENTICATED } from '../peer-tls/peer-policy.js';

/** Who a policy names: an exact SPIFFE ID, an ID prefix, any authenticated peer, anyone, or a peer with no identity. */
export type PrincipalMatch =
  | { kind: 'exact'; id: string }
  | { kind: 'prefix'; prefix: string }
  | { kind: 'authenticated' }
  | { kind: 'any' }
  | { kind: 'unauthenticated' };

/** A named policy: it matches a connection when one of its principals does. */
export interface RbacPolicy {
  name: string;
  principals: PrincipalMatch[];
}

export interface RbacRules {
  action: 'ALLOW' | 'DENY';
  /** In the order they are tried; the first that matches names the decision. */
  policies: RbacPolicy[];
}

/** One RBAC network filter. */
export interface RbacFilter {
  rules: RbacRules | null;
  /** Evaluated and counted, never enforced. */
  shadowRules: RbacRules | null;
}

/** The RBAC filters of the filter chain serving one destination port, in chain order. */
export interface PortRbac {
  port: number;
  filters: RbacFilter[];
}

/** Every destination port's filters; a port not listed has no policy (allowed). */
export type InboundPolicies = ReadonlyMap<number, readonly RbacFilter[]>;

export const NO_POLICIES: InboundPolicies = new Map();

/** The name a denial carries when an ALLOW set matched nothing (not a mesh name: those are DNS labels). */
export const DEFAULT_DENY = 'default_deny';

export type Verdict =
  /** `shadowDenied`: the policy a shadow filter would have denied by (null: none would). */
  | { allowed: true; shadowDenied: string | null }
  | { allowed: false; policy: string; shadowDenied: string | null };

export function principalMatches(match: PrincipalMatch, principal: string): boolean {
  const authenticated = principal !== UNAUTHENTICATED;
  switch (match.kind) {
    case 'any':
      return true;
    case 'unauthenticated':
      return !authenticated;
    case 'authenticated':
      return authenticated;
    case 'exact':
      return authenticated && principal === match.id;
    case 'prefix':
      return authenticated && principal.startsWith(match.prefix);
  }
}

/** One rule set: denied or not, and by which policy (DEFAULT_DENY when an ALLOW set matched nothing). */
export function evaluateRules(rules: RbacRules, principal: string): { denied: false } | { denied: true; policy: string } {
  const matched = rules.policies.find((p) => p.principals.some((m) => principalMatches(m, principal)));
  if (rules.action === 'ALLOW') return matched ? { denied: false } : { denied: true, policy: DEFAULT_DENY };
  return matched ? { denied: true, policy: matched.name } : { denied: false };
}

/** A connection of `principal` to destination port `port`, under `policies`. */
export function authorize(policies: InboundPolicies, port: number, principal: string): Verdict {
  let shadowDenied: string | null = null;
  for (const filter of policies.get(port) ?? []) {
    if (filter.shadowRules && shadowDenied === null) {
      const shadow = evaluateRules(filter.shadowRules, principal);
      if (shadow.denied) shadowDenied = shadow.policy;
    }
    if (filter.rules) {
      const enforced = evaluateRules(filter.rules, principal);
      if (enforced.denied) return { allowed: false, policy: enforced.policy, shadowDenied };
    }
  }
  return { allowed: true, shadowDenied };
}

/** The table of a pushed inbound listener's ports. */
export function inboundPolicies(ports: readonly PortRbac[]): InboundPolicies {
  return new Map(ports.filter((p) => p.filters.length > 0).map((p) => [p.port, p.filters]));
}
