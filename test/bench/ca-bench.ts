// CA throughput: how fast the control plane's CA (xds/identity/ca.ts) turns
// CSRs into X509-SVIDs, in one process and one thread, against two peers
// measured in the same run:
//
//   openssl ca     `openssl ca -batch -infiles csr1 ... csrN`: one openssl
//                  process signing the same N CSRs with the same extensions
//                  (P-256 CA key, SHA-256; it checks each CSR's signature
//                  too, and writes each certificate and its database line
//                  to disk);
//   crypto floor   what any CA must at least do per CSR with Node's crypto:
//                  one ECDSA P-256 verify (the CSR) and one sign (the leaf),
//                  over data of a CSR's and a certificate's size.
//
// Also timed: the client side (a key pair and a CSR), and our verifier
// (verifySvid) on every chain issued. Alternating rounds, medians.
//
// Then the whole bootstrap through the real API: the control plane as a
// process (`vsockmesh control-plane --identity-dir`, join tokens in its
// durable token file), and 1,000 sidecars (BENCH_CSRS) in this process each
// making its key and CSR and calling Certify with its own join token on its
// own connection: all at once, and 64 outstanding. Time to the last
// certificate, per-sidecar latency, control-plane CPU, beside the in-process
// signing rate of the same run. The first certificate travels over TLS
// (the control plane checked against the bundle; the join token is the
// credential); then each of the 1,000 renews it over mutual TLS, its new
// certificate as the client certificate (64 outstanding).
//
// Run: npm run bench:ca   (env: BENCH_ROUNDS=3, BENCH_CSRS=1000, BENCH_CONCURRENCY=16)
// Not a test: `npm test` does not run it.

import { createSign, createVerify, generateKeyPairSync } from 'node:crypto';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { createCsr, generateWorkloadKeys } from '../../proxy/identity/keys-and-csr.js';
import { verifySvid } from '../../proxy/identity/svid.js';
import { CertificateAuthority, type IssuedSvid } from '../../xds/identity/ca.js';
import { JoinTokensApiClient, certifyClient } from '../../xds/identity/certify-client.js';
import { staticSource, type IdentityMaterial } from '../../proxy/identity/certificate-source.js';
import { GENERATED_ROOT_DIR, issueIdentity } from '../../xds/security/process-identity.js';
import { errorCode } from '../../proxy/runtime/errors.js';
import { CLI, cliNodeFlags, cpuSeconds, fmt, intEnv, log, machineLine, mdTable, median, onCleanup, percentile, runBench, runChild, startDaemon, writeReport } from './bench-common.js';

const ROUNDS = intEnv('BENCH_ROUNDS', 3);
const N = intEnv('BENCH_CSRS', 1000);
const CONCURRENCY = intEnv('BENCH_CONCURRENCY', 16);
const TD = 'vsockmesh.local';

const OPENSSL_CONFIG = `[ ca ]
default_ca = CA_default
[ CA_default ]
database = ./index.txt
new_certs_dir = ./certs
certificate = ./ca.pem
private_key = ./ca-key.pem
serial = ./serial
default_md = sha256
policy = policy_any
copy_extensions = copy
x509_extensions = leaf_ext
unique_subject = no
default_days = 1
[ policy_any ]
organizationName = optional
[ leaf_ext ]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature
extendedKeyUsage = serverAuth,clientAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
`;

/** Wall and CPU milliseconds of one run over the N CSRs. */
interface Cost {
  ms: number;
  cpuMs: number;
}

interface Round {
  sequential: Cost;
  concurrent: Cost;
  openssl: Cost;
  floor: Cost;
  verify: Cost;
}

/** CPU milliseconds of a shell's children from the second line of `times` ("0m1.230s 0m0.120s"). */
function childCpuMs(timesOutput: string): number {
  const line = timesOutput.trim().split('\n').at(-1) ?? '';
  const parts = [...line.matchAll(/(\d+)m([\d.]+)s/g)];
  if (parts.length !== 2) throw new Error(`unexpected \`times\` output: ${timesOutput}`);
  return parts.reduce((sum, m) => sum + (Number(m[1]) * 60 + Number(m[2])) * 1000, 0);
}

function cpuMs(): number {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1000;
}

async function timed<T>(fn: () => Promise<T>): Promise<Cost & { value: T }> {
  const cpu0 = cpuMs();
  const t0 = performance.now();
  const value = await fn();
  return { ms: performance.now() - t0, cpuMs: cpuMs() - cpu0, value };
}

