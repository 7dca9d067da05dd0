// The declarative mesh config (YAML or JSON): services, HTTP routes,
// authorization policies (policies.ts) and peer modes (peer-authentication.ts), the
// control plane's input beside the VM registry. Every problem is reported by
// its path, like the sidecar's config (proxy/config/).
//
//   services:
//     - { name: web, port: 8080, outbound_port: 18080, protocol: http, connect_timeout: 2s, lb_policy: least_request }
//   routes:
//     - name: web-routes
//       domains: [web, web.mesh]
//       routes:
//         - { prefix: /api, headers: [{ name: x-canary, exact: "1" }], clusters: [{ service: api-canary }] }
//         - { prefix: /api, clusters: [{ service: api, weight: 90 }, { service: api-canary, weight: 10 }] }
//         - { prefix: /, clusters: [{ service: web }] }

import { parseDuration } from '../../proxy/runtime/duration.js';
import { destinationPort, z } from '../../proxy/config/fields.js';
import { ConfigError, formatIssue, formatPath, parseYamlText } from '../../proxy/runtime/config-file.js';
import {
  MAX_CLUSTERS_PER_RULE,
  MAX_DOMAIN_LENGTH,
  MAX_DOMAINS_PER_ROUTE,
  MAX_HEADER_NAME_LENGTH,
  MAX_HEADER_VALUE_LENGTH,
  MAX_HEADERS_PER_RULE,
  MAX_MESH_BYTES,
  MAX_NAME_LENGTH,
  MAX_POLICIES,
  MAX_PREFIX_LENGTH,
  MAX_ROUTES,
  MAX_RULES_PER_ROUTE,
  MAX_SERVICES,
  MAX_TOTAL_WEIGHT,
  quoteBounded,
} from './bounds.js';
import { MAX_CONNECT_TIMEOUT_MS } from '../../proxy/dynamic/types.js';
import type { MeshConfig, MeshHeaderMatch, MeshService } from './types.js';
import { peerAuthenticationIssues, peerAuthenticationSchema } from './peer-authentication.js';
import { policySchema } from './policies.js';

const U32 = 0xffffffff;
const DNS_LABEL = `must be a DNS label: 1-${MAX_NAME_LENGTH} lowercase letters, digits or "-", starting and ending with a letter or digit`;
const atMost = (n: number, what: string): { message: string } => ({ message: `must list at most ${n} ${what}` });

/** Service and route names: they become xDS resource names and `xds:///<service>` targets. */
const meshName = z.string({ invalid_type_error: 'must be a string' }).regex(new RegExp(`^[a-z0-9](?:[a-z0-9-]{0,${MAX_NAME_LENGTH - 2}}[a-z0-9])?$`), { message: DNS_LABEL });

const connectTimeout = z
  .string({ invalid_type_error: 'must be a duration string such as "250ms", "5s", "1m" or "1h"' })
  .default('5s')
  .transform((text, ctx) => {
    const ms = parseDuration(text);
    if (ms === undefined) {
      ctx.addIssue({ code: 'custom', message: `${quoteBounded(text)} is not a duration such as "250ms", "5s", "1m" or "1h"` });
      return z.NEVER;
    }
    if (ms < 1 || ms > MAX_CONNECT_TIMEOUT_MS) {
      ctx.addIssue({ code: 'custom', message: `must be 1ms..${MAX_CONNECT_TIMEOUT_MS / 1000}s` });
      return z.NEVER;
    }
    return ms;
  });

const service = z
  .object({
    name: meshName,
    port: destinationPort,
    outbound_port: destinationPort.optional(),
    protocol: z
      .string({ invalid_type_error: 'must be "tcp" or "http"' })
      .default('tcp')
      .refine(
        (p): p is 'tcp' | 'http' => p === 'tcp' || p === 'http',
        (p) => ({ message: `must be one of "tcp", "http" (got ${quoteBounded(p)})` }),
      ),
    connect_timeout: connectTimeout,
    lb_policy: z
      .string({ invalid_type_error: 'must be "round_robin" or "least_request"' })
      .default('round_robin')
      .refine(
        (p): p is 'round_robin' | 'least_request' => p === 'round_robin' || p === 'least_request',
        (p) => ({ message: `must be one of "round_robin", "least_request" (got ${quoteBounded(p)})` }),
      ),
  })
  .strict()
  .transform(
    (s): MeshService => ({
      name: s.name,
      outboundPort: s.outbound_port ?? s.port,
      protocol: s.protocol,
      connectTimeoutMs: s.connect_timeout,
      ...(s.lb_policy === 'least_request' && { lbPolicy: 'least_request' as const }),
    }),
  );

