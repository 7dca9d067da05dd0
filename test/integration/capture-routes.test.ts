// Captured HTTP follows the pushed routes of the service it was headed for:
// in a network namespace the test creates, iptables REDIRECTs an unchanged app
// (uid 65534) to vm-a's capture listener (http_inspector on), under a real
// control plane. The app dials vm-b's address, where service web lives; the
// mesh route of web sends `x-canary: 1` to web-canary (another VM), the rest
// to web, as web's outbound listener would.

import test from 'ava';
import { missingForRedirect, runInRedirectNamespace } from '../helpers/redirect-namespace.js';

type Json = Record<string, unknown>;

const need = missingForRedirect();
if (need !== undefined && process.env.CI !== 'true') {
  test('captured HTTP over pushed routes: NOT RUN, this machine lacks ' + need, (t) => {
    t.log(`!!! the capture routes test needs ${need}; it did not run`);
    t.fail(`missing ${need}`);
  });
} else {
  test("captured HTTP to a mesh service is routed by the service's pushed RouteConfiguration: a header match sends it to another service", async (t) => {
    const result = await runInRedirectNamespace<{ app: Record<string, Json>; logs: Json[] }>(t, ['10.99.0.2', '10.99.0.5', '10.99.0.9'], 'test/fixtures/capture-routes-mesh.mjs');
    const { app, logs } = result;
    t.like(app.canary, { status: 200, body: { app: 'web-canary' } }, JSON.stringify(app));
    t.like(app.plain, { status: 200, body: { app: 'vm-b' } }, JSON.stringify(app));
    const requests = logs.filter((l) => l.log === 'access' && l.protocol === 'http/1.1');
    t.is(requests.length, 2, JSON.stringify(requests));
    t.like(requests.find((l) => l.cluster === 'web-canary'), { listener: 'capture', route: 'web-routes/0', status: 200, upstream: '10.99.0.9:8080' });
    t.like(requests.find((l) => l.cluster === 'web'), { listener: 'capture', route: 'web-routes/1', status: 200, upstream: '10.99.0.5:15006' });
  });
}
