// deploy/iptables/capture.sh (a wrapper over `vsockmesh iptables`), the capture
// rules the Kubernetes init container, the capture unit and cloud-init apply: in a network namespace the test
// creates, an unchanged app (uid 65534) is REDIRECTed to the sidecar's
// transparent listener (the mesh of test/fixtures/transparent-mesh.mjs, whose
// sidecar runs as root: --uid 0 is "the sidecar's user"), except what the
// rules exclude; apply is idempotent and remove leaves nothing behind.

import test, { type ExecutionContext } from 'ava';
import { execFile, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

const run = promisify(execFile);
const root = fileURLToPath(new URL('../..', import.meta.url));
const capture = fileURLToPath(new URL('../../deploy/iptables/capture.sh', import.meta.url));

function missing(): string | undefined {
  if (process.getuid?.() !== 0) return 'root (network namespaces and iptables)';
  for (const tool of ['ip', 'iptables', 'ip6tables']) if (spawnSync('sh', ['-c', `command -v ${tool}`]).status !== 0) return `${tool} (apt-get install -y iproute2 iptables)`;
  return undefined;
}

/** A fresh network namespace with lo up and the fixture's addresses; `inNs` runs a command in it. */
async function namespace(t: ExecutionContext) {
  const ns = `vsm-cap-${randomBytes(3).toString('hex')}`;
  await run('ip', ['netns', 'add', ns]);
  t.teardown(() => run('ip', ['netns', 'delete', ns]).then(() => undefined));
  await run('ip', ['-n', ns, 'link', 'set', 'lo', 'up']);
  for (const a of ['10.99.0.2/32', '10.99.0.5/32', '10.99.0.7/32']) await run('ip', ['-n', ns, 'addr', 'add', a, 'dev', 'lo']);
  const inNs = (args: string[], timeout = 60_000) => run('ip', ['netns', 'exec', ns, ...args], { cwd: root, timeout });
  return { inNs, nat: async () => (await inNs(['iptables-save', '-t', 'nat'])).stdout + (await inNs(['ip6tables-save', '-t', 'nat'])).stdout };
}

interface MeshResult {
  app: Array<{ host: string; port: number; intact?: boolean; error?: string }>;
  logs: Array<Record<string, unknown>>;
}

async function mesh(inNs: (args: string[]) => Promise<{ stdout: string }>): Promise<MeshResult> {
  const { stdout } = await inNs([process.execPath, 'test/fixtures/transparent-mesh.mjs']).catch((err: { stdout?: string; stderr?: string }) => {
    throw new Error(`mesh in the namespace failed: ${err.stderr ?? ''}${err.stdout ?? ''}`);
  });
  return JSON.parse(stdout.trim().split('\n').at(-1)!) as MeshResult;
}

/** Destinations the sidecar carried (its access lines), sorted. */
const carried = (r: MeshResult) => r.logs.filter((l) => l.log === 'access').map((l) => String(l.dst)).sort();

const need = missing();
if (need !== undefined && process.env.CI !== 'true') {
  test('capture.sh in a network namespace: NOT RUN, this machine lacks ' + need, (t) => {
    t.log(`!!! the capture rules test needs ${need}; it did not run`);
    t.fail(`missing ${need}`);
  });
} else {
  test('capture.sh apply: the app\'s connections reach the sidecar with their original destination, except an excluded port, which goes straight', async (t) => {
    const { inNs } = await namespace(t);
    await inNs([capture, 'apply', '--uid', '0', '--port', '15001', '--exclude-port', '81']);
    const result = await mesh(inNs);
    t.deepEqual(result.app.map((r) => [r.host, r.port, r.intact ?? r.error]), [['10.99.0.5', 80, true], ['10.99.0.7', 81, true]], 'both reached with every byte intact');
    t.deepEqual(carried(result), ['10.99.0.5:80'], 'only the captured connection went through the sidecar');
  });

  test('capture.sh apply: an excluded CIDR goes straight; the sidecar\'s own uid and loopback are never captured', async (t) => {
    const { inNs } = await namespace(t);
    await inNs([capture, 'apply', '--uid', '0', '--exclude-cidr', '10.99.0.5/32', '--exclude-cidr', 'fd00::/8']);
    const result = await mesh(inNs);
    t.deepEqual(result.app.map((r) => [r.host, r.port, r.intact ?? r.error]), [['10.99.0.5', 80, true], ['10.99.0.7', 81, true]]);
    t.deepEqual(carried(result), ['10.99.0.7:81']);
    // The sidecar (root) reached vm-b's inbound at 10.99.0.5:15006 and the VM manager on loopback without being captured:
    // a captured one would have come back to the listener as a loop.
    t.is(result.logs.filter((l) => l.reason === 'no_original_destination').length, 1, 'only the fixture\'s deliberate straight connection was refused');
  });

  test('capture.sh: apply twice gives the same rules for IPv4 and IPv6, remove (twice) leaves the nat table as it was', async (t) => {
    const { inNs, nat } = await namespace(t);
    const strip = (s: string) => s.split('\n').filter((l) => !l.startsWith('#')).join('\n');
    const before = strip(await nat());
    const args = [capture, 'apply', '--uid', '0', '--port', '15009', '--exclude-cidr', '192.0.2.0/24', '--exclude-cidr', '2001:db8::/32', '--exclude-port', '22'];
    await inNs(args);
    const once = strip(await nat());
    await inNs(args);
    t.is(strip(await nat()), once, 'apply is idempotent');
    const v4 = (await inNs(['iptables', '-t', 'nat', '-S', 'VSOCKMESH_OUTPUT'])).stdout;
    const v6 = (await inNs(['ip6tables', '-t', 'nat', '-S', 'VSOCKMESH_OUTPUT'])).stdout;
    for (const [rules, loopback, excluded, other] of [[v4, '127.0.0.0/8', '192.0.2.0/24', '2001:db8::/32'], [v6, '::1/128', '2001:db8::/32', '192.0.2.0/24']] as const) {
      t.regex(rules, /-m owner --uid-owner 0 -j RETURN/);
      t.true(rules.includes(`-d ${loopback} -j RETURN`));
      t.true(rules.includes(`-d ${excluded} -j RETURN`));
      t.false(rules.includes(other), 'a CIDR lands only in its own family');
      t.regex(rules, /--dport 22 -j RETURN/);
      t.regex(rules, /-p tcp -j REDIRECT --to-ports 15009\n$/, 'the redirect comes last');
    }
    t.is((once.match(/-A OUTPUT -p tcp -j VSOCKMESH_OUTPUT/g) ?? []).length, 2, 'one jump per family');
    await inNs([capture, 'remove']);
    await inNs([capture, 'remove']);
    t.is(strip(await nat()), before);
  });

  test('capture.sh refuses bad arguments with exit 2 and a message naming the option, changing nothing', async (t) => {
    const { inNs, nat } = await namespace(t);
    const before = await inNs(['iptables', '-t', 'nat', '-S']);
    for (const [args, message] of [
      [['apply', '--port', '0'], /--port: must be an integer 1\.\.65535/],
      [['apply', '--exclude-port', 'ssh'], /--exclude-port: must be an integer/],
      [['apply', '--uid', 'no-such-user-here'], /--uid: no such user/],
      [['apply', '--exclude-cidr', '10.0.0.1'], /--exclude-cidr: must be an address\/prefix/],
      [['apply', '--ipv6', 'maybe'], /--ipv6: must be auto, on or off/],
      [['flush'], /unknown command 'flush'/],
    ] as const) {
      const err = await inNs([capture, ...args]).then(
        () => undefined,
        (e: { code?: number; stderr?: string }) => e,
      );
      t.is(err?.code, 2, args.join(' '));
      t.regex(err?.stderr ?? '', message);
    }
    t.is((await inNs(['iptables', '-t', 'nat', '-S'])).stdout, before.stdout);
    t.false((await nat()).includes('VSOCKMESH_OUTPUT'));
  });
}
