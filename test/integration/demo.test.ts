// `vsockmesh demo` on the host: the VM manager's same-hypervisor decision for
// each of vm-a's destinations, printed and carried, with the data checked.
// The host must never open AF_VSOCK (its vsock leads elsewhere), so every run
// here forces the no-vsock path (vsock: 'off'); the real-vsock demo runs in the
// QEMU guest (test/vm/demo.test.ts).

import test from 'ava';
import http from 'node:http';
import net from 'node:net';
import { PassThrough } from 'node:stream';
import { runDemo } from '../../proxy/cmd/demo/index.js';
import { native } from '../../proxy/native/index.js';
import { waitFor } from '../helpers/apps.js';

/** Sockets of this process that are not the core's: servers and clients in Node (gRPC, apps). */
function tcpHandles(): number {
  return process.getActiveResourcesInfo().filter((r) => r === 'TCPServerWrap' || r === 'TCPSocketWrap').length;
}

function capture(): { out: PassThrough; text(): string } {
  const out = new PassThrough();
  let text = '';
  out.setEncoding('utf8').on('data', (d: string) => (text += d));
  return { out, text: () => text };
}

function get(address: string, port: number, path: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    http
      .get({ host: address, port, path, agent: false }, (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (d: string) => (body += d));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
      })
      .on('error', reject);
  });
}

