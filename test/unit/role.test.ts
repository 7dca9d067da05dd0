// The role runner (proxy/runtime/role.ts) with the process replaced: exits
// and signals are recorded instead of happening; the server is a fake that
// records what was asked of it; the runner's admin endpoint is real (port 0).

import test from 'ava';
import { EventEmitter } from 'node:events';
import { ConfigError } from '../../proxy/runtime/config-file.js';
import { createLogger, type Logger } from '../../proxy/runtime/log.js';
import { notStartingText, readyFields, runRole, type RoleIo } from '../../proxy/runtime/role.js';
import { ADMIN_POST, adminRequest } from '../helpers/admin.js';
import { waitFor } from '../helpers/apps.js';
import { LogCapture } from '../helpers/sidecars.js';

/** The process as the runner sees it: exits and stderr recorded, signals sent by the test. */
function fakeProcess() {
  const signals = new EventEmitter();
  const exits: number[] = [];
  let stderr = '';
  const io: RoleIo = {
    exit: async (_logger, code) => void exits.push(code),
    exitNow: (code) => void exits.push(code),
    stderr: (text) => void (stderr += text),
    signals,
  };
  return { io, exits, signals, stderr: () => stderr, signal: (s: NodeJS.Signals) => signals.emit(s, s) };
}

/** A server that records its lifecycle calls; `drainGate` holds a drain open until released. */
function fakeServer(options: { failStart?: Error } = {}) {
  const calls: string[] = [];
  let release!: () => void;
  const drainGate = new Promise<void>((r) => (release = r));
  return {
    calls,
    release: () => release(),
    server: {
      start: async () => {
        calls.push('start');
        if (options.failStart) throw options.failStart;
      },
      drain: async () => {
        calls.push('drain');
        await drainGate;
      },
      stop: async () => void calls.push('stop'),
    },
  };
}

function logger(): { logger: Logger; logs: LogCapture } {
  const logs = new LogCapture();
  return { logger: createLogger({ level: 'info', destination: logs }), logs };
}

const adminTarget = { renderStats: async () => 'stats 1\n', statsContentType: 'text/plain', configDump: () => ({ dumped: true }) };

test('a role that cannot start for its input says so on stderr and exits 2; an invalid config lists its problems', (t) => {
  t.is(notStartingText('vm-manager', new Error('inventory.yaml: vms[1].vsock_cid: 3 is already used')), 'vsockmesh vm-manager: not starting: inventory.yaml: vms[1].vsock_cid: 3 is already used\n');
  const config = new ConfigError('sidecar.yaml', ['listeners[0].port: required']);
  t.is(notStartingText('sidecar', config), `vsockmesh sidecar: invalid config, not starting\n${config.message}\n`);
});

test('the ready line names the role, the process and the admin endpoint; the role\'s own fields win', (t) => {
  t.deepEqual(readyFields('vm-manager', 42, { address: '127.0.0.1', port: 15400 }, {}), { role: 'vm-manager', pid: 42, admin: { address: '127.0.0.1', port: 15400 } });
  t.deepEqual(readyFields('sidecar', 42, undefined, { node: 'vm-a', admin: { address: '127.0.0.1', port: 9901 } }), { role: 'sidecar', pid: 42, admin: { address: '127.0.0.1', port: 9901 }, node: 'vm-a' });
  t.deepEqual(readyFields('control-plane', 42, undefined, {}), { role: 'control-plane', pid: 42, admin: null });
});

test('prepare fails: exit 2 with the reason, nothing started, no signal handled', async (t) => {
  const proc = fakeProcess();
  const fake = fakeServer();
  await runRole({ name: 'control-plane', prepare: async () => Promise.reject(new Error('mesh.yaml: cannot read the file')) }, proc.io);
  t.deepEqual(proc.exits, [2]);
  t.is(proc.stderr(), 'vsockmesh control-plane: not starting: mesh.yaml: cannot read the file\n');
  t.deepEqual(fake.calls, []);
  t.is(proc.signals.listenerCount('SIGTERM'), 0);
});

test('start fails: logged as fatal, what started is stopped, exit 1', async (t) => {
  const proc = fakeProcess();
  const fake = fakeServer({ failStart: new Error('cannot listen on 127.0.0.1:1: EACCES') });
  const { logger: log, logs } = logger();
  await runRole({ name: 'vm-manager', prepare: async () => ({ logger: log, server: fake.server }) }, proc.io);
  t.deepEqual(fake.calls, ['start', 'stop']);
  t.deepEqual(proc.exits, [1]);
  t.like(logs.lines.find((l) => l.level === 'fatal'), { msg: 'vm-manager failed to start: cannot listen on 127.0.0.1:1: EACCES' });
  t.false(logs.lines.some((l) => l.msg === 'vm-manager ready'));
});

test('the admin endpoint failing to start stops the server too (exit 1)', async (t) => {
  const proc = fakeProcess();
  const fake = fakeServer();
  const { logger: log, logs } = logger();
  // A port the admin cannot bind: taken by the first runner's admin endpoint.
  const first = fakeProcess();
  const holder = fakeServer();
  await runRole({ name: 'first', prepare: async () => ({ logger: log, server: holder.server, admin: { address: '127.0.0.1', port: 0, target: adminTarget } }) }, first.io);
  const port = (logs.lines.find((l) => l.msg === 'first ready')!.admin as { port: number }).port;
  t.teardown(async () => {
    first.signal('SIGTERM');
    first.signal('SIGTERM');
    await waitFor(() => first.exits.length > 0, 'the first runner to stop');
  });
  await runRole({ name: 'second', prepare: async () => ({ logger: log, server: fake.server, admin: { address: '127.0.0.1', port, target: adminTarget } }) }, proc.io);
  t.deepEqual(fake.calls, ['start', 'stop']);
  t.deepEqual(proc.exits, [1]);
  t.regex(String(logs.lines.find((l) => l.level === 'fatal')?.msg), /^second failed to start: admin endpoint: cannot listen on 127\.0\.0\.1:\d+: EADDRINUSE$/);
});

