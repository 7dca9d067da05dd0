import test from 'ava';
import fc from 'fast-check';
import { createLogger } from '../../proxy/runtime/log.js';
import { RefusalLog, RefusalSampler } from '../../proxy/runtime/refusal-log.js';
import { FakeClock } from '../helpers/fake-clock.js';

test('the first event of a key is written at once, the ones within the interval are held back', (t) => {
  const sampler = new RefusalSampler<number>(1_000);
  t.deepEqual(sampler.offer('k', 1, 0), { event: 1, suppressed: 0 });
  t.is(sampler.offer('k', 2, 10), null);
  t.is(sampler.offer('k', 3, 999), null);
  t.is(sampler.nextDue(), 1_000);
  t.deepEqual(sampler.due(999), []);
  t.deepEqual(sampler.due(1_000), [{ event: 3, suppressed: 1 }], 'the last held back is the sample; the other one is counted');
  t.is(sampler.nextDue(), undefined);
});

test('keys are independent', (t) => {
  const sampler = new RefusalSampler<string>(1_000);
  t.deepEqual(sampler.offer('in\0header_timeout', 'a', 0), { event: 'a', suppressed: 0 });
  t.deepEqual(sampler.offer('in\0not_proxy_v2', 'b', 1), { event: 'b', suppressed: 0 });
  t.deepEqual(sampler.offer('out\0header_timeout', 'c', 2), { event: 'c', suppressed: 0 });
  t.is(sampler.offer('in\0header_timeout', 'd', 3), null);
});

test('an event after its key went quiet is written at once, carrying what was held back if that was not written yet', (t) => {
  const sampler = new RefusalSampler<number>(1_000);
  sampler.offer('k', 1, 0);
  sampler.offer('k', 2, 1);
  sampler.offer('k', 3, 2);
  t.deepEqual(sampler.offer('k', 4, 1_500), { event: 4, suppressed: 2 });
  t.deepEqual(sampler.due(5_000), [], 'nothing held back any more');
  t.deepEqual(sampler.offer('k', 5, 5_000), { event: 5, suppressed: 0 });
});

test('drain gives everything held back, and forgets the keys', (t) => {
  const sampler = new RefusalSampler<number>(1_000);
  sampler.offer('a', 1, 0);
  sampler.offer('a', 2, 1);
  sampler.offer('b', 3, 2);
  t.deepEqual(sampler.drain(), [{ event: 2, suppressed: 0 }]);
  t.deepEqual(sampler.offer('a', 4, 3), { event: 4, suppressed: 0 });
});

test('whatever the stream, every event is written or counted once, and the lines of a key are at least an interval apart', (t) => {
  const interval = 100;
  const events = fc.array(fc.record({ key: fc.constantFrom('a', 'b', 'c'), gap: fc.integer({ min: 0, max: 150 }), poll: fc.boolean() }), { maxLength: 300 });
  const run = (stream: Array<{ key: string; gap: number; poll: boolean }>): boolean => {
    const sampler = new RefusalSampler<{ key: string; id: number }>(interval);
    const written: Array<{ key: string; at: number; suppressed: number }> = [];
    let now = 0;
    stream.forEach(({ key, gap, poll }, id) => {
      now += gap;
      if (poll) for (const s of sampler.due(now)) written.push({ key: s.event.key, at: now, suppressed: s.suppressed });
      const s = sampler.offer(key, { key, id }, now);
      if (s) written.push({ key, at: now, suppressed: s.suppressed });
    });
    for (const s of sampler.drain()) written.push({ key: s.event.key, at: Infinity, suppressed: s.suppressed });
    if (written.length + written.reduce((n, w) => n + w.suppressed, 0) !== stream.length) return false;
    for (const key of ['a', 'b', 'c']) {
      const at = written.filter((w) => w.key === key && w.at !== Infinity).map((w) => w.at);
      for (let i = 1; i < at.length; i++) if (at[i]! - at[i - 1]! < interval) return false;
    }
    return written.every((w) => w.suppressed >= 0);
  };
  t.notThrows(() => fc.assert(fc.property(events, run)));
});

function capture(): { log: RefusalLog; clock: FakeClock; lines: Array<Record<string, unknown>> } {
  const lines: Array<Record<string, unknown>> = [];
  const logger = createLogger({ level: 'info', destination: { write: (s: string) => void lines.push(JSON.parse(s) as Record<string, unknown>) } });
  const clock = new FakeClock();
  return { log: new RefusalLog(logger, clock, 1_000), clock, lines };
}

test('a burst of refusals gives the first line at once and, a second later, a sample carrying how many were not written', (t) => {
  const { log, clock, lines } = capture();
  for (let i = 0; i < 3_000; i++) log.warn({ listener: 'in', reason: 'not_proxy_v2', src: `10.0.0.1:${i}` }, 'refused: not PROXY v2');
  t.is(lines.length, 1);
  t.like(lines[0], { level: 'warn', listener: 'in', reason: 'not_proxy_v2', src: '10.0.0.1:0', msg: 'refused: not PROXY v2' });
  t.false('suppressed' in lines[0]!);
  clock.advance(1_000);
  t.is(lines.length, 2);
  t.like(lines[1], { reason: 'not_proxy_v2', src: '10.0.0.1:2999', suppressed: 2_998 });
  t.is(clock.pending, 0, 'no timer while nothing is held back');
});

test('flush writes what is held back and leaves no timer', (t) => {
  const { log, clock, lines } = capture();
  log.warn({ listener: 'in', reason: 'header_timeout' }, 'refused');
  log.warn({ listener: 'in', reason: 'header_timeout' }, 'refused');
  log.warn({ listener: 'out', reason: 'no_endpoint' }, 'refused');
  t.is(clock.pending, 1);
  log.flush();
  t.is(clock.pending, 0);
  t.deepEqual(
    lines.map((l) => [l.listener, l.reason, l.suppressed]),
    [
      ['in', 'header_timeout', undefined],
      ['out', 'no_endpoint', undefined],
      ['in', 'header_timeout', undefined],
    ],
  );
});
