// Where a process gets its own identity from (files today, the CA's Certify
// API next): the current material, and a call whenever it is replaced.

export interface IdentityMaterial {
  /** PKCS#8 PEM of the private key; never logged. */
  keyPem: string;
  /** The leaf first, then its intermediates. */
  chainPem: string;
  /** The roots peers' chains must lead to. */
  bundlePem: string;
  spiffeId: string;
  notAfter: Date;
}

export interface CertificateSource {
  current(): IdentityMaterial;
  /** Calls `listener` with each new material; returns a function that stops the calls. */
  onChange(listener: (material: IdentityMaterial) => void): () => void;
}
