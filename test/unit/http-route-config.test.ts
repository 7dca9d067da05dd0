import test from 'ava';
import { LISTENER_DEFAULTS } from '../../proxy/config/listener-defaults.js';
import { parseSidecarConfig } from '../../proxy/config/load.js';
import { sidecarProblems } from '../helpers/config-problems.js';

const problems = sidecarProblems;

const clusters = ['a', 'b', 'c'].map((name) => ({ name, endpoints: [{ address: '10.0.0.2', port: 8080 }] }));
const withListener = (listener: Record<string, unknown>, extra: Record<string, unknown> = {}) => ({
  node: { id: 'vm-a' },
  listeners: [{ kind: 'outbound', name: 'web', port: 15001, ...listener }],
  clusters,
  ...extra,
});

test('protocol: http without route_config routes every request to its cluster, with the default 15 s timeout', (t) => {
  const [listener] = parseSidecarConfig(withListener({ protocol: 'http', cluster: 'a' })).listeners;
  t.like(listener, { kind: 'outbound', cluster: 'a' });
  t.deepEqual(listener!.kind === 'outbound' && listener.http, {
    routes: { name: 'web', virtualHosts: [{ name: 'web', domains: ['*'], routes: [{ path: { kind: 'prefix', value: '/' }, headers: [], clusters: [{ name: 'a', weight: 1 }], timeoutMs: 15_000 }] }] },
  });
});

test('a TCP outbound listener has no http settings', (t) => {
  const [listener] = parseSidecarConfig(withListener({ cluster: 'a' })).listeners;
  t.false(listener!.kind === 'outbound' && 'http' in listener);
});

test('route_config parses into the route model: matches, header conditions, weights and timeouts', (t) => {
  const [listener] = parseSidecarConfig(
    withListener({
      protocol: 'http',
      route_config: {
        virtual_hosts: [
          {
            name: 'web',
            domains: ['Web.Mesh', '*.web.mesh'],
            routes: [
              { match: { path: '/healthz' }, cluster: 'c', timeout: '0s' },
              { match: { safe_regex: '/users/[0-9]+' }, cluster: 'b', timeout: '2s' },
              { match: { prefix: '/', headers: [{ name: 'X-Canary', exact: 'yes' }, { name: 'x-debug', present: true, invert: true }, { name: 'x-user', prefix: 'beta-' }] }, weighted_clusters: [{ name: 'a', weight: 9 }, { name: 'b', weight: 1 }] },
            ],
          },
        ],
      },
    }),
  ).listeners;
  t.deepEqual(listener!.kind === 'outbound' && listener.http?.routes.virtualHosts, [
    {
      name: 'web',
      domains: ['web.mesh', '*.web.mesh'],
      routes: [
        { path: { kind: 'exact', value: '/healthz' }, headers: [], clusters: [{ name: 'c', weight: 1 }], timeoutMs: 0 },
        { path: { kind: 'regex', value: '/users/[0-9]+' }, headers: [], clusters: [{ name: 'b', weight: 1 }], timeoutMs: 2_000 },
        {
          path: { kind: 'prefix', value: '/' },
          headers: [
            { name: 'x-canary', kind: 'exact', value: 'yes', invert: false },
            { name: 'x-debug', kind: 'present', invert: true },
            { name: 'x-user', kind: 'prefix', value: 'beta-', invert: false },
          ],
          clusters: [
            { name: 'a', weight: 9 },
            { name: 'b', weight: 1 },
          ],
          timeoutMs: 15_000,
        },
      ],
    },
  ]);
});

