// Peer modes per service and port: the mesh config's peer_authentication
// (validation, which entry wins), how the filter chains carry a mode, and the
// sidecar's decisions (handshake per listener, admission per port, TLS out).

import test from 'ava';
import { ConfigError } from '../../proxy/runtime/config-file.js';
import { parseMeshConfig } from '../../xds/control-plane/mesh.js';
import { DEFAULT_PEER_MODE, portMode, serviceMode, stricter, transportProtocols } from '../../xds/control-plane/peer-authentication.js';
import { MAX_PEER_AUTHENTICATIONS } from '../../xds/control-plane/bounds.js';
import { listenerHandshake, modeOfTransports, originatesTls, portAdmission, PEER_MODES } from '../../proxy/peer-tls/peer-modes.js';
import type { PeerAuthentication } from '../../xds/control-plane/types.js';

function problems(data: unknown): string[] {
  try {
    parseMeshConfig(data);
    return [];
  } catch (err) {
    if (err instanceof ConfigError) return err.problems;
    throw err;
  }
}

const services = [
  { name: 'web', port: 8080 },
  { name: 'db', port: 5432 },
];

test('a new mesh is STRICT', (t) => {
  t.is(DEFAULT_PEER_MODE, 'strict');
  t.deepEqual(parseMeshConfig({}).peerAuthentication, []);
  t.is(portMode([], { services: [{ name: 'web', port: 8080 }] }, 8080), 'strict');
  t.is(portMode([], { services: [] }, 9100), 'strict');
});

test('entries parse with Istio mode names in any case; the sidecar gets lowercase modes', (t) => {
  const mesh = parseMeshConfig({
    services,
    peer_authentication: [
      { name: 'mesh', mode: 'PERMISSIVE' },
      { name: 'db', service: 'db', mode: 'strict' },
      { name: 'metrics', port: 9100, mode: 'Disable' },
      { name: 'web-admin', service: 'web', port: 8081, mode: 'DISABLE' },
    ],
  });
  t.deepEqual(mesh.peerAuthentication, [
    { name: 'mesh', mode: 'permissive' },
    { name: 'db', service: 'db', mode: 'strict' },
    { name: 'metrics', port: 9100, mode: 'disable' },
    { name: 'web-admin', service: 'web', port: 8081, mode: 'disable' },
  ]);
});

test('invalid entries are refused by field path, all at once', (t) => {
  t.deepEqual(
    problems({
      services,
      peer_authentication: [
        { name: 'a', mode: 'MUTUAL' },
        { name: 'b', service: 'nope', mode: 'STRICT' },
        { name: 'c', port: 0, mode: 'STRICT', colour: 'red' },
        { name: 'a', mode: 'STRICT' },
        { name: 'd', service: 'web', mode: 'STRICT' },
        { name: 'e', service: 'web', mode: 'DISABLE' },
        { mode: 'STRICT' },
      ],
    }),
    [
      'peer_authentication[0].mode: must be one of "STRICT", "PERMISSIVE", "DISABLE" (got "MUTUAL")',
      'peer_authentication[2].port: must be an integer 1..65535',
      'peer_authentication[2]: unknown field "colour"',
      'peer_authentication[6].name: required',
      'peer_authentication[1].service: unknown service "nope"',
      'peer_authentication[3].name: duplicate name "a" (also peer_authentication[0])',
      'peer_authentication[3]: selects the same ports as peer_authentication[0] (any service, any port): one entry per selector',
      'peer_authentication[5]: selects the same ports as peer_authentication[4] (service "web", any port): one entry per selector',
      'peer_authentication[6]: selects the same ports as peer_authentication[0] (any service, any port): one entry per selector',
    ],
  );
});

test(`at most ${MAX_PEER_AUTHENTICATIONS} entries`, (t) => {
  const many = Array.from({ length: MAX_PEER_AUTHENTICATIONS + 1 }, (_, i) => ({ name: `p${i}`, port: (i % 65535) + 1, mode: 'STRICT' }));
  t.true(problems({ peer_authentication: many }).includes(`peer_authentication: must list at most ${MAX_PEER_AUTHENTICATIONS} entries`));
});

test('a service an entry names cannot be deleted while the entry stays (the mesh would be invalid)', (t) => {
  t.deepEqual(problems({ services: [], peer_authentication: [{ name: 'db', service: 'db', mode: 'STRICT' }] }), ['peer_authentication[0].service: unknown service "db"']);
});

const ENTRIES: PeerAuthentication[] = [
  { name: 'mesh', mode: 'permissive' },
  { name: 'db', service: 'db', mode: 'strict' },
  { name: 'p5432', port: 5432, mode: 'disable' },
  { name: 'db-5433', service: 'db', port: 5433, mode: 'permissive' },
  { name: 'web', service: 'web', mode: 'disable' },
];

