import test from 'ava';
import { VsockBreakers, vsockBreakerKey } from '../../proxy/upstream/breakers.js';

test('a breaker is closed until opened, open for its window, then closed again', (t) => {
  const breakers = new VsockBreakers(1000);
  const key = vsockBreakerKey({ cid: 5, port: 15007 });
  t.false(breakers.isOpen(key, 0));
  breakers.open(key, 100);
  t.true(breakers.isOpen(key, 100));
  t.true(breakers.isOpen(key, 1099));
  t.false(breakers.isOpen(key, 1100));
  t.false(breakers.isOpen(key, 1101), 'stays closed once the window passed');
});

test('breakers are per endpoint: CID and port (on a loopback hypervisor every VM is CID 1)', (t) => {
  const breakers = new VsockBreakers(1000);
  breakers.open(vsockBreakerKey({ cid: 5, port: 1 }), 0);
  t.true(breakers.isOpen(vsockBreakerKey({ cid: 5, port: 1 }), 10));
  t.false(breakers.isOpen(vsockBreakerKey({ cid: 5, port: 2 }), 10));
  t.false(breakers.isOpen(vsockBreakerKey({ cid: 6, port: 1 }), 10));
});
