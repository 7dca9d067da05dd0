// A workload's key pair and its certificate signing request. The key is made
// here (ECDSA P-256, Node's crypto) and stays in this process: the CA only
// ever sees the CSR, which carries the public key and the one SPIFFE ID asked
// for, signed with the private key (proof of possession).

import { generateKeyPairSync, type KeyObject, type webcrypto } from 'node:crypto';
import { parseSpiffeId } from './spiffe.js';
import { EC_P256, describeKeyType, signingAlgorithmOf, signingKey, x509 } from './x509.js';

export interface WorkloadKeys {
  readonly privateKey: KeyObject;
  readonly publicKey: KeyObject;
}

export function generateWorkloadKeys(): WorkloadKeys {
  return generateKeyPairSync('ec', { namedCurve: 'P-256' });
}

/** A PKCS#10 CSR (PEM) with an empty subject and exactly one URI SAN: `spiffeId`. */
export async function createCsr(keys: WorkloadKeys, spiffeId: string): Promise<string> {
  const parsed = parseSpiffeId(spiffeId);
  if (!parsed.ok) throw new Error(`cannot request ${JSON.stringify(spiffeId)}: ${parsed.message} (${parsed.reason})`);
  if (signingAlgorithmOf(keys.privateKey) !== EC_P256) throw new Error(`a workload key is ECDSA P-256, not ${describeKeyType(keys.privateKey)}`);
  const csr = await x509.Pkcs10CertificateRequestGenerator.create({
    keys: { privateKey: await signingKey(keys.privateKey), publicKey: await publicCryptoKey(keys.publicKey) },
    signingAlgorithm: EC_P256,
    extensions: [new x509.SubjectAlternativeNameExtension([{ type: 'url', value: spiffeId }])],
  });
  return `${csr.toString('pem')}\n`;
}

function publicCryptoKey(publicKey: KeyObject): Promise<webcrypto.CryptoKey> {
  return new x509.PublicKey(publicKey.export({ format: 'der', type: 'spki' })).export(EC_P256, ['verify']);
}