test.serial('demo --once (vsock off): vm-b is same hypervisor but carried over TCP, vm-c other hypervisor over TCP, an unknown address direct; data intact; nothing left open', async (t) => {
  const coreBefore = native.openCount();
  const handlesBefore = tcpHandles();
  const { out, text } = capture();
  await runDemo({ once: true, echoBytes: 1 << 20, vsock: 'off', out });
  const s = text();
  if (!s.includes('demo: all traffic arrived intact')) t.log(s);
  t.not(process.exitCode, 1, 'the demo reported a failed check');

  t.regex(s, /vsock: vsock turned off for this run: same decisions, carried over TCP/);
  t.notRegex(s, /transport=vsock/, 'no connection went over vsock');

  // Topology, from the VM manager's records.
  const b = /vm-b {2}127\.0\.0\.3 {2}CID 1 {2}sidecar tcp 127\.0\.0\.3:(\d+), vsock port \d+ registered, not listened on/.exec(s);
  const c = /vm-c {2}127\.0\.0\.4 {2}CID 3 {2}sidecar tcp 127\.0\.0\.4:(\d+)/.exec(s);
  t.truthy(b, 'vm-b listed on hv-1 with its sidecar');
  t.truthy(c, 'vm-c listed on hv-2 with its sidecar');
  t.regex(s, /hv-1 \(vsock loopback\)\n {4}vm-a .*\n {4}vm-b /);
  t.regex(s, /hv-2 \(vsock host-relay, relay port 15100\)\n {4}vm-c /);

  // vm-a -> vm-b: the VM manager says same hypervisor; vsock is off, so TCP to vm-b's sidecar carries it.
  t.regex(s, /VM manager: vm-b is on hv-1 \(vsock loopback, CID 1\), like vm-a: same hypervisor/);
  t.regex(s, new RegExp(`decision: +tcp 127\\.0\\.0\\.3:${b![1]} \\(vsock_disabled\\) -- same hypervisor, so vsock would be chosen, but vsock turned off for this run: TCP to vm-b's sidecar carries it`));
  t.regex(s, new RegExp(`vm-a -> vm-b: tcp 127\\.0\\.0\\.3:${b![1]} \\(vsock_disabled\\) \\.\\.\\. ok, 1 MiB echoed: sent 1048576 B, received 1048576 B, sha256 matches`));
  t.regex(s, /vm-b inbound {2}127\.0\.0\.1:\d+ -> vm-b:inbound -> 127\.0\.0\.3:\d+ {2}transport=tcp .*source_vm=vm-a authority=echo\.vm-b; mTLS TLSv1\.3( \(resumed\))?, peer spiffe:\/\/vsockmesh\.local\/vm\/vm-a \(STRICT\)/);
  t.regex(s, /peer hop: STRICT: sidecars reach each other over TCP with mutual TLS 1\.3/);
  // By service name: the VM manager picks the provider on vm-a's hypervisor.
  t.regex(s, /service web -> vm-b \(the VM manager prefers a provider on the caller's hypervisor\)/);
  t.regex(s, /vm-a -> vm-b \(service web\): tcp 127\.0\.0\.3:\d+ \(vsock_disabled\) \.\.\. ok, HTTP 200: hello from vm-b: GET \//);

  // vm-a -> vm-c: other hypervisor, TCP to its sidecar (by VM id and by address).
  t.regex(s, /VM manager: vm-c is on hv-2 \(vsock host-relay, CID 3\), vm-a is on hv-1: other hypervisor/);
  t.regex(s, new RegExp(`vm-a -> vm-c: tcp 127\\.0\\.0\\.4:${c![1]} \\(other_hypervisor\\) \\.\\.\\. ok, 1 MiB echoed: sent 1048576 B, received 1048576 B, sha256 matches`));
  t.regex(s, new RegExp(`vm-a -> vm-c \\(127\\.0\\.0\\.4:\\d+\\): tcp 127\\.0\\.0\\.4:${c![1]} \\(other_hypervisor\\) \\.\\.\\. ok, HTTP 200: hello from vm-c: GET /`));
  t.regex(s, /vm-c inbound .*transport=tcp .*source_vm=vm-a authority=echo\.vm-c; mTLS TLSv1\.3( \(resumed\))?, peer spiffe:\/\/vsockmesh\.local\/vm\/vm-a \(STRICT\)/);

  // An address the VM manager does not know: straight to the app, no sidecar hop.
  t.regex(s, /VM manager: no VM has 127\.0\.0\.5: unknown destination/);
  t.regex(s, /vm-a -> 127\.0\.0\.5:(\d+): direct 127\.0\.0\.5:\1 \(unknown_destination\) \.\.\. ok, 1 MiB echoed: sent 1048576 B, received 1048576 B, sha256 matches/);
  t.regex(s, /vm-a outbound 127\.0\.0\.2:\d+ -> vm-a:echo-direct -> 127\.0\.0\.5:\d+ {2}transport=tcp transport_reason=unknown_destination .*\(direct: no sidecar at the destination\)/);
  t.notRegex(s, /! vm-|! vm-manager/, 'no warning from any sidecar or the VM manager');

  t.regex(s, /demo: all traffic arrived intact\n$/);
  t.is(native.openCount(), coreBefore, 'every socket of the native core is closed');
  await waitFor(() => tcpHandles() <= handlesBefore, 'the apps, the VM manager and its clients closed');
});

test.serial('without --once the demo serves until stopped (as on Ctrl-C), then drains and stops everything', async (t) => {
  const coreBefore = native.openCount();
  const handlesBefore = tcpHandles();
  const { out, text } = capture();
  const stop = new AbortController();
  const running = runDemo({ once: false, echoBytes: 64 * 1024, vsock: 'off', out, signal: stop.signal });
  await waitFor(() => text().includes('serving until Ctrl-C'), 'the demo serving', 20_000);
  const web = /curl http:\/\/(127\.0\.0\.2):(\d+)\/hello +# service web/.exec(text());
  t.truthy(web, text());
  const r = await get(web![1]!, Number(web![2]), '/hello');
  t.is(r.status, 200);
  t.is(r.body, 'hello from vm-b: GET /hello\n');
  // Later connections are reported too.
  await waitFor(() => /serving until Ctrl-C[\s\S]*vm-a outbound .*vm-a:web -> 127\.0\.0\.3:\d+ {2}transport=tcp transport_reason=vsock_disabled dst_vm=vm-b/.test(text()), 'the access line of the request');

  stop.abort();
  await running;
  t.regex(text(), /stopping: draining the sidecars, then the VM manager\nstopped\n$/);
  t.is(native.openCount(), coreBefore, 'every socket of the native core is closed');
  await waitFor(() => tcpHandles() <= handlesBefore, 'the apps, the VM manager and its clients closed');
  const refused = await new Promise<string>((resolve) => {
    const socket = net.connect({ host: web![1]!, port: Number(web![2]) });
    socket.on('connect', () => {
      socket.destroy();
      resolve('connected');
    });
    socket.on('error', (err: NodeJS.ErrnoException) => resolve(err.code ?? 'error'));
  });
  t.is(refused, 'ECONNREFUSED', "vm-a's outbound listener is closed");
});
