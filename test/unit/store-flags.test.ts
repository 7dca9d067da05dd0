import test from 'ava';
import { parseStoreFlags } from '../../xds/store/store-flags.js';

const tls = { storeCert: '/c.pem', storeKey: '/k.pem', storeCa: '/ca.pem' };

test('etcd endpoints: one or several host:port, IPv6 in brackets', (t) => {
  t.deepEqual(parseStoreFlags({ store: 'etcd://10.0.0.1:2379,etcd-2.example:2379,[fd00::5]:2379', ...tls }), {
    endpoints: ['10.0.0.1:2379', 'etcd-2.example:2379', '[fd00::5]:2379'],
    tls: { cert: '/c.pem', key: '/k.pem', ca: '/ca.pem' },
  });
});

test('TLS files from the URL parameters; the flags win over them', (t) => {
  t.deepEqual(parseStoreFlags({ store: 'etcd://h:2379?cert=/u-c.pem&key=/u-k.pem&ca=/u-ca.pem' }).tls, { cert: '/u-c.pem', key: '/u-k.pem', ca: '/u-ca.pem' });
  t.deepEqual(parseStoreFlags({ store: 'etcd://h:2379?cert=/u-c.pem&key=/u-k.pem&ca=/u-ca.pem', storeCa: '/flag-ca.pem' }).tls, { cert: '/u-c.pem', key: '/u-k.pem', ca: '/flag-ca.pem' });
});

test('secure by default: no client certificate is refused unless --store-insecure, which takes no certificate', (t) => {
  t.throws(() => parseStoreFlags({ store: 'etcd://h:2379' }), { message: /give --store-cert, --store-key and --store-ca \(or --store-insecure/ });
  t.throws(() => parseStoreFlags({ store: 'etcd://h:2379', storeCert: '/c.pem', storeKey: '/k.pem' }), { message: /give --store-cert, --store-key and --store-ca/ });
  t.deepEqual(parseStoreFlags({ store: 'etcd://h:2379', storeInsecure: true }), { endpoints: ['h:2379'], tls: 'insecure' });
  t.throws(() => parseStoreFlags({ store: 'etcd://h:2379', storeInsecure: true, ...tls }), { message: /--store-insecure cannot be combined/ });
});

test('a bad URL is refused naming what is wrong', (t) => {
  for (const [store, message] of [
    ['http://h:2379', /is not etcd:\/\/host:port/],
    ['etcd://h', /"h" is not host:port/],
    ['etcd://h:0', /"h:0" is not host:port \(port 1-65535\)/],
    ['etcd://h:70000', /"h:70000" is not host:port/],
    ['etcd://h:2379,', /"" is not host:port/],
    ['etcd://h:2379?user=x', /unknown parameter "user"/],
  ] as const) {
    t.throws(() => parseStoreFlags({ store, ...tls }), { message }, store);
  }
});
