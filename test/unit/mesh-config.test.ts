import test from 'ava';
import { ConfigError } from '../../proxy/config/load.js';
import { parseMeshConfig, parseMeshConfigText } from '../../xds/control-plane/mesh.js';

function problems(data: unknown): string[] {
  try {
    parseMeshConfig(data);
  } catch (err) {
    if (err instanceof ConfigError) return err.problems;
    throw err;
  }
  throw new Error('mesh config was accepted');
}

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
          { prefix: '/api', clusters: [{ service: 'api', weight: 90 }, { service: 'api-canary', weight: 10 }] },
          { prefix: '/', clusters: [{ service: 'web', weight: 1 }] },
        ],
      },
    ],
  });
});

test('an empty document is an empty mesh; wildcard domains are accepted', (t) => {
  t.deepEqual(parseMeshConfigText('', 'empty.yaml'), { services: [], routes: [] });
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
