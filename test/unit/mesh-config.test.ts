import test from 'ava';
import { meshProblems } from '../helpers/config-problems.js';
import { ConfigError } from '../../proxy/runtime/config-file.js';
import {
  MAX_CLUSTERS_PER_RULE,
  MAX_DOMAIN_LENGTH,
  MAX_DOMAINS_PER_ROUTE,
  MAX_MESH_BYTES,
  MAX_NAME_LENGTH,
  MAX_PREFIX_LENGTH,
  MAX_ROUTES,
  MAX_RULES_PER_ROUTE,
  MAX_SERVICES,
  MAX_TOTAL_WEIGHT,
  quoteBounded,
  truncateUtf8,
} from '../../xds/control-plane/bounds.js';
import { parseMeshConfig, parseMeshConfigText } from '../../xds/control-plane/mesh.js';

const problems = meshProblems;

const MESH_YAML = `
services:
  - name: web
    port: 8080
    outbound_port: 18080
    protocol: http
    connect_timeout: 2s
  - name: api
    port: 9090
  - { name: api-canary, port: 9091, connect_timeout: 1500ms }
routes:
  - name: web-routes
    domains: ["web", "web.mesh"]
    routes:
      - prefix: /api
        clusters: [{ service: api, weight: 90 }, { service: api-canary, weight: 10 }]
      - prefix: /
        clusters: [{ service: web }]
`;

const svc = (extra: Record<string, unknown> = {}) => ({ name: 'web', port: 8080, ...extra });
const rt = (extra: Record<string, unknown> = {}) => ({ name: 'r', domains: ['web'], routes: [{ prefix: '/', clusters: [{ service: 'web' }] }], ...extra });

test('the documented example parses, with defaults filled in and durations in milliseconds', (t) => {
  t.deepEqual(parseMeshConfigText(MESH_YAML, 'mesh.yaml'), {
    services: [
      { name: 'web', outboundPort: 18080, protocol: 'http', connectTimeoutMs: 2_000 },
      { name: 'api', outboundPort: 9090, protocol: 'tcp', connectTimeoutMs: 5_000 },
      { name: 'api-canary', outboundPort: 9091, protocol: 'tcp', connectTimeoutMs: 1_500 },
    ],
    routes: [
      {
        name: 'web-routes',
        domains: ['web', 'web.mesh'],
        routes: [
          { prefix: '/api', headers: [], clusters: [{ service: 'api', weight: 90 }, { service: 'api-canary', weight: 10 }] },
          { prefix: '/', headers: [], clusters: [{ service: 'web', weight: 1 }] },
        ],
      },
    ],
    policies: [],
    peerAuthentication: [],
  });
});

test('an empty document is an empty mesh; wildcard domains are accepted', (t) => {
  t.deepEqual(parseMeshConfigText('', 'empty.yaml'), { services: [], routes: [], policies: [], peerAuthentication: [] });
  t.deepEqual(parseMeshConfig({ services: [svc()], routes: [rt({ domains: ['*', '*.mesh', 'web-*', 'web:8080'] })] }).routes[0]!.domains, ['*', '*.mesh', 'web-*', 'web:8080']);
});

test('service field errors are reported by path, all at once', (t) => {
  t.deepEqual(
    problems({
      services: [
        { name: 'Web_1', port: 0, outbound_port: 70000, protocol: 'udp', connect_timeout: 'soon', colour: 'red' },
        { port: 8080, connect_timeout: '10m' },
        { name: '-web', port: 8.5, connect_timeout: 5 },
      ],
    }),
    [
      'services[0].name: must be a DNS label: 1-63 lowercase letters, digits or "-", starting and ending with a letter or digit',
      'services[0].port: must be an integer 1..65535',
      'services[0].outbound_port: must be an integer 1..65535',
      'services[0].protocol: must be one of "tcp", "http" (got "udp")',
      'services[0].connect_timeout: "soon" is not a duration such as "250ms", "5s", "1m" or "1h"',
      'services[0]: unknown field "colour"',
      'services[1].name: required',
      'services[1].connect_timeout: must be 1ms..300s',
      'services[2].name: must be a DNS label: 1-63 lowercase letters, digits or "-", starting and ending with a letter or digit',
      'services[2].port: must be an integer 1..65535',
      'services[2].connect_timeout: must be a duration string such as "250ms", "5s", "1m" or "1h"',
    ],
  );
});