async function main(): Promise<void> {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'vsockmesh-ca-bench-'));
  onCleanup(() => rmSync(dir, { recursive: true, force: true }));
  log(`${machineLine()}; ${N} CSRs, ${ROUNDS} rounds, concurrency ${CONCURRENCY}`);

  const ca = await CertificateAuthority.open({ trustDomain: TD, upstream: { dir: path.join(dir, 'ca') } });
  const ids = Array.from({ length: N }, (_, i) => `spiffe://${TD}/vm/vm-${i}`);
  const client = await timed(() => Promise.all(ids.map((id) => createCsr(generateWorkloadKeys(), id))));
  const csrs = client.value;
  log(`client side: ${N} key pairs + CSRs in ${fmt(client.ms)} ms`);

  const openssl = path.join(dir, 'openssl');
  mkdirSync(openssl);
  const csrFiles = csrs.map((csr, i) => {
    const file = path.join(openssl, `csr-${i}.pem`);
    writeFileSync(file, csr);
    return file;
  });
  writeFileSync(path.join(openssl, 'ca.cnf'), OPENSSL_CONFIG);
  const made = await runChild('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', path.join(openssl, 'ca-key.pem'), '-out', path.join(openssl, 'ca.pem'), '-days', '30', '-subj', '/O=bench/CN=openssl ca', '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign'], 30_000);
  if (made.code !== 0) throw new Error(`openssl req: ${made.stderr}`);

  const floorKeys = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const csrBody = Buffer.alloc(300, 1);
  const csrSignature = createSign('sha256').update(csrBody).sign(floorKeys.privateKey);
  const tbs = Buffer.alloc(450, 2);

  const rounds: Round[] = [];
  let issued: IssuedSvid[] = [];
  for (let r = 0; r < ROUNDS; r++) {
    const sequential = await timed(async () => {
      const out: IssuedSvid[] = [];
      for (let i = 0; i < N; i++) out.push(await ca.sign(csrs[i]!, ids[i]!));
      return out;
    });
    issued = sequential.value;

    const concurrent = await timed(async () => {
      let next = 0;
      await Promise.all(
        Array.from({ length: CONCURRENCY }, async () => {
          for (let i = next++; i < N; i = next++) await ca.sign(csrs[i]!, ids[i]!);
        }),
      );
    });

    rmSync(path.join(openssl, 'certs'), { recursive: true, force: true });
    mkdirSync(path.join(openssl, 'certs'));
    writeFileSync(path.join(openssl, 'index.txt'), '');
    writeFileSync(path.join(openssl, 'serial'), '01\n');
    // The shell's `times` prints the CPU its children used (second line: user and system).
    const ossl = await timed(() => runChild('sh', ['-c', `cd ${openssl} && openssl ca -batch -notext -config ca.cnf -rand_serial -subj /O=vsockmesh -out /dev/null -infiles ${csrFiles.map((f) => path.basename(f)).join(' ')} 2>/dev/null && times`], 600_000));
    if (ossl.value.code !== 0) throw new Error(`openssl ca: ${ossl.value.stderr.slice(-500)}`);
    const opensslCpuMs = childCpuMs(ossl.value.stdout);

    const floor = await timed(async () => {
      for (let i = 0; i < N; i++) {
        if (!createVerify('sha256').update(csrBody).verify(floorKeys.publicKey, csrSignature)) throw new Error('floor verify');
        createSign('sha256').update(tbs).sign(floorKeys.privateKey);
      }
    });

    const verify = await timed(async () => {
      const bundle = ca.trustBundle();
      const at = new Date();
      for (const svid of issued) if (!verifySvid(svid.chain.join(''), bundle, at).ok) throw new Error('an issued chain did not verify');
    });

    const round: Round = { sequential, concurrent, openssl: { ms: ossl.ms, cpuMs: opensslCpuMs }, floor, verify };
    rounds.push(round);
    log(`round ${r + 1}: ${Object.entries(round).map(([k, v]) => `${k} ${Math.round(v.ms)} ms (cpu ${Math.round(v.cpuMs)})`).join(', ')}`);
  }

  const wall = (k: keyof Round) => median(rounds.map((r) => r[k].ms));
  const cpu = (k: keyof Round) => median(rounds.map((r) => r[k].cpuMs));
  const perSecond = (ms: number) => (N / ms) * 1000;
  const row = (label: string, k: keyof Round) => [label, fmt(wall(k)), fmt(perSecond(wall(k))), fmt((cpu(k) / N) * 1000), `${fmt(cpu('openssl') / cpu(k), 2)}×`];
  const rows = [
    row('vsockmesh CA, one at a time', 'sequential'),
    row(`vsockmesh CA, ${CONCURRENCY} outstanding`, 'concurrent'),
    row('openssl ca, one process', 'openssl'),
    row('crypto floor (1 verify + 1 sign)', 'floor'),
  ];
  const table = mdTable([`${fmt(N)} CSRs`, 'time (ms)', 'certificates/s', 'CPU per certificate (µs)', 'CPU efficiency vs openssl ca'], rows);
  const extra = [
    `client side (key pair + CSR): ${fmt(perSecond(client.ms))}/s`,
    `verifySvid (leaf + intermediate against the bundle): ${fmt(perSecond(wall('verify')))} chains/s, ${fmt((cpu('verify') / N) * 1000)} µs CPU each`,
  ];
  const bootstrap = await firstCertificates(dir, perSecond(wall('sequential')));
  const markdown = [`CA benchmark, ${new Date().toISOString().slice(0, 10)}: ${machineLine()}; medians of ${ROUNDS} rounds`, '', table, '', ...extra.map((l) => `- ${l}`), '', bootstrap.markdown].join('\n');
  process.stdout.write(`${markdown}\n`);
  log(`report: ${writeReport('ca-bench', markdown, { n: N, concurrency: CONCURRENCY, client: client.ms, rounds, bootstrap: bootstrap.rounds })}`);
}

