// lb_policy: least_request on an HTTP listener: a backend whose requests pile
// up (it holds every one until the test ends) gets fewer new requests than a
// backend that answers, where round robin would give both the same share.

import test from 'ava';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { startSidecar } from '../helpers/sidecars.js';
import { waitFor } from '../helpers/apps.js';

interface Backend {
  port: number;
  seen: number;
  close(): Promise<void>;
}

/** `hold`: never answers (until closed); otherwise answers at once. */
async function backend(hold: boolean): Promise<Backend> {
  const b = { seen: 0 } as Backend;
  const server = http.createServer((_req, res) => {
    b.seen++;
    if (!hold) res.end('ok');
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  b.port = (server.address() as AddressInfo).port;
  b.close = () =>
    new Promise<void>((resolve) => {
      server.closeAllConnections();
      server.close(() => resolve());
    });
  return b;
}

test('least_request: with one request piled up at the slow backend, every new request goes to the one that answers (round robin would alternate)', async (t) => {
  const slow = await backend(true);
  const fast = await backend(false);
  const { sidecar } = await startSidecar({
    node: { id: 'vm-a' },
    listeners: [{ kind: 'outbound', name: 'http', port: 0, protocol: 'http', cluster: 'web' }],
    clusters: [{ name: 'web', lb_policy: 'least_request', endpoints: [slow, fast].map((b) => ({ address: '127.0.0.1', port: b.port })) }],
  });
  const port = sidecar.listenerAddress('http').port;
  const held: http.ClientRequest[] = [];
  try {
    let answered = 0;
    // One request at a time: the next is sent once this one was answered or is held at the slow backend.
    for (let i = 0; i < 10; i++) {
      const before = slow.seen;
      let done = false;
      const req = http.get({ host: '127.0.0.1', port, path: `/r${i}`, agent: false }, (res) => {
        res.resume();
        res.on('end', () => {
          done = true;
          answered++;
        });
      });
      req.on('error', () => undefined);
      held.push(req);
      await waitFor(() => done || slow.seen > before, `request ${i} answered or held`, 30_000);
    }
    t.true(slow.seen <= 1, `the slow backend got ${slow.seen} requests`);
    t.is(fast.seen, 10 - slow.seen);
    t.is(answered, fast.seen);
  } finally {
    for (const r of held) r.destroy();
    await sidecar.stop();
    await Promise.all([slow.close(), fast.close()]);
  }
});
