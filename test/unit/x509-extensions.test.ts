// extensionsOf() reads certificate extensions with asn1js; @peculiar/x509's
// own classes read the same certificates as the reference.

import test from 'ava';
import { X509Certificate } from 'node:crypto';
import { generateWorkloadKeys } from '../../proxy/identity/keys-and-csr.js';
import { KEY_USAGE, extensionsOf, keyIdentifier } from '../../proxy/identity/certificate-facts.js';
import { x509 } from '../../proxy/identity/x509.js';
import { caExtensions, leafExtensions, makeCert, makeRoot } from '../helpers/pki.js';

function reference(cert: X509Certificate) {
  const parsed = new x509.X509Certificate(cert.raw);
  const sans = parsed.getExtensions(x509.SubjectAlternativeNameExtension).flatMap((e) => e.names.items);
  const basic = parsed.getExtension(x509.BasicConstraintsExtension);
  const usage = parsed.getExtension(x509.KeyUsagesExtension);
  const eku = parsed.getExtension(x509.ExtendedKeyUsageExtension);
  return {
    uriSans: [...sans.filter((n) => n.type === 'url').map((n) => n.value)],
    otherSans: sans.filter((n) => n.type !== 'url').length,
    basicConstraints: basic === null ? undefined : { ca: basic.ca, pathLength: basic.pathLength },
    keyUsage: usage === null ? undefined : usage.usages,
    extendedKeyUsage: eku === null ? undefined : [...eku.usages.map(String)],
  };
}

const ALL_USAGES = Object.values(x509.KeyUsageFlags).filter((v): v is number => typeof v === 'number');

test('every key usage bit alone, and all of them together, read as @peculiar/x509 reads them', async (t) => {
  const root = await makeRoot();
  for (const usage of [...ALL_USAGES, ALL_USAGES.reduce((a, b) => a | b, 0), x509.KeyUsageFlags.digitalSignature | x509.KeyUsageFlags.decipherOnly]) {
    const { cert } = await makeCert(root, { subject: 'O=test', extensions: leafExtensions({ uris: ['spiffe://td/vm/a'], usage }) });
    t.deepEqual(extensionsOf(cert.raw), reference(cert), `usage ${usage}`);
    t.is(extensionsOf(cert.raw).keyUsage, usage);
  }
});

test('SANs of every count and kind, basic constraints with and without a path length, EKU present and absent', async (t) => {
  const root = await makeRoot();
  const cases: x509.Extension[][] = [
    leafExtensions({}),
    leafExtensions({ uris: ['spiffe://td/vm/a'] }),
    leafExtensions({ uris: ['spiffe://td/vm/a', 'spiffe://td/vm/b', 'https://x.example/'], dns: ['a.example', 'b.example'] }),
    leafExtensions({ dns: ['a.example'], usage: null }),
    caExtensions(0),
    caExtensions(3),
    caExtensions(),
    [new x509.SubjectAlternativeNameExtension([{ type: 'ip', value: '10.0.0.1' }, { type: 'email', value: 'a@b.example' }, { type: 'url', value: 'spiffe://td/x' }])],
    [new x509.SubjectAlternativeNameExtension([{ type: 'url', value: 'spiffe://td/a' }]), new x509.SubjectAlternativeNameExtension([{ type: 'url', value: 'spiffe://td/b' }])],
    [],
  ];
  for (const [i, extensions] of cases.entries()) {
    const { cert } = await makeCert(root, { subject: 'O=test', extensions });
    t.deepEqual(extensionsOf(cert.raw), reference(cert), `case ${i}`);
  }
});

test('a URI SAN with bytes outside ASCII reads as the same bytes (and then fails SPIFFE ID parsing)', async (t) => {
  const root = await makeRoot();
  // A raw SAN value: SEQUENCE { [6] "spiffe://td/\xe9" }.
  const uri = Buffer.concat([Buffer.from('spiffe://td/'), Buffer.from([0xe9])]);
  const value = Buffer.concat([Buffer.from([0x30, uri.length + 2, 0x86, uri.length]), uri]);
  const { cert } = await makeCert(root, { subject: 'O=test', extensions: [new x509.Extension('2.5.29.17', false, value)] });
  t.deepEqual(extensionsOf(cert.raw).uriSans, ['spiffe://td/\u00e9']);
});

test('an extension whose value is not the DER it should be throws instead of reading as something', async (t) => {
  const root = await makeRoot();
  for (const [oid, value] of [
    ['2.5.29.17', [0x04, 0x01, 0x00]],
    ['2.5.29.15', [0x30, 0x00]],
    ['2.5.29.37', [0x30, 0x03, 0x02, 0x01, 0x01]],
    ['2.5.29.19', [0x30, 0x05, 0x01]],
  ] as const) {
    const { cert } = await makeCert(root, { subject: 'O=test', extensions: [new x509.Extension(oid, false, new Uint8Array(value))] });
    t.throws(() => extensionsOf(cert.raw), undefined, oid);
  }
});

test('the key identifier is RFC 5280 method 1, as @peculiar/x509 computes it', async (t) => {
  for (let i = 0; i < 5; i++) {
    const { publicKey } = generateWorkloadKeys();
    const ext = await x509.SubjectKeyIdentifierExtension.create(new x509.PublicKey(publicKey.export({ format: 'der', type: 'spki' })));
    t.is(keyIdentifier(publicKey), ext.keyId);
  }
});

test('KEY_USAGE numbers the bits as @peculiar/x509 does', (t) => {
  for (const [name, bit] of Object.entries(KEY_USAGE)) t.is(x509.KeyUsageFlags[name as keyof typeof x509.KeyUsageFlags], bit, name);
  t.is(Object.keys(KEY_USAGE).length, ALL_USAGES.length);
});
