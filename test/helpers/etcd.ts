// A real etcd for a test (Debian's etcd-server, which .ci/run installs): one
// member on loopback ports of its own, in a temporary data directory, with
// short raft timers (leases of 1 s then expire on time); stopped and removed
// when the test ends. restart() stops it and starts it again on the same data.
// launchEtcd is the same without a test (the benchmarks' etcd): the caller
// stops it with remove(). claimSeedAndDie leaves a seed half-done.

import type { ExecutionContext } from 'ava';
import { spawn, type ChildProcess } from 'node:child_process';
import { accessSync, constants } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { delimiter, join } from 'node:path';
import { seedKeys } from '../../xds/store/seed.js';
import type { Store } from '../../xds/store/store.js';
import { freePort } from './haproxy.js';

export const ETCD_MISSING = 'etcd not installed (apt-get install -y etcd-server): the etcd store suites did not run';

/** The etcd binary, or undefined when it is not installed. */
export function etcdBinary(): string | undefined {
  for (const dir of [...(process.env.PATH ?? '').split(delimiter), '/usr/bin', '/usr/local/bin']) {
    if (!dir) continue;
    try {
      accessSync(join(dir, 'etcd'), constants.X_OK);
      return join(dir, 'etcd');
    } catch {
      // not here
    }
  }
  return undefined;
}

export interface EtcdServer {
  /** host:port of its client URL. */
  endpoint: string;
  /** The etcd process's pid (changes on restart). */
  pid(): number | undefined;
  restart(): Promise<void>;
  stop(): Promise<void>;
}

/** TLS material (PEM file paths) for the client port: client certificates are then required. */
export interface EtcdTls {
  cert: string;
  key: string;
  ca: string;
}

/** `clientPort`: where it serves clients (a port chosen beforehand, e.g. for a process started before etcd); `args`: more etcd flags. */
export async function startEtcd(t: ExecutionContext, options: { tls?: EtcdTls; clientPort?: number; args?: string[] } = {}): Promise<EtcdServer> {
  return launchEtcd(options, (remove) => t.teardown(remove));
}

/** A one-member etcd in a temporary data directory; `onRemove` receives what stops it and removes the directory (call it at the end). */
export async function launchEtcd(options: { tls?: EtcdTls; clientPort?: number; args?: string[] }, onRemove: (remove: () => Promise<void>) => void): Promise<EtcdServer> {
  const binary = etcdBinary();
  if (binary === undefined) throw new Error(ETCD_MISSING);
  const dir = await mkdtemp(join(tmpdir(), 'vsockmesh-etcd-'));
  const [clientPort, peerPort] = [options.clientPort ?? (await freePort()), await freePort()];
  const scheme = options.tls === undefined ? 'http' : 'https';
  const peer = `http://127.0.0.1:${peerPort}`;
  const args = [
    ...['--name', 'test', '--data-dir', join(dir, 'data')],
    ...['--listen-client-urls', `${scheme}://127.0.0.1:${clientPort}`, '--advertise-client-urls', `${scheme}://127.0.0.1:${clientPort}`],
    ...['--listen-peer-urls', peer, '--initial-advertise-peer-urls', peer, '--initial-cluster', `test=${peer}`],
    // Short raft timers: a one-member cluster elects itself at once, and the shortest lease is 1 s.
    ...['--heartbeat-interval', '10', '--election-timeout', '100'],
    ...['--logger', 'zap', '--log-outputs', 'stderr', '--log-level', 'info'],
    ...(options.tls === undefined ? [] : ['--cert-file', options.tls.cert, '--key-file', options.tls.key, '--trusted-ca-file', options.tls.ca, '--client-cert-auth']),
    ...(options.args ?? []),
  ];
  let proc: ChildProcess | undefined;
  let output = '';
  const start = async (): Promise<void> => {
    const child = spawn(binary, args, { stdio: ['ignore', 'ignore', 'pipe'] });
    proc = child;
    output = '';
    await new Promise<void>((resolve, reject) => {
      child.stderr!.on('data', (chunk: Buffer) => {
        if (output.length < 256 * 1024) output += chunk.toString();
        // 3.4 logs "serving client traffic insecurely" or "... securely" once the client port answers.
        if (/serving client traffic/.test(output)) resolve();
      });
      child.once('exit', (code, signal) => reject(new Error(`etcd exited (${code ?? signal}) before it served:\n${output.slice(-4000)}`)));
      child.once('error', reject);
      setTimeout(() => reject(new Error(`etcd did not serve within 30 s:\n${output.slice(-4000)}`)), 30_000).unref();
    });
  };
  const stop = async (): Promise<void> => {
    const child = proc;
    proc = undefined;
    if (child === undefined || child.exitCode !== null || child.signalCode !== null) return;
    const exited = new Promise((resolve) => child.once('exit', resolve));
    child.kill('SIGTERM');
    await exited;
  };
  onRemove(async () => {
    await stop();
    await rm(dir, { recursive: true, force: true });
  });
  await start();
  return {
    endpoint: `127.0.0.1:${clientPort}`,
    pid: () => proc?.pid,
    restart: async () => {
      await stop();
      await start();
    },
    stop,
  };
}

/**
 * What a seeder (xds/store/seed.ts) that claimed the seed under `prefix` as
 * 'dead-seeder' and died leaves: the marker, and the owner key on a lease of
 * `leaseMs` that nobody renews. The caller writes the part of the seed it
 * wants left behind.
 */
export async function claimSeedAndDie(store: Store, prefix: string, leaseMs: number): Promise<boolean> {
  const keys = seedKeys(prefix);
  const lease = await store.grantLease(leaseMs);
  const claim = await store.commit({
    checks: [{ key: keys.seed, modRevision: 0 }],
    puts: [
      { key: keys.seed, value: JSON.stringify({ state: 'seeding', owner: 'dead-seeder' }) },
      { key: keys.owner, value: JSON.stringify({ owner: 'dead-seeder' }), lease },
    ],
  });
  return claim.ok;
}
