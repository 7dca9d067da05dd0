// HTTP routing as Envoy's RouteConfiguration describes it, on the sidecar's
// own model (the control plane's RouteConfiguration, validated in xds/client,
// or a route_config of the sidecar's file): a request's Host/:authority picks
// a virtual host, its path and headers the first route that matches, and the
// route's clusters by weight. Pure: no I/O, the random number is given.

import type { RetryPolicy } from './retry.js';

/** How a route matches the path (the query string never counts): a prefix, the exact path, or a regular expression that must match all of it. */
export type PathMatch = { kind: 'prefix'; value: string } | { kind: 'exact'; value: string } | { kind: 'regex'; value: string };

/** A header condition; `invert` negates it (a missing header then matches exact and prefix). Names are lower case. */
export type HeaderMatch =
  | { name: string; kind: 'exact'; value: string; invert: boolean }
  | { name: string; kind: 'prefix'; value: string; invert: boolean }
  | { name: string; kind: 'present'; invert: boolean };

export interface WeightedCluster {
  name: string;
  weight: number;
}

export interface Route {
  path: PathMatch;
  headers: HeaderMatch[];
  /** One cluster (weight 1), or several split by weight. */
  clusters: WeightedCluster[];
  /** The whole request's deadline (504 after it); 0: none. */
  timeoutMs: number;
  /** Retries (http/retry.ts); none when absent. */
  retry?: RetryPolicy;
}

export interface VirtualHost {
  name: string;
  /** `example.com`, `*.example.com` (any subdomain), `example.*` or `*` (any host); lower case. */
  domains: string[];
  routes: Route[];
}

export interface RouteConfig {
  name: string;
  virtualHosts: VirtualHost[];
}

/** Envoy's default route timeout. */
export const DEFAULT_ROUTE_TIMEOUT_MS = 15_000;
/** The longest regular expression a route may carry (it is compiled on the sidecar). */
export const MAX_REGEX_LENGTH = 1024;

/**
 * Why `source` cannot be a route's regular expression, or undefined. Envoy's
 * safe_regex is RE2, which has no backreferences or lookaround; refusing them
 * keeps a route meaning the same on both and keeps the worst cases out.
 */
