// The identity API on a real gRPC server for tests: plain text, or TLS with
// a control-plane SVID from the CA under test that asks for (and does not
// require) a client certificate, as a Certify endpoint must (a first
// certificate comes from a caller that has none yet).

import * as grpc from '@grpc/grpc-js';
import { createCsr, generateWorkloadKeys } from '../../proxy/identity/keys-and-csr.js';
import type { Logger } from '../../proxy/runtime/log.js';
import type { CertificateAuthority } from '../../xds/identity/ca.js';
import { IdentityService } from '../../xds/identity/certify-server.js';
import type { JoinTokens } from '../../xds/identity/join-tokens.js';

export interface IdentityServer {
  address: string;
  service: IdentityService;
  stop(): Promise<void>;
}

/**
 * A certificate provider that hands out fixed PEM material. Listeners are
 * told on the next tick: grpc-js adds its own watcher only after it has
 * registered with the provider, and would miss an answer given at once.
 */
function fixedProvider(update: { caCertificate?: Buffer; certificate?: Buffer; privateKey?: Buffer }): grpc.experimental.CertificateProvider {
  return {
    addCaCertificateListener: (l) => setImmediate(() => l(update.caCertificate ? { caCertificate: update.caCertificate } : null)),
    removeCaCertificateListener: () => undefined,
    addIdentityCertificateListener: (l) => setImmediate(() => l(update.certificate && update.privateKey ? { certificate: update.certificate, privateKey: update.privateKey } : null)),
    removeIdentityCertificateListener: () => undefined,
  };
}

/** The server's credentials: a `cp/<name>` SVID issued by `ca`, client certificates checked against its bundle when presented. */
export async function controlPlaneServerCredentials(ca: CertificateAuthority, name = 'test'): Promise<grpc.ServerCredentials> {
  const keys = generateWorkloadKeys();
  const id = `spiffe://${ca.trustDomain}/cp/${name}`;
  const svid = await ca.sign(await createCsr(keys, id), id);
  const identity = fixedProvider({ certificate: Buffer.from(svid.chain.join('')), privateKey: Buffer.from(keys.privateKey.export({ format: 'pem', type: 'pkcs8' }) as string) });
  const roots = fixedProvider({ caCertificate: Buffer.from(ca.trustBundlePem().join('')) });
  return grpc.experimental.createCertificateProviderServerCredentials(identity, roots, false);
}

/** `serverCa`: where the server's own SVID comes from (default `ca`): a CA under the same root with a longer leaf lifetime when `ca` issues leaves of seconds. */
export async function startIdentityServer(options: { ca: CertificateAuthority; tokens: JoinTokens; logger: Logger; tls: boolean; serverCa?: CertificateAuthority }): Promise<IdentityServer> {
  const service = new IdentityService(options);
  const server = new grpc.Server();
  service.addTo(server);
  const credentials = options.tls ? await controlPlaneServerCredentials(options.serverCa ?? options.ca) : grpc.ServerCredentials.createInsecure();
  const port = await new Promise<number>((resolve, reject) => server.bindAsync('127.0.0.1:0', credentials, (err, p) => (err ? reject(err) : resolve(p))));
  return {
    address: `127.0.0.1:${port}`,
    service,
    stop: () => new Promise<void>((resolve) => server.tryShutdown(() => resolve())),
  };
}