const WEIGHT = `must be an integer 1..${U32}`;
const weight = z.number({ invalid_type_error: 'must be a number' }).int({ message: WEIGHT }).min(1, { message: WEIGHT }).max(U32, { message: WEIGHT });

const DOMAIN = 'must be a host name (or host:port), "*", or a name with one "*" at its start or end';
const domain = z
  .string({ invalid_type_error: 'must be a string' })
  .max(MAX_DOMAIN_LENGTH, { message: `must be at most ${MAX_DOMAIN_LENGTH} characters` })
  .regex(/^(?:\*|\*[^*\s/]+|[^*\s/]+\*?)$/, { message: DOMAIN });

const clusters = z
  .array(z.object({ service: meshName, weight: weight.default(1) }).strict())
  .min(1, { message: 'must list at least one cluster' })
  .max(MAX_CLUSTERS_PER_RULE, atMost(MAX_CLUSTERS_PER_RULE, 'clusters'))
  .superRefine((list, ctx) => {
    // Runs on partly invalid input too (zod reports every problem at once): count only valid weights.
    const total = list.reduce((sum, c) => sum + (typeof c?.weight === 'number' ? c.weight : 0), 0);
    if (total > MAX_TOTAL_WEIGHT) ctx.addIssue({ code: 'custom', message: `weights add up to ${total}, more than ${MAX_TOTAL_WEIGHT}` });
  });

const HEADER_MATCH = 'must have exactly one of exact, prefix or present: true';
const headerName = z
  .string({ invalid_type_error: 'must be a string' })
  .regex(/^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/, { message: 'must be an HTTP header name (letters, digits and !#$%&\'*+-.^_`|~)' })
  .max(MAX_HEADER_NAME_LENGTH, { message: `must be at most ${MAX_HEADER_NAME_LENGTH} characters` })
  .transform((n) => n.toLowerCase());
const headerValue = z.string({ invalid_type_error: 'must be a string' }).max(MAX_HEADER_VALUE_LENGTH, { message: `must be at most ${MAX_HEADER_VALUE_LENGTH} characters` });
const headerMatch = z
  .object({ name: headerName, exact: headerValue.optional(), prefix: headerValue.optional(), present: z.literal(true, { errorMap: () => ({ message: 'must be true' }) }).optional() })
  .strict()
  .superRefine((h, ctx) => {
    if ([h.exact, h.prefix, h.present].filter((v) => v !== undefined).length !== 1) ctx.addIssue({ code: 'custom', message: HEADER_MATCH });
  })
  .transform((h): MeshHeaderMatch => (h.exact !== undefined ? { name: h.name, exact: h.exact } : h.prefix !== undefined ? { name: h.name, prefix: h.prefix } : { name: h.name, present: true }));

const route = z
  .object({
    name: meshName,
    domains: z.array(domain).min(1, { message: 'must list at least one domain' }).max(MAX_DOMAINS_PER_ROUTE, atMost(MAX_DOMAINS_PER_ROUTE, 'domains')),
    routes: z
      .array(
        z
          .object({
            prefix: z
              .string({ invalid_type_error: 'must be a string' })
              .startsWith('/', { message: 'must start with "/"' })
              .max(MAX_PREFIX_LENGTH, { message: `must be at most ${MAX_PREFIX_LENGTH} characters` }),
            headers: z.array(headerMatch).max(MAX_HEADERS_PER_RULE, atMost(MAX_HEADERS_PER_RULE, 'header matches')).default([]),
            clusters,
          })
          .strict(),
      )
      .min(1, { message: 'must list at least one route' })
      .max(MAX_RULES_PER_ROUTE, atMost(MAX_RULES_PER_ROUTE, 'routes')),
  })
  .strict();

export const meshConfigSchema = z
  .object({
    services: z.array(service).max(MAX_SERVICES, atMost(MAX_SERVICES, 'services')).default([]),
    routes: z.array(route).max(MAX_ROUTES, atMost(MAX_ROUTES, 'routes')).default([]),
    policies: z.array(policySchema(meshName)).max(MAX_POLICIES, atMost(MAX_POLICIES, 'policies')).default([]),
    peer_authentication: peerAuthenticationSchema(meshName),
  })
  .strict()
  .transform((m): MeshConfig => ({ services: m.services, routes: m.routes, policies: m.policies, peerAuthentication: m.peer_authentication }));

export interface MeshIssue {
  path: Array<string | number>;
  message: string;
}

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);
const list = (v: unknown): unknown[] => (Array.isArray(v) ? v : []);

