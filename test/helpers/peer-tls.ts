// Peer-hop TLS for sidecars in tests: a root, X509-SVIDs for VMs written as
// PEM files in a temporary directory, and the peer_tls config that names them.

import { mkdtemp, rename, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { makeRoot, vmIdentity, type Issued, type PemIdentity } from './pki.js';

export interface IdentityFiles {
  key_file: string;
  chain_file: string;
  bundle_file: string;
}

export interface MeshTls {
  root: Issued;
  dir: string;
  /** peer_tls sections for sidecars vm-a and vm-b. */
  a: Record<string, unknown>;
  b: Record<string, unknown>;
  identities: { a: PemIdentity; b: PemIdentity };
  cleanup(): Promise<void>;
}

/** A certificate serial as hex the same way from every printer (the access log, Node, @peculiar/x509): upper case, no leading zeros. */
export function serialHex(hex: string): string {
  return hex.toUpperCase().replace(/^0+/, '');
}

/** Writes (or atomically replaces, as certificate tools do) a VM's identity files under `dir`. */
export async function writeIdentity(dir: string, name: string, identity: PemIdentity): Promise<IdentityFiles> {
  const files = { key_file: join(dir, `${name}-key.pem`), chain_file: join(dir, `${name}-chain.pem`), bundle_file: join(dir, `${name}-bundle.pem`) };
  const put = async (path: string, text: string): Promise<void> => {
    await writeFile(`${path}.tmp`, text, { mode: 0o600 });
    await rename(`${path}.tmp`, path);
  };
  await Promise.all([put(files.key_file, identity.keyPem), put(files.chain_file, identity.chainPem), put(files.bundle_file, identity.bundlePem)]);
  return files;
}

/** Identities for vm-a and vm-b under one root, and their peer_tls sections (`extra` added to both). */
export async function meshTls(mode: 'strict' | 'permissive' = 'strict', extra: Record<string, unknown> = {}): Promise<MeshTls> {
  const dir = await mkdtemp(join(tmpdir(), 'vsockmesh-peer-tls-'));
  const root = await makeRoot();
  const identities = { a: await vmIdentity(root, 'vm-a'), b: await vmIdentity(root, 'vm-b') };
  return {
    root,
    dir,
    identities,
    a: { mode, ...(await writeIdentity(dir, 'vm-a', identities.a)), ...extra },
    b: { mode, ...(await writeIdentity(dir, 'vm-b', identities.b)), ...extra },
    cleanup: () => rm(dir, { recursive: true, force: true }),
  };
}