test('route_config problems are reported by path: regex, matches, actions, domains, unknown and resolved clusters', (t) => {
  const at = 'listeners[0].route_config.virtual_hosts[0]';
  t.deepEqual(
    problems(
      withListener(
        {
          protocol: 'http',
          route_config: {
            virtual_hosts: [
              {
                name: 'web',
                domains: ['a.*.mesh', 'web'],
                routes: [
                  { match: { safe_regex: '/users/(' }, cluster: 'a' },
                  { match: { prefix: '/', path: '/x' }, cluster: 'a' },
                  { match: { prefix: '/', headers: [{ name: 'x', exact: 'a', prefix: 'b' }] }, cluster: 'a' },
                  { match: { prefix: '/' }, cluster: 'a', weighted_clusters: [{ name: 'b', weight: 1 }] },
                  { match: { prefix: '/' }, weighted_clusters: [{ name: 'nope', weight: 0 }] },
                  { match: { prefix: '/' }, cluster: 'resolved' },
                ],
              },
            ],
          },
        },
        { clusters: [...clusters, { name: 'resolved', resolve: { service: 'web' } }], vm_manager: { address: '127.0.0.1:9000' }, insecure: true },
      ),
    ),
    [
      `${at}.domains[0]: wildcard only as a whole prefix or suffix (got "a.*.mesh")`,
      `${at}.routes[0].match.safe_regex: not a valid regular expression: Unterminated group`,
      `${at}.routes[1].match: must have exactly one of prefix, path or safe_regex`,
      `${at}.routes[2].match.headers[0]: must have exactly one of exact, prefix or present: true`,
      `${at}.routes[3]: must have exactly one of cluster or weighted_clusters`,
      `${at}.routes[4].weighted_clusters[0].weight: must be an integer 1..1000000`,
      `${at}.routes[4].weighted_clusters[0].name: unknown cluster "nope"`,
      `${at}.routes[5].cluster: cluster "resolved" resolves its destination per connection: HTTP listeners route to clusters with endpoints`,
    ],
  );
});

test('a domain in two virtual hosts is refused', (t) => {
  const host = (name: string, domains: string[]) => ({ name, domains, routes: [{ match: { prefix: '/' }, cluster: 'a' }] });
  t.deepEqual(problems(withListener({ protocol: 'http', route_config: { virtual_hosts: [host('one', ['web', '*']), host('two', ['Web'])] } })), [
    'listeners[0].route_config.virtual_hosts[1].domains[0]: duplicate domain "web" (also in virtual_hosts[0])',
  ]);
});

test('route_config needs protocol: http, and an outbound listener needs a cluster or a route_config', (t) => {
  t.deepEqual(problems(withListener({ cluster: 'a', route_config: { virtual_hosts: [{ name: 'w', domains: ['*'], routes: [{ match: { prefix: '/' }, cluster: 'a' }] }] } })), [
    'listeners[0].route_config: only for protocol: http (or with http_inspector)',
  ]);
  t.deepEqual(problems(withListener({ protocol: 'http' })), ['listeners[0].cluster: required (or, with protocol: http, a route_config)']);
});

const retryRoute = (retry: unknown) => withListener({ protocol: 'http', route_config: { virtual_hosts: [{ name: 'w', domains: ['*'], routes: [{ match: { prefix: '/' }, cluster: 'a', retry }] }] } });

test('a route retry policy parses into the route model; without one a route has none', (t) => {
  const [listener] = parseSidecarConfig(retryRoute({ attempts: 3, on: ['connect_failure', 'reset', '503', 502, 503] })).listeners;
  const route = listener!.kind === 'outbound' ? listener.http?.routes.virtualHosts[0]?.routes[0] : undefined;
  t.deepEqual(route?.retry, { attempts: 3, connectFailure: true, reset: true, statuses: [503, 502] });
  const [plain] = parseSidecarConfig(withListener({ protocol: 'http', cluster: 'a' })).listeners;
  t.is(plain!.kind === 'outbound' ? plain.http?.routes.virtualHosts[0]?.routes[0]?.retry : 'tcp', undefined);
  const [defaulted] = parseSidecarConfig(retryRoute({ on: ['connect_failure'] })).listeners;
  t.is(defaulted!.kind === 'outbound' ? defaulted.http?.routes.virtualHosts[0]?.routes[0]?.retry?.attempts : 0, 1);
});