export function regexProblem(source: string): string | undefined {
  if (source === '') return 'must not be empty';
  if (source.length > MAX_REGEX_LENGTH) return `must be at most ${MAX_REGEX_LENGTH} characters (got ${source.length})`;
  if (/\\[1-9]|\\k<|\(\?<?[=!]/.test(source)) return 'backreferences and lookaround are not supported (RE2 syntax)';
  try {
    new RegExp(source, 'u');
  } catch (err) {
    // V8 repeats the expression; the field path already names it.
    return `not a valid regular expression: ${(err as Error).message.replace(/^Invalid regular expression: \/.*\/[a-z]*: /s, '')}`;
  }
  return undefined;
}

/** Why `domain` cannot name a virtual host, or undefined: at most one `*`, at the start or the end (or alone). */
export function domainProblem(domain: string): string | undefined {
  if (domain === '') return 'must not be empty';
  const stars = domain.split('*').length - 1;
  if (stars > 1 || (stars === 1 && domain !== '*' && !domain.startsWith('*') && !domain.endsWith('*'))) return `wildcard only as a whole prefix or suffix (got ${JSON.stringify(domain)})`;
  return undefined;
}

/** The request facts routing reads. `headers`: lower-case names (Node's IncomingHttpHeaders and HTTP/2 headers are). */
export interface RouteRequest {
  authority: string;
  path: string;
  headers: Readonly<Record<string, string | string[] | undefined>>;
}

export type RouteDecision =
  /** `route`: the route's label, `<virtual host>/<index>` (metrics, access log). */
  | { ok: true; virtualHost: string; route: string; cluster: string; timeoutMs: number; retry?: RetryPolicy }
  | { ok: false; reason: 'no_virtual_host' | 'no_route_match' };

interface CompiledRoute {
  route: Route;
  regex?: RegExp;
}

interface CompiledHost {
  host: VirtualHost;
  routes: CompiledRoute[];
}

/** The host without its port, lower case (`[::1]:80` → `[::1]`). */
export function hostOf(authority: string): string {
  const a = authority.toLowerCase();
  if (a.startsWith('[')) {
    const end = a.indexOf(']');
    return end < 0 ? a : a.slice(0, end + 1);
  }
  const colon = a.indexOf(':');
  return colon < 0 ? a : a.slice(0, colon);
}

/** The path without query string or fragment. */
function pathOnly(path: string): string {
  const end = path.search(/[?#]/);
  return end < 0 ? path : path.slice(0, end);
}

function headerValue(headers: RouteRequest['headers'], name: string): string | undefined {
  const v = headers[name];
  return Array.isArray(v) ? v.join(',') : v;
}

function headerMatches(m: HeaderMatch, headers: RouteRequest['headers']): boolean {
  const value = headerValue(headers, m.name);
  let hit: boolean;
  if (m.kind === 'present') hit = value !== undefined;
  else if (value === undefined) hit = false;
  else hit = m.kind === 'exact' ? value === m.value : value.startsWith(m.value);
  return hit !== m.invert;
}

function pathMatches(r: CompiledRoute, path: string): boolean {
  const { path: m } = r.route;
  if (m.kind === 'prefix') return path.startsWith(m.value);
  if (m.kind === 'exact') return path === m.value;
  return r.regex!.test(path);
}

/**
 * A route configuration ready for requests: regular expressions compiled once,
 * virtual hosts indexed as Envoy orders them (exact domain, then the longest
 * `*.suffix`, then the longest `prefix.*`, then `*`).
 */
export class RouteTable {
  private readonly exact = new Map<string, CompiledHost>();
  private readonly suffixes: Array<{ suffix: string; host: CompiledHost }> = [];
  private readonly prefixes: Array<{ prefix: string; host: CompiledHost }> = [];
  private readonly any: CompiledHost | undefined;

  constructor(readonly config: RouteConfig) {
    let any: CompiledHost | undefined;
    for (const host of config.virtualHosts) {
      const compiled: CompiledHost = {
        host,
        routes: host.routes.map((route) => (route.path.kind === 'regex' ? { route, regex: new RegExp(`^(?:${route.path.value})$`, 'u') } : { route })),
      };
      for (const raw of host.domains) {
        const d = raw.toLowerCase();
        if (d === '*') any ??= compiled;
        else if (d.startsWith('*')) this.suffixes.push({ suffix: d.slice(1), host: compiled });
        else if (d.endsWith('*')) this.prefixes.push({ prefix: d.slice(0, -1), host: compiled });
        else if (!this.exact.has(d)) this.exact.set(d, compiled);
      }
    }
    this.any = any;
    this.suffixes.sort((a, b) => b.suffix.length - a.suffix.length);
    this.prefixes.sort((a, b) => b.prefix.length - a.prefix.length);
  }

  /** The virtual host for a Host/:authority (its port ignored), or undefined. */
  virtualHost(authority: string): VirtualHost | undefined {
    return this.compiledHost(authority)?.host;
  }

  private compiledHost(authority: string): CompiledHost | undefined {
    const host = hostOf(authority);
    // A wildcard stands for at least one character, as in Envoy.
    return (
      this.exact.get(host) ??
      this.suffixes.find((s) => host.length > s.suffix.length && host.endsWith(s.suffix))?.host ??
      this.prefixes.find((p) => host.length > p.prefix.length && host.startsWith(p.prefix))?.host ??
      this.any
    );
  }

  /** The first route of the request's virtual host that matches, and its cluster for `random` in [0, 1). */
  route(request: RouteRequest, random: number): RouteDecision {
    const host = this.compiledHost(request.authority);
    if (host === undefined) return { ok: false, reason: 'no_virtual_host' };
    const path = pathOnly(request.path);
    const index = host.routes.findIndex((r) => pathMatches(r, path) && r.route.headers.every((h) => headerMatches(h, request.headers)));
    if (index < 0) return { ok: false, reason: 'no_route_match' };
    const { route } = host.routes[index]!;
    return { ok: true, virtualHost: host.host.name, route: `${host.host.name}/${index}`, cluster: pickWeighted(route.clusters, random), timeoutMs: route.timeoutMs, ...(route.retry && { retry: route.retry }) };
  }
}

/** The cluster that `random` in [0, 1) falls on when the weights share the unit interval in order. */
export function pickWeighted(clusters: readonly WeightedCluster[], random: number): string {
  const total = clusters.reduce((sum, c) => sum + c.weight, 0);
  let point = random * total;
  for (const c of clusters) {
    if (point < c.weight) return c.name;
    point -= c.weight;
  }
  return clusters[clusters.length - 1]!.name;
}

/** Every cluster a route configuration names (the listener needs each one). */
export function clustersOf(config: RouteConfig): string[] {
  return [...new Set(config.virtualHosts.flatMap((h) => h.routes.flatMap((r) => r.clusters.map((c) => c.name))))];
}
