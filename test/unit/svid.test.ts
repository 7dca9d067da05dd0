// The X509-SVID verifier against certificates made on purpose to break each
// rule (test/helpers/pki.ts builds them with @peculiar/x509, not with our CA).

import test from 'ava';
import { SVID_REFUSALS, trustBundle, verifySvid, type SvidRefusal, type TrustBundle } from '../../proxy/identity/svid.js';
import { x509 } from '../../proxy/identity/x509.js';
import { caExtensions, leafExtensions, makeCert, makeRoot, type Issued } from '../helpers/pki.js';

const TD = 'vsockmesh.local';
const ID = `spiffe://${TD}/vm/vm-a`;
const HOUR = 3_600_000;
const now = new Date();

interface Pki {
  root: Issued;
  intermediate: Issued;
  bundle: TrustBundle;
}

let pkiPromise: Promise<Pki> | undefined;
function pki(): Promise<Pki> {
  pkiPromise ??= (async () => {
    const root = await makeRoot('O=test, CN=root one');
    const intermediate = await makeCert(root, { subject: 'O=test, CN=intermediate one', extensions: caExtensions(0) });
    return { root, intermediate, bundle: trustBundle(TD, root.pem) };
  })();
  return pkiPromise;
}

/** A leaf under the shared intermediate, presented with it. */
async function leafChain(extensions: x509.Extension[], validity: { notBefore?: Date; notAfter?: Date } = {}): Promise<string> {
  const { intermediate } = await pki();
  const leaf = await makeCert(intermediate, { subject: 'O=test', extensions, ...validity });
  return leaf.pem + intermediate.pem;
}

const seen = new Set<SvidRefusal>();

function refusal(title: string, reason: SvidRefusal, chain: () => Promise<string>, at: Date = now): void {
  test(`${title} is refused: ${reason}`, async (t) => {
    const verdict = verifySvid(await chain(), (await pki()).bundle, at);
    t.false(verdict.ok);
    if (!verdict.ok) {
      t.is(verdict.reason, reason, verdict.message);
      t.true(verdict.message.length > 0);
    }
    seen.add(reason);
  });
}

test('a leaf with one SPIFFE ID, CA:FALSE and digitalSignature under an intermediate of the bundle\'s root passes', async (t) => {
  const chain = await leafChain(leafExtensions({ uris: [ID] }));
  const verdict = verifySvid(chain, (await pki()).bundle, now);
  t.true(verdict.ok, verdict.ok ? '' : verdict.message);
  if (verdict.ok) {
    t.is(verdict.spiffeId, ID);
    t.deepEqual(verdict.id, { trustDomain: TD, path: '/vm/vm-a' });
    t.true(verdict.notAfter > now);
  }
});

test('keyEncipherment and keyAgreement are allowed beside digitalSignature, and a DNS SAN beside the one URI SAN', async (t) => {
  const usage = x509.KeyUsageFlags.digitalSignature | x509.KeyUsageFlags.keyEncipherment | x509.KeyUsageFlags.keyAgreement;
  const verdict = verifySvid(await leafChain(leafExtensions({ uris: [ID], usage, dns: ['vm-a.example'] })), (await pki()).bundle, now);
  t.true(verdict.ok, verdict.ok ? '' : verdict.message);
});

test('a leaf signed by the root directly, and a chain that also presents the root, pass', async (t) => {
  const { root, intermediate, bundle } = await pki();
  const direct = await makeCert(root, { subject: 'O=test', extensions: leafExtensions({ uris: [ID] }) });
  t.true(verifySvid(direct.pem, bundle, now).ok);
  const leaf = await makeCert(intermediate, { subject: 'O=test', extensions: leafExtensions({ uris: [ID] }) });
  t.true(verifySvid(leaf.pem + intermediate.pem + root.pem, bundle, now).ok);
});

