// The capture listener's HTTP inspector with real sockets: in a network
// namespace the test creates, iptables REDIRECTs an unchanged app (uid 65534)
// to vm-a's capture listener, which peeks at each connection's first bytes.
// HTTP/1.1 takes the L7 path (routed by Host, or to the original destination);
// a binary protocol and a server-first one (its client waits for the greeting)
// stay L4, byte for byte.

import test from 'ava';
import { metricSum } from '../helpers/admin-http.js';
import { missingForRedirect, runInRedirectNamespace } from '../helpers/redirect-namespace.js';

type Json = Record<string, unknown>;

const need = missingForRedirect();
if (need !== undefined && process.env.CI !== 'true') {
  test('HTTP inspection on the capture listener: NOT RUN, this machine lacks ' + need, (t) => {
    t.log(`!!! the capture inspection test needs ${need}; it did not run`);
    t.fail(`missing ${need}`);
  });
} else {
  test('captured HTTP/1.1 is routed request by request (by Host, else to the original destination); a binary and a server-first protocol are relayed whole, byte for byte', async (t) => {
    const result = await runInRedirectNamespace<{ app: Record<string, Json>; logs: Json[]; requests: string }>(t, ['10.99.0.2', '10.99.0.5', '10.99.0.7', '10.99.0.9'], 'test/fixtures/capture-inspect-mesh.mjs');
    const { app, logs } = result;
    // No virtual host for 10.99.0.5: the original destination (vm-b, through its sidecar), with the L7 headers added.
    t.like(app.fallback, { status: 200, body: { app: 'vm-b', requestId: true } }, JSON.stringify(app));
    t.regex(String((app.fallback!.body as Json).xff), /^10\.99\.0\.\d+$|^127\.0\.0\.1$/, 'x-forwarded-for names the app');
    // Host web.mesh is a virtual host: cluster web, whatever address the app dialled.
    t.like(app.routed, { status: 200, body: { app: 'web' } });
    t.deepEqual(app.binary, { intact: true, bytes: 200003 }, 'the binary protocol: every byte back, the inspected ones included');
    t.deepEqual(app.serverFirst, { intact: true, bytes: 200003 + '220 ready\r\n'.length }, 'the server-first protocol: the greeting came through the L4 path after the inspection timed out');

    const access = logs.filter((l) => l.log === 'access');
    const requests = access.filter((l) => l.protocol === 'http/1.1');
    t.is(requests.length, 2, JSON.stringify(access));
    t.like(requests.find((l) => l.route === 'original_destination'), { listener: 'capture', cluster: 'original', authority: '10.99.0.5', path: '/hello', status: 200, transport: 'tcp', upstream: '10.99.0.5:15006' });
    t.like(requests.find((l) => l.route === 'web/0'), { listener: 'capture', cluster: 'web', authority: 'web.mesh', status: 200, upstream: '10.99.0.9:8080' });
    const connections = access.filter((l) => l.protocol === undefined);
    t.deepEqual(connections.map((l) => l.dst).sort(), ['10.99.0.7:25', '10.99.0.7:81'], 'only the non-HTTP connections were relayed whole');
    t.is(metricSum(result.requests, 'vsockmesh_http_requests_total', { listener: 'capture', route: 'original_destination', status_class: '2xx' }), 1);
    t.is(metricSum(result.requests, 'vsockmesh_http_requests_total', { listener: 'capture', route: 'web/0', status_class: '2xx' }), 1);
  });
}
