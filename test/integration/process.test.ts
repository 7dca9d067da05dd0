// The sidecar as a process: config errors, start failures, signals and drain.

import test from 'ava';
import net from 'node:net';
import { collect, connect, startEchoServer, waitFor } from '../helpers/apps.js';
import { ADMIN_POST, adminRequest } from '../helpers/admin.js';
import { runCli, startCli, writeConfig, type CliProcess } from '../helpers/cli.js';
import { freePort } from '../helpers/haproxy.js';

function refusesConnections(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect({ host: '127.0.0.1', port });
    s.once('connect', () => {
      s.destroy();
      resolve(false);
    });
    s.once('error', (err: NodeJS.ErrnoException) => resolve(err.code === 'ECONNREFUSED'));
  });
}

/** A sidecar process with one outbound listener straight to an echo app (a direct endpoint). */
async function startDirectSidecar(t: import('ava').ExecutionContext, drainTimeout: string): Promise<{ proc: CliProcess; port: number; admin: number }> {
  const app = await startEchoServer();
  const config = await writeConfig({
    node: { id: 'vm-a' },
    admin: { port: 0 },
    drain_timeout: drainTimeout,
    listeners: [{ kind: 'outbound', name: 'out', port: 0, cluster: 'echo' }],
    clusters: [{ name: 'echo', endpoints: [{ address: '127.0.0.1', port: app.port }] }],
  });
  const proc = startCli(['sidecar', '-c', config.path]);
  t.teardown(async () => {
    proc.kill('SIGKILL');
    await proc.exited;
    await app.close();
    await config.cleanup();
  });
  // Generous: at load average 30+ on 2 cores a sidecar's start alone took over 10 s.
  const started = await proc.waitForLine((l) => l.msg === 'listener started' && l.listener === 'out', 'listener started', 60_000);
  const serving = await proc.waitForLine((l) => l.msg === 'sidecar ready', 'sidecar ready', 60_000);
  const [bound] = started.addresses as Array<{ port: number }>;
  return { proc, port: bound!.port, admin: (serving.admin as { port: number }).port };
}

test('an invalid config is refused with every problem by path, exit 2, and nothing listens', async (t) => {
  const port = await freePort();
  const config = await writeConfig({
    node: { id: 'vm-a' },
    admin: { port: 0 },
    listeners: [
      { kind: 'outbound', name: 'out', port, cluster: 'missing' },
      { kind: 'inbound', name: 'in', port: 70000, ports: [8080], header_timeout: 'later' },
    ],
  });
  t.teardown(() => config.cleanup());
  const result = await runCli(['sidecar', '-c', config.path]);
  t.is(result.code, 2);
  t.regex(result.stderr, /invalid config, not starting/);
  t.regex(result.stderr, /listeners\[1\]\.port: must be an integer 0\.\.65535/);
  t.regex(result.stderr, /listeners\[1\]\.header_timeout: "later" is not a duration/);
  t.regex(result.stderr, /listeners\[0\]\.cluster: unknown cluster "missing"/);
  // Probing the port would race with other tests that take free ports; the process says what it bound.
  t.notRegex(result.stdout, /listener started/, 'no listener was opened');
});

test('cross-reference problems are reported by path too', async (t) => {
  const config = await writeConfig({
    node: { id: 'vm-a' },
    listeners: [{ kind: 'outbound', name: 'out', port: 0, cluster: 'missing' }],
  });
  t.teardown(() => config.cleanup());
  const result = await runCli(['sidecar', '-c', config.path]);
  t.is(result.code, 2);
  t.regex(result.stderr, /listeners\[0\]\.cluster: unknown cluster "missing"/);
});

