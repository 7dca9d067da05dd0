// Peer modes per service and port, like Istio's PeerAuthentication: the mesh
// config's `peer_authentication:` entries, their validation, and the one
// decision of which mode a VM's inbound port has. Pure.
//
//   peer_authentication:
//     - { name: mesh, mode: STRICT }                        # mesh-wide (STRICT when there is none)
//     - { name: legacy, service: legacy, mode: PERMISSIVE }  # the ports where VMs serve `legacy`
//     - { name: metrics, port: 9100, mode: DISABLE }         # inbound port 9100 of every VM
//     - { name: web-admin, service: web, port: 8081, mode: PERMISSIVE }

import { destinationPort, z } from '../../proxy/config/fields.js';
import type { PeerTlsMode } from '../../proxy/peer-tls/peer-policy.js';
import type { VmRecord } from '../../proxy/resolve/types.js';
import { MAX_PEER_AUTHENTICATIONS, quoteBounded } from './bounds.js';
import type { PeerAuthentication } from './types.js';

/** What a new mesh gets: every TCP peer must present a mesh certificate. */
export const DEFAULT_PEER_MODE: PeerTlsMode = 'strict';

const MODES = ['STRICT', 'PERMISSIVE', 'DISABLE'] as const;
const MODE = `must be one of ${MODES.map((m) => JSON.stringify(m)).join(', ')}`;

/** Istio's names (any case) to the sidecar's. */
const mode = z
  .string({ invalid_type_error: MODE })
  .refine(
    (m) => (MODES as readonly string[]).includes(m.toUpperCase()),
    (m) => ({ message: `${MODE} (got ${quoteBounded(m)})` }),
  )
  .transform((m) => m.toLowerCase() as PeerTlsMode);

/** One entry; `meshName` is the mesh config's name rule (a DNS label). */
export function peerAuthenticationSchema(meshName: z.ZodType<string>) {
  const entry = z
    .object({ name: meshName, service: meshName.optional(), port: destinationPort.optional(), mode })
    .strict()
    .transform((e): PeerAuthentication => ({ name: e.name, mode: e.mode, ...(e.service !== undefined && { service: e.service }), ...(e.port !== undefined && { port: e.port }) }));
  return z.array(entry).max(MAX_PEER_AUTHENTICATIONS, { message: `must list at most ${MAX_PEER_AUTHENTICATIONS} entries` }).default([]);
}

const selectorOf = (e: Record<string, unknown>): string => `${typeof e.service === 'string' ? `service ${quoteBounded(e.service)}` : 'any service'}, ${typeof e.port === 'number' ? `port ${e.port}` : 'any port'}`;

/** Names unique, one entry per selector, services declared. Reads raw input defensively (it runs beside the schema). */
export function peerAuthenticationIssues(entries: unknown[], services: ReadonlySet<string>): Array<{ path: Array<string | number>; message: string }> {
  const issues: Array<{ path: Array<string | number>; message: string }> = [];
  const nameAt = new Map<string, number>();
  const selectorAt = new Map<string, number>();
  entries.forEach((e, i) => {
    if (typeof e !== 'object' || e === null || Array.isArray(e)) return;
    const entry = e as Record<string, unknown>;
    if (typeof entry.name === 'string') {
      const first = nameAt.get(entry.name);
      if (first !== undefined) issues.push({ path: ['peer_authentication', i, 'name'], message: `duplicate name ${quoteBounded(entry.name)} (also peer_authentication[${first}])` });
      else nameAt.set(entry.name, i);
    }
    const selector = selectorOf(entry);
    const other = selectorAt.get(selector);
    if (other !== undefined) issues.push({ path: ['peer_authentication', i], message: `selects the same ports as peer_authentication[${other}] (${selector}): one entry per selector` });
    else selectorAt.set(selector, i);
    if (typeof entry.service === 'string' && !services.has(entry.service)) issues.push({ path: ['peer_authentication', i, 'service'], message: `unknown service ${quoteBounded(entry.service)}` });
  });
  return issues;
}

const STRICTNESS: Record<PeerTlsMode, number> = { disable: 0, permissive: 1, strict: 2 };

/** The stricter of two modes. */
export function stricter(a: PeerTlsMode, b: PeerTlsMode): PeerTlsMode {
  return STRICTNESS[a] >= STRICTNESS[b] ? a : b;
}

/**
 * The mode of one service on one port: the most specific entry that selects
 * it (service and port, then port, then service, then the mesh-wide entry),
 * else DEFAULT_PEER_MODE.
 */
export function serviceMode(entries: readonly PeerAuthentication[], service: string, port: number): PeerTlsMode {
  let best: { rank: number; mode: PeerTlsMode } | undefined;
  for (const e of entries) {
    if ((e.service !== undefined && e.service !== service) || (e.port !== undefined && e.port !== port)) continue;
    const rank = (e.port !== undefined ? 2 : 0) + (e.service !== undefined ? 1 : 0);
    if (best === undefined || rank > best.rank) best = { rank, mode: e.mode };
  }
  return best?.mode ?? DEFAULT_PEER_MODE;
}

/**
 * The mode of VM `vm`'s inbound port `port`: one port may serve several
 * services, and then the strictest of their modes holds (a service never
 * gets less than it asked for). A port it serves no mesh service on: the
 * port entry or the mesh-wide one.
 */
export function portMode(entries: readonly PeerAuthentication[], vm: Pick<VmRecord, 'services'>, port: number): PeerTlsMode {
  const services = vm.services.filter((s) => s.port === port);
  if (services.length === 0) return serviceMode(entries.filter((e) => e.service === undefined), '', port);
  return services.map((s) => serviceMode(entries, s.name, port)).reduce(stricter);
}

/**
 * How the inbound listener's filter chains say a port's mode, as Envoy (and
 * Istio) distinguish TLS from plain text: one chain per transport protocol a
 * port accepts (`filter_chain_match.transport_protocol`).
 */
export function transportProtocols(mode: PeerTlsMode): Array<'tls' | 'raw_buffer'> {
  return mode === 'strict' ? ['tls'] : mode === 'permissive' ? ['tls', 'raw_buffer'] : ['raw_buffer'];
}
