// The control plane and the VM manager are not the data plane: their processes
// never load the native core (vsockmesh_native.node), only the settle's trim
// addon (vsockmesh_trim.node), which a sidecar does not load. Read from the running
// process's memory map; a sidecar process, which does load it, shows that the
// check sees it. A sidecar loads neither the host relay's module, the operator
// commands (ctl, iptables), prom-client's push gateway (https, zlib) nor,
// without peer TLS, vsock listeners or HTTP requests, node:crypto, nor, without
// an HTTP listener (HTTP outbound, capture inspection, forward proxy), the HTTP
// listener stack (proxy/http/listener.js and what it loads): read
// from Node's module loader's debug log (NODE_DEBUG), which names every file
// it loads. The packages it loads at start (yaml, commander, zod, prom-client)
// come each as one file, the build's bundles in dist/node_modules/
// (proxy/cmd/bundle-packages.mjs), never file by file from the packages.

import test, { type ExecutionContext } from 'ava';
import { readFile } from 'node:fs/promises';
import { runCli, startCli, writeConfig, type CliProcess } from '../helpers/cli.js';

const ADDON = 'vsockmesh_native.node';
/** The server roles' settle addon (malloc_trim after a sync: server-trim.cc), loaded without the core. */
const TRIM_ADDON = 'vsockmesh_trim.node';
/** The packages the build bundles (proxy/cmd/bundle-packages.mjs): a file of one of them loaded from the package itself, not from dist/node_modules/. */
const UNBUNDLED = /(?<!\/dist)\/node_modules\/(?:yaml|commander|zod|prom-client|@opentelemetry)\//;

async function mapsOf(proc: CliProcess): Promise<string> {
  return readFile(`/proc/${proc.child.pid}/maps`, 'utf8');
}

async function running(t: ExecutionContext, args: string[], serving: string, wrapper: string[] = []): Promise<CliProcess> {
  const proc = startCli(args, { wrapper });
  t.teardown(() => proc.kill('SIGKILL'));
  await proc.waitForLine((l) => l.msg === serving, serving, 30_000);
  return proc;
}

test('vsockmesh control-plane serves without loading the native core', async (t) => {
  const proc = await running(t, ['control-plane', '--listen', '127.0.0.1:0', '--no-admin', '--insecure'], 'control-plane ready');
  const maps = await mapsOf(proc);
  t.false(maps.includes(ADDON));
  t.true(maps.includes(TRIM_ADDON));
});

test('vsockmesh vm-manager serves without loading the native core', async (t) => {
  const proc = await running(t, ['vm-manager', '--listen', '127.0.0.1:0', '--no-admin', '--insecure'], 'vm-manager ready');
  const maps = await mapsOf(proc);
  t.false(maps.includes(ADDON));
  t.true(maps.includes(TRIM_ADDON));
});

async function sidecarConfig(t: ExecutionContext, listener: Record<string, unknown> = {}): Promise<string> {
  const config = await writeConfig({ node: { id: 'vm-a' }, admin: null, listeners: [{ kind: 'outbound', name: 'out', port: 0, cluster: 'c', ...listener }], clusters: [{ name: 'c', endpoints: [{ address: '127.0.0.1', port: 9 }] }] });
  t.teardown(config.cleanup);
  return config.path;
}

test('a sidecar process does load it (the check above can see the addon), and not the trim addon', async (t) => {
  const proc = await running(t, ['sidecar', '-c', await sidecarConfig(t)], 'sidecar ready');
  const maps = await mapsOf(proc);
  t.true(maps.includes(ADDON));
  t.false(maps.includes(TRIM_ADDON));
});

/** The HTTP listener stack: the HTTP listener, its HTTP/1.1 and HTTP/2 halves, the forward proxy. */
const HTTP_STACK = [/\/dist\/proxy\/http\/listener\.js/, /\/dist\/proxy\/http\/http1-server\.js/, /\/dist\/proxy\/http\/h2\//, /\/dist\/proxy\/listeners\/forward-proxy\.js/];

/** node:crypto loaded, by an ES import (`node:crypto`) or a CommonJS require (`crypto`). */
const CRYPTO = /\bnode:crypto\b|built-in module crypto\b|REQUEST crypto\b/;

test('a sidecar loads neither the host relay, ctl, iptables, prom-client\'s push gateway, node:crypto nor, with L4 listeners only, the HTTP stack', async (t) => {
  const proc = await running(t, ['sidecar', '-c', await sidecarConfig(t)], 'sidecar ready', ['env', 'NODE_DEBUG=esm,module']);
  const loaded = proc.stderr();
  // The log does name the modules a sidecar needs (the check can see a file load).
  t.regex(loaded, /\/dist\/proxy\/sidecar\.js/);
  for (const pkg of ['yaml', 'commander', 'zod', 'prom-client']) t.regex(loaded, new RegExp(`/dist/node_modules/${pkg}/bundle\\.js`));
  for (const file of [/\/dist\/proxy\/host-relay\.js/, /\/dist\/xds\/ctl\.js/, /\/dist\/proxy\/cmd\/iptables\.js/, /prom-client\/lib\/pushgateway\.js/, /REQUEST https /, UNBUNDLED, CRYPTO, ...HTTP_STACK]) t.notRegex(loaded, file);
});

test('a sidecar with an HTTP listener does load the HTTP stack (the check above can see it)', async (t) => {
  const proc = await running(t, ['sidecar', '-c', await sidecarConfig(t, { protocol: 'http' })], 'sidecar ready', ['env', 'NODE_DEBUG=esm,module']);
  const loaded = proc.stderr();
  for (const file of HTTP_STACK) t.regex(loaded, file);
});

test('the operator commands are still there when the command line may reach them', async (t) => {
  const help = await runCli(['--help']);
  t.is(help.code, 0);
  t.regex(help.stdout, /^\s+ctl\b/m);
  t.regex(help.stdout, /^\s+iptables\b/m);
});