test('validate-config accepts the example configs and rejects a bad one with exit 2', async (t) => {
  for (const file of ['deploy/examples/sidecar-a.yaml', 'deploy/examples/sidecar-b.yaml', 'deploy/examples/sidecar-xds.yaml']) {
    const ok = await runCli(['validate-config', file]);
    t.is(ok.code, 0, ok.stderr);
    t.regex(ok.stdout, /valid/);
  }
  const relay = await runCli(['validate-config', '--role', 'host-relay', 'deploy/examples/host-relay.yaml']);
  t.is(relay.code, 0, relay.stderr);
  t.regex(relay.stdout, /valid host-relay config/);
  const bad = await writeConfig('node: {id: vm-a}\nclusters: [{name: c, endpoints: []}]\n');
  t.teardown(() => bad.cleanup());
  const result = await runCli(['validate-config', bad.path]);
  t.is(result.code, 2);
  t.regex(result.stderr, /clusters\[0\]\.endpoints: must list at least one endpoint/);
});

test('a missing config file is one clear error', async (t) => {
  const result = await runCli(['sidecar', '-c', '/nonexistent/sidecar.yaml']);
  t.is(result.code, 2);
  t.regex(result.stderr, /\/nonexistent\/sidecar\.yaml: 1 problem:\n {2}cannot read the file: ENOENT/);
});

test('a port already in use fails the start with exit 1 and a clear message', async (t) => {
  const holder = net.createServer();
  await new Promise<void>((r) => holder.listen(0, '127.0.0.1', r));
  const { port } = holder.address() as net.AddressInfo;
  const config = await writeConfig({
    node: { id: 'vm-a' },
    admin: { port: 0 },
    listeners: [{ kind: 'inbound', name: 'in', addresses: ['127.0.0.1'], port, ports: [8080] }],
  });
  t.teardown(async () => {
    await new Promise((r) => holder.close(r));
    await config.cleanup();
  });
  const result = await runCli(['sidecar', '-c', config.path]);
  t.is(result.code, 1);
  t.regex(result.stdout, /listener \\"in\\": cannot listen on .*EADDRINUSE.*another process holds the port/);
});

/**
 * A connection open when `drain` starts the drain still relays and completes,
 * new connections are refused, and the process exits 0 with nothing aborted.
 */
async function drainsThenExits(t: import('ava').ExecutionContext, drain: (proc: CliProcess, admin: number) => Promise<void>): Promise<CliProcess> {
  const { proc, port, admin } = await startDirectSidecar(t, '30s');
  const open = await connect(port);
  const echoed: Buffer[] = [];
  open.on('data', (c: Buffer) => echoed.push(c));
  open.write('before;');
  await waitFor(() => Buffer.concat(echoed).toString() === 'before;', 'echo before the drain');

  await drain(proc, admin);
  await waitFor(() => refusesConnections(port), 'new connections refused');
  open.write('after;');
  await waitFor(() => Buffer.concat(echoed).toString() === 'before;after;', 'echo while draining');
  const seen = collect(open);
  open.end();
  t.true((await seen).ended);

  const { code } = await proc.exited;
  t.is(code, 0);
  t.like(proc.lines.find((l) => l.msg === 'drain finished'), { aborted: 0 });
  return proc;
}

test('SIGTERM drains: the open connection completes, new ones are refused, the process exits 0', async (t) => {
  const proc = await drainsThenExits(t, async (p) => {
    p.kill('SIGTERM');
    await p.waitForLine((l) => typeof l.msg === 'string' && l.msg.startsWith('draining'), 'draining');
  });
  t.true(proc.lines.some((l) => l.log === 'access' && l.outcome === 'closed' && l.bytes_to_upstream === 'before;after;'.length));
});

test('a connection still open at the drain timeout is closed and the process exits', async (t) => {
  const { proc, port } = await startDirectSidecar(t, '300ms');
  const held = await connect(port);
  const echoed: Buffer[] = [];
  held.on('data', (c: Buffer) => echoed.push(c));
  const heldSeen = collect(held);
  held.write('x');
  // The echo proves the sidecar holds the connection (not just the kernel backlog).
  await waitFor(() => Buffer.concat(echoed).toString() === 'x', 'echo through the sidecar');
  proc.kill('SIGTERM');
  const { code } = await proc.exited;
  t.is(code, 0);
  const closed = await heldSeen;
  t.true(closed.ended || closed.errorCode !== undefined, 'the held connection was closed by the sidecar');
  t.like(proc.lines.find((l) => l.msg === 'drain finished'), { aborted: 1 });
  t.true(proc.lines.some((l) => l.log === 'access' && l.outcome === 'aborted'));
});

