// `vsockmesh demo` inside the QEMU guest, where vsock_loopback is real: the VM
// manager says vm-b shares vm-a's hypervisor, so vm-a's sidecar carries the
// connection over vsock to CID 1 (vm-b's sidecar, checked against the
// registry on arrival); vm-c is elsewhere (TCP), an unknown address goes direct.

import test from 'ava';
import { spawn } from 'node:child_process';
import { PassThrough } from 'node:stream';
import { fileURLToPath } from 'node:url';
import { runDemo } from '../../proxy/cmd/demo/index.js';
import { native } from '../../proxy/native/index.js';
import { MiB, assertInGuest, sized, underKvm } from './guest-env.js';

assertInGuest();

/** dist/test/vm/demo.test.js -> dist/proxy/cmd/cli.js */
const CLI = fileURLToPath(new URL('../../proxy/cmd/cli.js', import.meta.url));
const bytes = sized(4 * MiB, MiB);
const sizeNote = underKvm() ? 'KVM: 4 MiB per echo' : 'TCG: 1 MiB per echo';

function runCli(args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [CLI, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, stdout, stderr }));
  });
}

/** The demo's decisions as printed, with real vsock between vm-a and vm-b. */
function assertVsockDecisions(t: import('ava').ExecutionContext, s: string, echoed: string): void {
  t.regex(s, /vsock: vsock_loopback is loaded here/);
  const b = /vm-b {2}127\.0\.0\.3 {2}CID 1 {2}sidecar tcp 127\.0\.0\.3:(\d+), vsock 1:(\d+) \(peer_authorization: registry\)/.exec(s);
  t.truthy(b, 'vm-b is registered at CID 1 with its sidecar\'s vsock port');
  const [, bTcp, bVsock] = b ?? [];
  // vm-a -> vm-b: same hypervisor, so vsock to CID 1 at vm-b's sidecar port, TCP only as the fallback.
  t.regex(s, new RegExp(`decision: +vsock 1:${bVsock} \\(same_hypervisor\\), fallback tcp 127\\.0\\.0\\.3:${bTcp}`));
  t.regex(s, new RegExp(`vm-a -> vm-b: vsock 1:${bVsock} \\(same_hypervisor\\) \\.\\.\\. ok, ${echoed}: sent (\\d+) B, received \\1 B, sha256 matches`));
  t.regex(s, new RegExp(`vm-a outbound 127\\.0\\.0\\.2:\\d+ -> vm-a:echo-b -> vsock:1:${bVsock} {2}transport=vsock transport_reason=same_hypervisor dst_vm=vm-b`));
  // vm-b's vsock inbound saw the peer at kernel CID 1 and accepted it as vm-a from the registry.
  t.regex(s, /vm-b inbound {2}vsock:1:\d+ -> vm-b:inbound-vsock -> 127\.0\.0\.3:\d+ {2}transport=vsock .*source_vm=vm-a authority=echo\.vm-b; the peer's kernel-given CID matched vm-a's in the VM manager/);
  t.regex(s, new RegExp(`vm-a -> vm-b \\(service web\\): vsock 1:${bVsock} \\(same_hypervisor\\) \\.\\.\\. ok, HTTP 200: hello from vm-b`));
  // vm-c is on hv-2: TCP, whatever vsock can do here.
  t.regex(s, new RegExp(`vm-a -> vm-c: tcp 127\\.0\\.0\\.4:\\d+ \\(other_hypervisor\\) \\.\\.\\. ok, ${echoed}: sent (\\d+) B, received \\1 B, sha256 matches`));
  t.regex(s, /vm-a -> vm-c \(127\.0\.0\.4:\d+\): tcp 127\.0\.0\.4:\d+ \(other_hypervisor\) \.\.\. ok, HTTP 200: hello from vm-c/);
  t.regex(s, /vm-a -> 127\.0\.0\.5:(\d+): direct 127\.0\.0\.5:\1 \(unknown_destination\) \.\.\. ok/);
  t.notRegex(s, /fallback vsock->tcp|! vm-/, 'no vsock fallback and no warning');
  t.regex(s, /demo: all traffic arrived intact\n$/);
}

test.serial(`vsockmesh demo --once in the guest: vm-a -> vm-b over vsock at CID 1 (same_hypervisor), sha256 intact; vm-c over TCP; unknown direct (${sizeNote})`, async (t) => {
  const r = await runCli(['demo', '--once', '--echo-bytes', String(bytes)]);
  t.is(r.code, 0, `${r.stdout}\n${r.stderr}`);
  t.is(r.stderr, '');
  assertVsockDecisions(t, r.stdout, bytes === MiB ? '1 MiB echoed' : `${bytes / MiB} MiB echoed`);
  if (!r.stdout.includes('demo: all traffic arrived intact')) t.log(r.stdout);
});

test.serial('the demo in process (vsock auto) closes every vsock and TCP socket it opened', async (t) => {
  const before = native.openCount();
  const out = new PassThrough();
  let s = '';
  out.setEncoding('utf8').on('data', (d: string) => (s += d));
  await runDemo({ once: true, echoBytes: 64 * 1024, vsock: 'auto', out });
  assertVsockDecisions(t, s, '64 KiB echoed');
  t.is(native.openCount(), before, 'the native core holds no socket after the demo');
});
