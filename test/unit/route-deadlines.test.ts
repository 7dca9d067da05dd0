import test from 'ava';
import { RouteDeadlines, type DeadlineClock } from '../../proxy/http/route-deadlines.js';

/** A clock moved by hand; timers fire when it passes them. */
function fakeClock(early = 0): DeadlineClock & { advance(to: number): void; armed: number[] } {
  let now = 0;
  let firstEarly = early;
  const timers: Array<{ at: number; fire: () => void }> = [];
  return {
    now: () => now,
    arm(ms, fire) {
      // `early`: the first timer fires that much before its time (a loop clock read a while ago).
      timers.push({ at: now + ms - firstEarly, fire });
      firstEarly = 0;
    },
    get armed() {
      return timers.map((t) => t.at);
    },
    advance(to) {
      for (;;) {
        timers.sort((a, b) => a.at - b.at);
        const due = timers[0];
        if (due === undefined || due.at > to) break;
        timers.shift();
        now = due.at;
        due.fire();
      }
      now = to;
    },
  };
}

test('RouteDeadlines: each request expires at its start plus its timeout, not before, in order; one timer armed at a time per timeout value', (t) => {
  const clock = fakeClock();
  const deadlines = new RouteDeadlines(clock);
  const fired: string[] = [];
  deadlines.start(0, 100, () => fired.push('a'));
  deadlines.start(10, 100, () => fired.push('b'));
  deadlines.start(10.5, 100, () => fired.push('c'));
  t.deepEqual(clock.armed, [100]);
  clock.advance(99.9);
  t.deepEqual(fired, []);
  clock.advance(100);
  t.deepEqual(fired, ['a']);
  clock.advance(110.4);
  t.deepEqual(fired, ['a', 'b']);
  clock.advance(200);
  t.deepEqual(fired, ['a', 'b', 'c']);
  t.deepEqual(clock.armed, [], 'nothing left: no timer');
});

test('RouteDeadlines: a cancelled request never expires, wherever it is in the list; the others still do', (t) => {
  const clock = fakeClock();
  const deadlines = new RouteDeadlines(clock);
  const fired: string[] = [];
  const a = deadlines.start(0, 50, () => fired.push('a'));
  const b = deadlines.start(1, 50, () => fired.push('b'));
  const c = deadlines.start(2, 50, () => fired.push('c'));
  deadlines.start(3, 50, () => fired.push('d'));
  const e = deadlines.start(4, 50, () => fired.push('e'));
  a.cancel();
  c.cancel();
  e.cancel();
  c.cancel();
  clock.advance(1000);
  t.deepEqual(fired, ['b', 'd']);
  b.cancel();
  t.deepEqual(fired, ['b', 'd'], 'a cancel after expiry does nothing');
  deadlines.start(1000, 50, () => fired.push('f'));
  clock.advance(1050);
  t.deepEqual(fired, ['b', 'd', 'f'], 'the list works on after emptying');
});

test('RouteDeadlines: a timer fired early (a stale loop clock) expires nothing before its time; timeout values apart keep their own order', (t) => {
  const clock = fakeClock(7);
  const deadlines = new RouteDeadlines(clock);
  const fired: string[] = [];
  deadlines.start(0, 300, () => fired.push('slow'));
  deadlines.start(5, 20, () => fired.push('fast'));
  clock.advance(25);
  t.deepEqual(fired, ['fast']);
  clock.advance(299);
  t.deepEqual(fired, ['fast']);
  clock.advance(300);
  t.deepEqual(fired, ['fast', 'slow']);
});

test('RouteDeadlines: a handler that starts a request while earlier ones still wait keeps them on time', (t) => {
  const clock = fakeClock();
  const deadlines = new RouteDeadlines(clock);
  const fired: string[] = [];
  deadlines.start(0, 100, () => {
    fired.push('a');
    deadlines.start(100, 100, () => fired.push('later'));
  });
  deadlines.start(50, 100, () => fired.push('b'));
  clock.advance(100);
  t.deepEqual(fired, ['a']);
  clock.advance(150);
  t.deepEqual(fired, ['a', 'b'], 'b at its own deadline, not the one added after it');
  clock.advance(200);
  t.deepEqual(fired, ['a', 'b', 'later']);
});
