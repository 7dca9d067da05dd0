// Where a server or client takes its identity from: the seam between the
// transport (xds/security/, which builds TLS credentials from a source) and
// whatever keeps the material current (PEM files reloaded on change, or a
// client renewing its SVID from the CA).

/** A workload's current identity material (PEM). The key never leaves the process. */
export interface IdentityMaterial {
  keyPem: string;
  chainPem: string;
  bundlePem: string;
  spiffeId: string;
  notAfter: Date;
}

/** Where a server or client takes its identity from; `onChange` fires after a rotation (leaf or bundle). */
export interface CertificateSource {
  current(): IdentityMaterial;
  onChange(listener: (m: IdentityMaterial) => void): () => void;
}

/** Fixed material: it never changes, so listeners are never called. */
export function staticSource(m: IdentityMaterial): CertificateSource {
  return { current: () => m, onChange: () => () => {} };
}
