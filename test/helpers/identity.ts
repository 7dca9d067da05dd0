// The identity API on a real gRPC server for tests: TLS with a control-plane
// SVID from the CA under test, with the control plane's own credentials
// (a client certificate is verified when presented, not required: a first
// certificate comes from a caller that has none yet).

import * as grpc from '@grpc/grpc-js';
import { staticSource } from '../../proxy/identity/certificate-source.js';
import type { Logger } from '../../proxy/runtime/log.js';
import type { CertificateAuthority } from '../../xds/identity/ca.js';
import { IdentityService } from '../../xds/identity/certify-server.js';
import type { JoinTokens } from '../../xds/identity/join-tokens.js';
import { GENERATED_ROOT_DIR, issueIdentity } from '../../xds/security/process-identity.js';
import { serverCredentials } from '../../xds/security/transport.js';
import { join } from 'node:path';
import { startTestMeshCa } from './pki.js';

export interface IdentityServer {
  address: string;
  service: IdentityService;
  stop(): Promise<void>;
}

/** `serverCa`: where the server's own SVID comes from (default `ca`): a CA under the same root with a longer leaf lifetime when `ca` issues leaves of seconds. */
export async function startIdentityServer(options: { ca: CertificateAuthority; tokens: JoinTokens; logger: Logger; serverCa?: CertificateAuthority }): Promise<IdentityServer> {
  const service = new IdentityService(options);
  const server = new grpc.Server();
  service.addTo(server);
  const ca = options.serverCa ?? options.ca;
  const credentials = serverCredentials({ source: staticSource(await issueIdentity(ca, `spiffe://${ca.trustDomain}/cp/test`)) }, { clientCertificate: 'optional' });
  const port = await new Promise<number>((resolve, reject) => server.bindAsync('127.0.0.1:0', credentials, (err, p) => (err ? reject(err) : resolve(p))));
  return {
    address: `127.0.0.1:${port}`,
    service,
    stop: () => new Promise<void>((resolve) => server.tryShutdown(() => resolve())),
  };
}

/**
 * An operator's `ctl` flags (--cert/--key/--ca) with a certificate under the
 * root a control plane generated in its --identity-dir, as an administrator
 * would issue it; `caPath` is the trust bundle (a sidecar's trust_bundle_file).
 */
export async function operatorCtl(identityDir: string, name = 'alice'): Promise<{ flags: string[]; caPath: string; cleanup(): Promise<void> }> {
  const pki = await startTestMeshCa(undefined, join(identityDir, GENERATED_ROOT_DIR));
  const files = await pki.files(await pki.identity('operator', name));
  return { flags: ['--cert', files.certPath, '--key', files.keyPath, '--ca', files.caPath], caPath: files.caPath, cleanup: () => pki.cleanup() };
}
