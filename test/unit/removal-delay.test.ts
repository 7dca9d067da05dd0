// Make before break, as a pure function of the previous result, the next
// snapshot and the time: a cluster that leaves is served until its delay is
// up, or until it comes back.

import test from 'ava';
import { delayClusterRemoval } from '../../xds/control-plane/removal-delay.js';
import { makeSnapshot, typeVersion } from '../../xds/control-plane/snapshot.js';
import { assignment, CDS, cluster, EDS, LDS, listener } from '../helpers/xds-resources.js';

const DELAY = 1_000;
const both = (...names: string[]) => makeSnapshot({ [CDS]: names.map((n) => cluster(n)), [EDS]: names.map((n) => assignment(n, '10.0.0.1')), [LDS]: [listener('l1', 15001)] });

test('nothing before: the next snapshot as it is, nothing to wake for', (t) => {
  const next = both('a', 'b');
  const r = delayClusterRemoval(undefined, next, 0, DELAY);
  t.is(r.snapshot, next);
  t.is(r.wakeAt, null);
  t.is(r.kept.size, 0);
});

test('a removed cluster and its assignment are served until the delay from when it went is up, then dropped', (t) => {
  const first = delayClusterRemoval(undefined, both('a', 'b'), 0, DELAY);
  const without = both('a');
  const r1 = delayClusterRemoval(first, without, 100, DELAY);
  t.deepEqual([...r1.snapshot.resources[CDS].keys()], ['a', 'b']);
  t.deepEqual([...r1.snapshot.resources[EDS].keys()], ['a', 'b']);
  t.is(r1.snapshot.resources[CDS].get('b'), first.snapshot.resources[CDS].get('b'), 'the version served before, unchanged');
  t.is(r1.snapshot.versions[CDS], typeVersion(r1.snapshot.resources[CDS]));
  t.is(r1.snapshot.versions[CDS], first.snapshot.versions[CDS], 'the same clusters: the same type version');
  t.is(r1.snapshot.resources[LDS], without.resources[LDS], 'other types are the next snapshot\'s');
  t.is(r1.wakeAt, 1_100);
  // A rebuild before the time is up keeps it, from the first time it was missing.
  const r2 = delayClusterRemoval(r1, both('a'), 1_099, DELAY);
  t.true(r2.snapshot.resources[CDS].has('b'));
  t.is(r2.wakeAt, 1_100);
  const next = both('a');
  const r3 = delayClusterRemoval(r2, next, 1_100, DELAY);
  t.is(r3.snapshot, next, 'nothing kept: the next snapshot itself');
  t.deepEqual([...r3.snapshot.resources[EDS].keys()], ['a']);
  t.is(r3.wakeAt, null);
});

test('a cluster that comes back is no longer kept; the earliest of several is the next wake', (t) => {
  const start = delayClusterRemoval(undefined, both('a', 'b', 'c'), 0, DELAY);
  const r1 = delayClusterRemoval(start, both('a', 'c'), 10, DELAY);
  const r2 = delayClusterRemoval(r1, both('a'), 500, DELAY);
  t.deepEqual([...r2.kept.keys()].sort(), ['b', 'c']);
  t.is(r2.wakeAt, 1_010);
  const back = both('a', 'b');
  const r3 = delayClusterRemoval(r2, back, 600, DELAY);
  t.deepEqual([...r3.kept.keys()], ['c']);
  t.is(r3.snapshot.resources[CDS].get('b'), back.resources[CDS].get('b'), 'the new version of b, not the kept one');
  t.is(r3.wakeAt, 1_500);
});

test('a cluster removed without an assignment is kept alone; a delay of 0 keeps nothing', (t) => {
  const bare = makeSnapshot({ [CDS]: [cluster('a'), cluster('b')], [EDS]: [assignment('a', '10.0.0.1')] });
  const r = delayClusterRemoval(delayClusterRemoval(undefined, bare, 0, DELAY), makeSnapshot({ [CDS]: [cluster('a')], [EDS]: [assignment('a', '10.0.0.1')] }), 5, DELAY);
  t.deepEqual([...r.snapshot.resources[CDS].keys()], ['a', 'b']);
  t.deepEqual([...r.snapshot.resources[EDS].keys()], ['a']);
  const next = both('a');
  const none = delayClusterRemoval(delayClusterRemoval(undefined, both('a', 'b'), 0, 0), next, 5, 0);
  t.is(none.snapshot, next);
  t.is(none.wakeAt, null);
});