refusal('a leaf with two URI SANs', 'several_uri_sans', () => leafChain(leafExtensions({ uris: [ID, `spiffe://${TD}/vm/vm-b`] })));
refusal('a leaf with no URI SAN', 'no_uri_san', () => leafChain(leafExtensions({ dns: ['vm-a.example'] })));
refusal('a leaf with no SAN at all', 'no_uri_san', () => leafChain(leafExtensions({})));
refusal('a leaf whose URI SAN is not a SPIFFE ID', 'bad_spiffe_id', () => leafChain(leafExtensions({ uris: ['https://vsockmesh.local/vm/vm-a'] })));
refusal('a leaf naming the trust domain itself', 'bad_spiffe_id', () => leafChain(leafExtensions({ uris: [`spiffe://${TD}`] })));
refusal('a leaf of another trust domain under our root', 'wrong_trust_domain', () => leafChain(leafExtensions({ uris: ['spiffe://other.example/vm/vm-a'] })));
refusal('a CA:TRUE leaf', 'ca_leaf', () => leafChain(leafExtensions({ uris: [ID], ca: true })));
refusal('a leaf without key usage', 'no_digital_signature', () => leafChain(leafExtensions({ uris: [ID], usage: null })));
refusal('a leaf whose key usage lacks digitalSignature', 'no_digital_signature', () => leafChain(leafExtensions({ uris: [ID], usage: x509.KeyUsageFlags.keyEncipherment })));
refusal('a leaf with keyCertSign', 'leaf_cert_sign', () => leafChain(leafExtensions({ uris: [ID], usage: x509.KeyUsageFlags.digitalSignature | x509.KeyUsageFlags.keyCertSign })));
refusal('a leaf with cRLSign', 'leaf_cert_sign', () => leafChain(leafExtensions({ uris: [ID], usage: x509.KeyUsageFlags.digitalSignature | x509.KeyUsageFlags.cRLSign })));
refusal('an expired leaf', 'expired', () => leafChain(leafExtensions({ uris: [ID] }), { notBefore: new Date(now.getTime() - 3 * HOUR), notAfter: new Date(now.getTime() - HOUR) }));
refusal('a leaf not valid yet', 'not_yet_valid', () => leafChain(leafExtensions({ uris: [ID] }), { notBefore: new Date(now.getTime() + HOUR), notAfter: new Date(now.getTime() + 3 * HOUR) }));
refusal('a valid leaf checked at a time after it expired', 'expired', () => leafChain(leafExtensions({ uris: [ID] })), new Date(now.getTime() + 48 * HOUR));

