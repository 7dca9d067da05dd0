// The RBAC network filters (envoy.extensions.filters.network.rbac.v3.RBAC)
// of an inbound filter chain, from the wire to what the sidecar enforces
// (proxy/policy/rbac.ts). Whatever the sidecar cannot enforce exactly as
// Envoy would is an error naming the field, so the listener is NACKed and its
// last good version (with its policies) stays: a policy is never half applied.
// Enforced: principals by the peer's SPIFFE ID (authenticated.principal_name
// exact or prefix, authenticated, any, not_id of authenticated: no
// identity), permissions any or destination_port, actions ALLOW and DENY.

import { TYPE_URLS, unpackAny, type NetworkRbac__Output } from '../envoy/proto.js';
import { RBAC_NETWORK_FILTER } from '../envoy/names.js';
import type { Filter__Output } from '../generated/envoy/envoy/config/listener/v3/Filter.js';
import type { Principal__Output } from '../generated/envoy/envoy/config/rbac/v3/Principal.js';
import type { Policy__Output } from '../generated/envoy/envoy/config/rbac/v3/Policy.js';
import type { RBAC__Output as Rules__Output } from '../generated/envoy/envoy/config/rbac/v3/RBAC.js';
import type { PrincipalMatch, RbacFilter, RbacPolicy, RbacRules } from '../../proxy/policy/rbac.js';

type Report = (path: string, message: string) => void;

/** Whether `filter` is an RBAC network filter (by name or by its config's type). */
export function isRbacFilter(filter: Filter__Output): boolean {
  return filter.name === RBAC_NETWORK_FILTER || filter.typed_config?.type_url === TYPE_URLS.NetworkRbac;
}

const UNSUPPORTED = 'cannot be enforced by this sidecar';

function principal(p: Principal__Output, path: string, report: Report): PrincipalMatch | undefined {
  switch (p.identifier) {
    case 'any':
      return p.any ? { kind: 'any' } : (report(`${path}.any`, 'must be true'), undefined);
    case 'authenticated': {
      const name = p.authenticated?.principal_name;
      if (!name) return { kind: 'authenticated' };
      if (name.ignore_case) {
        report(`${path}.authenticated.principal_name.ignore_case`, `${UNSUPPORTED} (SPIFFE IDs are compared exactly)`);
        return undefined;
      }
      if (name.match_pattern === 'exact' && name.exact) return { kind: 'exact', id: name.exact };
      if (name.match_pattern === 'prefix' && name.prefix) return { kind: 'prefix', prefix: name.prefix };
      report(`${path}.authenticated.principal_name`, `${name.match_pattern ?? 'nothing'} ${UNSUPPORTED} (only a non-empty exact or prefix)`);
      return undefined;
    }
    case 'not_id':
      if (p.not_id?.identifier === 'authenticated' && !p.not_id.authenticated?.principal_name) return { kind: 'unauthenticated' };
      report(`${path}.not_id`, `${UNSUPPORTED} (only not_id of authenticated without principal_name: a peer with no identity)`);
      return undefined;
    default:
      report(path, `${p.identifier ?? 'an empty principal'} ${UNSUPPORTED} (only authenticated, any, not_id of authenticated)`);
      return undefined;
  }
}

/** A policy, or null when its permissions never match `port` (it can decide nothing on this chain). */
function policy(name: string, p: Policy__Output, port: number, path: string, report: Report): RbacPolicy | null | undefined {
  if (p.condition || p.checked_condition) report(`${path}.condition`, `${UNSUPPORTED} (CEL conditions)`);
  if (p.permissions.length === 0) report(`${path}.permissions`, 'must list at least one permission');
  let applies = false;
  p.permissions.forEach((perm, i) => {
    if (perm.rule === 'any' && perm.any) applies = true;
    else if (perm.rule === 'destination_port') applies ||= perm.destination_port === port;
    else report(`${path}.permissions[${i}]`, `${perm.rule ?? 'an empty permission'} ${UNSUPPORTED} (only any and destination_port)`);
  });
  if (p.principals.length === 0) report(`${path}.principals`, 'must list at least one principal');
  const principals = p.principals.map((pr, i) => principal(pr, `${path}.principals[${i}]`, report));
  if (principals.some((m) => m === undefined)) return undefined;
  return applies ? { name, principals: principals as PrincipalMatch[] } : null;
}

function rules(r: Rules__Output, port: number, path: string, report: Report): RbacRules | undefined {
  if (r.action !== 'ALLOW' && r.action !== 'DENY') {
    report(`${path}.action`, `${r.action} ${UNSUPPORTED} (only ALLOW and DENY)`);
    return undefined;
  }
  if (r.audit_logging_options) report(`${path}.audit_logging_options`, UNSUPPORTED);
  // Envoy tries a map's policies in no defined order; by name, a decision names the same policy every time.
  const names = Object.keys(r.policies).sort();
  const policies: RbacPolicy[] = [];
  for (const name of names) {
    const p = policy(name, r.policies[name]!, port, `${path}.policies[${JSON.stringify(name)}]`, report);
    if (p) policies.push(p);
  }
  return { action: r.action, policies };
}

/** One RBAC network filter of the chain serving destination port `port`; `path` names the filter. */
export function rbacFilter(filter: Filter__Output, port: number, path: string, report: Report): RbacFilter | undefined {
  const config = filter.typed_config;
  if (filter.name !== RBAC_NETWORK_FILTER) report(`${path}.name`, `must be ${RBAC_NETWORK_FILTER} for an RBAC config (got ${JSON.stringify(filter.name)})`);
  if (!config || config.type_url !== TYPE_URLS.NetworkRbac) {
    report(`${path}.typed_config`, `must be a ${TYPE_URLS.NetworkRbac} (got ${JSON.stringify(config?.type_url ?? 'nothing')})`);
    return undefined;
  }
  let rbac: NetworkRbac__Output;
  try {
    rbac = unpackAny(config, TYPE_URLS.NetworkRbac);
  } catch (err) {
    report(`${path}.typed_config`, err instanceof Error ? err.message : String(err));
    return undefined;
  }
  const at = `${path}.typed_config`;
  if (rbac.matcher) report(`${at}.matcher`, `${UNSUPPORTED} (use rules)`);
  if (rbac.shadow_matcher) report(`${at}.shadow_matcher`, `${UNSUPPORTED} (use shadow_rules)`);
  const enforced = rbac.rules ? rules(rbac.rules, port, `${at}.rules`, report) : null;
  const shadow = rbac.shadow_rules ? rules(rbac.shadow_rules, port, `${at}.shadow_rules`, report) : null;
  if (enforced === undefined || shadow === undefined) return undefined;
  return { rules: enforced, shadowRules: shadow };
}
