// The seam between whoever keeps a workload's identity current (a renewing
// source, files) and whoever uses it (TLS server and client credentials).

/** A workload's current identity material (PEM). The key never leaves the process. */
export interface IdentityMaterial { keyPem: string; chainPem: string; bundlePem: string; spiffeId: string; notAfter: Date; }
/** Where a server or client takes its identity from; `onChange` fires after a rotation (leaf or bundle). */
export interface CertificateSource { current(): IdentityMaterial; onChange(listener: (m: IdentityMaterial) => void): () => void; }

/** Fixed material (e.g. read once from files): it never changes, so `onChange` never fires. */
export function staticSource(m: IdentityMaterial): CertificateSource {
  return { current: () => m, onChange: () => () => undefined };
}