test('lb_policy: least_request is carried, round_robin (the default) is not; anything else is refused by path', (t) => {
  const services = parseMeshConfig({ services: [svc({ lb_policy: 'least_request' }), svc({ name: 'api', port: 9090, lb_policy: 'round_robin' })] }).services;
  t.deepEqual(services, [
    { name: 'web', outboundPort: 8080, protocol: 'tcp', connectTimeoutMs: 5_000, lbPolicy: 'least_request' },
    { name: 'api', outboundPort: 9090, protocol: 'tcp', connectTimeoutMs: 5_000 },
  ]);
  t.deepEqual(problems({ services: [svc({ lb_policy: 'LEAST_REQUEST' }), svc({ name: 'api', port: 9090, lb_policy: 2 })] }), [
    'services[0].lb_policy: must be one of "round_robin", "least_request" (got "LEAST_REQUEST")',
    'services[1].lb_policy: must be "round_robin" or "least_request"',
  ]);
});

test('route field errors are reported by path', (t) => {
  t.deepEqual(
    problems({
      services: [svc()],
      routes: [
        { name: 'r', domains: [], routes: [] },
        { name: 'r2', domains: ['we b', 'a*b'], routes: [{ prefix: 'api', clusters: [] }, { prefix: '/', clusters: [{ service: 'web', weight: 0 }, { service: 'web', weight: 1.5, extra: 1 }] }] },
        { domains: ['web'] },
      ],
    }),
    [
      'routes[0].domains: must list at least one domain',
      'routes[0].routes: must list at least one route',
      'routes[1].domains[0]: must be a host name (or host:port), "*", or a name with one "*" at its start or end',
      'routes[1].domains[1]: must be a host name (or host:port), "*", or a name with one "*" at its start or end',
      'routes[1].routes[0].prefix: must start with "/"',
      'routes[1].routes[0].clusters: must list at least one cluster',
      'routes[1].routes[1].clusters[0].weight: must be an integer 1..4294967295',
      'routes[1].routes[1].clusters[1].weight: must be an integer 1..4294967295',
      'routes[1].routes[1].clusters[1]: unknown field "extra"',
      'routes[2].name: required',
      'routes[2].routes: required',
      'routes[1].routes[1].clusters[1].service: "web" is listed twice in this route',
    ],
  );
});

test('header matches: one of exact, prefix or present per header, names lower-cased; bad ones by path', (t) => {
  const withHeaders = (headers: unknown) => rt({ routes: [{ prefix: '/', headers, clusters: [{ service: 'web' }] }] });
  t.deepEqual(parseMeshConfig({ services: [svc()], routes: [withHeaders([{ name: 'X-Canary', exact: '1' }, { name: 'x-user', prefix: '' }, { name: 'x-debug', present: true }])] }).routes[0]!.routes[0]!.headers, [
    { name: 'x-canary', exact: '1' },
    { name: 'x-user', prefix: '' },
    { name: 'x-debug', present: true },
  ]);
  t.deepEqual(
    problems({
      services: [svc()],
      routes: [withHeaders([{ name: 'x-a' }, { name: 'x-b', exact: '1', prefix: '1' }, { name: 'bad name', exact: '1' }, { name: 'x-c', present: false }, { name: 'x-d', exact: 1 }, { name: 'x-e', exact: '1', regex: '.*' }])],
    }),
    [
      'routes[0].routes[0].headers[0]: must have exactly one of exact, prefix or present: true',
      'routes[0].routes[0].headers[1]: must have exactly one of exact, prefix or present: true',
      "routes[0].routes[0].headers[2].name: must be an HTTP header name (letters, digits and !#$%&'*+-.^_`|~)",
      'routes[0].routes[0].headers[3].present: must be true',
      'routes[0].routes[0].headers[4].exact: must be a string',
      'routes[0].routes[0].headers[5]: unknown field "regex"',
    ],
  );
  t.deepEqual(problems({ services: [svc()], routes: [withHeaders(Array.from({ length: 17 }, (_, i) => ({ name: `x-${i}`, present: true })))] }), ['routes[0].routes[0].headers: must list at most 16 header matches']);
});

