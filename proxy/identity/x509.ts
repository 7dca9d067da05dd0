// Making certificates and CSRs: @peculiar/x509 over Node's own WebCrypto.
// Keys are Node KeyObjects (they print and serialise as `{}`, so a key logged
// by mistake shows nothing), turned into non-extractable WebCrypto keys in
// memory to sign. Reading certificates is certificate-facts.ts.

// @peculiar/x509 resolves its services through tsyringe, which needs the Reflect metadata API.
import 'reflect-metadata';
import * as x509 from '@peculiar/x509';
import { webcrypto, type KeyObject } from 'node:crypto';

x509.cryptoProvider.set(webcrypto);

export { x509 };

/** ECDSA P-256 with SHA-256: every key vsockmesh makes (leaves and its intermediate). */
export const EC_P256 = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' } as const;

/** The WebCrypto signing algorithm for a private key: ECDSA P-256/P-384 or RSA (an organisation's root may be either). */
export function signingAlgorithmOf(key: KeyObject): (webcrypto.EcKeyImportParams & webcrypto.EcdsaParams) | webcrypto.RsaHashedImportParams | undefined {
  if (key.asymmetricKeyType === 'ec') {
    const curve = key.asymmetricKeyDetails?.namedCurve;
    if (curve === 'prime256v1') return EC_P256;
    if (curve === 'secp384r1') return { name: 'ECDSA', namedCurve: 'P-384', hash: 'SHA-384' };
    return undefined;
  }
  if (key.asymmetricKeyType === 'rsa') return { name: 'RSASSA-PKCS1-v1_5', hash: 'SHA-256' };
  return undefined;
}

/** A private KeyObject as a non-extractable WebCrypto signing key, in memory only. */
export async function signingKey(privateKey: KeyObject): Promise<webcrypto.CryptoKey> {
  const algorithm = signingAlgorithmOf(privateKey);
  if (algorithm === undefined) throw new Error(`unsupported key type ${describeKeyType(privateKey)}`);
  return webcrypto.subtle.importKey('pkcs8', privateKey.export({ format: 'der', type: 'pkcs8' }), algorithm, false, ['sign']);
}

/** `ec prime256v1`, `rsa`: for messages (never the key itself). */
export function describeKeyType(key: KeyObject): string {
  const curve = key.asymmetricKeyDetails?.namedCurve;
  return curve === undefined ? String(key.asymmetricKeyType) : `${key.asymmetricKeyType} ${curve}`;
}
