// A real HAProxy process for tests and benchmarks: a config written into a
// fresh temp dir, `haproxy -f cfg -db` (foreground) as a child process, ready
// once every frontend accepts connections, stopped with its temp dir removed.
// Loopback only; ports are picked free (bind port 0, close) or given by the caller.

import { spawn, type ChildProcess } from 'node:child_process';
import { accessSync, constants, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';

export const HAPROXY_MISSING = 'haproxy not installed: apt-get install -y haproxy';

/**
 * One log line per connection (TCP) or request (HTTP), written to stdout.
 * With `accept-proxy`, `client` and `frontend` are the source and destination
 * the PROXY header carried.
 */
export const HAPROXY_LOG_FORMAT =
  'haproxy-log proxy=%f client=%ci:%cp frontend=%fi:%fp backend=%b/%s bytes_in=%U bytes_out=%B term=%ts';

export interface HaproxyLogLine {
  proxy: string;
  client: string;
  frontend: string;
  backend: string;
  bytesIn: number;
  bytesOut: number;
  term: string;
  raw: string;
}

export function parseHaproxyLog(line: string): HaproxyLogLine | undefined {
  const m = /haproxy-log proxy=(\S+) client=(\S+) frontend=(\S+) backend=(\S+) bytes_in=(\d+) bytes_out=(\d+) term=(\S+)/.exec(line);
  if (!m) return undefined;
  return { proxy: m[1]!, client: m[2]!, frontend: m[3]!, backend: m[4]!, bytesIn: Number(m[5]), bytesOut: Number(m[6]), term: m[7]!, raw: line };
}

/** Where the haproxy binary is (Debian puts it in /usr/sbin, often not on a user's PATH); throws loudly if absent. */
export function haproxyBinary(): string {
  const dirs = [...(process.env.PATH ?? '').split(path.delimiter), '/usr/sbin', '/usr/local/sbin', '/sbin'];
  for (const dir of dirs) {
    if (!dir) continue;
    const candidate = path.join(dir, 'haproxy');
    try {
      accessSync(candidate, constants.X_OK);
      return candidate;
    } catch {
      // not here
    }
  }
  throw new Error(HAPROXY_MISSING);
}

/**
 * A free loopback port for a server that binds it later (a port pushed in
 * config, a HAProxy section). Racy by nature, so it is taken below the
 * kernel's ephemeral range (32768-60999 on Linux): a port 0 bind or an
 * outgoing connection elsewhere in the run cannot take it between this check
 * and its use. A process never hands out the same port twice.
 */
export async function freePort(host = '127.0.0.1'): Promise<number> {
  for (let attempt = 0; attempt < 200; attempt++) {
    const port = FREE_PORT_LOW + Math.floor(Math.random() * (FREE_PORT_HIGH - FREE_PORT_LOW));
    if (handedOut.has(port)) continue;
    if (await bindable(host, port)) {
      handedOut.add(port);
      return port;
    }
  }
  throw new Error(`no free port between ${FREE_PORT_LOW} and ${FREE_PORT_HIGH} on ${host} after 200 attempts`);
}

const FREE_PORT_LOW = 20_000;
const FREE_PORT_HIGH = 32_768;
const handedOut = new Set<number>();

function bindable(host: string, port: number): Promise<boolean> {
  const server = net.createServer();
  return new Promise((resolve) => {
    server.once('error', () => resolve(false));
    server.listen({ host, port, exclusive: true }, () => server.close(() => resolve(true)));
  });
}

export interface Upstream {
  address: string;
  port: number;
}

// ---- section builders -------------------------------------------------------

/** (a) TCP mode: connections to `bindPort` go to `server` with a PROXY v2 header first. */
export function sendProxyV2Listen(
  name: string,
  options: { bindPort: number; server: Upstream; check?: boolean; checkInterMs?: number; proxyV2Options?: string[] },
): string {
  const check = options.check ? ` check check-send-proxy inter ${options.checkInterMs ?? 200}ms` : '';
  const ppOptions = options.proxyV2Options?.length ? ` proxy-v2-options ${options.proxyV2Options.join(',')}` : '';
  return [
    `listen ${name}`,
    '  mode tcp',
    `  bind 127.0.0.1:${options.bindPort}`,
    ...(options.check ? ['  option log-health-checks'] : []),
    `  server s1 ${options.server.address}:${options.server.port} send-proxy-v2${ppOptions}${check}`,
  ].join('\n');
}

/** (b) TCP mode: `bindPort` requires a PROXY (v1 or v2) header (`accept-proxy`), then forwards to `server` (no header). */
export function acceptProxyListen(name: string, options: { bindPort: number; server: Upstream }): string {
  return [`listen ${name}`, '  mode tcp', `  bind 127.0.0.1:${options.bindPort} accept-proxy`, `  server s1 ${options.server.address}:${options.server.port}`].join('\n');
}

/** (c) HTTP mode: HAProxy answers every request itself with 200 "ok" (a fast C backend). */
export function httpOkListen(name: string, options: { bindPort: number; log?: boolean }): string {
  return [
    `listen ${name}`,
    '  mode http',
    `  bind 127.0.0.1:${options.bindPort}`,
    ...(options.log === false ? ['  no log'] : []),
    '  http-request return status 200 content-type text/plain string ok',
  ].join('\n');
}

/** Plain TCP mode forwarding (no PROXY header either side). */
export function tcpListen(name: string, options: { bindPort: number; server: Upstream }): string {
  return [`listen ${name}`, '  mode tcp', `  bind 127.0.0.1:${options.bindPort}`, `  server s1 ${options.server.address}:${options.server.port}`].join('\n');
}

export interface HaproxyConfigOptions {
  /** `listen` / `frontend` / `backend` sections (see the builders above). */
  sections: string[];
  /** Threads of the one process (default 1: one process, one thread, like a sidecar). */
  nbthread?: number;
  /** Global and per-frontend maxconn (default 4096: room for well over 1,000 relayed connections; HAProxy needs ~2 fds per connection plus margin, within `ulimit -n`). */
  maxconn?: number;
  /** Client/server inactivity timeout (default 30s). */
  idleTimeout?: string;
  /** Log one line per connection to stdout (default true). */
  log?: boolean;
}

export function haproxyConfig(options: HaproxyConfigOptions): string {
  const maxconn = options.maxconn ?? 4096;
  const idle = options.idleTimeout ?? '30s';
  const log = options.log ?? true;
  return [
    'global',
    ...(log ? ['  log stdout format raw local0 info'] : []),
    `  maxconn ${maxconn}`,
    `  nbthread ${options.nbthread ?? 1}`,
    '',
    'defaults',
    '  mode tcp',
    ...(log ? ['  log global'] : []),
    '  option dontlognull',
    `  maxconn ${maxconn}`,
    '  timeout connect 5s',
    `  timeout client ${idle}`,
    `  timeout server ${idle}`,
    '  timeout http-request 10s',
    '  timeout check 2s',
    `  log-format "${HAPROXY_LOG_FORMAT}"`,
    '',
    ...options.sections.flatMap((s) => [s, '']),
  ].join('\n');
}

// ---- the process ------------------------------------------------------------

export interface StartHaproxyOptions extends HaproxyConfigOptions {
  /** Ports whose accepting connections means "ready" (default: every `bind` port in the sections). */
  readyPorts?: number[];
  /** Keep stdout/stderr lines in memory (default true); false sends them to /dev/null (benchmarks). */
  captureOutput?: boolean;
  /** How long to wait for readiness (default 10 s). */
  readyTimeoutMs?: number;
}

export interface Haproxy {
  pid: number;
  configPath: string;
  /** Every stdout/stderr line so far (when captured). */
  readonly lines: string[];
  /** Parsed access-log lines so far. */
  logs(): HaproxyLogLine[];
  /** Resolves with the first log line matching, polling; rejects after `timeoutMs`. */
  waitForLog(match: (l: HaproxyLogLine) => boolean, what: string, timeoutMs?: number): Promise<HaproxyLogLine>;
  /** Kills the process, waits for its exit and removes its temp dir. Safe to call twice. */
  stop(): Promise<void>;
}

export async function startHaproxy(options: StartHaproxyOptions): Promise<Haproxy> {
  const binary = haproxyBinary();
  const dir = mkdtempSync(path.join(tmpdir(), 'vsockmesh-haproxy-'));
  const configPath = path.join(dir, 'haproxy.cfg');
  writeFileSync(configPath, haproxyConfig(options));
  const capture = options.captureOutput ?? true;
  const lines: string[] = [];
  let child: ChildProcess;
  try {
    child = spawn(binary, ['-f', configPath, '-db'], { cwd: dir, stdio: ['ignore', capture ? 'pipe' : 'ignore', capture ? 'pipe' : 'ignore'] });
  } catch (err) {
    rmSync(dir, { recursive: true, force: true });
    throw err;
  }
  for (const stream of [child.stdout, child.stderr]) {
    if (!stream) continue;
    let rest = '';
    stream.setEncoding('utf8');
    stream.on('data', (chunk: string) => {
      const parts = (rest + chunk).split('\n');
      rest = parts.pop()!;
      for (const p of parts) if (p) lines.push(p);
    });
  }
  let exited: { code: number | null; signal: NodeJS.Signals | null } | undefined;
  let spawnError: Error | undefined;
  const exit = new Promise<void>((resolve) => {
    child.once('error', (err: NodeJS.ErrnoException) => {
      spawnError = err.code === 'ENOENT' ? new Error(HAPROXY_MISSING) : err;
      if (child.pid === undefined) {
        exited ??= { code: null, signal: null };
        resolve();
      }
    });
    child.once('close', (code, signal) => {
      exited = { code, signal };
      resolve();
    });
  });

  let stopped = false;
  const stop = async (): Promise<void> => {
    if (!stopped) {
      stopped = true;
      if (exited === undefined) {
        child.kill('SIGTERM'); // HAProxy: hard stop, closes every connection at once
        const killer = setTimeout(() => child.kill('SIGKILL'), 5_000);
        await exit;
        clearTimeout(killer);
      }
      rmSync(dir, { recursive: true, force: true });
    }
  };

  const readyPorts = options.readyPorts ?? bindPorts(options.sections);
  const deadline = Date.now() + (options.readyTimeoutMs ?? 10_000);
  try {
    for (const port of readyPorts) {
      for (;;) {
        if (spawnError) throw spawnError;
        if (exited) throw new Error(`haproxy exited (code ${exited.code}, signal ${exited.signal}) before it was ready:\n${lines.join('\n')}\n--- config ---\n${haproxyConfig(options)}`);
        if (await accepts(port)) break;
        if (Date.now() > deadline) throw new Error(`haproxy not accepting on 127.0.0.1:${port} within the deadline:\n${lines.join('\n')}`);
        await new Promise((r) => setTimeout(r, 20));
      }
    }
  } catch (err) {
    await stop();
    throw err;
  }

  const logs = (): HaproxyLogLine[] => lines.map(parseHaproxyLog).filter((l): l is HaproxyLogLine => l !== undefined);
  return {
    pid: child.pid!,
    configPath,
    lines,
    logs,
    waitForLog: async (match, what, timeoutMs = 5_000) => {
      const until = Date.now() + timeoutMs;
      for (;;) {
        const found = logs().find(match);
        if (found) return found;
        if (Date.now() > until) throw new Error(`timed out waiting for haproxy log: ${what}\nhaproxy output:\n${lines.join('\n')}`);
        await new Promise((r) => setTimeout(r, 10));
      }
    },
    stop,
  };
}

/** Every `bind 127.0.0.1:PORT` port in the sections. */
export function bindPorts(sections: string[]): number[] {
  const ports: number[] = [];
  for (const s of sections) for (const m of s.matchAll(/^\s*bind\s+\S*:(\d+)/gm)) ports.push(Number(m[1]));
  return ports;
}

/** True when 127.0.0.1:port accepts a connection (closed at once). */
export function accepts(port: number, host = '127.0.0.1'): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect({ host, port });
    socket.once('connect', () => {
      socket.destroy();
      resolve(true);
    });
    socket.once('error', () => {
      socket.destroy();
      resolve(false);
    });
  });
}