interface BootstrapRound {
  /** Until the last of N sidecars has its certificate. */
  ms: number;
  /** Control-plane CPU over that time. */
  cpMs: number;
  p50: number;
  p99: number;
  /** Calls made again after UNAVAILABLE. */
  retries: number;
}

const RENEWAL_MODE = 'renewal over mTLS, 64 outstanding';

/**
 * `call(i)` for i in 0..N-1, `outstanding` at a time: time to the last, control-plane CPU, per-call latency
 * (retries included). A call that found no connection (UNAVAILABLE: a reset while 1,000 handshakes queue) is
 * made again after a second, as a sidecar's renewing source does, and counted.
 */
async function certifyAll(cpPid: number, outstanding: number, call: (i: number) => Promise<void>): Promise<BootstrapRound> {
  const latencies: number[] = [];
  let retries = 0;
  const cpu0 = cpuSeconds(cpPid);
  const start = performance.now();
  let next = 0;
  await Promise.all(
    Array.from({ length: outstanding }, async () => {
      for (let i = next++; i < N; i = next++) {
        const began = performance.now();
        for (let attempt = 1; ; attempt++) {
          try {
            await call(i);
            break;
          } catch (err) {
            if (errorCode(err) !== 'UNAVAILABLE' || attempt >= 10) throw err;
            retries++;
            await new Promise((resolve) => setTimeout(resolve, 1_000));
          }
        }
        latencies.push(performance.now() - began);
      }
    }),
  );
  return { ms: performance.now() - start, cpMs: (cpuSeconds(cpPid) - cpu0) * 1000, p50: percentile(latencies, 50), p99: percentile(latencies, 99), retries };
}

