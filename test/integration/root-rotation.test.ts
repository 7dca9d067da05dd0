// The root rotation of README "Security" > "Rotating the root", step by step
// with a real control-plane process restarted with each step's flags: a
// workload (a renewing source with a join token, as a sidecar's identity:
// section) calls the control plane every 10 ms over mTLS through the whole
// procedure and no call fails; its certificate and the control plane's move
// from the old root to the new one. A client that still trusts only the old
// root once it is gone is refused.
//
// A single replica is restarted, so for a moment nothing listens: the calls
// wait for the connection (waitForReady) as long as their deadline, so a
// restart delays them and only a refused handshake (a root not trusted) or a
// refused call fails them. Calls the stopping replica refused (REFUSED_STREAM)
// are retried by the clients' retry policy (security/transport.ts), and so are
// unary calls it ended before answering (security/unanswered-retry.ts); without
// them some calls fail here.

import test from 'ava';
import * as grpc from '@grpc/grpc-js';
import { X509Certificate } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect, type TLSSocket } from 'node:tls';
import { waitFor } from '../helpers/apps.js';
import { startControlPlane, type CliProcess } from '../helpers/cli.js';
import { freePort } from '../helpers/haproxy.js';
import { leafExtensions, makeCert, makeRoot, type Issued } from '../helpers/pki.js';
import { pemCertificates } from '../../proxy/identity/certificate-facts.js';
import { staticSource, type CertificateSource, type IdentityMaterial } from '../../proxy/identity/certificate-source.js';
import { RenewingSource } from '../../proxy/identity/renewing-source.js';
import { createLogger } from '../../proxy/runtime/log.js';
import type { MeshConfigClient } from '../../xds/generated/vsockmesh/config/v1/MeshConfig.js';
import { JoinTokensApiClient, certifyClient } from '../../xds/identity/certify-client.js';
import { configProto } from '../../xds/proto.js';
import { channelCredentials, channelOptions } from '../../xds/security/transport.js';

const TD = 'vsockmesh.local';
/** Long enough that a renewal outlives a restart of the control plane on a loaded machine, short enough to watch three. */
const LEAF_LIFETIME_S = 30;
const CALL_EVERY_MS = 10;
const CALL_DEADLINE_MS = 30_000;
const OLD = 'O=test, CN=old root';
const NEW = 'O=test, CN=new root';

interface Files {
  cert: string;
  key: string;
}

async function rootFiles(dir: string, name: string, root: Issued): Promise<Files> {
  const files = { cert: join(dir, `${name}.pem`), key: join(dir, `${name}-key.pem`) };
  await writeFile(files.cert, root.pem);
  await writeFile(files.key, root.keys.privateKey.export({ format: 'pem', type: 'pkcs8' }).toString(), { mode: 0o600 });
  return files;
}

function whoAmIClient(address: string, source: CertificateSource): MeshConfigClient {
  const Client = configProto().vsockmesh.config.v1.MeshConfig;
  return new Client(address, channelCredentials({ source }), channelOptions({ source }));
}

/** The subject of the root a PEM chain ends under (the issuer of its last certificate). */
function rootOf(chainPem: string): string {
  return new X509Certificate(pemCertificates(chainPem).at(-1)!).issuer.split('\n').join(', ');
}

/** The root the control plane's own served chain ends under, as a TLS client sees it. */
async function servedRoot(address: string, client: IdentityMaterial): Promise<string> {
  const [host, port] = address.split(':');
  const socket = await new Promise<TLSSocket>((resolve, reject) => {
    const s = connect({ host, port: Number(port), key: client.keyPem, cert: client.chainPem, ca: client.bundlePem, ALPNProtocols: ['h2'], servername: 'vsockmesh', checkServerIdentity: () => undefined }, () => resolve(s));
    s.once('error', reject);
  });
  try {
    const peer = socket.getPeerCertificate(true);
    let top = peer;
    while (top.issuerCertificate !== undefined && top.issuerCertificate !== top) top = top.issuerCertificate;
    return new X509Certificate(top.raw).issuer.split('\n').join(', ');
  } finally {
    // A clean close (not destroy): the server's HTTP/2 session ends at once instead of lingering into the next drain.
    await new Promise<void>((resolve) => socket.end(() => resolve()));
    socket.destroy();
  }
}

function bundleRoots(m: IdentityMaterial): string[] {
  return pemCertificates(m.bundlePem).map((p) => new X509Certificate(p).subject.split('\n').join(', ')).sort();
}

