// `vsockmesh demo`: the embedded default. Two sidecars (vm-a, vm-b) and two
// sample apps on loopback; sends traffic and prints the path each connection took.

import { createHash, randomBytes } from 'node:crypto';
import http from 'node:http';
import net from 'node:net';
import { Writable } from 'node:stream';
import { parseSidecarConfig } from './config/load.js';
import { createLogger, formatAddress } from './log.js';
import { Sidecar } from './sidecar.js';

export interface DemoOptions {
  once: boolean;
  echoBytes: number;
  /** Where the demo's human-readable lines go (default stdout). */
  out?: NodeJS.WritableStream;
}

interface AccessEntry {
  node: string;
  [key: string]: unknown;
}

export async function runDemo(options: DemoOptions): Promise<void> {
  const out = options.out ?? process.stdout;
  const say = (line = ''): void => void out.write(`${line}\n`);
  const access: AccessEntry[] = [];
  const waiters: Array<() => void> = [];
  const logSink = (node: string) =>
    new Writable({
      write(chunk: Buffer, _enc, done) {
        for (const line of chunk.toString('utf8').split('\n')) {
          if (!line) continue;
          const entry = JSON.parse(line) as Record<string, unknown>;
          if (entry.log === 'access') {
            access.push({ ...entry, node });
            for (const w of waiters.splice(0)) w();
          } else if (entry.level === 'warn' || entry.level === 'error' || entry.level === 'fatal') {
            say(`  ! ${node}: ${String(entry.msg)}`);
          }
        }
        done();
      },
    });

  const echoApp = net.createServer({ allowHalfOpen: true }, (s) => s.pipe(s));
  const httpApp = http.createServer((req, res) => {
    res.writeHead(200, { 'content-type': 'text/plain' });
    res.end(`hello from vm-b: ${req.method} ${req.url}\n`);
  });
  await listen(echoApp);
  await listen(httpApp);
  const echoPort = (echoApp.address() as net.AddressInfo).port;
  const httpPort = (httpApp.address() as net.AddressInfo).port;

  const sidecarB = new Sidecar(
    parseSidecarConfig({
      node: { id: 'vm-b' },
      admin: { port: 0 },
      listeners: [{ kind: 'inbound', name: 'inbound', addresses: ['127.0.0.1'], port: 0, ports: [echoPort, httpPort] }],
    }),
    { logger: createLogger({ level: 'info', destination: logSink('vm-b') }) },
  );
  await sidecarB.start();
  const inbound = sidecarB.listenerAddress('inbound');
  const peer = { address: inbound.address, port: inbound.port };
  const sidecarA = new Sidecar(
    parseSidecarConfig({
      node: { id: 'vm-a' },
      admin: { port: 0 },
      listeners: [
        { kind: 'outbound', name: 'echo', port: 0, cluster: 'echo' },
        { kind: 'outbound', name: 'web', port: 0, cluster: 'web' },
        { kind: 'outbound', name: 'echo-direct', port: 0, cluster: 'echo-direct' },
      ],
      clusters: [
        { name: 'echo', authority: 'echo.vm-b', endpoints: [{ address: '127.0.0.1', port: echoPort, vm_id: 'vm-b', peer }] },
        { name: 'web', authority: 'web.vm-b', endpoints: [{ address: '127.0.0.1', port: httpPort, vm_id: 'vm-b', peer }] },
        { name: 'echo-direct', endpoints: [{ address: '127.0.0.1', port: echoPort }] },
      ],
    }),
    { logger: createLogger({ level: 'info', destination: logSink('vm-a') }) },
  );
  await sidecarA.start();

  const addr = (a: { address: string; port: number } | undefined): string => (a ? formatAddress(a.address, a.port) : '-');
  say('vsockmesh demo: two sidecars on loopback, vm-a (client side) and vm-b (server side)');
  say('  transport: tcp (vsock comes with the vsock transport; every hop here is loopback TCP)');
  say(`  echo app      ${addr({ address: '127.0.0.1', port: echoPort })}  on vm-b`);
  say(`  http app      ${addr({ address: '127.0.0.1', port: httpPort })}  on vm-b`);
  say(`  sidecar vm-b  inbound ${addr(inbound)} (declared ports ${echoPort}, ${httpPort}), admin http://${addr(sidecarB.adminAddress())}`);
  say(
    `  sidecar vm-a  outbound echo ${addr(sidecarA.listenerAddress('echo'))}, web ${addr(sidecarA.listenerAddress('web'))}, ` +
      `echo-direct ${addr(sidecarA.listenerAddress('echo-direct'))}, admin http://${addr(sidecarA.adminAddress())}`,
  );
  say();

  const waitForAccess = async (count: number): Promise<void> => {
    const deadline = Date.now() + 5_000;
    while (access.length < count && Date.now() < deadline) {
      await new Promise<void>((resolve) => {
        waiters.push(resolve);
        setTimeout(resolve, 100).unref();
      });
    }
  };
  const describe = (from: number): void => {
    for (const e of access.slice(from)) {
      const bytes = `${String(e.bytes_to_upstream)} B up, ${String(e.bytes_to_downstream)} B down`;
      const path = e.direction === 'outbound' ? `${String(e.src)} -> ${e.node}:${String(e.listener)} -> ${String(e.upstream)}` : `${String(e.peer)} -> ${e.node}:${String(e.listener)} -> ${String(e.upstream)}`;
      const extra = e.direction === 'inbound' ? ` source_vm=${String(e.source_vm ?? '-')} authority=${String(e.authority ?? '-')}` : e.route === 'direct' ? ' (direct: no sidecar at the destination)' : ' (PROXY v2 header to the peer sidecar)';
      say(`      ${e.node} ${String(e.direction).padEnd(8)} ${path}  transport=${String(e.transport)}  ${bytes}  outcome=${String(e.outcome)}${extra}`);
    }
  };

  let failures = 0;
  let seen = 0;
  say(`[1] echo, ${options.echoBytes} bytes: app -> vm-a -> vm-b -> echo app`);
  const echo = await echoThrough(sidecarA.listenerAddress('echo'), options.echoBytes);
  say(`    sent ${echo.sent} B, received ${echo.received} B, sha256 ${echo.match ? 'matches' : 'DIFFERS'}`);
  if (!echo.match) failures++;
  await waitForAccess(seen + 2);
  describe(seen);
  seen = access.length;

  say(`[2] http GET / : app -> vm-a -> vm-b -> http app`);
  const web = await httpGet(sidecarA.listenerAddress('web'));
  say(`    HTTP ${web.status}: ${web.body.trim()}`);
  if (web.status !== 200) failures++;
  await waitForAccess(seen + 2);
  describe(seen);
  seen = access.length;

  say(`[3] echo, direct endpoint (no sidecar at the destination): app -> vm-a -> echo app`);
  const direct = await echoThrough(sidecarA.listenerAddress('echo-direct'), 64 * 1024);
  say(`    sent ${direct.sent} B, received ${direct.received} B, sha256 ${direct.match ? 'matches' : 'DIFFERS'}`);
  if (!direct.match) failures++;
  await waitForAccess(seen + 1);
  describe(seen);
  say();

  const stop = async (): Promise<void> => {
    await sidecarA.stop();
    await sidecarB.stop();
    await new Promise((r) => echoApp.close(r));
    httpApp.closeAllConnections();
    await new Promise((r) => httpApp.close(r));
  };
  if (failures > 0) {
    say(`demo: ${failures} check(s) failed`);
    await stop();
    process.exitCode = 1;
    return;
  }
  if (options.once) {
    say('demo: all traffic arrived intact');
    await stop();
    return;
  }
  say('serving until Ctrl-C; try:');
  say(`  curl http://${addr(sidecarA.listenerAddress('web'))}/hello`);
  say(`  echo hello | socat - TCP:${addr(sidecarA.listenerAddress('echo'))}`);
  say(`  curl http://${addr(sidecarA.adminAddress())}/stats`);
  say(`  curl http://${addr(sidecarB.adminAddress())}/config_dump`);
  const shown = { count: access.length };
  const timer = setInterval(() => {
    if (access.length > shown.count) {
      describe(shown.count);
      shown.count = access.length;
    }
  }, 200);
  await new Promise<void>((resolve) => {
    const onSignal = (): void => {
      process.off('SIGINT', onSignal);
      process.off('SIGTERM', onSignal);
      resolve();
    };
    process.on('SIGINT', onSignal);
    process.on('SIGTERM', onSignal);
  });
  clearInterval(timer);
  say('stopping');
  await stop();
}

function listen(server: net.Server): Promise<void> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen({ host: '127.0.0.1', port: 0 }, () => resolve());
  });
}

async function echoThrough(target: { address: string; port: number }, size: number): Promise<{ sent: number; received: number; match: boolean }> {
  const payload = randomBytes(size);
  const sentHash = createHash('sha256').update(payload).digest('hex');
  return new Promise((resolve, reject) => {
    const socket = net.connect({ host: target.address, port: target.port, allowHalfOpen: true });
    const hash = createHash('sha256');
    let received = 0;
    socket.on('data', (chunk: Buffer) => {
      received += chunk.length;
      hash.update(chunk);
    });
    socket.on('end', () => {
      socket.end();
      resolve({ sent: size, received, match: hash.digest('hex') === sentHash });
    });
    socket.on('error', reject);
    socket.end(payload);
  });
}

function httpGet(target: { address: string; port: number }): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = http.get({ host: target.address, port: target.port, path: '/', agent: false }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => (body += d));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.on('error', reject);
  });
}
