import test from 'ava';
import type { EndpointConfig } from '../../proxy/config/types.js';
import { VsockBreakers, planHops, type HopPlan } from '../../proxy/upstream/transport.js';

const app = { address: '10.0.0.2', port: 8080 };
const peer = { address: '10.0.0.2', port: 15006 };
const direct = { mode: 'direct', cid: 5, port: 15007 } as const;
const relayed = { mode: 'host-relay', cid: 5, port: 15007, relay: { cid: 2, port: 15100 } } as const;

const vsockHop = { kind: 'vsock', cid: 5, port: 15007 } as const;
const relayHop = { kind: 'vsock', cid: 5, port: 15007, relay: { cid: 2, port: 15100 } } as const;
const tcpPeerHop = { kind: 'tcp', address: '10.0.0.2', port: 15006 } as const;
const directHop = { kind: 'direct', address: '10.0.0.2', port: 8080 } as const;

// Every combination of: vsock address (none, direct, host-relay) x TCP peer (no, yes) x vsock enabled x breaker open.
const table: Array<[string, EndpointConfig, boolean, boolean, HopPlan]> = [];
for (const [vsockName, vsock, hop] of [
  ['no vsock', undefined, undefined],
  ['vsock direct', direct, vsockHop],
  ['vsock via host relay', relayed, relayHop],
] as const) {
  for (const withPeer of [false, true]) {
    for (const enabled of [false, true]) {
      for (const breakerOpen of [false, true]) {
        const endpoint: EndpointConfig = { ...app, ...(withPeer && { peer }), ...(vsock && { vsock }) };
        let expected: HopPlan;
        if (hop && enabled && !withPeer) expected = { hops: [hop], reason: 'vsock' };
        else if (hop && enabled && breakerOpen) expected = { hops: [tcpPeerHop], reason: 'vsock_breaker_open' };
        else if (hop && enabled) expected = { hops: [hop, tcpPeerHop], reason: 'vsock' };
        else if (withPeer) expected = { hops: [tcpPeerHop], reason: hop ? 'vsock_disabled' : 'tcp_peer' };
        else expected = { hops: [directHop], reason: 'direct' };
        table.push([`${vsockName}, ${withPeer ? 'TCP peer' : 'no TCP peer'}, vsock ${enabled ? 'on' : 'off'}, breaker ${breakerOpen ? 'open' : 'closed'}`, endpoint, enabled, breakerOpen, expected]);
      }
    }
  }
}

for (const [title, endpoint, vsockEnabled, vsockBreakerOpen, expected] of table) {
  test(`planHops: ${title}`, (t) => {
    t.deepEqual(planHops(endpoint, { vsockEnabled, vsockBreakerOpen }), expected);
  });
}

test('the table covers all 24 combinations', (t) => {
  t.is(new Set(table.map(([title]) => title)).size, 24);
});

test('a breaker is closed until opened, open for its window, then closed again', (t) => {
  const breakers = new VsockBreakers(1000);
  const key = VsockBreakers.key(5, 15007);
  t.false(breakers.isOpen(key, 0));
  breakers.open(key, 100);
  t.true(breakers.isOpen(key, 100));
  t.true(breakers.isOpen(key, 1099));
  t.false(breakers.isOpen(key, 1100));
  t.false(breakers.isOpen(key, 1101), 'stays closed once the window passed');
});

test('breakers are per endpoint', (t) => {
  const breakers = new VsockBreakers(1000);
  breakers.open(VsockBreakers.key(5, 1), 0);
  t.true(breakers.isOpen(VsockBreakers.key(5, 1), 10));
  t.false(breakers.isOpen(VsockBreakers.key(5, 2), 10));
  t.false(breakers.isOpen(VsockBreakers.key(6, 1), 10));
});
