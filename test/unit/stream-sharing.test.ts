// Sharing what many ADS streams hold alike (stream-sharing.ts): equal name
// sets become one, merges over the same map with equal entries give one map,
// and neither changes what a stream holds (content is always the same).

import test from 'ava';
import { SHARED_NAME_SETS, sharedMerge, sharedNameSet, sharedNameSetCount } from '../../xds/control-plane/stream-sharing.js';

test('an equal name set (same names, same order) is replaced by the one kept; another order or other names are not', (t) => {
  const first = new Set(['sharing-a', 'sharing-b']);
  t.is(sharedNameSet(first), first);
  t.is(sharedNameSet(new Set(['sharing-a', 'sharing-b'])), first);
  const reordered = new Set(['sharing-b', 'sharing-a']);
  t.is(sharedNameSet(reordered), reordered);
  const other = new Set(['sharing-a']);
  t.is(sharedNameSet(other), other);
  const empty = new Set<string>();
  t.is(sharedNameSet(empty), empty, 'empty sets are not kept');
});

test('name sets kept are bounded: the least recently used goes first', (t) => {
  const kept = new Set(['bounded-kept']);
  sharedNameSet(kept);
  for (let i = 0; i < SHARED_NAME_SETS * 2; i++) {
    sharedNameSet(new Set([`bounded-${i}`]));
    if (i % 16 === 0) t.is(sharedNameSet(new Set(['bounded-kept'])), kept, 'used again: kept');
  }
  t.true(sharedNameSetCount() <= SHARED_NAME_SETS);
  const evicted = new Set(['bounded-0']);
  t.is(sharedNameSet(evicted), evicted, 'the oldest unused one is gone');
});

test('sharedMerge: the entries of b over a; the same a with equal entries gives the same map; a is never changed', (t) => {
  const a = new Map([
    ['x', '1'],
    ['y', '1'],
  ]);
  const m1 = sharedMerge(a, new Map([['y', '2']]));
  t.deepEqual([...m1], [
    ['x', '1'],
    ['y', '2'],
  ]);
  t.is(sharedMerge(a, new Map([['y', '2']])), m1, 'equal entries over the same map: one result');
  const m2 = sharedMerge(a, new Map([['y', '3']]));
  t.not(m2, m1);
  t.deepEqual([...m2], [
    ['x', '1'],
    ['y', '3'],
  ]);
  t.deepEqual([...a], [
    ['x', '1'],
    ['y', '1'],
  ]);
  t.is(sharedMerge(a, new Map()), a, 'nothing over it: a itself');
  // An equal map that is another object is another key: its merge is made anew (and is equal).
  const a2 = new Map(a);
  const m3 = sharedMerge(a2, new Map([['y', '3']]));
  t.not(m3, m2);
  t.deepEqual([...m3], [...m2]);
});

test('sharedMerge keeps the last few merges over one map: merges of other entries in between do not undo the sharing', (t) => {
  const a = new Map<string, string>();
  const eds = sharedMerge(a, new Map([['c1', 'e1']]));
  const rds = sharedMerge(a, new Map([['r1', 'q1']]));
  t.is(sharedMerge(a, new Map([['c1', 'e1']])), eds);
  t.is(sharedMerge(a, new Map([['r1', 'q1']])), rds);
  t.deepEqual([...rds], [['r1', 'q1']]);
});
