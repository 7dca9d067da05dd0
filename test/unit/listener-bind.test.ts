// bindAll: a listener's addresses bound at one port. With port 0 the first
// bind picks the port and the others reuse it; a port taken on a later
// address is given up (every bind undone) and another tried, a few times.

import test from 'ava';
import { PORT_ZERO_ATTEMPTS, bindAll, type Bind } from '../../proxy/listeners/listener.js';

const V6: Bind = { family: 'inet6', host: '::1' };
const V4: Bind = { family: 'inet', host: '127.0.0.1' };

/** A fake listen: port 0 picks the next of `picks`; `taken` holds the ports in use per host. */
function fakeListen(picks: number[], taken: Record<string, number[]> = {}) {
  let nextFd = 10;
  const open = new Set<number>();
  const calls: Array<[string, number]> = [];
  const listen = (bind: Bind, port: number): [number, number] => {
    calls.push([String(bind.host), port]);
    const at = port === 0 ? picks.shift()! : port;
    if ((taken[String(bind.host)] ?? []).includes(at)) throw Object.assign(new Error('listen: Address already in use'), { code: 'EADDRINUSE' });
    open.add(nextFd);
    return [nextFd++, at];
  };
  const close = (fd: number): void => {
    open.delete(fd);
  };
  return { listen, close, open, calls };
}

test('port 0: the first bind picks the port, the others reuse it', (t) => {
  const f = fakeListen([40001]);
  const bound = bindAll([V6, V4], 0, f.listen, f.close);
  t.deepEqual(bound.map((b) => b.bound), [{ address: '::1', port: 40001 }, { address: '127.0.0.1', port: 40001 }]);
  t.deepEqual(f.calls, [['::1', 0], ['127.0.0.1', 40001]]);
  t.is(f.open.size, 2);
});

test('port 0: a picked port taken on a later address is given up, its binds closed, and a new port tried', (t) => {
  const f = fakeListen([40001, 40002], { '127.0.0.1': [40001] });
  const bound = bindAll([V6, V4], 0, f.listen, f.close);
  t.deepEqual(bound.map((b) => b.bound.port), [40002, 40002]);
  t.deepEqual(f.calls, [['::1', 0], ['127.0.0.1', 40001], ['::1', 0], ['127.0.0.1', 40002]]);
  t.deepEqual([...f.open], bound.map((b) => b.fd));
});

test(`port 0: after ${PORT_ZERO_ATTEMPTS} taken ports the error is thrown with the last port, nothing left open`, (t) => {
  const ports = Array.from({ length: PORT_ZERO_ATTEMPTS }, (_, i) => 40001 + i);
  const f = fakeListen([...ports], { '127.0.0.1': ports });
  const err = t.throws(() => bindAll([V6, V4], 0, f.listen, f.close)) as NodeJS.ErrnoException & { port?: number };
  t.is(err.code, 'EADDRINUSE');
  t.is(err.port, ports.at(-1));
  t.is(f.open.size, 0);
  t.is(f.calls.length, 2 * PORT_ZERO_ATTEMPTS);
});

test('a configured port that is taken fails at once (no other port is tried), its binds closed', (t) => {
  const f = fakeListen([], { '127.0.0.1': [15001] });
  const err = t.throws(() => bindAll([V6, V4], 15001, f.listen, f.close)) as NodeJS.ErrnoException & { port?: number };
  t.is(err.code, 'EADDRINUSE');
  t.is(err.port, 15001);
  t.is(f.open.size, 0);
  t.is(f.calls.length, 2);
});

test('port 0 with the first address taken is not retried (the kernel picked it: another error than a collision)', (t) => {
  const f = fakeListen([40001], { '::1': [40001] });
  t.throws(() => bindAll([V6, V4], 0, f.listen, f.close), { code: 'EADDRINUSE' });
  t.is(f.calls.length, 1);
});

test('other errors are not retried', (t) => {
  const listen = (): [number, number] => {
    throw Object.assign(new Error('listen: Cannot assign requested address'), { code: 'EADDRNOTAVAIL' });
  };
  t.throws(() => bindAll([V6, V4], 0, listen, () => {}), { code: 'EADDRNOTAVAIL' });
});