test('a root rotation by the README steps loses no call of a client calling every 10 ms; a client left with the old root alone is refused', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'vsockmesh-rotation-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const [oldRoot, newRoot] = await Promise.all([makeRoot(OLD), makeRoot(NEW)]);
  const oldFiles = await rootFiles(dir, 'old', oldRoot);
  const newFiles = await rootFiles(dir, 'new', newRoot);
  const listen = `127.0.0.1:${await freePort()}`;
  const base = ['--listen', listen, '--identity-dir', join(dir, 'identity'), '--leaf-lifetime', `${LEAF_LIFETIME_S}s`];
  let plane: { proc: CliProcess; address: string } | undefined;
  t.teardown(() => plane?.proc.kill('SIGKILL'));
  const restart = async (flags: string[]): Promise<void> => {
    if (plane !== undefined) {
      plane.proc.kill('SIGTERM');
      await plane.proc.exited;
    }
    plane = await startControlPlane([...base, ...flags]);
  };

  // Before: the old root only.
  await restart(['--ca-cert', oldFiles.cert, '--ca-key', oldFiles.key]);
  const address = plane!.address;
  const operatorLeaf = await makeCert(oldRoot, { subject: 'O=test', extensions: leafExtensions({ uris: [`spiffe://${TD}/operator/alice`] }) });
  const operator: IdentityMaterial = { keyPem: operatorLeaf.keys.privateKey.export({ format: 'pem', type: 'pkcs8' }).toString(), chainPem: operatorLeaf.pem, bundlePem: oldRoot.pem, spiffeId: `spiffe://${TD}/operator/alice`, notAfter: new Date(operatorLeaf.cert.validTo) };
  const tokens = new JoinTokensApiClient(address, { source: staticSource(operator) });
  const token = (await tokens.create({ vm_id: 'vm-a' })).token;
  tokens.close();

  const workload = new RenewingSource({ spiffeId: `spiffe://${TD}/vm/vm-a`, certify: certifyClient(address, { trustDomain: TD, bootstrapBundlePem: oldRoot.pem }), joinToken: async () => token, logger: createLogger({ level: 'silent' }) });
  await workload.start();
  t.teardown(() => workload.stop());
  t.is(rootOf(workload.current().chainPem), OLD);
  t.is(await servedRoot(address, workload.current()), OLD);

  // The client: a call every 10 ms with the workload's current certificate, through every step.
  const client = whoAmIClient(address, workload);
  t.teardown(() => client.close());
  const failures: string[] = [];
  let answered = 0;
  let calling = true;
  const inFlight = new Set<Promise<void>>();
  const loop = (async () => {
    while (calling) {
      const call = new Promise<void>((resolve) => {
        client.WhoAmI({}, new grpc.Metadata({ waitForReady: true }), { deadline: new Date(Date.now() + CALL_DEADLINE_MS) }, (err, res) => {
          if (err) failures.push(`${grpc.status[err.code]}: ${err.details}`);
          else if (res?.spiffe_id !== `spiffe://${TD}/vm/vm-a`) failures.push(`answered as ${res?.spiffe_id}`);
          else answered++;
          resolve();
        });
      });
      inFlight.add(call);
      void call.then(() => inFlight.delete(call));
      await new Promise((resolve) => setTimeout(resolve, CALL_EVERY_MS));
    }
  })();
  /** Waits until the workload has taken a certificate issued after this point that satisfies `done`. */
  const renewedUntil = async (what: string, done: (m: IdentityMaterial) => boolean): Promise<void> => {
    const before = workload.succeeded;
    await waitFor(() => workload.succeeded > before && done(workload.current()), what, 6 * LEAF_LIFETIME_S * 1000);
  };

  // Step 2: the old CA, the new root added to every bundle issued from now on.
  await restart(['--ca-cert', oldFiles.cert, '--ca-key', oldFiles.key, '--ca-bundle', newFiles.cert]);
  // Step 3: one leaf lifetime: the workload renewed and trusts both roots.
  await renewedUntil('a renewal that brings both roots', (m) => bundleRoots(m).join('|') === [NEW, OLD].join('|'));
  t.is(rootOf(workload.current().chainPem), OLD);

  // Step 4: the new CA, the old root still in the bundle.
  await restart(['--ca-cert', newFiles.cert, '--ca-key', newFiles.key, '--ca-bundle', oldFiles.cert]);
  // Step 5: one leaf lifetime: the workload's certificate chains to the new root.
  await renewedUntil('a renewal under the new root', (m) => rootOf(m.chainPem) === NEW);

  // Step 6: the old root removed; within one more lifetime the bundle holds the new root only.
  await restart(['--ca-cert', newFiles.cert, '--ca-key', newFiles.key]);
  await renewedUntil('a renewal that brings the new root alone', (m) => bundleRoots(m).join('|') === NEW);
  t.is(await servedRoot(address, workload.current()), NEW, 'the control plane serves a certificate under the new root');

  calling = false;
  await loop;
  await Promise.all(inFlight);
  t.deepEqual(failures, [], `${failures.length} of ${failures.length + answered} calls failed`);
  t.true(answered >= 100, `${answered} calls answered`);

  // A client that trusts the old root alone (it missed step 3): its certificate is good, the control plane's is not to it.
  const stale = whoAmIClient(address, staticSource({ ...workload.current(), bundlePem: oldRoot.pem }));
  t.teardown(() => stale.close());
  const refused = await new Promise<grpc.ServiceError | null>((resolve) => stale.WhoAmI({}, { deadline: new Date(Date.now() + 10_000) }, (err) => resolve(err)));
  t.is(refused?.code, grpc.status.UNAVAILABLE, 'the handshake fails');
  t.regex(refused?.details ?? '', /certificate|verify|handshake/i);
  // The same certificate with the current bundle is answered: only the root it trusts differs.
  const current = whoAmIClient(address, staticSource(workload.current()));
  t.teardown(() => current.close());
  const answer = await new Promise<string | undefined>((resolve, reject) => current.WhoAmI({}, { deadline: new Date(Date.now() + 10_000) }, (err, res) => (err ? reject(err) : resolve(res?.spiffe_id))));
  t.is(answer, `spiffe://${TD}/vm/vm-a`);
});
