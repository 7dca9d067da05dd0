import test from 'ava';
import { TtlCache } from '../../proxy/runtime/ttl-cache.js';

function clock(start = 1_000) {
  let now = start;
  return { now: () => now, advance: (ms: number) => (now += ms) };
}

test('a value is served until its TTL runs out, then dropped and evicted once', (t) => {
  const c = clock();
  const evicted: string[] = [];
  const cache = new TtlCache<string>({ now: c.now, onEvict: (k, v) => evicted.push(`${k}=${v}`) });
  cache.set('a', 'one', 100);
  c.advance(99);
  t.is(cache.get('a'), 'one');
  c.advance(1);
  t.is(cache.get('a'), undefined);
  t.is(cache.size, 0);
  t.deepEqual(evicted, ['a=one']);
});

test('replace keeps the expiry; set renews it and evicts the old value', (t) => {
  const c = clock();
  const evicted: string[] = [];
  const cache = new TtlCache<string>({ now: c.now, onEvict: (k, v) => evicted.push(`${k}=${v}`) });
  cache.set('a', 'one', 100);
  c.advance(50);
  t.true(cache.replace('a', 'two'));
  t.false(cache.replace('b', 'x'));
  c.advance(50);
  t.is(cache.get('a'), undefined);
  cache.set('a', 'three', 100);
  cache.set('a', 'four', 100);
  t.deepEqual(evicted, ['a=two', 'a=three']);
  t.is(cache.get('a'), 'four');
});

test('reaching sweepAt drops expired entries before a new key is added, so keys asked once do not pile up', (t) => {
  const c = clock();
  const cache = new TtlCache<number>({ now: c.now, sweepAt: 3 });
  cache.set('a', 1, 10);
  cache.set('b', 2, 10);
  cache.set('c', 3, 1_000);
  c.advance(10);
  cache.set('d', 4, 10);
  t.is(cache.size, 2);
  t.deepEqual([...cache.held()].map(([k]) => k).sort(), ['c', 'd']);
});

test('delete and clear evict what they remove', (t) => {
  const evicted: string[] = [];
  const cache = new TtlCache<number>({ onEvict: (k) => evicted.push(k) });
  cache.set('a', 1, 1_000);
  cache.set('b', 2, 1_000);
  t.true(cache.delete('a'));
  t.false(cache.delete('a'));
  cache.clear();
  t.deepEqual(evicted, ['a', 'b']);
  t.is(cache.size, 0);
});

test('once shares one query per key among simultaneous callers and runs a new one after it settles', async (t) => {
  const cache = new TtlCache<number>();
  let runs = 0;
  let release!: (n: number) => void;
  const query = () => {
    runs++;
    return new Promise<number>((resolve) => (release = resolve));
  };
  const first = cache.once('k', query);
  const second = cache.once('k', query);
  const other = cache.once('other', () => Promise.resolve(7));
  t.is(runs, 1);
  release(42);
  t.deepEqual(await Promise.all([first, second, other]), [42, 42, 7]);
  await cache.once('k', () => Promise.reject(new Error('down'))).catch(() => undefined);
  t.is(await cache.once('k', () => Promise.resolve(5)), 5);
});
