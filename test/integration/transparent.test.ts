// Transparent mode: an unchanged app connects to a VM's address; iptables
// REDIRECTs it to the sidecar, which reads the original destination
// (SO_ORIGINAL_DST), asks the VM manager, and decides. Runs in a network
// namespace the test creates, with the app as uid 65534 (the rule matches
// only that uid, as a production rule excludes the sidecar's own). TCP only.

import test from 'ava';
import { missingForRedirect, runInRedirectNamespace } from '../helpers/redirect-namespace.js';

interface LogLine {
  [key: string]: unknown;
}

const need = missingForRedirect();
if (need !== undefined && process.env.CI !== 'true') {
  test('transparent outbound in a network namespace: NOT RUN, this machine lacks ' + need, (t) => {
    t.log(`!!! the transparent-mode test needs ${need}; it did not run`);
    t.fail(`missing ${need}`);
  });
} else {
  test('a REDIRECTed connection is resolved by its original destination: a known VM via its sidecar, an unknown address direct; a connection not redirected is refused', async (t) => {
    const result = await runInRedirectNamespace<{ app: Array<{ host: string; port: number; intact?: boolean; error?: string }>; logs: LogLine[] }>(t, ['10.99.0.2', '10.99.0.5', '10.99.0.7'], 'test/fixtures/transparent-mesh.mjs');
    t.deepEqual(
      result.app.map((r) => [r.host, r.port, r.intact ?? r.error]),
      [
        ['10.99.0.5', 80, true],
        ['10.99.0.7', 81, true],
      ],
      'the app reached both destinations with every byte intact',
    );
    const access = result.logs.filter((l) => l.log === 'access');
    const byDst = new Map(access.map((l) => [l.dst, l]));
    t.like(byDst.get('10.99.0.5:80'), { transport: 'tcp', transport_reason: 'other_hypervisor', dst_vm: 'vm-b', upstream: '10.99.0.5:15006' });
    t.like(byDst.get('10.99.0.7:81'), { transport: 'tcp', transport_reason: 'unknown_destination', upstream: '10.99.0.7:81' });
    t.is(access.length, 2);
    const refused = result.logs.filter((l) => l.reason === 'no_original_destination');
    t.is(refused.length, 1, 'the connection made straight to the listener was refused');
    // With NAT active the kernel reports the listener itself as the original destination; without, no entry at all.
    t.regex(String(refused[0]!.msg), /is this listener \(a loop\)|not redirected/);
  });
}
