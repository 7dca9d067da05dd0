// The route table of a forward proxy's plain requests (pure), and how a
// request names its target (origin form, or absolute through a proxy).

import test from 'ava';
import { forwardProxyRoutes } from '../../proxy/listeners/forward-proxy-routes.js';
import { requestTarget } from '../../proxy/http/listener.js';
import { RouteTable, type RouteConfig } from '../../proxy/http/route-table.js';

const weighted: RouteConfig = {
  name: 'outbound|web',
  virtualHosts: [
    {
      name: 'web-routes',
      domains: ['*'],
      routes: [
        { path: { kind: 'prefix', value: '/' }, headers: [{ name: 'x-canary', kind: 'exact', value: '1', invert: false }], clusters: [{ name: 'web-canary', weight: 1 }], timeoutMs: 0 },
        { path: { kind: 'prefix', value: '/' }, headers: [], clusters: [{ name: 'web', weight: 3 }, { name: 'web-canary', weight: 1 }], timeoutMs: 0 },
      ],
    },
  ],
};

test('a virtual host per cluster, by its two names; a service with routes of its own gets them, the others every path to the cluster', (t) => {
  const config = forwardProxyRoutes('egress', ['web', 'db', 'web-canary'], (c) => (c === 'web' ? weighted : undefined));
  t.deepEqual(
    config.virtualHosts.map((h) => [h.name, h.domains]),
    [
      ['web', ['web', 'web.mesh']],
      ['db', ['db', 'db.mesh']],
      ['web-canary', ['web-canary', 'web-canary.mesh']],
    ],
  );
  const table = new RouteTable(config);
  t.like(table.route({ authority: 'web.mesh', path: '/a', headers: { 'x-canary': '1' } }, 0), { ok: true, cluster: 'web-canary', route: 'web/0' });
  t.like(table.route({ authority: 'web.mesh:80', path: '/a', headers: {} }, 0), { ok: true, cluster: 'web', route: 'web/1' });
  t.like(table.route({ authority: 'web', path: '/a', headers: {} }, 0.9), { ok: true, cluster: 'web-canary' });
  t.like(table.route({ authority: 'db.mesh', path: '/x', headers: { 'x-canary': '1' } }, 0), { ok: true, cluster: 'db', route: 'db/0' });
  t.deepEqual(table.route({ authority: 'example.com', path: '/', headers: {} }, 0), { ok: false, reason: 'no_virtual_host' });
});

test('routes of a service that do not cover its mesh name leave it the default; a cluster name no Host can carry is left out', (t) => {
  const onlyApi: RouteConfig = { name: 'r', virtualHosts: [{ name: 'api', domains: ['api.example'], routes: weighted.virtualHosts[0]!.routes }] };
  const config = forwardProxyRoutes('egress', ['web', 'a*b'], () => onlyApi);
  t.deepEqual(config.virtualHosts.map((h) => h.name), ['web']);
  t.deepEqual(config.virtualHosts[0]!.routes.map((r) => r.clusters), [[{ name: 'web', weight: 1 }]]);
});

test('requestTarget: an absolute URI gives the authority and the origin-form path; anything else is the path with the Host header', (t) => {
  t.deepEqual(requestTarget('http://web.mesh/a/b?q=1', 'ignored'), { authority: 'web.mesh', path: '/a/b?q=1' });
  t.deepEqual(requestTarget('HTTP://web.mesh:8080', 'ignored'), { authority: 'web.mesh:8080', path: '/' });
  t.deepEqual(requestTarget('http://web.mesh?q=1', ''), { authority: 'web.mesh', path: '/?q=1' });
  t.deepEqual(requestTarget('/plain', 'web'), { authority: 'web', path: '/plain' });
  t.deepEqual(requestTarget('*', 'web'), { authority: 'web', path: '*' });
});