test('POST /drain (with the admin header) drains like SIGTERM and the process exits 0, so its supervisor starts a fresh one', async (t) => {
  await drainsThenExits(t, async (proc, admin) => {
    const browser = await adminRequest(admin, 'POST', '/drain', { headers: { host: `evil.example:${admin}`, origin: 'http://evil.example', 'content-type': 'text/plain' }, body: 'x' });
    t.is(browser.status, 403, 'a web page cannot drain it');
    t.is((await adminRequest(admin, 'GET', '/ready')).status, 200);
    t.is((await adminRequest(admin, 'POST', '/drain', { headers: ADMIN_POST })).status, 202);
    await proc.waitForLine((l) => l.msg === 'the process exits when the drain has finished; its supervisor starts a fresh one', 'exit announced');
  });
});

test('a second signal stops at once, without waiting for the drain timeout', async (t) => {
  const { proc, port } = await startDirectSidecar(t, '1h');
  const held = await connect(port);
  const echoed: Buffer[] = [];
  held.on('data', (c: Buffer) => echoed.push(c));
  const heldSeen = collect(held);
  held.write('x');
  // The echo proves the sidecar holds the connection, so the drain has one to wait for.
  await waitFor(() => Buffer.concat(echoed).toString() === 'x', 'echo through the sidecar');
  proc.kill('SIGTERM');
  await proc.waitForLine((l) => typeof l.msg === 'string' && l.msg.startsWith('draining'), 'draining');
  proc.kill('SIGINT');
  const { code } = await proc.exited;
  t.is(code, 1);
  t.true(proc.lines.some((l) => l.msg === 'second signal: stopping now'));
  const closed = await heldSeen;
  t.true(closed.ended || closed.errorCode !== undefined);
});

test('a host-relay config without a policy is refused with exit 2 (the relay denies by default, so it must say what to allow)', async (t) => {
  const config = await writeConfig({ node: { id: 'hv-1' }, listen: { port: 15100 }, policy: [] });
  t.teardown(() => config.cleanup());
  const result = await runCli(['host-relay', '-c', config.path]);
  t.is(result.code, 2);
  t.regex(result.stderr, /policy: must have at least one rule/);
  const check = await runCli(['validate-config', '--role', 'host-relay', config.path]);
  t.is(check.code, 2);
});

test('--help documents every role and the sidecar flags', async (t) => {
  const top = await runCli(['--help']);
  t.is(top.code, 0);
  for (const role of ['sidecar', 'validate-config', 'demo', 'vm-manager', 'control-plane', 'host-relay', 'ctl']) t.regex(top.stdout, new RegExp(`\\n  ${role}\\b`));
  const sidecar = await runCli(['sidecar', '--help']);
  for (const flag of ['--config', '--log-level', '--admin-port', '--drain-timeout-ms']) t.regex(sidecar.stdout, new RegExp(flag));
});

test('the demo runs end to end and reports intact traffic', async (t) => {
  const result = await runCli(['demo', '--once', '--no-vsock', '--echo-bytes', '262144']);
  t.is(result.code, 0, result.stderr);
  t.regex(result.stdout, /sent 262144 B, received 262144 B, sha256 matches/);
  t.regex(result.stdout, /HTTP 200: hello from vm-b/);
  t.regex(result.stdout, /vm-b inbound .*source_vm=vm-a authority=echo\.vm-b/);
  t.regex(result.stdout, /vm-a outbound .*echo-direct .*\(direct: no sidecar at the destination\)/);
  t.regex(result.stdout, /demo: all traffic arrived intact/);
});
