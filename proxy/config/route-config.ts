// The route_config of an HTTP outbound listener in the sidecar's file: the
// shape of Envoy's RouteConfiguration in the file's snake_case, validated into
// the same model the control plane's routes become (http/route-table.ts).

import { duration, name, optionalDuration, z } from './fields.js';
import { MAX_ATTEMPTS, MIN_ATTEMPTS, type RetryPolicy } from '../http/retry.js';
import { DEFAULT_ROUTE_TIMEOUT_MS, domainProblem, regexProblem, type HeaderMatch, type PathMatch, type RouteConfig } from '../http/route-table.js';

/**
 * The schema of a route_config, built for each validation and then left to the
 * garbage collector (a few hundred zod objects: schema.ts says why).
 */
export function routeConfigSchema() {
  const headerName = z.string().regex(/^[A-Za-z0-9!#$%&'*+.^_`|~-]+$/, { message: 'must be an HTTP header name' });

  const headerMatch = z
    .object({ name: headerName, exact: z.string().optional(), prefix: z.string().optional(), present: z.literal(true).optional(), invert: z.boolean().default(false) })
    .strict()
    .superRefine((h, ctx) => {
      const kinds = [h.exact, h.prefix, h.present].filter((k) => k !== undefined).length;
      if (kinds !== 1) ctx.addIssue({ code: 'custom', message: 'must have exactly one of exact, prefix or present: true' });
    })
    .transform((h): HeaderMatch => {
      const n = h.name.toLowerCase();
      if (h.exact !== undefined) return { name: n, kind: 'exact', value: h.exact, invert: h.invert };
      if (h.prefix !== undefined) return { name: n, kind: 'prefix', value: h.prefix, invert: h.invert };
      return { name: n, kind: 'present', invert: h.invert };
    });

  const match = z
    .object({
      prefix: z.string().optional(),
      path: z.string().startsWith('/', { message: 'must start with "/"' }).optional(),
      safe_regex: z
        .string()
        .optional()
        .superRefine((r, ctx) => {
          const problem = r === undefined ? undefined : regexProblem(r);
          if (problem) ctx.addIssue({ code: 'custom', message: problem });
        }),
      headers: z.array(headerMatch).default([]),
    })
    .strict()
    .superRefine((m, ctx) => {
      if ([m.prefix, m.path, m.safe_regex].filter((k) => k !== undefined).length !== 1) ctx.addIssue({ code: 'custom', message: 'must have exactly one of prefix, path or safe_regex' });
    })
    .transform((m): { path: PathMatch; headers: HeaderMatch[] } => ({
      path: m.path !== undefined ? { kind: 'exact', value: m.path } : m.safe_regex !== undefined ? { kind: 'regex', value: m.safe_regex } : { kind: 'prefix', value: m.prefix ?? '/' },
      headers: m.headers,
    }));

  const weight = z.number().int({ message: 'must be an integer 1..1000000' }).min(1, { message: 'must be an integer 1..1000000' }).max(1_000_000, { message: 'must be an integer 1..1000000' });

  const retryOn = z.union([z.literal('connect_failure'), z.literal('reset'), z.number(), z.string()]).superRefine((v, ctx) => {
    if (v === 'connect_failure' || v === 'reset') return;
    const code = typeof v === 'number' ? v : /^[0-9]+$/.test(v) ? Number(v) : NaN;
    if (!Number.isInteger(code) || code < 400 || code > 599)
      ctx.addIssue({ code: 'custom', message: `must be connect_failure, reset or a status code 400..599 (got ${JSON.stringify(v)})` });
  });

  const attemptsMessage = `must be an integer ${MIN_ATTEMPTS}..${MAX_ATTEMPTS}`;

  const retry = z
    .object({
      attempts: z.number().int({ message: attemptsMessage }).min(MIN_ATTEMPTS, { message: attemptsMessage }).max(MAX_ATTEMPTS, { message: attemptsMessage }).default(MIN_ATTEMPTS),
      on: z.array(retryOn).min(1, { message: 'must list at least one of connect_failure, reset or a status code' }),
      per_try_timeout: optionalDuration(),
    })
    .strict()
    .transform(
      (r): RetryPolicy => ({
        attempts: r.attempts,
        connectFailure: r.on.includes('connect_failure'),
        reset: r.on.includes('reset'),
        statuses: [...new Set(r.on.filter((v) => v !== 'connect_failure' && v !== 'reset').map(Number))],
        ...(r.per_try_timeout !== undefined && { perTryTimeoutMs: r.per_try_timeout }),
      }),
    );

  const route = z
    .object({
      match,
      cluster: name.optional(),
      weighted_clusters: z.array(z.object({ name, weight }).strict()).min(1, { message: 'must list at least one cluster' }).optional(),
      timeout: duration(`${DEFAULT_ROUTE_TIMEOUT_MS / 1000}s`, 0),
      retry: retry.optional(),
    })
    .strict()
    .superRefine((r, ctx) => {
      if ((r.cluster === undefined) === (r.weighted_clusters === undefined)) ctx.addIssue({ code: 'custom', message: 'must have exactly one of cluster or weighted_clusters' });
    })
    .transform((r) => ({ ...r.match, clusters: r.weighted_clusters ?? [{ name: r.cluster!, weight: 1 }], timeoutMs: r.timeout, ...(r.retry && { retry: r.retry }) }));

  const domain = z.string().superRefine((d, ctx) => {
    const problem = domainProblem(d);
    if (problem) ctx.addIssue({ code: 'custom', message: problem });
  });

  const virtualHost = z
    .object({ name, domains: z.array(domain).min(1, { message: 'must list at least one domain' }), routes: z.array(route).min(1, { message: 'must list at least one route' }) })
    .strict()
    .transform((h) => ({ name: h.name, domains: h.domains.map((d) => d.toLowerCase()), routes: h.routes }));

  return z
    .object({ virtual_hosts: z.array(virtualHost).min(1, { message: 'must list at least one virtual host' }) })
    .strict()
    .superRefine((c, ctx) => {
      const seen = new Map<string, number>();
      c.virtual_hosts.forEach((h, i) =>
        h.domains.forEach((d, j) => {
          if (seen.has(d)) ctx.addIssue({ code: 'custom', path: ['virtual_hosts', i, 'domains', j], message: `duplicate domain "${d}" (also in virtual_hosts[${seen.get(d)}])` });
          else seen.set(d, i);
        }),
      );
    });
}

/** The route configuration of listener `listener`: its file's route_config, or every request to `cluster`. */
export function listenerRoutes(listener: string, config: z.output<ReturnType<typeof routeConfigSchema>> | undefined, cluster: string | undefined): RouteConfig {
  if (config !== undefined) return { name: listener, virtualHosts: config.virtual_hosts };
  return { name: listener, virtualHosts: [{ name: listener, domains: ['*'], routes: [{ path: { kind: 'prefix', value: '/' }, headers: [], clusters: [{ name: cluster!, weight: 1 }], timeoutMs: DEFAULT_ROUTE_TIMEOUT_MS }] }] };
}