test('the most specific entry wins: service and port, then port, then service, then mesh-wide, then STRICT', (t) => {
  t.is(serviceMode(ENTRIES, 'db', 5433), 'permissive'); // service and port
  t.is(serviceMode(ENTRIES, 'db', 5432), 'disable'); // port beats service
  t.is(serviceMode(ENTRIES, 'db', 6000), 'strict'); // service
  t.is(serviceMode(ENTRIES, 'other', 6000), 'permissive'); // mesh-wide
  t.is(serviceMode(ENTRIES.filter((e) => e.name !== 'mesh'), 'other', 6000), 'strict'); // default
  t.is(serviceMode(ENTRIES, 'web', 5433), 'disable'); // db's service-and-port entry does not select web
});

test('a port serving several services gets the strictest of their modes', (t) => {
  t.is(stricter('disable', 'permissive'), 'permissive');
  t.is(stricter('strict', 'permissive'), 'strict');
  t.is(stricter('disable', 'disable'), 'disable');
  const vm = { services: [{ name: 'web', port: 8080 }, { name: 'db', port: 8080 }] };
  t.is(portMode(ENTRIES, vm, 8080), 'strict'); // web disable, db strict
  t.is(portMode(ENTRIES, { services: [{ name: 'web', port: 8080 }] }, 8080), 'disable');
  // A port without a mesh service: port entries and the mesh-wide one only.
  t.is(portMode(ENTRIES, { services: [] }, 5432), 'disable');
  t.is(portMode(ENTRIES, { services: [] }, 5433), 'permissive');
});

test('filter chains carry a mode as transport protocols, and read back as the same mode', (t) => {
  t.deepEqual(transportProtocols('strict'), ['tls']);
  t.deepEqual(transportProtocols('permissive'), ['tls', 'raw_buffer']);
  t.deepEqual(transportProtocols('disable'), ['raw_buffer']);
  for (const mode of PEER_MODES) t.is(modeOfTransports(new Set(transportProtocols(mode))), mode);
});

test('listener handshake: TLS when some port takes TLS and the sidecar has an identity; plain peers let on when some port takes them', (t) => {
  t.deepEqual(listenerHandshake(['strict'], true), { kind: 'tls', plain: false });
  t.deepEqual(listenerHandshake(['strict', 'disable'], true), { kind: 'tls', plain: true });
  t.deepEqual(listenerHandshake(['permissive'], true), { kind: 'tls', plain: true });
  t.deepEqual(listenerHandshake(['disable'], true), { kind: 'plain' });
  t.deepEqual(listenerHandshake(['disable'], false), { kind: 'plain' });
  t.deepEqual(listenerHandshake(['permissive', 'strict'], false), { kind: 'plain' });
  const refused = listenerHandshake(['strict'], false);
  t.is(refused.kind, 'refuse');
  t.like(refused, { reason: 'plain_text' });
  t.regex((refused as { detail: string }).detail, /no peer identity \(peer_tls key_file, chain_file, bundle_file\)/);
});

test('port admission: plain text only under PERMISSIVE (unauthenticated) and DISABLE; TLS only under PERMISSIVE and STRICT', (t) => {
  t.deepEqual(portAdmission('permissive', 80, false, true), { ok: true, unauthenticated: true });
  t.deepEqual(portAdmission('disable', 80, false, true), { ok: true, unauthenticated: false });
  t.deepEqual(portAdmission('strict', 80, false, true), { ok: false, reason: 'plain_text', detail: 'a plain-text peer is refused: port 80 is STRICT' });
  t.like(portAdmission('strict', 80, false, false), { ok: false, reason: 'plain_text' });
  t.regex((portAdmission('strict', 80, false, false) as { detail: string }).detail, /^port 80 is STRICT, and this sidecar has no peer identity/);
  t.deepEqual(portAdmission('strict', 80, true, true), { ok: true, unauthenticated: false });
  t.deepEqual(portAdmission('permissive', 80, true, true), { ok: true, unauthenticated: false });
  t.deepEqual(portAdmission('disable', 80, true, true), { ok: false, reason: 'tls_not_accepted', detail: 'a TLS peer is refused: port 80 is DISABLE (plain text only)' });
});

test('outbound: TLS only with an identity of our own; the destination port pushed mode decides, else the file', (t) => {
  t.false(originatesTls(false, true, 'strict'));
  t.true(originatesTls(true, false, 'strict'));
  t.true(originatesTls(true, false, 'permissive'));
  t.false(originatesTls(true, true, 'disable'));
  t.true(originatesTls(true, true, undefined));
  t.false(originatesTls(true, false, undefined));
});
