// The demo's identities: a throw-away CA (its root generated in a temporary
// directory, removed at the end) issues the VM manager `cp/vm-manager` and
// each sidecar `vm/<id>`; the sidecars read theirs from files, as a real
// deployment's `tls:` section does. So the demo runs with mTLS on every
// control API, as a deployment would.

import { mkdtemp, mkdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { IdentityMaterial } from '../../identity/certificate-source.js';
import { DEFAULT_TRUST_DOMAIN } from '../../identity/spiffe.js';
import { CertificateAuthority } from '../../../xds/identity/ca.js';
import { issueIdentity } from '../../../xds/security/process-identity.js';

export interface DemoIdentities {
  /** Where the root and the sidecars' files are (removed by the cleanup). */
  dir: string;
  issue(kind: 'cp' | 'vm', name: string): Promise<IdentityMaterial>;
  /** The material as files for a sidecar's tls: section. */
  files(name: string, m: IdentityMaterial): Promise<{ cert: string; key: string; ca: string }>;
}

export async function startDemoIdentities(cleanups: Array<() => Promise<void>>): Promise<DemoIdentities> {
  const dir = await mkdtemp(join(tmpdir(), 'vsockmesh-demo-ca-'));
  cleanups.push(() => rm(dir, { recursive: true, force: true }));
  const ca = await CertificateAuthority.open({ trustDomain: DEFAULT_TRUST_DOMAIN, upstream: { dir: join(dir, 'ca') } });
  return {
    dir,
    issue: (kind, name) => issueIdentity(ca, `spiffe://${DEFAULT_TRUST_DOMAIN}/${kind}/${name}`),
    files: async (name, m) => {
      const at = join(dir, name);
      await mkdir(at, { mode: 0o700 });
      const paths = { cert: join(at, 'cert.pem'), key: join(at, 'key.pem'), ca: join(at, 'ca.pem') };
      await writeFile(paths.key, m.keyPem, { mode: 0o600 });
      await writeFile(paths.cert, m.chainPem);
      await writeFile(paths.ca, m.bundlePem);
      return paths;
    },
  };
}