test('cross-checks: unique service and route names, declared services, unique outbound ports, no route named like a service', (t) => {
  t.deepEqual(
    problems({
      services: [svc({ outbound_port: 18080 }), svc({ port: 18080 }), { name: 'api', port: 9090 }, { name: 'db', port: 5432, outbound_port: 9090 }],
      routes: [rt(), rt({ routes: [{ prefix: '/', clusters: [{ service: 'nope' }] }] }), rt({ name: 'api' }), rt({ name: 'r3', domains: ['web', 'web.mesh', 'web'] })],
    }),
    [
      'services[1].name: duplicate service name "web" (also services[0])',
      'services[1].port: outbound port 18080 is also the outbound port of services[0]',
      'services[3].outbound_port: outbound port 9090 is also the outbound port of services[2]',
      'routes[1].name: duplicate route name "r" (also routes[0])',
      'routes[1].routes[0].clusters[0].service: unknown service "nope"',
      'routes[2].name: "api" is also a service name (route configurations and services share names)',
      'routes[3].domains[2]: duplicate domain "web" (also domains[0])',
    ],
  );
});

test('top-level mistakes: unknown sections and wrong shapes', (t) => {
  t.deepEqual(problems({ services: {}, listeners: [] }), ['services: must be array (got object)', '(top level): unknown field "listeners"']);
  t.deepEqual(problems([]), ['(top level): must be object (got array)']);
});

test('parseMeshConfigText: YAML syntax errors by line, and the source names the file', (t) => {
  const err = t.throws(() => parseMeshConfigText('services:\n  - name: web\n   port: 8080\n', 'mesh.yaml'), { instanceOf: ConfigError }) as ConfigError;
  t.is(err.source, 'mesh.yaml');
  t.regex(err.problems[0]!, /^line 3, column \d+: /);
  const invalid = t.throws(() => parseMeshConfigText('services: [{ name: web }]', 'mesh.yaml'), { instanceOf: ConfigError }) as ConfigError;
  t.deepEqual(invalid.problems, ['services[0].port: required']);
  t.is(invalid.message, 'mesh.yaml: 1 problem:\n  services[0].port: required');
});

test('the example mesh config in deploy/ is valid', async (t) => {
  const { readFile } = await import('node:fs/promises');
  const text = await readFile(new URL('../../deploy/examples/mesh.yaml', import.meta.url), 'utf8');
  const mesh = parseMeshConfigText(text, 'deploy/examples/mesh.yaml');
  t.deepEqual(mesh.services.map((s) => [s.name, s.outboundPort, s.protocol]), [
    ['web', 18080, 'http'],
    ['db', 5432, 'tcp'],
  ]);
  t.is(mesh.routes[0]!.name, 'web-routes');
});

// ---- bounds (xds/control-plane/bounds.ts): at the bound accepted, one beyond refused naming the field ----

const many = <T>(n: number, make: (i: number) => T): T[] => Array.from({ length: n }, (_, i) => make(i));
/** n services s0..s(n-1) on distinct ports. */
const services = (n: number) => many(n, (i) => ({ name: `s${i}`, port: 1 + i }));
const rule = (extra: Record<string, unknown> = {}) => ({ prefix: '/', clusters: [{ service: 's0' }], ...extra });
const route = (extra: Record<string, unknown> = {}) => ({ name: 'r', domains: ['web'], routes: [rule()], ...extra });

test('bounds: services and routes in the mesh', (t) => {
  t.is(parseMeshConfig({ services: services(MAX_SERVICES) }).services.length, MAX_SERVICES);
  t.deepEqual(problems({ services: services(MAX_SERVICES + 1) }), [`services: must list at most ${MAX_SERVICES} services`]);
  const routes = (n: number) => many(n, (i) => route({ name: `r${i}` }));
  t.is(parseMeshConfig({ services: services(1), routes: routes(MAX_ROUTES) }).routes.length, MAX_ROUTES);
  t.deepEqual(problems({ services: services(1), routes: routes(MAX_ROUTES + 1) }), [`routes: must list at most ${MAX_ROUTES} routes`]);
});