test('a bad retry policy is refused with the field path', (t) => {
  const at = 'listeners[0].route_config.virtual_hosts[0].routes[0].retry';
  t.deepEqual(problems(retryRoute({ attempts: 6, on: ['reset'] })), [`${at}.attempts: must be an integer 1..5`]);
  t.deepEqual(problems(retryRoute({ attempts: 0, on: ['reset'] })), [`${at}.attempts: must be an integer 1..5`]);
  t.deepEqual(problems(retryRoute({ attempts: 2, on: ['5xx', 200, 'reset'] })), [
    `${at}.on[0]: must be connect_failure, reset or a status code 400..599 (got "5xx")`,
    `${at}.on[1]: must be connect_failure, reset or a status code 400..599 (got 200)`,
  ]);
  t.deepEqual(problems(retryRoute({ attempts: 2, on: [] })), [`${at}.on: must list at least one of connect_failure, reset or a status code`]);
  t.deepEqual(problems(retryRoute({ attempts: 2, on: ['reset'], per_try: '1s' })), [`${at}: unknown field "per_try"`]);
});

const capture = (inspector: unknown, extra: Record<string, unknown> = {}) => ({
  node: { id: 'vm-a' },
  vm_manager: { address: '127.0.0.1:15200' },
  insecure: true,
  listeners: [{ kind: 'outbound', name: 'capture', port: 15001, cluster: 'original', http_inspector: inspector, ...extra }],
  clusters: [...clusters, { name: 'original', resolve: { original_destination: true } }],
});

test('http_inspector on a capture listener: defaults 8192 bytes and 100ms, with or without routes among the mesh clusters', (t) => {
  const [plain] = parseSidecarConfig(capture({})).listeners;
  t.deepEqual(plain!.kind === 'outbound' && plain.httpInspector, { maxBytes: 8192, timeoutMs: 100, routes: { name: 'capture', virtualHosts: [] } });
  t.false(plain!.kind === 'outbound' && 'http' in plain, 'still a TCP listener: HTTP is found per connection');
  const [routed] = parseSidecarConfig(capture({ max_bytes: 64, timeout: '2s' }, { route_config: { virtual_hosts: [{ name: 'w', domains: ['web.mesh'], routes: [{ match: { prefix: '/' }, cluster: 'a' }] }] } })).listeners;
  t.like(routed!.kind === 'outbound' && routed.httpInspector, { maxBytes: 64, timeoutMs: 2000, routes: { virtualHosts: [{ name: 'w', domains: ['web.mesh'] }] } });
});

test('http_inspector problems by path: bounds, a cluster that is not the original destination, protocol: http, routes to resolved clusters', (t) => {
  t.deepEqual(problems(capture({ max_bytes: 63, timeout: 'soon', extra: 1 })), [
    'listeners[0].http_inspector.max_bytes: must be 64..65536',
    'listeners[0].http_inspector.timeout: "soon" is not a duration such as "250ms", "5s", "1m" or "1h"',
    'listeners[0].http_inspector: unknown field "extra"',
  ]);
  t.deepEqual(problems(capture({ max_bytes: 65537 })), ['listeners[0].http_inspector.max_bytes: must be 64..65536']);
  t.deepEqual(problems(capture({}, { cluster: 'a' })), ['listeners[0].http_inspector: only for a capture listener: cluster "a" must resolve the original destination']);
  t.deepEqual(problems(capture({}, { protocol: 'http' })), ['listeners[0].http_inspector: only for protocol: tcp (a capture listener); protocol: http parses every connection already']);
  t.deepEqual(problems(capture({}, { route_config: { virtual_hosts: [{ name: 'w', domains: ['*'], routes: [{ match: { prefix: '/' }, cluster: 'original' }] }] } })), [
    'listeners[0].route_config.virtual_hosts[0].routes[0].cluster: cluster "original" resolves its destination per connection: HTTP listeners route to clusters with endpoints',
  ]);
});