/**
 * Checks between entries (unique names and outbound ports, route clusters name
 * declared services). Runs on the raw input beside the schema so one pass
 * lists every problem, so it reads the data defensively.
 */
export function meshCrossReferences(raw: unknown): MeshIssue[] {
  const issues: MeshIssue[] = [];
  if (!isObject(raw)) return issues;
  const serviceAt = new Map<string, number>();
  const outboundAt = new Map<number, number>();
  list(raw.services).forEach((s, i) => {
    if (!isObject(s)) return;
    if (typeof s.name === 'string') {
      const first = serviceAt.get(s.name);
      if (first !== undefined) issues.push({ path: ['services', i, 'name'], message: `duplicate service name ${quoteBounded(s.name)} (also services[${first}])` });
      else serviceAt.set(s.name, i);
    }
    const field = s.outbound_port !== undefined ? 'outbound_port' : 'port';
    const outbound = s[field];
    if (typeof outbound !== 'number') return;
    const other = outboundAt.get(outbound);
    if (other !== undefined) issues.push({ path: ['services', i, field], message: `outbound port ${outbound} is also the outbound port of services[${other}]` });
    else outboundAt.set(outbound, i);
  });
  const routeAt = new Map<string, number>();
  list(raw.routes).forEach((r, i) => {
    if (!isObject(r)) return;
    if (typeof r.name === 'string') {
      const first = routeAt.get(r.name);
      if (first !== undefined) issues.push({ path: ['routes', i, 'name'], message: `duplicate route name ${quoteBounded(r.name)} (also routes[${first}])` });
      else routeAt.set(r.name, i);
      // A service's own route configuration (for gRPC xDS clients) carries the service's name.
      if (serviceAt.has(r.name)) issues.push({ path: ['routes', i, 'name'], message: `${quoteBounded(r.name)} is also a service name (route configurations and services share names)` });
    }
    const domains = new Map<string, number>();
    list(r.domains).forEach((d, j) => {
      if (typeof d !== 'string') return;
      const first = domains.get(d);
      if (first !== undefined) issues.push({ path: ['routes', i, 'domains', j], message: `duplicate domain ${quoteBounded(d)} (also domains[${first}])` });
      else domains.set(d, j);
    });
    list(r.routes).forEach((entry, j) => {
      if (!isObject(entry)) return;
      const seen = new Set<string>();
      list(entry.clusters).forEach((c, k) => {
        if (!isObject(c) || typeof c.service !== 'string') return;
        const at = ['routes', i, 'routes', j, 'clusters', k, 'service'];
        if (!serviceAt.has(c.service)) issues.push({ path: at, message: `unknown service ${quoteBounded(c.service)}` });
        if (seen.has(c.service)) issues.push({ path: at, message: `${quoteBounded(c.service)} is listed twice in this route` });
        seen.add(c.service);
      });
    });
  });
  const policyAt = new Map<string, number>();
  list(raw.policies).forEach((p, i) => {
    if (!isObject(p)) return;
    if (typeof p.name === 'string') {
      const first = policyAt.get(p.name);
      if (first !== undefined) issues.push({ path: ['policies', i, 'name'], message: `duplicate policy name ${quoteBounded(p.name)} (also policies[${first}])` });
      else policyAt.set(p.name, i);
    }
    if (typeof p.service === 'string' && !serviceAt.has(p.service)) issues.push({ path: ['policies', i, 'service'], message: `unknown service ${quoteBounded(p.service)}` });
  });
  issues.push(...peerAuthenticationIssues(list(raw.peer_authentication), new Set(serviceAt.keys())));
  return issues;
}

/** Validates already-parsed mesh config data (from YAML, JSON or code); throws ConfigError listing every problem. */
export function parseMeshConfig(data: unknown, source = 'mesh config'): MeshConfig {
  const input = data ?? {};
  const result = meshConfigSchema.safeParse(input);
  const problems = result.success ? [] : result.error.issues.map(formatIssue);
  for (const issue of meshCrossReferences(input)) problems.push(`${formatPath(issue.path)}: ${issue.message}`);
  const bytes = Buffer.byteLength(JSON.stringify(input));
  if (bytes > MAX_MESH_BYTES) problems.push(`(top level): the mesh takes ${bytes} bytes as JSON, more than the ${MAX_MESH_BYTES} it may take`);
  if (problems.length > 0 || !result.success) throw new ConfigError(source, problems);
  return result.data;
}

/** YAML (or JSON) text -> MeshConfig; throws ConfigError with syntax problems by line, or every problem by path. */
export function parseMeshConfigText(text: string, source = 'mesh config'): MeshConfig {
  return parseMeshConfig(parseYamlText(text, source), source);
}