/** N sidecars getting their first certificate through Certify with join tokens: all at once, then `outstanding` at a time; then renewing it over mTLS. */
async function firstCertificates(dir: string, inProcessPerSecond: number): Promise<{ markdown: string; rounds: Record<string, BootstrapRound[]> }> {
  const daemon = startDaemon(process.execPath, [...cliNodeFlags(), CLI, 'control-plane', '--listen', '127.0.0.1:0', '--no-admin', '--identity-dir', path.join(dir, 'cp')], { stdout: 'lines' });
  onCleanup(() => daemon.stop());
  const serving = await daemon.waitForLine((l) => l.msg === 'control-plane serving', 'control-plane serving', 60_000);
  const address = `127.0.0.1:${String(serving.port)}`;
  // An operator's certificate under the root the control plane generated (as an administrator would issue it), for ctl's JoinTokens calls.
  const rootCa = await CertificateAuthority.open({ trustDomain: TD, upstream: { dir: path.join(dir, 'cp', GENERATED_ROOT_DIR) } });
  const operator = await issueIdentity(rootCa, `spiffe://${TD}/operator/bench`);
  const tokensApi = new JoinTokensApiClient(address, { source: staticSource(operator) }, 30_000);
  onCleanup(() => tokensApi.close());
  const certify = certifyClient(address, { trustDomain: TD, bootstrapBundlePem: operator.bundlePem, timeoutMs: 300_000 });
  const modes = { [`${fmt(N)} at once`]: N, '64 outstanding': 64 };
  const rounds: Record<string, BootstrapRound[]> = Object.fromEntries([...Object.keys(modes), RENEWAL_MODE].map((m) => [m, []]));
  let tokenMs = 0;
  for (let r = 0; r < ROUNDS; r++) {
    for (const [mode, outstanding] of Object.entries(modes)) {
      const names = Array.from({ length: N }, (_, i) => `r${r}-${outstanding}-vm-${i}`);
      const t0 = performance.now();
      const tokens: string[] = [];
      for (const name of names) tokens.push((await tokensApi.create({ vm_id: name, ttl_ms: 3_600_000 })).token);
      tokenMs = performance.now() - t0;
      const materials: IdentityMaterial[] = new Array(N);
      const round = await certifyAll(daemon.pid, outstanding, async (i) => {
        const id = `spiffe://${TD}/vm/${names[i]!}`;
        const keys = generateWorkloadKeys();
        const answer = await certify(await createCsr(keys, id), { joinToken: tokens[i]! });
        materials[i] = { keyPem: keys.privateKey.export({ format: 'pem', type: 'pkcs8' }).toString(), chainPem: answer.chainPem, bundlePem: answer.bundlePem, spiffeId: id, notAfter: answer.notAfter };
      });
      rounds[mode]!.push(round);
      if (outstanding === 64) {
        // Renewals: the client certificate is the one just issued, so every call is a mutual TLS handshake.
        const renewal = await certifyAll(daemon.pid, outstanding, async (i) => {
          await certify(await createCsr(generateWorkloadKeys(), materials[i]!.spiffeId), { material: materials[i]! });
        });
        rounds[RENEWAL_MODE]!.push(renewal);
        log(`renewal round ${r + 1} over mTLS, 64 outstanding: ${Math.round(renewal.ms)} ms, control plane CPU ${Math.round(renewal.cpMs)} ms, p50 ${Math.round(renewal.p50)} ms, p99 ${Math.round(renewal.p99)} ms, ${renewal.retries} retried`);
      }
      // Spent tokens are kept until an hour past expiry; removed here so that every round starts with the same token file.
      for (const token of tokens) await tokensApi.revoke(token.split('.')[1]!);
      log(`bootstrap round ${r + 1}, ${mode}: ${Math.round(round.ms)} ms, control plane CPU ${Math.round(round.cpMs)} ms, p50 ${Math.round(round.p50)} ms, p99 ${Math.round(round.p99)} ms, ${round.retries} retried (creating the ${N} tokens: ${Math.round(tokenMs)} ms)`);
    }
  }
  const rows = Object.entries(rounds).map(([mode, rs]) => {
    const ms = median(rs.map((x) => x.ms));
    const perSecond = (N / ms) * 1000;
    return [mode, fmt(ms), fmt(perSecond), `${fmt(perSecond / inProcessPerSecond, 2)}×`, fmt(median(rs.map((x) => x.p50))), fmt(median(rs.map((x) => x.p99))), fmt((median(rs.map((x) => x.cpMs)) / N) * 1000), fmt(median(rs.map((x) => x.retries)))];
  });
  const table = mdTable([`${fmt(N)} sidecars via Certify (first certificate over TLS with a join token; renewal over mTLS)`, 'until the last (ms)', 'certificates/s', 'vs in-process CA, one at a time', 'p50 per sidecar (ms)', 'p99 (ms)', 'control-plane CPU per certificate (µs)', 'calls retried after UNAVAILABLE'], rows);
  const markdown = [table, '', `- each sidecar: its own key pair, CSR, connection and join token (spent durably: the token file is rewritten and fdatasync'ed per use); ${fmt(N)} tokens made through ctl's API in ${fmt(tokenMs)} ms (last round)`].join('\n');
  return { markdown, rounds };
}

await runBench(main);
