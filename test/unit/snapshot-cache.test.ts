// The SnapshotCache on its own: per-node snapshots, the default for every
// other node, watchers, and a check that can refuse a snapshot; and the
// content versions of makeSnapshot.

import test from 'ava';
import { SnapshotCache } from '../../xds/control-plane/snapshot-cache.js';
import { makeSnapshot } from '../../xds/control-plane/snapshot.js';
import { CDS, cluster, LDS, snap } from '../helpers/xds-resources.js';

test('snapshot cache: watchers hear of their node and of the default; a failed check changes nothing', (t) => {
  const cache = new SnapshotCache({
    check: (s) => {
      if (s.versions[LDS] === 'bad') throw new Error('route to a missing cluster');
    },
  });
  const seen: string[] = [];
  const stop = cache.watch('n1', (s) => seen.push(s?.versions[LDS] ?? 'none'));
  cache.watch('n2', (s) => seen.push(`n2:${s?.versions[LDS] ?? 'none'}`));
  const d1 = snap({}, 'd1');
  cache.setDefault(d1);
  t.deepEqual(seen.splice(0), ['d1', 'n2:d1']);
  cache.setSnapshot('n1', snap({}, 'own'));
  t.deepEqual(seen.splice(0), ['own']);
  cache.setDefault(snap({}, 'd2'));
  t.deepEqual(seen.splice(0), ['n2:d2'], 'a node with its own snapshot ignores the default');
  t.throws(() => cache.setSnapshot('n1', snap({}, 'bad')), { message: /missing cluster/ });
  t.is(cache.get('n1')?.versions[LDS], 'own');
  cache.clearSnapshot('n1');
  t.deepEqual(seen.splice(0), ['d2']);
  t.is(cache.get('n3')?.versions[LDS], 'd2');
  stop();
  cache.setSnapshot('n1', snap({}, 'again'));
  t.deepEqual(seen, []);
});

test('snapshot cache: the same snapshot again tells nobody; a throwing watcher does not keep the others from hearing', (t) => {
  const errors: string[] = [];
  const cache = new SnapshotCache({ onListenerError: (err, nodeId) => errors.push(`${nodeId}: ${(err as Error).message}`) });
  const seen: string[] = [];
  cache.watch('n1', () => {
    throw new Error('watcher broke');
  });
  cache.watch('n1', (s) => seen.push(s?.versions[LDS] ?? 'none'));
  const s1 = snap({}, 'v1');
  cache.setSnapshot('n1', s1);
  cache.setSnapshot('n1', s1);
  t.deepEqual(seen, ['v1']);
  t.deepEqual(errors, ['n1: watcher broke']);
  t.deepEqual([cache.has('n1'), cache.has('n2'), cache.nodeIds()], [true, false, ['n1']]);
});

test('makeSnapshot: content versions: same bytes, same version; the type version follows its resources; duplicate names and wrong types are refused', (t) => {
  const a = makeSnapshot({ [CDS]: [cluster('c1')] });
  const b = makeSnapshot({ [CDS]: [cluster('c1')] });
  const c = makeSnapshot({ [CDS]: [cluster('c1', 2)] });
  t.is(a.versions[CDS], b.versions[CDS]);
  t.not(a.versions[CDS], c.versions[CDS]);
  t.is(a.versions[LDS], c.versions[LDS]);
  t.throws(() => makeSnapshot({ [CDS]: [cluster('c1'), cluster('c1')] }), { message: 'snapshot: two Cluster resources are named "c1"' });
  t.throws(() => makeSnapshot({ [LDS]: [cluster('c1')] }), { message: /holds/ });
});
