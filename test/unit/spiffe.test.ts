import test from 'ava';
import {
  DEFAULT_TRUST_DOMAIN,
  IDENTITY_KINDS,
  MAX_SPIFFE_ID_BYTES,
  formatSpiffeId,
  meshIdentityId,
  parseMeshIdentity,
  parseSpiffeId,
  trustDomainId,
  trustDomainProblem,
  type MeshIdentityProblem,
  type SpiffeIdProblem,
} from '../../proxy/identity/spiffe.js';

const valid: Array<[string, string, string]> = [
  ['spiffe://vsockmesh.local/vm/vm-a', 'vsockmesh.local', '/vm/vm-a'],
  ['spiffe://vsockmesh.local', 'vsockmesh.local', ''],
  ['spiffe://example.org/a/b/c', 'example.org', '/a/b/c'],
  ['spiffe://td_1-x.y/A.Z_09-x', 'td_1-x.y', '/A.Z_09-x'],
  ['spiffe://1/...', '1', '/...'],
  ['spiffe://td/.hidden/..x', 'td', '/.hidden/..x'],
];

for (const [text, trustDomain, path] of valid) {
  test(`${text} is a SPIFFE ID (trust domain ${trustDomain}, path "${path}") and formats back to itself`, (t) => {
    const parsed = parseSpiffeId(text);
    t.deepEqual(parsed, { ok: true, value: { trustDomain, path } });
    if (parsed.ok) t.is(formatSpiffeId(parsed.value), text);
  });
}

const invalid: Array<[string, SpiffeIdProblem]> = [
  ['', 'wrong_scheme'],
  ['vsockmesh.local/vm/a', 'wrong_scheme'],
  ['https://vsockmesh.local/vm/a', 'wrong_scheme'],
  ['SPIFFE://vsockmesh.local/vm/a', 'wrong_scheme'],
  ['spiffe:/vsockmesh.local/vm/a', 'wrong_scheme'],
  [' spiffe://td/vm/a', 'wrong_scheme'],
  ['spiffe://', 'missing_trust_domain'],
  ['spiffe:///vm/a', 'missing_trust_domain'],
  ['spiffe://Vsockmesh.local/vm/a', 'bad_trust_domain_char'],
  ['spiffe://vsock mesh/vm/a', 'bad_trust_domain_char'],
  ['spiffe://td%41/vm/a', 'bad_trust_domain_char'],
  ['spiffe://tdé/vm/a', 'bad_trust_domain_char'],
  ['spiffe://[::1]/vm/a', 'port_not_allowed'],
  ['spiffe://td:8443/vm/a', 'port_not_allowed'],
  ['spiffe://user@td/vm/a', 'userinfo_not_allowed'],
  ['spiffe://user:pw@td/vm/a', 'userinfo_not_allowed'],
  ['spiffe://td/vm/a?x=1', 'query_not_allowed'],
  ['spiffe://td?x', 'query_not_allowed'],
  ['spiffe://td/vm/a#f', 'fragment_not_allowed'],
  ['spiffe://td/', 'trailing_slash'],
  ['spiffe://td/vm/a/', 'trailing_slash'],
  ['spiffe://td//a', 'empty_segment'],
  ['spiffe://td/vm//a', 'empty_segment'],
  ['spiffe://td/./a', 'dot_segment'],
  ['spiffe://td/vm/..', 'dot_segment'],
  ['spiffe://td/vm/.', 'dot_segment'],
  ['spiffe://td/vm/a b', 'bad_path_char'],
  ['spiffe://td/vm/a%2Fb', 'bad_path_char'],
  ['spiffe://td/vm/a:b', 'bad_path_char'],
  ['spiffe://td/vm/a@b', 'bad_path_char'],
  ['spiffe://td/vm/é', 'bad_path_char'],
  [`spiffe://${'a'.repeat(256)}/vm/a`, 'trust_domain_too_long'],
  [`spiffe://td/${'a'.repeat(MAX_SPIFFE_ID_BYTES)}`, 'too_long'],
];