test('bounds: names, domains (count and length), rules, clusters, prefix', (t) => {
  const label = 'a'.repeat(MAX_NAME_LENGTH);
  const host = `${'d'.repeat(MAX_DOMAIN_LENGTH - 5)}.mesh`;
  const atBounds = {
    services: [...services(MAX_CLUSTERS_PER_RULE), { name: label, port: 9999 }],
    routes: [
      route({
        domains: [host, ...many(MAX_DOMAINS_PER_ROUTE - 1, (i) => `web${i}`)],
        routes: many(MAX_RULES_PER_ROUTE, (i) => ({ prefix: i === 0 ? `/${'p'.repeat(MAX_PREFIX_LENGTH - 1)}` : `/${i}`, clusters: many(MAX_CLUSTERS_PER_RULE, (k) => ({ service: `s${k}` })) })),
      }),
    ],
  };
  t.is(parseMeshConfig(atBounds).routes[0]!.routes.length, MAX_RULES_PER_ROUTE);
  t.deepEqual(
    problems({
      services: [...services(MAX_CLUSTERS_PER_RULE + 1), { name: `${label}a`, port: 9999 }],
      routes: [
        route({
          domains: [`d${host}`, ...many(MAX_DOMAINS_PER_ROUTE, (i) => `web${i}`)],
          routes: [
            rule({ prefix: `/${'p'.repeat(MAX_PREFIX_LENGTH)}`, clusters: many(MAX_CLUSTERS_PER_RULE + 1, (k) => ({ service: `s${k}` })) }),
            ...many(MAX_RULES_PER_ROUTE, () => rule()),
          ],
        }),
      ],
    }),
    [
      `services[${MAX_CLUSTERS_PER_RULE + 1}].name: must be a DNS label: 1-63 lowercase letters, digits or "-", starting and ending with a letter or digit`,
      `routes[0].domains: must list at most ${MAX_DOMAINS_PER_ROUTE} domains`,
      `routes[0].domains[0]: must be at most ${MAX_DOMAIN_LENGTH} characters`,
      `routes[0].routes: must list at most ${MAX_RULES_PER_ROUTE} routes`,
      `routes[0].routes[0].prefix: must be at most ${MAX_PREFIX_LENGTH} characters`,
      `routes[0].routes[0].clusters: must list at most ${MAX_CLUSTERS_PER_RULE} clusters`,
    ],
  );
});

test('bounds: the weights of one rule add up to 4294967295 at most', (t) => {
  const mesh = (weights: number[]) => ({ services: services(weights.length), routes: [route({ routes: [rule({ clusters: weights.map((weight, k) => ({ service: `s${k}`, weight })) })] })] });
  t.notThrows(() => parseMeshConfig(mesh([MAX_TOTAL_WEIGHT - 1, 1])));
  t.deepEqual(problems(mesh([MAX_TOTAL_WEIGHT, 1])), [`routes[0].routes[0].clusters: weights add up to ${MAX_TOTAL_WEIGHT + 1}, more than ${MAX_TOTAL_WEIGHT}`]);
  t.deepEqual(problems(mesh([MAX_TOTAL_WEIGHT, 0])), [`routes[0].routes[0].clusters[1].weight: must be an integer 1..${MAX_TOTAL_WEIGHT}`], 'an invalid weight is not summed');
});

test('bounds: the whole mesh takes at most 2 MiB as JSON', (t) => {
  // Each route within its own bounds; together beyond the mesh's.
  const wide = (n: number) => many(n, (i) => route({ name: `r${i}`, domains: many(MAX_DOMAINS_PER_ROUTE, (j) => `${'d'.repeat(240)}${j}.mesh`) }));
  const perRoute = Buffer.byteLength(JSON.stringify(wide(1)[0]));
  const fits = Math.floor((MAX_MESH_BYTES - 1_000) / perRoute);
  t.notThrows(() => parseMeshConfig({ services: services(1), routes: wide(fits) }));
  const [problem, ...rest] = problems({ services: services(1), routes: wide(fits + 1) });
  t.regex(problem!, new RegExp(`^\\(top level\\): the mesh takes \\d+ bytes as JSON, more than the ${MAX_MESH_BYTES} it may take$`));
  t.deepEqual(rest, []);
});

test('bounds: problems quote long input cut short', (t) => {
  const long = 'x'.repeat(100_000);
  const found = problems({ services: [{ name: 'web', port: 80, protocol: long, connect_timeout: long }], routes: [route({ routes: [rule({ clusters: [{ service: long }] })] })] });
  t.true(found.length >= 3);
  for (const p of found) t.true(p.length < 300, p.slice(0, 300));
  t.true(found.some((p) => p.startsWith('services[0].protocol: must be one of "tcp", "http" (got "xxxx') && p.endsWith('(100000 characters))')));
});

test('quoteBounded and truncateUtf8 cut long text and say so', (t) => {
  t.is(quoteBounded('web'), '"web"');
  t.is(quoteBounded('abcdef', 3), '"abc"... (6 characters)');
  t.is(truncateUtf8('short', 10), 'short');
  t.is(truncateUtf8('0123456789', 4), '0123... (truncated, 10 bytes)');
  // Never inside a multi-byte character: é is 2 bytes, so 3 bytes keep "aé" whole or cut before it.
  t.is(truncateUtf8('aéb', 2), 'a... (truncated, 4 bytes)');
  t.is(truncateUtf8('aéb', 3), 'aé... (truncated, 4 bytes)');
});
