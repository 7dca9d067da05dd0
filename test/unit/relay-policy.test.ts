import test from 'ava';
import { parseHostRelayConfig } from '../../proxy/config/load.js';
import { relayDecision, type RelayRule } from '../../proxy/config/relay.js';

const policy: RelayRule[] = [
  { sourceCid: 3, destinations: [{ cid: 4, ports: [15007] }, { cid: 5, ports: null }] },
  { sourceCid: 4, destinations: [{ cid: 3, ports: [15007, 15008] }] },
];

test('an allowed source reaches a listed destination port', (t) => {
  t.deepEqual(relayDecision(policy, 3, { cid: 4, port: 15007 }), { allowed: true });
  t.deepEqual(relayDecision(policy, 4, { cid: 3, port: 15008 }), { allowed: true });
});

test('a destination without a port list allows any port', (t) => {
  t.deepEqual(relayDecision(policy, 3, { cid: 5, port: 1 }), { allowed: true });
  t.deepEqual(relayDecision(policy, 3, { cid: 5, port: 4_000_000_000 }), { allowed: true });
});

test('a source without a rule is refused', (t) => {
  t.like(relayDecision(policy, 9, { cid: 4, port: 15007 }), { allowed: false, reason: 'source_not_allowed' });
});

test('a destination port not listed is refused', (t) => {
  t.like(relayDecision(policy, 3, { cid: 4, port: 15008 }), { allowed: false, reason: 'destination_not_allowed' });
});

test('a destination CID not listed is refused, even one that may reach the source', (t) => {
  t.like(relayDecision(policy, 4, { cid: 5, port: 15007 }), { allowed: false, reason: 'destination_not_allowed' });
});

test('an empty policy refuses everything', (t) => {
  t.like(relayDecision([], 3, { cid: 4, port: 1 }), { allowed: false, reason: 'source_not_allowed' });
});

test('relay config: defaults, any-CID bind, and rules in domain form', (t) => {
  const config = parseHostRelayConfig({ node: { id: 'hv-1' }, policy: [{ source_cid: 3, destinations: [{ cid: 4, ports: [15007] }, { cid: 5 }] }] });
  t.deepEqual(config.listen, { cid: 0xffffffff, port: 15100, maxConnections: null });
  t.is(config.headerTimeoutMs, 2000);
  t.deepEqual(config.policy, [{ sourceCid: 3, destinations: [{ cid: 4, ports: [15007] }, { cid: 5, ports: null }] }]);
});

test('relay config errors are reported by path', (t) => {
  const err = t.throws(() => parseHostRelayConfig({ node: { id: 'hv-1' }, listen: { port: -1 }, policy: [{ source_cid: 0, destinations: [] }] }));
  const problems = (err as unknown as { problems: string[] }).problems;
  t.true(problems.some((p) => p.startsWith('listen.port:')));
  t.true(problems.some((p) => p.startsWith('policy[0].source_cid: must be a context ID')));
  t.true(problems.some((p) => p.startsWith('policy[0].destinations: must list at least one destination')));
});