test('ready: one line with the role\'s fields; the first signal drains, stops and exits 0', async (t) => {
  const proc = fakeProcess();
  const fake = fakeServer();
  const { logger: log, logs } = logger();
  await runRole({ name: 'sidecar', prepare: async () => ({ logger: log, server: fake.server, ready: () => ({ node: 'vm-a', admin: null }) }) }, proc.io);
  t.like(logs.lines.filter((l) => l.msg === 'sidecar ready'), [{ role: 'sidecar', node: 'vm-a', admin: null, pid: process.pid }]);
  t.deepEqual(fake.calls, ['start']);
  t.deepEqual([proc.signals.listenerCount('SIGTERM'), proc.signals.listenerCount('SIGINT')], [1, 1], 'signals are handled once ready');
  proc.signal('SIGTERM');
  t.deepEqual(fake.calls, ['start', 'drain'], 'stop waits for the drain');
  fake.release();
  await waitFor(() => proc.exits.length > 0, 'the exit');
  t.deepEqual(fake.calls, ['start', 'drain', 'stop']);
  t.deepEqual(proc.exits, [0]);
});

test('a second signal during the drain stops at once and exits 1 (the drain ending later changes nothing)', async (t) => {
  const proc = fakeProcess();
  const fake = fakeServer();
  const { logger: log, logs } = logger();
  await runRole({ name: 'host-relay', prepare: async () => ({ logger: log, server: fake.server }) }, proc.io);
  proc.signal('SIGINT');
  proc.signal('SIGTERM');
  await waitFor(() => proc.exits.length > 0, 'the exit');
  t.deepEqual(proc.exits, [1]);
  t.deepEqual(fake.calls, ['start', 'drain', 'stop']);
  t.true(logs.lines.some((l) => l.msg === 'second signal: stopping now'));
  fake.release();
  await new Promise((r) => setImmediate(r));
  t.deepEqual(proc.exits, [1]);
});

test('the runner\'s admin endpoint: /ready follows the role (200 serving, 503 draining), POST /drain ends the process with 0', async (t) => {
  const proc = fakeProcess();
  const fake = fakeServer();
  const { logger: log, logs } = logger();
  await runRole({ name: 'vm-manager', prepare: async () => ({ logger: log, server: fake.server, admin: { address: '127.0.0.1', port: 0, target: adminTarget } }) }, proc.io);
  const ready = logs.lines.find((l) => l.msg === 'vm-manager ready')!;
  const port = (ready.admin as { port: number }).port;
  t.like(ready, { role: 'vm-manager', admin: { address: '127.0.0.1' } });
  t.like(await adminRequest(port, 'GET', '/ready'), { status: 200, body: 'serving\n' });
  t.like(await adminRequest(port, 'GET', '/stats'), { status: 200, body: 'stats 1\n' });
  t.deepEqual(JSON.parse((await adminRequest(port, 'GET', '/config_dump')).body), { dumped: true });
  t.is((await adminRequest(port, 'POST', '/drain', { headers: ADMIN_POST })).status, 202);
  await waitFor(() => fake.calls.includes('drain'), 'the drain');
  t.like(await adminRequest(port, 'GET', '/ready'), { status: 503, body: 'draining\n' });
  fake.release();
  await waitFor(() => proc.exits.length > 0, 'the exit');
  t.deepEqual(proc.exits, [0]);
  t.deepEqual(fake.calls, ['start', 'drain', 'stop']);
  await t.throwsAsync(adminRequest(port, 'GET', '/ready'), { code: 'ECONNREFUSED' }, 'the admin endpoint stopped with the server');
});

test('a server with its own admin endpoint drains the process through prepare\'s drainThenExit', async (t) => {
  const proc = fakeProcess();
  const fake = fakeServer();
  const { logger: log } = logger();
  let drainThenExit!: () => Promise<void>;
  await runRole(
    {
      name: 'sidecar',
      prepare: async (control) => {
        drainThenExit = () => control.drainThenExit();
        return { logger: log, server: fake.server };
      },
    },
    proc.io,
  );
  const done = drainThenExit();
  t.is(drainThenExit(), drainThenExit(), 'one drain, whoever asks again');
  fake.release();
  await done;
  t.deepEqual(proc.exits, [0]);
  t.deepEqual(fake.calls, ['start', 'drain', 'stop']);
});

test('an admin endpoint with port null (--no-admin) is not served, and the ready line says so', async (t) => {
  const proc = fakeProcess();
  const fake = fakeServer();
  const { logger: log, logs } = logger();
  await runRole({ name: 'control-plane', prepare: async () => ({ logger: log, server: fake.server, admin: { address: '127.0.0.1', port: null, target: adminTarget } }) }, proc.io);
  t.like(logs.lines.find((l) => l.msg === 'control-plane ready'), { role: 'control-plane', admin: null });
  proc.signal('SIGTERM');
  fake.release();
  await waitFor(() => proc.exits.length > 0, 'the exit');
  t.deepEqual(proc.exits, [0]);
});
