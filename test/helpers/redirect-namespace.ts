// A network namespace where iptables REDIRECTs every TCP connection of uid
// 65534 to port 15001, with addresses on its loopback, and a fixture run
// inside it as root (test/fixtures/*-mesh.mjs): the transparent-mode tests.

import type { ExecutionContext } from 'ava';
import { execFile, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

const run = promisify(execFile);
const root = fileURLToPath(new URL('../..', import.meta.url));

/** What this machine lacks to run such a test, or undefined. */
export function missingForRedirect(): string | undefined {
  if (process.getuid?.() !== 0) return 'root (network namespaces and iptables)';
  for (const tool of ['ip', 'iptables']) if (spawnSync('sh', ['-c', `command -v ${tool}`]).status !== 0) return `${tool} (apt-get install -y iproute2 iptables)`;
  return undefined;
}

/** Runs `fixture` (a path under the repository) in a fresh namespace with `addresses` (/32) on lo; its last stdout line, parsed. The namespace goes in teardown. */
export async function runInRedirectNamespace<T>(t: ExecutionContext, addresses: string[], fixture: string): Promise<T> {
  const ns = `vsm-rd-${randomBytes(3).toString('hex')}`;
  await run('ip', ['netns', 'add', ns]);
  t.teardown(() => run('ip', ['netns', 'delete', ns]).then(() => undefined));
  await run('ip', ['-n', ns, 'link', 'set', 'lo', 'up']);
  for (const a of addresses) await run('ip', ['-n', ns, 'addr', 'add', `${a}/32`, 'dev', 'lo']);
  await run('ip', ['netns', 'exec', ns, 'iptables', '-t', 'nat', '-A', 'OUTPUT', '-p', 'tcp', '-m', 'owner', '--uid-owner', '65534', '-j', 'REDIRECT', '--to-ports', '15001']);
  const { stdout } = await run('ip', ['netns', 'exec', ns, process.execPath, fixture], { cwd: root, timeout: 120_000 }).catch((err: { stdout?: string; stderr?: string }) => {
    throw new Error(`mesh in the namespace failed: ${err.stderr ?? ''}${err.stdout ?? ''}`);
  });
  return JSON.parse(stdout.trim().split('\n').at(-1)!) as T;
}
