// The compiled `vsockmesh` CLI as a child process (npm test builds it first).

import type { ExecutionContext } from 'ava';
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { chown, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { stringify } from 'yaml';
import { freePort } from './haproxy.js';

/** dist/proxy/cmd/cli.js, from the sources (test/helpers) and from the compiled guest tests (dist/test/helpers). */
export const CLI = [fileURLToPath(new URL('../../dist/proxy/cmd/cli.js', import.meta.url)), fileURLToPath(new URL('../../proxy/cmd/cli.js', import.meta.url))].find((p) => p.includes('/dist/') && existsSync(p)) ?? fileURLToPath(new URL('../../dist/proxy/cmd/cli.js', import.meta.url));

function requireBuild(): void {
  if (!existsSync(CLI)) throw new Error(`${CLI} is missing: run "npm run build" first (npm test does)`);
}

export interface CliProcess {
  child: ChildProcess;
  /** JSON log lines seen on stdout so far. */
  lines: Array<Record<string, unknown>>;
  stdout(): string;
  stderr(): string;
  /** Resolves with the first log line matching, or rejects at exit/timeout. */
  waitForLine(match: (line: Record<string, unknown>) => boolean, what: string, timeoutMs?: number): Promise<Record<string, unknown>>;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  kill(signal?: NodeJS.Signals): void;
}

/** `wrapper`: a command that execs the CLI, e.g. `['prlimit', '--nofile=256:256']`. */
export function startCli(args: string[], options: { wrapper?: string[] } = {}): CliProcess {
  requireBuild();
  return startCommand([...(options.wrapper ?? []), process.execPath, CLI, ...args]);
}

/** Any command line that ends up running the CLI (e.g. a systemd unit's ExecStart), watched like startCli's. */
export function startCommand(argv: string[]): CliProcess {
  const [command, ...rest] = argv;
  const child = spawn(command!, rest, { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  /** Where the line not yet parsed starts (megabytes of logs are parsed once each, not on every chunk). */
  let parsedUpTo = 0;
  const lines: Array<Record<string, unknown>> = [];
  const listeners = new Set<() => void>();
  child.stdout!.setEncoding('utf8').on('data', (d: string) => {
    out += d;
    const end = out.lastIndexOf('\n') + 1;
    for (const p of out.slice(parsedUpTo, end).split('\n')) {
      if (!p.startsWith('{')) continue;
      try {
        lines.push(JSON.parse(p) as Record<string, unknown>);
      } catch {
        // not a JSON line
      }
    }
    parsedUpTo = Math.max(parsedUpTo, end);
    for (const l of listeners) l();
  });
  child.stderr!.setEncoding('utf8').on('data', (d: string) => (err += d));
  /** Exited, and what it wrote read to the end: 'exit' may come before the last of stdout and stderr is read (a loaded machine). */
  let finished = false;
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.on('exit', (code, signal) => {
      void outputRead(child).then(() => {
        finished = true;
        resolve({ code, signal });
        for (const l of listeners) l();
      });
    }),
  );
  const proc: CliProcess = {
    child,
    lines,
    stdout: () => out,
    stderr: () => err,
    exited,
    kill: (signal = 'SIGTERM') => {
      if (child.exitCode === null && child.signalCode === null) child.kill(signal);
    },
    waitForLine: (match, what, timeoutMs = 10_000) =>
      new Promise((resolve, reject) => {
        const check = (): void => {
          const found = lines.find(match);
          if (found) return done(() => resolve(found));
          if (finished) {
            done(() => reject(new Error(`process exited (${child.exitCode ?? child.signalCode}) before ${what}\nstdout:\n${out}\nstderr:\n${err}`)));
          }
        };
        const timer = setTimeout(() => done(() => reject(new Error(`timed out waiting for ${what}\nstdout:\n${out}\nstderr:\n${err}`))), timeoutMs);
        const done = (then: () => void): void => {
          clearTimeout(timer);
          listeners.delete(check);
          then();
        };
        listeners.add(check);
        check();
      }),
  };
  return proc;
}

/**
 * Resolves once the child's stdout and stderr ended, or 2 s after its exit
 * (a grandchild that inherited them may hold them open).
 */
function outputRead(child: ChildProcess): Promise<void> {
  const ended = [child.stdout!, child.stderr!].map((s) => (s.readableEnded || s.destroyed ? Promise.resolve() : new Promise<void>((resolve) => s.once('close', () => resolve()).once('end', () => resolve()))));
  return new Promise<void>((resolve) => {
    const cap = setTimeout(resolve, 2_000);
    void Promise.all(ended).then(() => {
      clearTimeout(cap);
      resolve();
    });
  });
}

/** Runs the CLI to completion. */
export async function runCli(args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const proc = startCli(args);
  const { code } = await proc.exited;
  return { code, stdout: proc.stdout(), stderr: proc.stderr() };
}

/** Writes a config object as YAML into a fresh temp dir; returns its path and a cleanup. */
export async function writeConfig(config: unknown): Promise<{ path: string; cleanup: () => Promise<void> }> {
  const dir = await mkdtemp(join(tmpdir(), 'vsockmesh-test-'));
  const path = join(dir, 'sidecar.yaml');
  await writeFile(path, typeof config === 'string' ? config : stringify(config));
  return { path, cleanup: () => rm(dir, { recursive: true, force: true }) };
}

/**
 * A sidecar process from `config`, once it logged `sidecar ready`: its process and admin port.
 * The config file and the process go with the test. `wrapper` execs the CLI (e.g. in a network
 * namespace, as another user); `owner` (a uid, with the same gid) then owns the config file.
 */
export async function startSidecarCli(
  t: ExecutionContext,
  config: unknown,
  options: { wrapper?: string[]; owner?: number; readyTimeoutMs?: number } = {},
): Promise<{ proc: CliProcess; admin: number }> {
  const file = await writeConfig(config);
  t.teardown(() => file.cleanup());
  // A sidecar run as another user (`wrapper` switches to it) must read its config.
  if (options.owner !== undefined) for (const p of [dirname(file.path), file.path]) await chown(p, options.owner, options.owner);
  const proc = startCli(['sidecar', '-c', file.path], { wrapper: options.wrapper });
  t.teardown(() => proc.kill('SIGKILL'));
  const ready = await proc.waitForLine((l) => l.msg === 'sidecar ready', 'sidecar ready', options.readyTimeoutMs ?? 60_000);
  return { proc, admin: (ready.admin as { port: number }).port };
}

/** `vsockmesh control-plane` with `args` (no admin endpoint), once it serves; its gRPC address. */
export async function startControlPlane(args: string[]): Promise<{ proc: CliProcess; address: string }> {
  const proc = startCli(['control-plane', '--no-admin', ...args]);
  try {
    const line = await proc.waitForLine((l) => l.msg === 'control-plane serving', 'control-plane serving', 60_000);
    return { proc, address: `127.0.0.1:${String(line.port)}` };
  } catch (err) {
    proc.kill('SIGKILL');
    throw err;
  }
}

/**
 * A plain-text control plane in `dir` with an empty mesh file (its state kept in
 * `dir`) and an inventory of `vms` on one host-relay hypervisor `hv-1`, killed
 * at the test's end; `ctl` runs `vsockmesh ctl` against it.
 */
export async function startInventoryPlane(
  t: ExecutionContext,
  dir: string,
  vms: Array<Record<string, unknown>>,
): Promise<{ address: string; ctl: (...args: string[]) => ReturnType<typeof runCli> }> {
  await writeFile(join(dir, 'mesh.yaml'), stringify({ services: [] }));
  await writeFile(join(dir, 'inventory.yaml'), stringify({ hypervisors: [{ id: 'hv-1', vsock_mode: 'host-relay', relay_port: 15100 }], vms }));
  const plane = await startControlPlane(['--insecure', '--listen', `127.0.0.1:${await freePort()}`, '--mesh', join(dir, 'mesh.yaml'), '--inventory', join(dir, 'inventory.yaml'), '--mesh-state-file', join(dir, 'mesh-state.json')]);
  t.teardown(() => plane.proc.kill('SIGKILL'));
  return { address: plane.address, ctl: (...args: string[]) => runCli(['ctl', '--insecure', '--control-plane', plane.address, '--timeout-ms', '30000', ...args]) };
}
