// The mesh's authorization policies as Envoy RBAC network filters
// (envoy.extensions.filters.network.rbac.v3.RBAC) in the filter chain of
// each destination port of a VM's inbound listener, so an Envoy could read
// the same resource. Pure. Per chain, in this order (the first enforced
// filter that denies decides): DENY, ALLOW, then the dry-run (shadow) DENY
// and ALLOW in filters of their own with shadow_rules only.

import { packAny, TYPE_URLS } from '../envoy/proto.js';
import { RBAC_NETWORK_FILTER } from '../envoy/names.js';
import type { Filter } from '../generated/envoy/envoy/config/listener/v3/Filter.js';
import type { Principal } from '../generated/envoy/envoy/config/rbac/v3/Principal.js';
import type { Policy } from '../generated/envoy/envoy/config/rbac/v3/Policy.js';
import type { PrincipalMatch } from '../../proxy/policy/rbac.js';
import type { VmRecord } from '../../proxy/resolve/types.js';
import type { MeshPolicy } from './policies.js';

/** A principal as Envoy's RBAC writes it: the peer certificate's URI SAN for a SPIFFE ID; no certificate for `unauthenticated`. */
export function rbacPrincipal(match: PrincipalMatch): Principal {
  switch (match.kind) {
    case 'exact':
      return { authenticated: { principal_name: { exact: match.id } } };
    case 'prefix':
      return { authenticated: { principal_name: { prefix: match.prefix } } };
    case 'authenticated':
      return { authenticated: {} };
    case 'any':
      return { any: true };
    case 'unauthenticated':
      return { not_id: { authenticated: {} } };
  }
}

/** Whether `policy` selects destination port `port` of `vm`: the VM serves its service, on that port or on one the policy lists. */
export function selects(policy: MeshPolicy, vm: VmRecord, port: number): boolean {
  const served = vm.services.filter((s) => s.name === policy.service);
  if (served.length === 0) return false;
  return policy.ports === null ? served.some((s) => s.port === port) : policy.ports.includes(port);
}

function rbacFilter(statPrefix: string, action: 'ALLOW' | 'DENY', policies: MeshPolicy[], shadow: boolean): Filter {
  const rules = {
    action,
    policies: Object.fromEntries(policies.map((p): [string, Policy] => [p.name, { permissions: [{ any: true }], principals: p.principals.map(rbacPrincipal) }])),
  };
  const config = shadow ? { stat_prefix: statPrefix, shadow_rules: rules, shadow_rules_stat_prefix: statPrefix } : { stat_prefix: statPrefix, rules };
  return { name: RBAC_NETWORK_FILTER, typed_config: packAny(TYPE_URLS.NetworkRbac, config) };
}

/** The RBAC filters of the chain for destination port `port` of `vm` (none when no policy selects it). */
export function rbacFilters(policies: readonly MeshPolicy[], vm: VmRecord, port: number, chainName: string): Filter[] {
  const selected = [...policies].filter((p) => selects(p, vm, port)).sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  const filters: Filter[] = [];
  for (const shadow of [false, true]) {
    for (const action of ['DENY', 'ALLOW'] as const) {
      const set = selected.filter((p) => p.shadow === shadow && p.action === action);
      if (set.length > 0) filters.push(rbacFilter(`${chainName}.${shadow ? 'shadow_' : ''}${action.toLowerCase()}.`, action, set, shadow));
    }
  }
  return filters;
}
