// client -> sidecar A (outbound) -> PROXY v2 over TCP -> sidecar B (inbound) -> app
// Every test runs on a plain hop, and again with mutual TLS between the
// sidecars (peer_tls strict): the relay semantics must not change.

import test from 'ava';
import { spawn } from 'node:child_process';
import net from 'node:net';
import { collect, connect, echoTransfer, startServer, waitFor } from '../helpers/apps.js';
import { meshTls } from '../helpers/peer-tls.js';
import { metricValue, startMesh, type Mesh } from '../helpers/sidecars.js';

for (const hop of ['plain', 'mtls'] as const) {
  const title = (text: string): string => (hop === 'plain' ? text : `mTLS: ${text}`);
  const startHopMesh = async (options: Parameters<typeof startMesh>[0] = {}): Promise<Mesh> => {
    if (hop === 'plain') return startMesh(options);
    const tls = await meshTls();
    const mesh = await startMesh({ ...options, peerTls: { a: tls.a, b: tls.b } }).catch(async (err: unknown) => {
      await tls.cleanup();
      throw err;
    });
    return {
      ...mesh,
      stop: async () => {
        await mesh.stop();
        await tls.cleanup();
      },
    };
  };

  const mib = hop === 'plain' ? 100 : 256;
  // The heavy tests run alone (ava runs serial tests first): the light ones beside them have short deadlines.
  test.serial(title(`${mib} MiB echoed through two sidecars arrives intact (sha256)`), async (t) => {
    const mesh = await startHopMesh();
    t.teardown(() => mesh.stop());
    const size = mib * 1024 * 1024;
    const result = await echoTransfer(mesh.port, size);
    t.is(result.sent, size);
    t.is(result.received, size);
    t.is(result.receivedSha256, result.sentSha256);
    await waitFor(() => mesh.a.logs.access().length === 1 && mesh.b.logs.access().length === 1, 'access logs');
    const [outbound] = mesh.a.logs.access();
    const [inbound] = mesh.b.logs.access();
    t.like(outbound, { direction: 'outbound', cluster: 'app', transport: 'tcp', bytes_to_upstream: size, bytes_to_downstream: size, outcome: 'closed' });
    t.like(inbound, { direction: 'inbound', transport: 'tcp', bytes_to_upstream: size, bytes_to_downstream: size, outcome: 'closed', source_vm: 'vm-a', authority: 'app.mesh' });
    t.is(await metricValue(mesh.a.sidecar, 'vsockmesh_bytes_total', { listener: 'out', flow: 'to_upstream' }), size);
    t.is(await metricValue(mesh.b.sidecar, 'vsockmesh_bytes_total', { listener: 'inbound', flow: 'to_downstream' }), size);
    t.is(await metricValue(mesh.a.sidecar, 'vsockmesh_connections_total', { listener: 'out', transport: 'tcp' }), 1);
    t.is(await metricValue(mesh.a.sidecar, 'vsockmesh_connections_active'), 0);
    if (hop === 'mtls') {
      t.like(outbound, { peer_identity: 'spiffe://vsockmesh.local/vm/vm-b', tls_version: 'TLSv1.3', tls_resumed: false });
      t.like(inbound, { peer_identity: 'spiffe://vsockmesh.local/vm/vm-a', tls_version: 'TLSv1.3', tls_resumed: false });
      t.is(await metricValue(mesh.b.sidecar, 'vsockmesh_peer_tls_handshakes_total', { direction: 'inbound' }), 1);
    }
  });

  test(title('the client half-closes first: the app sees FIN, can still answer, and its FIN reaches the client'), async (t) => {
    let appSawEnd = false;
    const app = await startServer((socket) => {
      const chunks: Buffer[] = [];
      socket.on('data', (c: Buffer) => chunks.push(c));
      socket.on('end', () => {
        appSawEnd = true;
        // Answer only after the client's FIN: proves the hop kept our direction open.
        socket.end(Buffer.concat([Buffer.from('after-fin:'), ...chunks]));
      });
    });
    const mesh = await startHopMesh({ app });
    t.teardown(() => mesh.stop());
    const client = await connect(mesh.port);
    const seen = collect(client);
    client.end('question');
    const { data, ended, errorCode } = await seen;
    t.true(appSawEnd);
    t.is(data.toString(), 'after-fin:question');
    t.true(ended);
    t.is(errorCode, undefined);
  });

  test(title('the app half-closes first: the client sees FIN and can still send to the app'), async (t) => {
    const received: Buffer[] = [];
    let appGotEnd!: () => void;
    const appEnded = new Promise<void>((r) => (appGotEnd = r));
    const app = await startServer((socket) => {
      socket.on('data', (c: Buffer) => received.push(c));
      socket.on('end', () => appGotEnd());
      socket.end('bye-from-app');
    });
    const mesh = await startHopMesh({ app });
    t.teardown(() => mesh.stop());
    const client = await connect(mesh.port);
    const chunks: Buffer[] = [];
    client.on('data', (c: Buffer) => chunks.push(c));
    await new Promise<void>((resolve) => client.once('end', resolve));
    t.is(Buffer.concat(chunks).toString(), 'bye-from-app');
    // Our direction is still open after the app's FIN.
    const clientClosed = new Promise((r) => client.once('close', r));
    client.end('late-data-after-server-fin');
    await appEnded;
    t.is(Buffer.concat(received).toString(), 'late-data-after-server-fin');
    await clientClosed;
  });

  test.serial(title('1,000 concurrent connections all complete with their own data'), async (t) => {
    const mesh = await startHopMesh();
    t.teardown(() => mesh.stop());
    const n = 1000;
    const results = await Promise.all(
      Array.from({ length: n }, async (_, i) => {
        const client = await connect(mesh.port);
        const seen = collect(client);
        client.end(`connection-${i}`);
        const { data } = await seen;
        return data.toString() === `connection-${i}`;
      }),
    );
    t.is(results.filter(Boolean).length, n);
    await waitFor(() => mesh.a.logs.access().length === n && mesh.b.logs.access().length === n, 'all access logs', 20_000);
    t.true(mesh.a.logs.access().every((l) => l.outcome === 'closed'));
    t.is(await metricValue(mesh.b.sidecar, 'vsockmesh_connections_total'), n);
  });

  test(title('an app that dies mid-stream gives its client a reset; other connections keep flowing'), async (t) => {
    const app = await startServer((socket) => {
      socket.on('data', (chunk: Buffer) => {
        if (chunk.includes('die')) socket.resetAndDestroy();
        else socket.write(chunk);
      });
      socket.on('end', () => socket.end());
    });
    const mesh = await startHopMesh({ app });
    t.teardown(() => mesh.stop());

    const survivor = await connect(mesh.port);
    const survivorData: Buffer[] = [];
    survivor.on('data', (c: Buffer) => survivorData.push(c));
    survivor.write('before;');
    await waitFor(() => Buffer.concat(survivorData).toString() === 'before;', 'survivor echo');

    const victim = await connect(mesh.port);
    const victimSeen = collect(victim);
    victim.write('hello;');
    victim.write('die');
    const { errorCode } = await victimSeen;
    t.is(errorCode, 'ECONNRESET');

    survivor.write('after;');
    await waitFor(() => Buffer.concat(survivorData).toString() === 'before;after;', 'survivor still echoed after the reset');
    const survivorSeen = collect(survivor);
    survivor.end();
    const end = await survivorSeen;
    t.true(end.ended);

    await waitFor(() => mesh.a.logs.access().length === 2, 'access logs');
    t.true(mesh.a.logs.access().some((l) => l.outcome === 'upstream_error' && l.error_code === 'ECONNRESET'));
    t.true(mesh.b.logs.access().some((l) => l.outcome === 'upstream_error' && l.error_code === 'ECONNRESET'));
  });

  test(title('a client reset is carried to the app as a reset'), async (t) => {
    let appError: string | undefined;
    let appClosed!: () => void;
    const closed = new Promise<void>((r) => (appClosed = r));
    const app = await startServer((socket) => {
      socket.on('error', (err: NodeJS.ErrnoException) => (appError = err.code));
      socket.on('close', () => appClosed());
    });
    const mesh = await startHopMesh({ app });
    t.teardown(() => mesh.stop());
    const client = await connect(mesh.port);
    client.write('x');
    await waitFor(() => app.accepted === 1, 'app connection');
    client.resetAndDestroy();
    await closed;
    t.is(appError, 'ECONNRESET');
  });

  test(title('an unreachable endpoint resets the client and counts a connect error'), async (t) => {
    // A port bound but not listening: connects to it are refused, and no other socket can take it meanwhile.
    const holder = spawn('python3', ['-c', 'import socket,time\ns=socket.socket()\ns.bind(("127.0.0.1",0))\nprint(s.getsockname()[1],flush=True)\ntime.sleep(120)'], { stdio: ['ignore', 'pipe', 'inherit'] });
    t.teardown(() => holder.kill('SIGKILL'));
    const deadPort = Number(await new Promise<string>((resolve) => holder.stdout.once('data', (d: Buffer) => resolve(d.toString()))));
    const mesh = await startHopMesh({ cluster: { endpoints: [{ address: '127.0.0.1', port: 9, peer: { address: '127.0.0.1', port: deadPort } }] } });
    t.teardown(() => mesh.stop());
    // Not awaiting 'connect': on a loaded machine the reset may come before Node reports the connect.
    const client = net.connect({ host: '127.0.0.1', port: mesh.port, allowHalfOpen: true });
    const { errorCode, data } = await collect(client);
    t.is(errorCode, 'ECONNRESET');
    t.is(data.length, 0);
    t.is(await metricValue(mesh.a.sidecar, 'vsockmesh_upstream_connect_errors_total', { code: 'ECONNREFUSED' }), 1);
    t.true(mesh.a.logs.withReason('upstream_connect_failed').length === 1);
  });

  // Serial: its 1 s deadline must not compete with the transfers of the other tests.
  test.serial(title('an idle connection is closed after the idle timeout'), async (t) => {
    // Long enough that the echo always comes first, even on a loaded machine.
    const mesh = await startHopMesh({ outbound: { idle_timeout: '1s' } });
    t.teardown(() => mesh.stop());
    const client = await connect(mesh.port);
    const seen = collect(client);
    client.write('ping');
    const { data } = await seen;
    t.is(data.toString(), 'ping');
    await waitFor(() => mesh.a.logs.access().length === 1, 'access log');
    t.is(mesh.a.logs.access()[0]!.outcome, 'idle_timeout');
  });

  test(title('IPv6 loopback outbound listener relays too'), async (t) => {
    const mesh = await startHopMesh({ outbound: { addresses: ['::1', '127.0.0.1'] } });
    t.teardown(() => mesh.stop());
    const [v6] = mesh.a.sidecar.listenerAddresses('out');
    t.is(v6!.address, '::1');
    const result = await echoTransfer(v6!.port, 64 * 1024, '::1');
    t.is(result.receivedSha256, result.sentSha256);
    await waitFor(() => mesh.b.logs.access().length === 1, 'access log');
    t.regex(String(mesh.b.logs.access()[0]!.src), /^\[::1\]:\d+$/);
  });
}