refusal('a leaf of another CA', 'unknown_ca', async () => {
  const otherRoot = await makeRoot('O=other, CN=other root');
  const otherIntermediate = await makeCert(otherRoot, { subject: 'O=other, CN=other intermediate', extensions: caExtensions(0) });
  const leaf = await makeCert(otherIntermediate, { subject: 'O=test', extensions: leafExtensions({ uris: [ID] }) });
  return leaf.pem + otherIntermediate.pem;
});
refusal('a leaf presented without its intermediate', 'unknown_ca', async () => (await makeCert((await pki()).intermediate, { subject: 'O=test', extensions: leafExtensions({ uris: [ID] }) })).pem);
refusal('a leaf under an intermediate that carries our intermediate\'s name with another key', 'bad_signature', async () => {
  const { root, intermediate } = await pki();
  const impostor = await makeCert(root, { subject: 'O=test, CN=intermediate one', extensions: caExtensions(0) });
  const leaf = await makeCert(intermediate, { subject: 'O=test', extensions: leafExtensions({ uris: [ID] }) });
  return leaf.pem + impostor.pem;
});
refusal('an intermediate self-signed under the root\'s name', 'bad_signature', async () => {
  const impostorRoot = await makeRoot('O=test, CN=root one');
  const intermediate = await makeCert(impostorRoot, { subject: 'O=test, CN=intermediate two', extensions: caExtensions(0) });
  const leaf = await makeCert(intermediate, { subject: 'O=test', extensions: leafExtensions({ uris: [ID] }) });
  return leaf.pem + intermediate.pem;
});
refusal('a leaf under an intermediate that is not a CA', 'bad_intermediate', async () => {
  const notCa = await makeCert((await pki()).root, { subject: 'O=test, CN=not a ca', extensions: leafExtensions({ uris: [`spiffe://${TD}/vm/x`] }) });
  const leaf = await makeCert(notCa, { subject: 'O=test', extensions: leafExtensions({ uris: [ID] }) });
  return leaf.pem + notCa.pem;
});
refusal('a leaf under an intermediate without keyCertSign', 'bad_intermediate', async () => {
  const noSign = await makeCert((await pki()).root, { subject: 'O=test, CN=no sign', extensions: [new x509.BasicConstraintsExtension(true, undefined, true), new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true)] });
  const leaf = await makeCert(noSign, { subject: 'O=test', extensions: leafExtensions({ uris: [ID] }) });
  return leaf.pem + noSign.pem;
});
refusal('a path longer than an intermediate\'s path length allows', 'bad_intermediate', async () => {
  const { intermediate } = await pki();
  const second = await makeCert(intermediate, { subject: 'O=test, CN=second', extensions: caExtensions() });
  const leaf = await makeCert(second, { subject: 'O=test', extensions: leafExtensions({ uris: [ID] }) });
  return leaf.pem + second.pem + intermediate.pem;
});
refusal('a leaf under an expired intermediate', 'expired', async () => {
  const old = await makeCert((await pki()).root, { subject: 'O=test, CN=old', extensions: caExtensions(0), notBefore: new Date(now.getTime() - 10 * HOUR), notAfter: new Date(now.getTime() - HOUR) });
  const leaf = await makeCert(old, { subject: 'O=test', extensions: leafExtensions({ uris: [ID] }) });
  return leaf.pem + old.pem;
});
refusal('no certificate', 'no_certificate', async () => '');
refusal('a PEM block that is not a certificate', 'malformed_certificate', async () => '-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n');
refusal('a chain of nine certificates', 'chain_too_long', async () => (await leafChain(leafExtensions({ uris: [ID] }))).repeat(5).split('-----END CERTIFICATE-----\n').slice(0, 9).map((c) => `${c}-----END CERTIFICATE-----\n`).join(''));

test('rotation: a bundle holding the old and the new root verifies leaves of both; the new root alone refuses the old leaves', async (t) => {
  const { intermediate, root } = await pki();
  const newRoot = await makeRoot('O=test, CN=root two');
  const newIntermediate = await makeCert(newRoot, { subject: 'O=test, CN=intermediate two', extensions: caExtensions(0) });
  const oldLeaf = (await makeCert(intermediate, { subject: 'O=test', extensions: leafExtensions({ uris: [ID] }) })).pem + intermediate.pem;
  const newLeaf = (await makeCert(newIntermediate, { subject: 'O=test', extensions: leafExtensions({ uris: [ID] }) })).pem + newIntermediate.pem;
  const both = trustBundle(TD, [root.pem, newRoot.pem]);
  t.true(verifySvid(oldLeaf, both, now).ok);
  t.true(verifySvid(newLeaf, both, now).ok);
  const onlyNew = verifySvid(oldLeaf, trustBundle(TD, newRoot.pem), now);
  t.false(onlyNew.ok);
  if (!onlyNew.ok) t.is(onlyNew.reason, 'unknown_ca');
});

test('two roots with the same name: the one whose key signed is found', async (t) => {
  const { root } = await pki();
  const sameName = await makeRoot('O=test, CN=root one');
  const leaf = await makeCert(sameName, { subject: 'O=test', extensions: leafExtensions({ uris: [ID] }) });
  t.true(verifySvid(leaf.pem, trustBundle(TD, [root.pem, sameName.pem]), now).ok);
});

test('a trust bundle holds CA certificates only, at least one', async (t) => {
  const leaf = await makeCert((await pki()).root, { subject: 'O=test', extensions: leafExtensions({ uris: [ID] }) });
  t.throws(() => trustBundle(TD, leaf.pem), { message: /trust bundle certificate 1 .* is not a CA certificate/ });
  t.throws(() => trustBundle(TD, ''), { message: /at least one root/ });
  const { root } = await pki();
  t.is(trustBundle(TD, [root.pem, root.pem]).roots.length, 1);
});

test.after.always('every refusal reason was produced by some certificate', (t) => {
  t.deepEqual([...seen].sort(), [...SVID_REFUSALS].sort());
});
