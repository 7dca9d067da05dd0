// Transparent capture between two "VMs": network namespaces A and B the test
// makes, joined by a veth pair, each with its own sidecar process (the
// compiled CLI). `vsockmesh iptables apply`, run inside A, sends an unchanged
// curl in A to B's address through A's sidecar (as uid 65534, excluded by the
// rules, so its own hop to B is not captured) and B's sidecar to B's app;
// B's app gets A's address in a PROXY v2 header (the inbound port's
// proxy_protocol); `vsockmesh iptables remove` lets curl go straight again. With inbound
// capture in B, a client that bypasses the mesh reaches B's inbound listener
// instead of the app, and is refused there (it sends no PROXY header).

import test, { type ExecutionContext } from 'ava';
import { CLI, startSidecarCli, type CliProcess } from '../helpers/cli.js';
import { waitFor } from '../helpers/apps.js';
import { metricSum } from '../helpers/admin-http.js';
import {
  A_IP,
  APP_PORT,
  B_IP,
  CAPTURE_PORT,
  NOBODY,
  accessLines as access,
  asNobody,
  curlApp,
  iptablesIn,
  missingNetnsTools,
  startClientAddressApp,
  startVmManagerIn,
  statsIn,
  twoVmInventory,
  twoVms,
  type Vm,
} from '../helpers/netns.js';

const PEER_PORT = 15006;

interface Mesh {
  a: Vm;
  b: Vm;
  sidecarA: CliProcess;
  sidecarB: CliProcess;
  /** /stats of a sidecar, read from inside its namespace (loopback: never captured). */
  stats(vm: Vm, admin: number): Promise<string>;
  adminA: number;
  adminB: number;
  /** curl in A (as root: the rules capture it) to B's app; the client address B's app saw and how, or curl's exit code. */
  curl(): Promise<{ client?: string; via?: string; code?: number }>;
  iptables(vm: Vm, args: string[]): Promise<string>;
}

/** `inspect`: A's capture listener inspects for HTTP (http_inspector), so curl's requests take the L7 path. */
async function mesh(t: ExecutionContext, { inspect = false } = {}): Promise<Mesh> {
  const { a, b } = await twoVms(t);
  // A's VM manager, in A on loopback.
  const vmmPort = await startVmManagerIn(t, a, twoVmInventory(PEER_PORT));
  await startClientAddressApp(t, b);

  const admin = { address: '127.0.0.1', port: 0 };
  // Plain text on the peer hop (peer_tls defaults to disable): this test is about capture, not TLS.
  const b1 = await startSidecarCli(
    t,
    {
      node: { id: 'vm-b' },
      admin,
      vsock: { enabled: false },
      // The app reads the original client from a PROXY v2 header, as behind HAProxy.
      listeners: [{ kind: 'inbound', name: 'inbound', addresses: ['0.0.0.0'], port: PEER_PORT, ports: [{ port: APP_PORT, proxy_protocol: true }] }],
    },
    { wrapper: b.wrapper },
  );
  const a1 = await startSidecarCli(
    t,
    {
      node: { id: 'vm-a' },
      admin,
      vsock: { enabled: false },
      vm_manager: { address: `127.0.0.1:${vmmPort}` },
      insecure: true,
      // A generous inspection timeout: curl's request line decides, not a loaded machine's clock.
      listeners: [{ kind: 'outbound', name: 'capture', addresses: ['127.0.0.1'], port: CAPTURE_PORT, cluster: 'original', ...(inspect && { http_inspector: { timeout: '5s' } }) }],
      clusters: [{ name: 'original', resolve: { original_destination: true } }],
    },
    { wrapper: asNobody(a), owner: NOBODY },
  );
  return {
    a,
    b,
    sidecarA: a1.proc,
    sidecarB: b1.proc,
    adminA: a1.admin,
    adminB: b1.admin,
    stats: statsIn,
    curl: () => curlApp(a),
    iptables: iptablesIn,
  };
}

const connections = (stats: string, listener: string) => metricSum(stats, 'vsockmesh_connections_total', { listener });

