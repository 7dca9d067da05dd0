import test from 'ava';
import { RouteTable, clustersOf, domainProblem, hostOf, pickWeighted, regexProblem, type HeaderMatch, type PathMatch, type Route, type RouteConfig } from '../../proxy/http/route-table.js';

const route = (path: PathMatch, cluster: string, headers: HeaderMatch[] = [], timeoutMs = 15_000): Route => ({ path, headers, clusters: [{ name: cluster, weight: 1 }], timeoutMs });
const prefix = (value: string): PathMatch => ({ kind: 'prefix', value });

const config: RouteConfig = {
  name: 'rc',
  virtualHosts: [
    {
      name: 'web',
      domains: ['web.mesh', 'web'],
      routes: [
        route({ kind: 'exact', value: '/healthz' }, 'health'),
        route({ kind: 'regex', value: '/users/[0-9]+' }, 'users'),
        route(prefix('/api'), 'canary', [{ name: 'x-canary', kind: 'exact', value: 'yes', invert: false }]),
        route(prefix('/api'), 'beta', [{ name: 'x-user', kind: 'prefix', value: 'beta-', invert: false }]),
        route(prefix('/api'), 'traced', [{ name: 'x-trace', kind: 'present', invert: false }]),
        route(prefix('/api'), 'api', [{ name: 'x-internal', kind: 'exact', value: 'yes', invert: true }]),
        route(prefix('/'), 'web', [], 0),
      ],
    },
    { name: 'sub', domains: ['*.mesh'], routes: [route(prefix('/'), 'sub')] },
    { name: 'longer-sub', domains: ['*.api.mesh'], routes: [route(prefix('/'), 'longer-sub')] },
    { name: 'pre', domains: ['grpc.*'], routes: [route(prefix('/'), 'pre')] },
    { name: 'any', domains: ['*'], routes: [route(prefix('/only'), 'any')] },
  ],
};
const table = new RouteTable(config);
const decide = (authority: string, path: string, headers: Record<string, string> = {}) => table.route({ authority, path, headers }, 0);
const clusterOf = (authority: string, path: string, headers: Record<string, string> = {}) => {
  const d = decide(authority, path, headers);
  return d.ok ? d.cluster : d.reason;
};

test('an exact domain picks its virtual host, with or without a port, in any case', (t) => {
  t.is(table.virtualHost('web.mesh')?.name, 'web');
  t.is(table.virtualHost('WEB.Mesh:8080')?.name, 'web');
  t.is(table.virtualHost('web:80')?.name, 'web');
});

test('a *.suffix domain matches subdomains, the longest suffix first, never the bare suffix', (t) => {
  t.is(table.virtualHost('db.mesh')?.name, 'sub');
  t.is(table.virtualHost('v1.api.mesh')?.name, 'longer-sub');
  t.is(table.virtualHost('.mesh')?.name, 'any');
});

test('a prefix.* domain matches after the suffixes, and * is the default', (t) => {
  t.is(table.virtualHost('grpc.internal:50051')?.name, 'pre');
  t.is(table.virtualHost('grpc.mesh')?.name, 'sub');
  t.is(table.virtualHost('example.org')?.name, 'any');
  t.is(table.virtualHost('[::1]:8080')?.name, 'any');
});

test('without a default virtual host an unknown authority matches nothing', (t) => {
  const only = new RouteTable({ name: 'x', virtualHosts: [{ name: 'web', domains: ['web'], routes: [route(prefix('/'), 'web')] }] });
  t.deepEqual(only.route({ authority: 'other', path: '/', headers: {} }, 0), { ok: false, reason: 'no_virtual_host' });
});

test('hostOf strips the port of names and bracketed IPv6 addresses', (t) => {
  t.is(hostOf('Web.Mesh:8080'), 'web.mesh');
  t.is(hostOf('[::1]:80'), '[::1]');
  t.is(hostOf('[::1]'), '[::1]');
  t.is(hostOf('10.0.0.1'), '10.0.0.1');
});

test('an exact path matches only that path, ignoring the query string', (t) => {
  t.is(clusterOf('web', '/healthz'), 'health');
  t.is(clusterOf('web', '/healthz?verbose=1'), 'health');
  t.is(clusterOf('web', '/healthz/more'), 'web');
});

test('a regex must match the whole path', (t) => {
  t.is(clusterOf('web', '/users/42'), 'users');
  t.is(clusterOf('web', '/users/42/photos'), 'web');
  t.is(clusterOf('web', '/x/users/42'), 'web');
});

