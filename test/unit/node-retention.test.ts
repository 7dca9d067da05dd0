// Which xDS nodes are remembered: connected ones always, disconnected ones for
// the retention after their last stream closed, at most so many of them.

import test from 'ava';
import { NodeRetention } from '../../xds/control-plane/node-retention.js';
import { FakeClock } from '../helpers/fake-clock.js';

function retention(options: { retentionMs?: number; maxDisconnected?: number } = {}) {
  const clock = new FakeClock();
  const forgotten: string[] = [];
  const nodes = new NodeRetention({ retentionMs: options.retentionMs ?? 1_000, maxDisconnected: options.maxDisconnected ?? 100, clock, onForget: (id) => forgotten.push(id) });
  return { clock, forgotten, nodes };
}

test('a node is forgotten the retention after its last stream closed, not before', (t) => {
  const { clock, forgotten, nodes } = retention();
  nodes.opened('a');
  nodes.closed('a');
  t.deepEqual([nodes.connected, nodes.disconnected], [0, 1]);
  clock.advance(999);
  t.deepEqual(forgotten, []);
  clock.advance(1);
  t.deepEqual(forgotten, ['a']);
  t.deepEqual([nodes.connected, nodes.disconnected, nodes.forgotten], [0, 0, 1]);
  t.is(clock.pending, 0, 'no timer left once nothing waits');
});

test('a node with a stream open is kept however long; the retention counts from its last stream', (t) => {
  const { clock, forgotten, nodes } = retention();
  nodes.opened('a');
  nodes.opened('a');
  nodes.closed('a');
  clock.advance(5_000);
  t.deepEqual(forgotten, [], 'one of its two streams is still open');
  t.is(nodes.connected, 1);
  nodes.closed('a');
  clock.advance(600);
  nodes.opened('a'); // came back within the retention
  clock.advance(5_000);
  t.deepEqual(forgotten, []);
  nodes.closed('a');
  clock.advance(1_000);
  t.deepEqual(forgotten, ['a']);
});

test('nodes are forgotten in the order they left, each at its own time', (t) => {
  const { clock, forgotten, nodes } = retention();
  for (const id of ['a', 'b', 'c']) {
    nodes.opened(id);
    nodes.closed(id);
    clock.advance(400);
  }
  // a left at 0, b at 400, c at 800; now 1200.
  t.deepEqual(forgotten, ['a']);
  clock.advance(200);
  t.deepEqual(forgotten, ['a', 'b']);
  clock.advance(400);
  t.deepEqual(forgotten, ['a', 'b', 'c']);
});

test('beyond maxDisconnected the node gone longest is forgotten at once', (t) => {
  const { clock, forgotten, nodes } = retention({ maxDisconnected: 2 });
  for (const id of ['a', 'b', 'c', 'd']) {
    nodes.opened(id);
    nodes.closed(id);
    clock.advance(1);
  }
  t.deepEqual(forgotten, ['a', 'b']);
  t.is(nodes.disconnected, 2);
});

test('stop: nothing is forgotten afterwards and no timer is left', (t) => {
  const { clock, forgotten, nodes } = retention();
  nodes.opened('a');
  nodes.closed('a');
  nodes.stop();
  t.is(clock.pending, 0);
  nodes.opened('b');
  nodes.closed('b');
  clock.advance(10_000);
  t.deepEqual(forgotten, []);
});
