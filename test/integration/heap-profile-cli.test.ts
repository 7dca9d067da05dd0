import test from 'ava';
import { readFileSync } from 'node:fs';
import { CLI, runCli, startCommand, writeConfig } from '../helpers/cli.js';
import { freePort } from '../helpers/haproxy.js';

const CONFIG = { node: { id: 'vm-a' }, vsock: { enabled: false }, insecure: true, admin: { port: 0 } };

/** The bin run as an operator runs it (its shebang's node flags), with `args`; its node flags once it is ready, and its pid before and after. */
async function runBin(t: import('ava').ExecutionContext, args: string[], config: Record<string, unknown> = CONFIG): Promise<{ nodeFlags: string[]; spawnedPid: number; readyPid: number; exit: Promise<{ code: number | null }>; stop: () => void; lines: Array<Record<string, unknown>> }> {
  const file = await writeConfig(config);
  t.teardown(() => file.cleanup());
  const proc = startCommand([CLI, 'sidecar', '-c', file.path, ...args]);
  t.teardown(() => proc.kill('SIGKILL'));
  const ready = await proc.waitForLine((l) => l.msg === 'sidecar ready', 'sidecar ready', 60_000);
  const argv = readFileSync(`/proc/${proc.child.pid}/cmdline`, 'utf8').split('\0');
  return { nodeFlags: argv.slice(1, argv.indexOf(CLI)), spawnedPid: proc.child.pid!, readyPid: Number(ready.pid), exit: proc.exited, stop: () => proc.kill('SIGTERM'), lines: proc.lines };
}

const semiSpace = (flags: string[]): string | undefined => flags.findLast((f) => f.startsWith('--max-semi-space-size='));

test('--heap-profile http: the same process (pid) runs on with an 8 MiB semi-space after the shebang flags, and drains on SIGTERM', async (t) => {
  const run = await runBin(t, ['--heap-profile', 'http']);
  t.is(run.readyPid, run.spawnedPid);
  t.true(run.nodeFlags.includes('--max-semi-space-size=1'), run.nodeFlags.join(' '));
  t.is(semiSpace(run.nodeFlags), '--max-semi-space-size=8');
  t.is(run.nodeFlags.filter((f) => f === '--max-semi-space-size=8').length, 1);
  run.stop();
  t.is((await run.exit).code, 0);
  t.true(run.lines.some((l) => l.msg === 'drain finished'));
});

test("without --heap-profile a sidecar keeps the shebang's 1 MiB semi-space", async (t) => {
  const run = await runBin(t, []);
  t.is(run.readyPid, run.spawnedPid);
  t.is(semiSpace(run.nodeFlags), '--max-semi-space-size=1');
  run.stop();
  t.is((await run.exit).code, 0);
});

/** A sidecar whose config file declares an HTTP listener (protocol: http). */
const httpConfig = async (): Promise<Record<string, unknown>> => ({
  ...CONFIG,
  listeners: [{ kind: 'outbound', name: 'web', port: await freePort(), cluster: 'web', protocol: 'http' }],
  clusters: [{ name: 'web', endpoints: [{ address: '127.0.0.1', port: await freePort() }] }],
});

test('without --heap-profile (auto) a sidecar with an HTTP listener in its file runs on (same pid) with the 8 MiB semi-space', async (t) => {
  const run = await runBin(t, [], await httpConfig());
  t.is(run.readyPid, run.spawnedPid);
  t.is(semiSpace(run.nodeFlags), '--max-semi-space-size=8');
  run.stop();
  t.is((await run.exit).code, 0);
});

test('--heap-profile idle keeps the shebang\'s 1 MiB for a sidecar with an HTTP listener', async (t) => {
  const run = await runBin(t, ['--heap-profile', 'idle'], await httpConfig());
  t.is(semiSpace(run.nodeFlags), '--max-semi-space-size=1');
  run.stop();
  t.is((await run.exit).code, 0);
});

test('auto with a config file that does not load: the role reports it (exit 2), not the profile choice', async (t) => {
  const file = await writeConfig({ ...CONFIG, listeners: [{ kind: 'outbound', name: 'web', port: 1, protocol: 'http' }] });
  t.teardown(() => file.cleanup());
  const r = await runCli(['sidecar', '-c', file.path]);
  t.is(r.code, 2);
  t.regex(r.stderr, /listeners\[0\]\.cluster: required/);
});

test('--heap-profile names its choices when given another', async (t) => {
  const file = await writeConfig(CONFIG);
  t.teardown(() => file.cleanup());
  const r = await runCli(['sidecar', '-c', file.path, '--heap-profile', 'big']);
  t.not(r.code, 0);
  t.regex(r.stderr, /--heap-profile.*big.*idle, http, server, auto/s);
});

test("a control plane started through the bin runs on (same pid) with V8's 16 MiB semi-space, not the sidecar's 1 MiB, and settles its memory once quiet after starting", async (t) => {
  const proc = startCommand([CLI, 'control-plane', '--insecure', '--no-admin', '--log-level', 'debug', '--listen', `127.0.0.1:${await freePort()}`]);
  t.teardown(() => proc.kill('SIGKILL'));
  await proc.waitForLine((l) => l.msg === 'control-plane serving', 'control-plane serving', 60_000);
  // Starting up is the first burst (quiet-trim.ts): V8's memory-reducing collections follow once quiet.
  const settled = await proc.waitForLine((l) => l.msg === 'memory settled', 'the settle after start-up', 30_000);
  t.is(settled.trigger, 'burst_over');
  t.is(typeof settled.rss_after, 'number');
  // ...and malloc_trim through the server roles' trim addon (server-trim.cc), which says whether glibc gave memory back.
  t.is(typeof settled.trimmed, 'boolean');
  // The spawned pid's command line shows the re-executed flags: the same process runs on.
  const argv = readFileSync(`/proc/${proc.child.pid}/cmdline`, 'utf8').split('\0');
  const nodeFlags = argv.slice(1, argv.indexOf(CLI));
  t.true(nodeFlags.includes('--max-semi-space-size=1'), nodeFlags.join(' '));
  t.is(semiSpace(nodeFlags), '--max-semi-space-size=16');
  // The settle needs no global gc(): it is not exposed.
  t.false(nodeFlags.includes('--expose-gc'), nodeFlags.join(' '));
  proc.kill('SIGTERM');
  t.is((await proc.exited).code, 0);
});
