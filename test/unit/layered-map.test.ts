import test from 'ava';
import { LayeredMap } from '../../xds/control-plane/layered-map.js';

const base = new Map([
  ['a', 1],
  ['b', 2],
  ['c', 3],
]);
const top = new Map([
  ['b', 20],
  ['d', 40],
]);

test('reads and iterates exactly as the copy new Map([...base, ...top]) would, in its order', (t) => {
  const layered = new LayeredMap(base, top);
  const copy = new Map([...base, ...top]);
  t.is(layered.size, copy.size);
  t.deepEqual([...layered], [...copy]);
  t.deepEqual([...layered.entries()], [...copy.entries()]);
  t.deepEqual([...layered.keys()], [...copy.keys()]);
  t.deepEqual([...layered.values()], [...copy.values()]);
  for (const key of ['a', 'b', 'c', 'd', 'e']) {
    t.is(layered.get(key), copy.get(key), key);
    t.is(layered.has(key), copy.has(key), key);
  }
  const seen: Array<[string, number]> = [];
  layered.forEach((value, key, map) => {
    t.is(map, layered);
    seen.push([key, value]);
  });
  t.deepEqual(seen, [...copy]);
});

test('an undefined value in the top layer hides the base one, as in the copy', (t) => {
  const layered = new LayeredMap(new Map([['a', 1 as number | undefined]]), new Map([['a', undefined]]));
  t.is(layered.get('a'), undefined);
  t.true(layered.has('a'));
  t.deepEqual([...layered], [['a', undefined]]);
});

test('empty layers', (t) => {
  t.deepEqual([...new LayeredMap(new Map(), new Map())], []);
  t.is(new LayeredMap(base, new Map()).size, 3);
  t.deepEqual([...new LayeredMap(new Map<string, number>(), top)], [...top]);
});