test('header matches: exact, prefix, present, inverted; routes are tried in order', (t) => {
  t.is(clusterOf('web', '/api/x', { 'x-canary': 'yes' }), 'canary');
  t.is(clusterOf('web', '/api/x', { 'x-canary': 'no', 'x-user': 'beta-7' }), 'beta');
  t.is(clusterOf('web', '/api/x', { 'x-user': 'alpha' }), 'api');
  t.is(clusterOf('web', '/api/x', { 'x-trace': '' }), 'traced');
  t.is(clusterOf('web', '/api/x', { 'x-internal': 'yes' }), 'web');
  t.is(clusterOf('web', '/api/x', { 'x-internal': 'no' }), 'api');
  t.is(clusterOf('web', '/api/x'), 'api');
});

test('a header sent twice matches on its values joined by commas', (t) => {
  const t2 = new RouteTable({ name: 'x', virtualHosts: [{ name: 'h', domains: ['*'], routes: [route(prefix('/'), 'a', [{ name: 'x-v', kind: 'exact', value: '1,2', invert: false }])] }] });
  const d = t2.route({ authority: 'h', path: '/', headers: { 'x-v': ['1', '2'] } }, 0);
  t.true(d.ok && d.cluster === 'a');
});

test('a virtual host with no matching route says no_route_match', (t) => {
  t.deepEqual(decide('example.org', '/else'), { ok: false, reason: 'no_route_match' });
});

test('a decision names the virtual host, the route label and the route timeout', (t) => {
  t.deepEqual(decide('web', '/index.html'), { ok: true, virtualHost: 'web', route: 'web/6', cluster: 'web', timeoutMs: 0 });
  t.deepEqual(decide('web', '/healthz'), { ok: true, virtualHost: 'web', route: 'web/0', cluster: 'health', timeoutMs: 15_000 });
});

test('a decision carries its route retry policy, and none when the route has none', (t) => {
  const retry = { attempts: 2, connectFailure: true, reset: false, statuses: [503] };
  const withRetry = new RouteTable({ name: 'r', virtualHosts: [{ name: 'h', domains: ['*'], routes: [{ ...route(prefix('/a'), 'a'), retry }, route(prefix('/'), 'b')] }] });
  t.like(withRetry.route({ authority: 'x', path: '/a', headers: {} }, 0), { ok: true, cluster: 'a', retry });
  t.false('retry' in withRetry.route({ authority: 'x', path: '/b', headers: {} }, 0));
});

test('pickWeighted shares [0, 1) by weight, in order', (t) => {
  const split = [
    { name: 'stable', weight: 90 },
    { name: 'canary', weight: 10 },
  ];
  t.is(pickWeighted(split, 0), 'stable');
  t.is(pickWeighted(split, 0.899), 'stable');
  t.is(pickWeighted(split, 0.9), 'canary');
  t.is(pickWeighted(split, 0.9999), 'canary');
  const counts = new Map<string, number>();
  for (let i = 0; i < 1000; i++) {
    const c = pickWeighted(split, i / 1000);
    counts.set(c, (counts.get(c) ?? 0) + 1);
  }
  t.deepEqual([...counts], [
    ['stable', 900],
    ['canary', 100],
  ]);
});

test('a weighted route picks its cluster by the random number given', (t) => {
  const w = new RouteTable({
    name: 'x',
    virtualHosts: [{ name: 'h', domains: ['*'], routes: [{ path: prefix('/'), headers: [], timeoutMs: 0, clusters: [{ name: 'a', weight: 1 }, { name: 'b', weight: 3 }] }] }],
  });
  const at = (r: number) => {
    const d = w.route({ authority: 'h', path: '/', headers: {} }, r);
    return d.ok ? d.cluster : d.reason;
  };
  t.is(at(0.2), 'a');
  t.is(at(0.25), 'b');
  t.is(at(0.99), 'b');
});

test('clustersOf lists every cluster once', (t) => {
  t.deepEqual(clustersOf(config).sort(), ['any', 'api', 'beta', 'canary', 'health', 'longer-sub', 'pre', 'sub', 'traced', 'users', 'web']);
});

test('regexProblem refuses empty, invalid, over-long and non-RE2 expressions', (t) => {
  t.is(regexProblem('/users/[0-9]+'), undefined);
  t.is(regexProblem(''), 'must not be empty');
  t.regex(regexProblem('/users/(')!, /^not a valid regular expression/);
  t.regex(regexProblem('x'.repeat(1025))!, /at most 1024/);
  t.regex(regexProblem('(a)\\1')!, /backreferences/);
  t.regex(regexProblem('/a(?=b)')!, /lookaround/);
  t.regex(regexProblem('/a(?<!b)')!, /lookaround/);
});

test('domainProblem allows one wildcard as a whole prefix or suffix', (t) => {
  for (const ok of ['web', '*', '*.mesh', 'grpc.*', '*-web.mesh']) t.is(domainProblem(ok), undefined, ok);
  t.is(domainProblem(''), 'must not be empty');
  t.regex(domainProblem('a.*.mesh')!, /wildcard/);
  t.regex(domainProblem('*.mesh.*')!, /wildcard/);
});
