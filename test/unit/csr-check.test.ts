// CSRs: the ones createCsr() makes are accepted for exactly their identity;
// the CA's check refuses every other kind of request.

import test from 'ava';
import { generateKeyPairSync } from 'node:crypto';
import { inspect } from 'node:util';
import { createCsr, generateWorkloadKeys } from '../../proxy/identity/keys-and-csr.js';
import { EC_P256, signingKey, x509 } from '../../proxy/identity/x509.js';
import { CSR_REFUSALS, MAX_CSR_CHARS, checkCsr, type CsrRefusal } from '../../xds/identity/csr-check.js';

const ID = 'spiffe://vsockmesh.local/vm/vm-a';

/** A CSR with any SANs and key, built directly with @peculiar/x509. */
async function rawCsr(names: x509.JsonGeneralNames, keyType: 'ec' | 'rsa' = 'ec'): Promise<string> {
  const pair = keyType === 'ec' ? generateKeyPairSync('ec', { namedCurve: 'P-256' }) : generateKeyPairSync('rsa', { modulusLength: 2048 });
  const algorithm = keyType === 'ec' ? EC_P256 : { name: 'RSASSA-PKCS1-v1_5', hash: 'SHA-256' };
  const publicKey = await new x509.PublicKey(pair.publicKey.export({ format: 'der', type: 'spki' })).export(algorithm, ['verify']);
  const csr = await x509.Pkcs10CertificateRequestGenerator.create({
    keys: { privateKey: await signingKey(pair.privateKey), publicKey },
    signingAlgorithm: algorithm,
    extensions: names.length === 0 ? [] : [new x509.SubjectAlternativeNameExtension(names)],
  });
  return csr.toString('pem');
}

test('a CSR from createCsr carries the public key and the one SPIFFE ID, and passes the check for that ID', async (t) => {
  const keys = generateWorkloadKeys();
  const csr = await createCsr(keys, ID);
  t.regex(csr, /^-----BEGIN CERTIFICATE REQUEST-----\n/);
  t.notRegex(csr, /PRIVATE KEY/);
  const verdict = await checkCsr(csr, ID);
  t.true(verdict.ok);
  if (verdict.ok) {
    t.is(verdict.spiffeId, ID);
    t.true(verdict.publicKey.equals(keys.publicKey));
  }
});

test('createCsr refuses an invalid SPIFFE ID and a key that is not P-256', async (t) => {
  await t.throwsAsync(createCsr(generateWorkloadKeys(), 'spiffe://Bad/vm/a'), { message: /bad_trust_domain_char/ });
  const rsa = generateKeyPairSync('rsa', { modulusLength: 2048 });
  await t.throwsAsync(createCsr(rsa, ID), { message: /ECDSA P-256, not rsa/ });
});

test('a workload key prints and serialises as nothing: logging it by mistake shows no key material', (t) => {
  const keys = generateWorkloadKeys();
  const pkcs8 = keys.privateKey.export({ format: 'der', type: 'pkcs8' });
  const d = keys.privateKey.export({ format: 'jwk' }).d!;
  for (const text of [JSON.stringify(keys), inspect(keys, { depth: 10, showHidden: true }), String(keys.privateKey)]) {
    t.false(text.includes(d), text);
    t.false(text.includes(pkcs8.toString('base64').slice(40, 80)), text);
    t.false(text.includes('PRIVATE KEY'), text);
  }
});

const seen = new Set<CsrRefusal>();

function refusal(title: string, reason: CsrRefusal, csr: () => Promise<string>, entitled = ID): void {
  test(`${title} is refused: ${reason}`, async (t) => {
    const verdict = await checkCsr(await csr(), entitled);
    t.false(verdict.ok);
    if (!verdict.ok) {
      t.is(verdict.reason, reason, verdict.message);
      seen.add(reason);
    }
  });
}

refusal('a CSR for another identity than the entitled one', 'not_entitled', () => createCsr(generateWorkloadKeys(), 'spiffe://vsockmesh.local/vm/vm-b'));
refusal('a CSR for the same name in another trust domain', 'not_entitled', () => createCsr(generateWorkloadKeys(), 'spiffe://other.example/vm/vm-a'));
refusal('a CSR for the entitled VM as a hypervisor', 'not_entitled', () => createCsr(generateWorkloadKeys(), 'spiffe://vsockmesh.local/hv/vm-a'));
refusal('a CSR with two URI SANs', 'csr_several_uri_sans', () => rawCsr([{ type: 'url', value: ID }, { type: 'url', value: 'spiffe://vsockmesh.local/vm/vm-b' }]));
refusal('a CSR with a DNS SAN beside its SPIFFE ID', 'csr_other_sans', () => rawCsr([{ type: 'url', value: ID }, { type: 'dns', value: 'vm-a.example' }]));
refusal('a CSR without a SAN', 'csr_no_spiffe_id', () => rawCsr([]));
refusal('a CSR with a DNS SAN only', 'csr_no_spiffe_id', () => rawCsr([{ type: 'dns', value: 'vm-a.example' }]));
refusal('a CSR whose URI SAN is not a SPIFFE ID', 'csr_bad_spiffe_id', () => rawCsr([{ type: 'url', value: 'spiffe://vsockmesh.local/vm/vm-a/' }]));
refusal('a CSR with an RSA key', 'csr_key_type', () => rawCsr([{ type: 'url', value: ID }], 'rsa'));
refusal('a CSR whose signature was altered', 'csr_bad_signature', async () => {
  const der = x509.PemConverter.decodeFirst(await createCsr(generateWorkloadKeys(), ID));
  const bytes = new Uint8Array(der);
  // The last byte is inside the signature's s value: the request still parses, its signature no longer verifies.
  bytes[bytes.length - 1]! ^= 0x01;
  return x509.PemConverter.encode(bytes.buffer, 'CERTIFICATE REQUEST');
});
refusal('a CSR whose key was swapped for another', 'csr_bad_signature', async () => {
  const csr = new x509.Pkcs10CertificateRequest(await createCsr(generateWorkloadKeys(), ID));
  const other = new x509.Pkcs10CertificateRequest(await createCsr(generateWorkloadKeys(), ID));
  const raw = Buffer.from(csr.rawData);
  const keyHere = Buffer.from(csr.publicKey.rawData);
  const at = raw.indexOf(keyHere);
  Buffer.from(other.publicKey.rawData).copy(raw, at);
  return x509.PemConverter.encode(raw, 'CERTIFICATE REQUEST');
});
refusal('text that is not a CSR', 'csr_malformed', async () => '-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n');
refusal('a CSR over the size bound', 'csr_too_large', async () => `${await createCsr(generateWorkloadKeys(), ID)}${' '.repeat(MAX_CSR_CHARS)}`);

test.after.always('every CSR refusal reason was produced by some request', (t) => {
  t.deepEqual([...seen].sort(), [...CSR_REFUSALS].sort());
});
