// The options every control-plane client channel starts from (xds/security/transport.ts): a server that went
// away (a replica restarted) is tried again within 5 s, not after grpc-js's backoff grew towards 120 s.

import test from 'ava';
import { channelOptions } from '../../xds/security/transport.js';
import { staticSource } from '../../proxy/identity/certificate-source.js';

const transports = {
  insecure: { insecure: true } as const,
  tls: { source: staticSource({ keyPem: '', chainPem: '', bundlePem: '', spiffeId: 'spiffe://vsockmesh.local/vm/vm-a', notAfter: new Date(0) }) },
};

for (const [name, transport] of Object.entries(transports)) {
  test(`${name}: a lost server is tried again after 250 ms doubling to at most 5 s`, (t) => {
    const options = channelOptions(transport);
    t.is(options['grpc.initial_reconnect_backoff_ms'], 250);
    t.is(options['grpc.max_reconnect_backoff_ms'], 5_000);
  });
}
