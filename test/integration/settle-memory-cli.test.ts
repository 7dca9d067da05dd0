// A sidecar process settles its memory once quiet after it is ready
// (runtime/settle-memory.ts, native settleMemory): one "memory settled" line,
// with less RSS after than before; and once quiet after traffic, also while
// the relayed connections it leaves open stay idle (the warm paths' too).

import test from 'ava';
import net from 'node:net';
import { startCli, writeConfig } from '../helpers/cli.js';
import { freePort } from '../helpers/haproxy.js';

test('an idle sidecar settles its memory once after ready, and its RSS goes down', async (t) => {
  const config = await writeConfig({ node: { id: 'vm-a' }, admin: null, listeners: [{ kind: 'outbound', name: 'out', port: 0, cluster: 'c' }], clusters: [{ name: 'c', endpoints: [{ address: '127.0.0.1', port: 9 }] }] });
  t.teardown(config.cleanup);
  const proc = startCli(['sidecar', '-c', config.path, '--log-level', 'debug']);
  t.teardown(() => proc.kill('SIGKILL'));
  await proc.waitForLine((l) => l.msg === 'sidecar ready', 'sidecar ready', 30_000);
  const settled = await proc.waitForLine((l) => l.msg === 'memory settled', 'memory settled', 30_000);
  t.true((settled.rss_after as number) < (settled.rss_before as number), JSON.stringify(settled));
  t.is(proc.lines.filter((l) => l.msg === 'memory settled').length, 1);
});

for (const hops of ['outbound', 'outbound and inbound'] as const) {
test(`after traffic, a sidecar holding idle relayed connections settles again once they are quiet (${hops} hop)`, async (t) => {
  const backend = net.createServer((c) => c.on('data', (d) => c.write(d)).on('error', () => {}));
  await new Promise<void>((resolve) => backend.listen(0, '127.0.0.1', resolve));
  t.teardown(() => backend.close());
  const port = await freePort();
  const backendPort = (backend.address() as net.AddressInfo).port;
  // Both hops: the outbound listener's peer sidecar is this one's own inbound listener (both warm paths hold the connections).
  const inboundPort = await freePort();
  const inbound = { kind: 'inbound', name: 'in', addresses: ['127.0.0.1'], port: inboundPort, ports: [backendPort] };
  const endpoint = hops === 'outbound' ? { address: '127.0.0.1', port: backendPort } : { address: '127.0.0.1', port: backendPort, vm_id: 'vm-b', peer: { address: '127.0.0.1', port: inboundPort } };
  const listeners = [{ kind: 'outbound', name: 'out', addresses: ['127.0.0.1'], port, cluster: 'c' }, ...(hops === 'outbound' ? [] : [inbound])];
  const config = await writeConfig({ node: { id: 'vm-a' }, admin: null, listeners, clusters: [{ name: 'c', endpoints: [endpoint] }] });
  t.teardown(config.cleanup);
  const proc = startCli(['sidecar', '-c', config.path, '--log-level', 'debug']);
  t.teardown(() => proc.kill('SIGKILL'));
  await proc.waitForLine((l) => l.msg === 'memory settled', 'memory settled after ready', 30_000);
  const echoed = (): Promise<net.Socket> =>
    new Promise((resolve, reject) => {
      const s = net.connect({ host: '127.0.0.1', port });
      s.once('error', reject);
      s.once('data', () => resolve(s));
      s.write('x');
    });
  const held: net.Socket[] = [];
  t.teardown(() => held.forEach((s) => s.destroy()));
  for (let i = 0; i < 20; i++) held.push(await echoed());
  // The connections stay open and idle: the settle waits for nothing but quiet.
  await proc.waitForLine((l) => l.msg === 'memory settled' && proc.lines.filter((m) => m.msg === 'memory settled').length === 2, 'memory settled after traffic', 30_000);
  t.is(proc.lines.filter((l) => l.msg === 'connection closed').length, 0, 'no held connection was closed');
  t.true(held.every((s) => !s.destroyed));
  // And they still relay.
  const again = await new Promise<string>((resolve) => {
    held[0]!.once('data', (d) => resolve(d.toString()));
    held[0]!.write('y');
  });
  t.is(again, 'y');
});
}
