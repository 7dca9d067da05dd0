// The systemd units of deploy/systemd/: systemd-analyze verifies each with no
// warning and scores its exposure; every vsockmesh command a unit runs names
// a real role and real flags; and the commands themselves run, as an
// unprivileged user with the unit's capability bounding set, in a network
// namespace the test creates (so the units' fixed ports are free), with
// /opt/vsockmesh, /etc/vsockmesh and /var/lib/vsockmesh mapped to this
// checkout, the example configs and a fresh state directory. Not run: the
// host relay's ExecStart (it opens AF_VSOCK, which this machine never does).

import test from 'ava';
import { execFile, spawnSync } from 'node:child_process';
import { chown, copyFile, mkdir, mkdtemp, readdir, readFile, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { startCommand } from '../helpers/cli.js';
import { cliUsageProblems } from '../helpers/cli-usage.js';
import { startTestMeshCa } from '../helpers/pki.js';

const run = promisify(execFile);
const root = fileURLToPath(new URL('../..', import.meta.url));
const unitDir = join(root, 'deploy/systemd');
const NOBODY = 65534;

/** The [Service] settings of a unit file, each key with every value it was given. */
async function serviceSettings(unit: string): Promise<Map<string, string[]>> {
  const settings = new Map<string, string[]>();
  let section = '';
  for (const raw of (await readFile(join(unitDir, unit), 'utf8')).split('\n')) {
    const line = raw.trim();
    if (line === '' || line.startsWith('#')) continue;
    if (line.startsWith('[')) section = line;
    else if (section === '[Service]') {
      const eq = line.indexOf('=');
      const key = line.slice(0, eq);
      settings.set(key, [...(settings.get(key) ?? []), line.slice(eq + 1)]);
    }
  }
  return settings;
}

/** An Exec*= line as argv: systemd's prefixes (+, -, @, !, :) dropped; the units use no quoting. */
const execArgv = (line: string): { privileged: boolean; argv: string[] } => {
  const prefix = /^[-+@!:]*/.exec(line)![0];
  return { privileged: prefix.includes('+'), argv: line.slice(prefix.length).split(/\s+/) };
};

const units = (await readdir(unitDir)).filter((f) => f.endsWith('.service')).sort();

function missing(): string | undefined {
  if (process.getuid?.() !== 0) return 'root (network namespaces, a user switch)';
  for (const [tool, pkg] of [['systemd-analyze', 'systemd'], ['setpriv', 'util-linux'], ['unshare', 'util-linux'], ['ip', 'iproute2']]) {
    if (spawnSync('sh', ['-c', `command -v ${tool}`]).status !== 0) return `${tool} (apt-get install -y ${pkg})`;
  }
  return undefined;
}

const need = missing();
if (need !== undefined && process.env.CI !== 'true') {
  test('systemd units: NOT RUN, this machine lacks ' + need, (t) => {
    t.log(`!!! the systemd unit tests need ${need}; they did not run`);
    t.fail(`missing ${need}`);
  });
} else {
  test('deploy/systemd holds the units the README names', (t) => {
    t.deepEqual(units, ['vsockmesh-capture.service', 'vsockmesh-control-plane.service', 'vsockmesh-host-relay.service', 'vsockmesh-sidecar.service', 'vsockmesh-vm-manager.service']);
  });

  for (const unit of units) {
    test(`${unit}: systemd-analyze verify passes with no warning`, async (t) => {
      const result = spawnSync('systemd-analyze', ['verify', join(unitDir, unit)], { encoding: 'utf8' });
      t.is(result.status, 0, result.stderr);
      t.is(`${result.stdout}${result.stderr}`.trim(), '', 'verify prints a line for every unknown key or bad value');
    });
  }

  for (const unit of units.filter((u) => u !== 'vsockmesh-capture.service')) {
    test(`${unit}: runs as user vsockmesh with no capability, a strict read-only system and a system call filter; exposure below 2.5`, async (t) => {
      const s = await serviceSettings(unit);
      t.deepEqual(s.get('User'), ['vsockmesh']);
      t.deepEqual(s.get('CapabilityBoundingSet'), ['']);
      t.deepEqual(s.get('ProtectSystem'), ['strict']);
      t.deepEqual(s.get('NoNewPrivileges'), ['yes']);
      t.deepEqual(s.get('SystemCallFilter'), ['@system-service', '~@privileged']);
      const vsock = unit === 'vsockmesh-sidecar.service' || unit === 'vsockmesh-host-relay.service';
      t.deepEqual(s.get('RestrictAddressFamilies'), [`AF_UNIX AF_INET AF_INET6${vsock ? ' AF_VSOCK' : ''}`], 'AF_VSOCK only for the roles that speak it');
      const { stdout } = await run('systemd-analyze', ['security', '--offline=yes', join(unitDir, unit)]);
      const exposure = Number(/Overall exposure level for .*: ([\d.]+)/.exec(stdout)?.[1]);
      t.log(`${unit}: systemd-analyze security exposure ${exposure}`);
      t.true(exposure < 2.5, `exposure ${exposure}`);
    });
  }

  test('every vsockmesh command in the units names an existing role and flags that role has', async (t) => {
    let checked = 0;
    for (const unit of units) {
      const s = await serviceSettings(unit);
      for (const line of [...(s.get('ExecStartPre') ?? []), ...(s.get('ExecStart') ?? [])]) {
        const argv = execArgv(line).argv;
        const at = argv.findIndex((a) => a.endsWith('/dist/proxy/cmd/cli.js'));
        if (at < 0) continue;
        t.deepEqual(await cliUsageProblems(argv.slice(at + 1)), [], `${unit}: ${line}`);
        checked++;
      }
    }
    t.is(checked, 7, 'every unit runs the CLI (ExecStartPre validations included)');
  });

  /**
   * The unit's paths mapped into a temp dir: /etc/vsockmesh holds the example configs (sidecar.yaml is vm-b's),
   * /var/lib/vsockmesh is empty and owned by the unprivileged user, as StateDirectory= makes it.
   */
  async function unitFiles() {
    const dir = await mkdtemp(join(tmpdir(), 'vsockmesh-units-'));
    const etc = join(dir, 'etc');
    const state = join(dir, 'state');
    await mkdir(join(etc, 'tls'), { recursive: true });
    await mkdir(state, { mode: 0o700 });
    await chown(dir, NOBODY, NOBODY);
    await chown(state, NOBODY, NOBODY);
    const examples = join(root, 'deploy/examples');
    for (const [from, to] of [['mesh.yaml', 'mesh.yaml'], ['inventory.yaml', 'inventory.yaml'], ['host-relay.yaml', 'host-relay.yaml'], ['sidecar-b.yaml', 'sidecar.yaml']]) {
      await copyFile(join(examples, from), join(etc, to));
    }
    const map = (arg: string) => arg.replace('/opt/vsockmesh/', `${root}/`).replace('/etc/vsockmesh/', `${etc}/`).replace('/var/lib/vsockmesh', state);
    return { dir, etc, state, map, cleanup: () => rm(dir, { recursive: true, force: true }) };
  }

  /** argv run in a fresh network namespace (lo up), then as uid/gid 65534 with the unit's bounding set, no new privileges. */
  function confined(settings: Map<string, string[]>, argv: string[]): string[] {
    const caps = settings.get('CapabilityBoundingSet')?.at(-1) ?? '';
    const bounding = ['-all', ...caps.split(/\s+/).filter(Boolean).map((c) => `+${c.toLowerCase().replace(/^cap_/, '')}`)].join(',');
    return ['unshare', '--net', 'sh', '-c', 'ip link set lo up && exec "$@"', 'sh',
      'setpriv', `--reuid=${NOBODY}`, `--regid=${NOBODY}`, '--clear-groups', `--bounding-set=${bounding}`, '--inh-caps=-all', '--no-new-privs', ...argv];
  }

  for (const [unit, role] of [['vsockmesh-control-plane.service', 'control-plane'], ['vsockmesh-vm-manager.service', 'vm-manager'], ['vsockmesh-sidecar.service', 'sidecar']] as const) {
    test(`${unit}: its commands run unprivileged with its bounding set: ready, then SIGTERM stops it with exit 0`, async (t) => {
      const files = await unitFiles();
      t.teardown(files.cleanup);
      const pki = await startTestMeshCa();
      t.teardown(() => pki.cleanup());
      const id = await pki.files(await pki.identity('cp', 'vm-manager'));
      for (const f of ['cert.pem', 'key.pem', 'ca.pem']) {
        await copyFile(join(id.dir, f), join(files.etc, 'tls', f));
        await chown(join(files.etc, 'tls', f), NOBODY, NOBODY);
      }
      const s = await serviceSettings(unit);
      for (const line of s.get('ExecStartPre') ?? []) {
        const { argv } = execArgv(line);
        const cmd = confined(s, argv.map(files.map));
        const result = spawnSync(cmd[0]!, cmd.slice(1), { encoding: 'utf8' });
        t.is(result.status, 0, `${line}\n${result.stdout}${result.stderr}`);
      }
      const [start] = s.get('ExecStart')!;
      const proc = startCommand(confined(s, execArgv(start!).argv.map(files.map)));
      t.teardown(() => proc.kill('SIGKILL'));
      const ready = await proc.waitForLine((l) => l.msg === `${role} ready`, `${role} ready`, 90_000);
      t.is(ready.role, role);
      t.is(s.get('KillSignal')?.[0], 'SIGTERM');
      proc.kill('SIGTERM');
      t.deepEqual(await proc.exited, { code: 0, signal: null }, proc.stderr());
      if (role === 'control-plane') {
        // The embedded CA was generated in the state directory, private to the service's user.
        const caDir = join(files.state, 'identity', 'ca');
        const key = (await readdir(caDir)).find((f) => f.includes('key'));
        t.truthy(key, 'a CA key in the identity directory');
        const st = await stat(join(caDir, key!));
        t.is(st.mode & 0o777, 0o600);
        t.is(st.uid, NOBODY);
      }
    });
  }

  test('vsockmesh-host-relay.service: its validation runs unprivileged and accepts the example config; the module load is the one privileged step', async (t) => {
    const files = await unitFiles();
    t.teardown(files.cleanup);
    const s = await serviceSettings('vsockmesh-host-relay.service');
    const pre = (s.get('ExecStartPre') ?? []).map(execArgv);
    t.deepEqual(pre.filter((p) => p.privileged).map((p) => p.argv), [['/sbin/modprobe', 'vhost_vsock']]);
    for (const { argv } of pre.filter((p) => !p.privileged)) {
      const cmd = confined(s, argv.map(files.map));
      const result = spawnSync(cmd[0]!, cmd.slice(1), { encoding: 'utf8' });
      t.is(result.status, 0, result.stderr);
      t.regex(result.stdout, /valid host-relay config \(node hypervisor-1, vsock port 15100/);
    }
    t.is(pre.length, 2);
  });

  test('vsockmesh-capture.service: ExecStart applies the capture rules and ExecStop removes them, with CAP_NET_ADMIN only', async (t) => {
    const s = await serviceSettings('vsockmesh-capture.service');
    t.deepEqual(s.get('CapabilityBoundingSet'), ['CAP_NET_ADMIN CAP_NET_RAW']);
    const env = new Map((s.get('Environment') ?? []).map((e) => e.split('=', 2) as [string, string]));
    // In a namespace, as root with only the unit's capabilities; the sidecar's user stands in as uid 65534 (no vsockmesh user here).
    const expand = (line: string) =>
      execArgv(line).argv.flatMap((a) => (a === '$CAPTURE_ARGS' ? (env.get('CAPTURE_ARGS') ?? '').split(/\s+/).filter(Boolean) : [a === 'vsockmesh' ? String(NOBODY) : a.replace('/opt/vsockmesh/', `${root}/`)]));
    const script = 'set -e; $START; echo --- applied; iptables-save -t nat; $STOP; echo --- removed; iptables-save -t nat';
    const setpriv = 'setpriv --bounding-set=-all,+net_admin,+net_raw --inh-caps=-all --no-new-privs';
    const result = spawnSync('unshare', ['--net', 'sh', '-c', script], {
      encoding: 'utf8',
      env: { ...process.env, START: `${setpriv} ${expand(s.get('ExecStart')![0]!).join(' ')}`, STOP: `${setpriv} ${expand(s.get('ExecStop')![0]!).join(' ')}` },
    });
    t.is(result.status, 0, result.stderr);
    const [applied, removed] = result.stdout.split('--- removed');
    t.regex(applied!, new RegExp(`-A VSOCKMESH_OUTPUT -m owner --uid-owner ${NOBODY} -j RETURN`));
    t.regex(applied!, /-A VSOCKMESH_OUTPUT -p tcp -j REDIRECT --to-ports 15001/);
    t.regex(applied!, /-A OUTPUT -p tcp -j VSOCKMESH_OUTPUT/);
    t.false(removed!.includes('VSOCKMESH_OUTPUT'));
  });
}