test('forwarded: append by default, none when configured; only where HTTP is parsed', (t) => {
  const [byDefault] = parseSidecarConfig(withListener({ protocol: 'http', cluster: 'a' })).listeners;
  t.false('forwarded' in byDefault!, 'absent: the listener appends (LISTENER_DEFAULTS.forwarded)');
  const [none] = parseSidecarConfig(withListener({ protocol: 'http', cluster: 'a', forwarded: 'none' })).listeners;
  t.is(none!.kind === 'outbound' && none.forwarded, 'none');
  const [captured] = parseSidecarConfig(capture({}, { forwarded: 'none' })).listeners;
  t.is(captured!.kind === 'outbound' && captured.forwarded, 'none');
  t.deepEqual(problems(withListener({ cluster: 'a', forwarded: 'none' })), ['listeners[0].forwarded: only for protocol: http (or with http_inspector)']);
  t.is(problems(withListener({ protocol: 'http', cluster: 'a', forwarded: 'replace' })).length, 1);
});

test('lb_policy: round_robin by default (no field in the model), least_request when configured, anything else refused by path', (t) => {
  const policy = (lb: unknown) => parseSidecarConfig({ node: { id: 'vm-a' }, clusters: [{ name: 'a', endpoints: [{ address: '10.0.0.2', port: 8080 }], ...(lb !== undefined && { lb_policy: lb }) }] }).clusters[0]!;
  t.false('lbPolicy' in policy(undefined));
  t.false('lbPolicy' in policy('round_robin'));
  t.is(policy('least_request').lbPolicy, 'least_request');
  const wrong = problems({ node: { id: 'vm-a' }, clusters: [{ name: 'a', endpoints: [{ address: '10.0.0.2', port: 8080 }], lb_policy: 'random' }] });
  t.is(wrong.length, 1);
  t.regex(wrong[0]!, /^clusters\[0\]\.lb_policy: /);
});

test('a retry per_try_timeout parses into milliseconds; a bad one is refused by path', (t) => {
  const [listener] = parseSidecarConfig(retryRoute({ attempts: 2, on: ['reset'], per_try_timeout: '250ms' })).listeners;
  t.like(listener!.kind === 'outbound' ? listener.http?.routes.virtualHosts[0]?.routes[0]?.retry : undefined, { attempts: 2, reset: true, perTryTimeoutMs: 250 });
  const problem = problems(retryRoute({ on: ['reset'], per_try_timeout: 'later' }));
  t.is(problem.length, 1);
  t.regex(problem[0]!, /^listeners\[0\]\.route_config\.virtual_hosts\[0\]\.routes\[0\]\.retry\.per_try_timeout: /);
});

test('h2c: frames by default, Node http2 when configured; only where HTTP is parsed, and only node or frames', (t) => {
  const [byDefault] = parseSidecarConfig(withListener({ protocol: 'http', cluster: 'a' })).listeners;
  t.false('h2c' in byDefault!, 'absent: LISTENER_DEFAULTS.h2c');
  t.is(LISTENER_DEFAULTS.h2c, 'frames');
  const [node] = parseSidecarConfig(withListener({ protocol: 'http', cluster: 'a', h2c: 'node' })).listeners;
  t.is(node!.kind === 'outbound' && node.h2c, 'node');
  const [captured] = parseSidecarConfig(capture({}, { h2c: 'frames' })).listeners;
  t.is(captured!.kind === 'outbound' && captured.h2c, 'frames');
  t.deepEqual(problems(withListener({ cluster: 'a', h2c: 'frames' })), ['listeners[0].h2c: only for protocol: http (or with http_inspector)']);
  t.is(problems(withListener({ protocol: 'http', cluster: 'a', h2c: 'nghttp2' })).length, 1);
});