const need = missingNetnsTools();
if (need !== undefined && process.env.CI !== 'true') {
  test('transparent capture between two network namespaces: NOT RUN, this machine lacks ' + need, (t) => {
    t.log(`!!! the capture test needs ${need}; it did not run`);
    t.fail(`missing ${need}`);
  });
} else {
  test('vsockmesh iptables apply in A: an unchanged curl to B\'s address goes through both sidecars (not the sidecar\'s own hop); remove: straight again', async (t) => {
    const m = await mesh(t);
    // Before any rule: straight to B's app, which sees A's address.
    t.deepEqual(await m.curl(), { client: A_IP, via: 'socket' });
    t.is(access(m.sidecarA).length, 0);

    const applied = await m.iptables(m.a, ['apply', '--uid', String(NOBODY), '--port', String(CAPTURE_PORT)]);
    t.regex(applied, /IPv4: capture rules applied \(outbound to port 15001\)/);
    t.is(await m.iptables(m.a, ['apply', '--uid', String(NOBODY), '--port', String(CAPTURE_PORT)]), applied, 'apply again: the same, nothing added');

    const viaMesh = await m.curl();
    // B's app sees A's address: carried in the PROXY v2 header from A's sidecar to B's, and from B's sidecar to the app.
    t.deepEqual(viaMesh, { client: A_IP, via: 'proxy-header' }, `${JSON.stringify(viaMesh)}\n${m.sidecarA.stdout()}`);
    await waitFor(() => access(m.sidecarA).length === 1 && access(m.sidecarB).length === 1, 'an access line from each sidecar', 30_000);
    const [lineA] = access(m.sidecarA);
    const [lineB] = access(m.sidecarB);
    t.like(lineA, { listener: 'capture', direction: 'outbound', dst: `${B_IP}:${APP_PORT}`, upstream: `${B_IP}:${PEER_PORT}` });
    t.regex(String(lineA!.src), new RegExp(`^${A_IP.replaceAll('.', '\\.')}:\\d+$`), 'A\'s sidecar took the connection from curl on A\'s address');
    // B's sidecar knows the original client (from the PROXY v2 header) and the original destination.
    t.like(lineB, { listener: 'inbound', direction: 'inbound', dst: `${B_IP}:${APP_PORT}`, src: lineA!.src, upstream: `127.0.0.1:${APP_PORT}` });
    t.regex(String(lineB!.peer), new RegExp(`^${A_IP.replaceAll('.', '\\.')}:\\d+$`), 'the hop came from A\'s sidecar, not captured on its way out');
    // The sidecar's own connections (to B, to the VM manager) were never sent back to its capture listener.
    t.false(m.sidecarA.lines.some((l) => l.reason === 'no_original_destination'), m.sidecarA.stdout());
    t.is(connections(await m.stats(m.a, m.adminA), 'capture'), 1);
    t.is(connections(await m.stats(m.b, m.adminB), 'inbound'), 1);

    t.regex(await m.iptables(m.a, ['remove']), /IPv4: capture rules removed/);
    t.regex(await m.iptables(m.a, ['remove']), /IPv4: no capture rules to remove/, 'remove again: nothing left');
    t.false((await m.a.exec(['iptables-save', '-t', 'nat'])).stdout.includes('VSOCKMESH'));
    t.deepEqual(await m.curl(), { client: A_IP, via: 'socket' }, 'straight to B\'s app again');
    t.is(connections(await m.stats(m.a, m.adminA), 'capture'), 1, 'A\'s sidecar counted nothing more');
    t.is(connections(await m.stats(m.b, m.adminB), 'inbound'), 1, 'B\'s sidecar counted nothing more');
  });

  test('with http_inspector, curl through capture takes the L7 path: one HTTP request counted and logged on A, still carried to B with A\'s address', async (t) => {
    const m = await mesh(t, { inspect: true });
    await m.iptables(m.a, ['apply', '--uid', String(NOBODY), '--port', String(CAPTURE_PORT)]);
    const viaMesh = await m.curl();
    t.deepEqual(viaMesh, { client: A_IP, via: 'proxy-header' }, `${JSON.stringify(viaMesh)}\n${m.sidecarA.stdout()}`);
    await waitFor(() => access(m.sidecarA).length === 1, 'an access line from A', 30_000);
    t.like(access(m.sidecarA)[0], { listener: 'capture', protocol: 'http/1.1', method: 'GET', authority: `${B_IP}:${APP_PORT}`, route: 'original_destination', cluster: 'original', status: 200, upstream: `${B_IP}:${PEER_PORT}` });
    const stats = await m.stats(m.a, m.adminA);
    t.is(metricSum(stats, 'vsockmesh_http_requests_total', { listener: 'capture', route: 'original_destination', status_class: '2xx', transport: 'tcp' }), 1, stats);
    t.is(connections(stats, 'capture'), 0, 'no connection was relayed whole');
  });

  test('vsockmesh iptables apply and remove without CAP_NET_ADMIN: exit 1, one line saying so, nothing changed', async (t) => {
    const { a } = await twoVms(t);
    const before = (await a.exec(['iptables-save', '-t', 'nat'])).stdout.replace(/^#.*\n/gm, '');
    for (const action of [['apply', '--uid', '0'], ['remove']]) {
      const err = await a.exec(['setpriv', `--reuid=${NOBODY}`, `--regid=${NOBODY}`, '--clear-groups', process.execPath, CLI, 'iptables', ...action]).then(
        () => undefined,
        (e: { code?: number; stderr?: string }) => e,
      );
      t.is(err?.code, 1, action[0]);
      t.is(err?.stderr, `vsockmesh iptables ${action[0]!}: changing the nat table needs CAP_NET_ADMIN: run as root (or with that capability)\n`);
    }
    t.is((await a.exec(['iptables-save', '-t', 'nat'])).stdout.replace(/^#.*\n/gm, ''), before);
  });

  test('inbound capture in B: a client that bypasses the mesh reaches B\'s inbound listener, not the app, and is refused; through A\'s sidecar it gets in', async (t) => {
    const m = await mesh(t);
    // B's sidecar runs as root here: uid 0 is its user.
    await m.iptables(m.b, ['apply', '--uid', '0', '--inbound-port', String(PEER_PORT), '--inbound-exclude-port', '22']);
    const bypass = await m.curl();
    t.is(bypass.client, undefined, 'B\'s app was not reached straight');
    await waitFor(async () => metricSum(await m.stats(m.b, m.adminB), 'vsockmesh_header_errors_total', { listener: 'inbound' }) >= 1, 'B\'s inbound listener refused the bare connection (no PROXY header)', 30_000);
    t.is(connections(await m.stats(m.b, m.adminB), 'inbound'), 0, 'nothing relayed to the app');

    await m.iptables(m.a, ['apply', '--uid', String(NOBODY)]);
    t.deepEqual(await m.curl(), { client: A_IP, via: 'proxy-header' }, 'through both sidecars');
    t.is(connections(await m.stats(m.b, m.adminB), 'inbound'), 1);
    t.regex(await m.iptables(m.b, ['remove']), /IPv4: capture rules removed/);
    t.false((await m.b.exec(['iptables-save', '-t', 'nat'])).stdout.includes('VSOCKMESH'), 'the inbound chain and its jump are gone');
  });
}
