// Identity from PEM files: checked together at start, reloaded when they
// change, a bad new set refused (logged with a reason) while the last good
// material keeps serving.

import test from 'ava';
import { rm, writeFile } from 'node:fs/promises';
import { createLogger } from '../../proxy/runtime/log.js';
import { CertificateFilesError, FileCertificateSource, readCertificateFiles } from '../../proxy/identity/certificate-files.js';
import type { IdentityMaterial } from '../../proxy/identity/certificate-source.js';
import { LogCapture } from '../helpers/log-capture.js';
import { startTestMeshCa } from '../helpers/pki.js';

const meshCa = startTestMeshCa();
test.after.always(async () => (await meshCa).cleanup());

test('a rewritten set of files is loaded and announced; the next connection uses it', async (t) => {
  const ca = await meshCa;
  const first = await ca.identity('cp', 'cp-0');
  const files = await ca.files(first);
  const source = await FileCertificateSource.open(files, { logger: createLogger({ level: 'silent' }), pollMs: 3_600_000 });
  t.teardown(() => source.close());
  t.is(source.current().chainPem, first.chainPem);
  const heard: IdentityMaterial[] = [];
  source.onChange((m) => heard.push(m));

  const second = await ca.identity('cp', 'cp-0');
  await writeFile(files.keyPath, second.keyPem);
  await writeFile(files.certPath, second.chainPem);
  await source.poll();
  t.is(source.current().chainPem, second.chainPem);
  t.is(heard.length, 1);
  await source.poll();
  t.is(heard.length, 1, 'unchanged files announce nothing');
});

test('a certificate whose key is not the key file\'s is refused, logged once, and the last good material keeps serving', async (t) => {
  const ca = await meshCa;
  const first = await ca.identity('vm', 'vm-a');
  const files = await ca.files(first);
  const logs = new LogCapture();
  const source = await FileCertificateSource.open(files, { logger: createLogger({ level: 'debug', destination: logs }), pollMs: 3_600_000 });
  t.teardown(() => source.close());
  const other = await ca.identity('vm', 'vm-a');
  // Half a rotation: the new certificate, the old key.
  await writeFile(files.certPath, other.chainPem);
  await source.poll();
  await source.poll();
  t.is(source.current().chainPem, first.chainPem);
  const refusals = logs.lines.filter((l) => l.reason === 'identity_key_mismatch');
  t.is(refusals.length, 1);
  t.false(JSON.stringify(logs.lines).includes('PRIVATE KEY'), 'no key material in the log');
  // The rest of the rotation lands: the pair is taken.
  await writeFile(files.keyPath, other.keyPem);
  await source.poll();
  t.is(source.current().chainPem, other.chainPem);
});

test('files that are not an SVID of the bundle are refused at start with a reason naming the file', async (t) => {
  const ca = await meshCa;
  const expired = await ca.handMade({ uri: 'spiffe://vsockmesh.local/cp/cp-0', notBefore: new Date(Date.now() - 7_200_000), notAfter: new Date(Date.now() - 3_600_000) });
  const files = await ca.files(expired);
  const err = await t.throwsAsync(readCertificateFiles(files, new Date()), { instanceOf: CertificateFilesError });
  t.is(err?.reason, 'identity_not_an_svid');
  t.true(err?.message.includes(files.certPath));
  await writeFile(files.keyPath, 'not a key');
  t.is((await t.throwsAsync(readCertificateFiles(files, new Date()), { instanceOf: CertificateFilesError }))?.reason, 'identity_key_invalid');
});

test('an identity of another trust domain than the one asked for is refused (wrong_trust_domain)', async (t) => {
  const ca = await meshCa;
  const files = await ca.files(await ca.identity('vm', 'vm-a'));
  t.is((await readCertificateFiles(files, new Date(), 'vsockmesh.local')).spiffeId, 'spiffe://vsockmesh.local/vm/vm-a');
  const err = await t.throwsAsync(readCertificateFiles(files, new Date(), 'other.org'), { instanceOf: CertificateFilesError });
  t.is(err?.reason, 'identity_not_an_svid');
  t.regex(err!.message, /not a valid X509-SVID of other\.org \(wrong_trust_domain\)/);
  await t.throwsAsync(FileCertificateSource.open(files, { logger: createLogger({ level: 'silent' }), trustDomain: 'other.org' }), { instanceOf: CertificateFilesError });
});

test('a refused reload goes to the reload-failure hook once per change, and a removed file is reported once', async (t) => {
  const ca = await meshCa;
  const first = await ca.identity('vm', 'vm-a');
  const files = await ca.files(first);
  const failures: Array<[string, string]> = [];
  const source = await FileCertificateSource.open(files, { logger: createLogger({ level: 'silent' }), pollMs: 3_600_000, trustDomain: 'vsockmesh.local', onReloadFailed: (reason, message) => failures.push([reason, message]) });
  t.teardown(() => source.close());
  await writeFile(files.certPath, (await ca.identity('vm', 'vm-a')).chainPem);
  await source.poll();
  await source.poll();
  t.deepEqual(failures.map(([reason]) => reason), ['identity_key_mismatch']);
  await rm(files.certPath);
  await source.poll();
  await source.poll();
  t.deepEqual(failures.map(([reason]) => reason), ['identity_key_mismatch', 'identity_file_unreadable']);
  t.true(failures[1]![1].includes(files.certPath));
  t.is(source.current().chainPem, first.chainPem, 'the last good material keeps serving');
});
