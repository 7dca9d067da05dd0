// Reading certificates: PEM blocks, the extensions Node's X509Certificate
// does not expose (each SAN, key usage, basic constraints, extended key
// usage), key identifiers, names and validity. Node's X509Certificate parses
// and checks signatures; asn1js (the ASN.1 layer under @peculiar/x509, whose
// own certificate class costs milliseconds per certificate, too much for a
// check on every handshake) reads the extensions. No @peculiar/x509 here: the
// verifier's side does not load the certificate-making library.

import * as asn1js from 'asn1js';
import { createHash, createPublicKey, type KeyObject, type X509Certificate } from 'node:crypto';

/** keyUsage bits as RFC 5280 numbers them: bit n is 1 << n (the values of @peculiar/x509's KeyUsageFlags). */
export const KEY_USAGE = {
  digitalSignature: 1,
  nonRepudiation: 2,
  keyEncipherment: 4,
  dataEncipherment: 8,
  keyAgreement: 16,
  keyCertSign: 32,
  cRLSign: 64,
  encipherOnly: 128,
  decipherOnly: 256,
} as const;

/** Whether a private key and a public key (a certificate's) are the two halves of one pair. */
export function samePublicKey(a: KeyObject, b: KeyObject): boolean {
  // createPublicKey of a private KeyObject derives its public half.
  const der = (k: KeyObject) => (k.type === 'private' ? createPublicKey(k) : k).export({ format: 'der', type: 'spki' });
  return der(a).equals(der(b));
}

const PEM_CERTIFICATE = /-----BEGIN CERTIFICATE-----\r?\n[A-Za-z0-9+/=\r\n]+?-----END CERTIFICATE-----/g;

/** Every CERTIFICATE block of a PEM text, in order (text between blocks is ignored, as openssl does). */
export function pemCertificates(text: string): string[] {
  return [...text.matchAll(PEM_CERTIFICATE)].map((m) => `${m[0].replaceAll('\r\n', '\n')}\n`);
}

/** What vsockmesh reads from a certificate's extensions (Node's X509Certificate does not expose these). */
export interface CertificateExtensions {
  /** Every URI SAN, across every SAN extension. */
  uriSans: string[];
  /** How many SANs of other types (DNS, IP, email, ...). */
  otherSans: number;
  /** basicConstraints: absent (undefined), or its CA flag and path length. */
  basicConstraints: { ca: boolean; pathLength: number | undefined } | undefined;
  /** keyUsage bits (KEY_USAGE), or undefined when the extension is absent. */
  keyUsage: number | undefined;
  /** extendedKeyUsage OIDs, or undefined when absent. */
  extendedKeyUsage: string[] | undefined;
}

const OID_SAN = '2.5.29.17';
const OID_KEY_USAGE = '2.5.29.15';
const OID_BASIC_CONSTRAINTS = '2.5.29.19';
const OID_EXTENDED_KEY_USAGE = '2.5.29.37';
const CONTEXT = 3;
/** GeneralName [6] uniformResourceIdentifier. */
const URI_TAG = 6;

/** The extensions of a certificate (DER). Throws on a structure that is not a certificate's. */
export function extensionsOf(der: Uint8Array): CertificateExtensions {
  const tbs = children(children(decode(der))[0]);
  const wrapper = tbs.find((b) => b.idBlock.tagClass === CONTEXT && b.idBlock.tagNumber === 3);
  const out: CertificateExtensions = { uriSans: [], otherSans: 0, basicConstraints: undefined, keyUsage: undefined, extendedKeyUsage: undefined };
  for (const extension of wrapper === undefined ? [] : children(children(wrapper)[0])) {
    const fields = children(extension);
    const oid = fields[0];
    const octets = fields[fields.length - 1];
    if (!(oid instanceof asn1js.ObjectIdentifier) || !(octets instanceof asn1js.OctetString)) throw new Error('malformed extension');
    const value = octets.valueBlock.valueHexView;
    switch (oid.valueBlock.toString()) {
      case OID_SAN:
        for (const name of children(decode(value))) {
          if (name.idBlock.tagClass === CONTEXT && name.idBlock.tagNumber === URI_TAG && !name.idBlock.isConstructed) out.uriSans.push(Buffer.from((name as asn1js.Primitive).valueBlock.valueHexView).toString('latin1'));
          else out.otherSans++;
        }
        break;
      case OID_KEY_USAGE:
        out.keyUsage = keyUsageBits(decode(value));
        break;
      case OID_BASIC_CONSTRAINTS: {
        const [first, second] = children(decode(value));
        const ca = first instanceof asn1js.Boolean ? first.valueBlock.value : false;
        const length = first instanceof asn1js.Integer ? first : second;
        out.basicConstraints = { ca, pathLength: length instanceof asn1js.Integer ? length.valueBlock.valueDec : undefined };
        break;
      }
      case OID_EXTENDED_KEY_USAGE:
        out.extendedKeyUsage = children(decode(value)).map((o) => {
          if (!(o instanceof asn1js.ObjectIdentifier)) throw new Error('malformed extended key usage');
          return o.valueBlock.toString();
        });
        break;
    }
  }
  return out;
}

/** RFC 5280 key identifier (method 1): SHA-1 of the subjectPublicKey bits, hex. */
export function keyIdentifier(publicKey: KeyObject): string {
  const [, bits] = children(decode(publicKey.export({ format: 'der', type: 'spki' })));
  if (!(bits instanceof asn1js.BitString)) throw new Error('malformed public key');
  return createHash('sha1').update(bits.valueBlock.valueHexView).digest('hex');
}

/** A KeyUsage BIT STRING as KEY_USAGE bits: bit n (from the first octet's top bit) is 1 << n. */
function keyUsageBits(block: asn1js.AsnType): number {
  if (!(block instanceof asn1js.BitString)) throw new Error('malformed key usage');
  let flags = 0;
  block.valueBlock.valueHexView.forEach((octet, i) => {
    for (let bit = 0; bit < 8; bit++) if (octet & (0x80 >> bit)) flags |= 1 << (i * 8 + bit);
  });
  return flags;
}

function decode(der: Uint8Array): asn1js.AsnType {
  const parsed = asn1js.fromBER(der);
  if (parsed.offset === -1 || parsed.offset !== der.byteLength) throw new Error('malformed DER');
  return parsed.result;
}

function children(block: asn1js.AsnType | undefined): asn1js.AsnType[] {
  if (!(block instanceof asn1js.Constructed)) throw new Error('malformed DER: a constructed value was expected');
  return block.valueBlock.value;
}

/** A distinguished name on one line (Node prints one attribute per line): `O=vsockmesh, CN=...`. */
export function oneLineName(name: string): string {
  return name.split('\n').filter(Boolean).join(', ');
}

/** A certificate's validity as dates (Node 20 gives text such as "Nov 25 10:00:00 2026 GMT"). */
export function validityOf(cert: X509Certificate): { notBefore: Date; notAfter: Date } {
  return { notBefore: new Date(cert.validFrom), notAfter: new Date(cert.validTo) };
}