for (const [text, reason] of invalid) {
  test(`${JSON.stringify(text.length > 60 ? `${text.slice(0, 40)}...(${text.length})` : text)} is refused: ${reason}`, (t) => {
    const parsed = parseSpiffeId(text);
    t.false(parsed.ok);
    if (!parsed.ok) {
      t.is(parsed.reason, reason);
      t.true(parsed.message.length > 0);
    }
  });
}

test('the length bound is on bytes: 2048 bytes pass, 2049 do not, and a multi-byte character counts its bytes', (t) => {
  const prefix = 'spiffe://td/';
  t.true(parseSpiffeId(prefix + 'a'.repeat(MAX_SPIFFE_ID_BYTES - prefix.length)).ok);
  const over = parseSpiffeId(prefix + 'a'.repeat(MAX_SPIFFE_ID_BYTES - prefix.length + 1));
  t.false(over.ok);
  if (!over.ok) t.is(over.reason, 'too_long');
  const multibyte = parseSpiffeId(prefix + 'é'.repeat(MAX_SPIFFE_ID_BYTES / 2));
  t.false(multibyte.ok);
  if (!multibyte.ok) t.is(multibyte.reason, 'too_long');
});

test('a trust domain of 255 characters is accepted, 256 refused', (t) => {
  t.is(trustDomainProblem('a'.repeat(255)), undefined);
  t.is(trustDomainProblem('a'.repeat(256))?.reason, 'trust_domain_too_long');
  t.is(trustDomainProblem(DEFAULT_TRUST_DOMAIN), undefined);
  t.is(trustDomainProblem('')?.reason, 'missing_trust_domain');
  t.is(trustDomainProblem('Example.org')?.reason, 'bad_trust_domain_char');
  t.is(trustDomainId('example.org'), 'spiffe://example.org');
});

for (const kind of IDENTITY_KINDS) {
  test(`a ${kind} identity parses into kind and name and formats back`, (t) => {
    const id = `spiffe://vsockmesh.local/${kind}/name-1.x_y`;
    t.deepEqual(parseMeshIdentity(id), { ok: true, value: { trustDomain: 'vsockmesh.local', kind, name: 'name-1.x_y' } });
    t.deepEqual(meshIdentityId('vsockmesh.local', kind, 'name-1.x_y'), { ok: true, value: id });
  });
}

const notMesh: Array<[string, MeshIdentityProblem]> = [
  ['spiffe://vsockmesh.local', 'not_a_mesh_identity'],
  ['spiffe://vsockmesh.local/vm', 'not_a_mesh_identity'],
  ['spiffe://vsockmesh.local/vm/a/b', 'not_a_mesh_identity'],
  ['spiffe://vsockmesh.local/pod/a', 'unknown_kind'],
  ['spiffe://vsockmesh.local/VM/a', 'unknown_kind'],
  ['spiffe://vsockmesh.local/vm/a/', 'trailing_slash'],
  ['spiffe://vsockmesh.local/vm/..', 'dot_segment'],
];

for (const [text, reason] of notMesh) {
  test(`${text} is not a mesh identity: ${reason}`, (t) => {
    const parsed = parseMeshIdentity(text);
    t.false(parsed.ok);
    if (!parsed.ok) t.is(parsed.reason, reason);
  });
}

test('a mesh identity is not made from a name that is not one path segment, or a bad trust domain', (t) => {
  const cases: Array<[string, string, SpiffeIdProblem]> = [
    ['td', '', 'empty_segment'],
    ['td', '..', 'dot_segment'],
    ['td', 'a/b', 'bad_path_char'],
    ['td', 'vm a', 'bad_path_char'],
    ['TD', 'a', 'bad_trust_domain_char'],
    ['td', 'a'.repeat(MAX_SPIFFE_ID_BYTES), 'too_long'],
  ];
  for (const [trustDomain, name, reason] of cases) {
    const made = meshIdentityId(trustDomain, 'vm', name);
    t.false(made.ok, `${trustDomain} ${name}`);
    if (!made.ok) t.is(made.reason, reason, `${trustDomain} ${name}`);
  }
});
