// Sharing what many ADS streams hold alike (stream-sharing.ts): equal name
// sets become one, which changes no stream's content.

import test from 'ava';
import { SHARED_NAME_SETS, sharedNameSet, sharedNameSetCount } from '../../xds/control-plane/stream-sharing.js';

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
