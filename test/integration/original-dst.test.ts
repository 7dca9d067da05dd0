// SO_ORIGINAL_DST on the host, in a network namespace this test creates: an
// iptables REDIRECT sends connections for port 80 to a listener on another
// port, which asks the kernel where they were going. TCP only: nothing here
// opens AF_VSOCK (that runs only inside the QEMU guest).

import test from 'ava';
import { execFile, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

const run = promisify(execFile);
const root = fileURLToPath(new URL('../..', import.meta.url));

function missing(): string | undefined {
  if (process.getuid?.() !== 0) return 'root (network namespaces and iptables)';
  for (const tool of ['ip', 'iptables']) if (spawnSync('sh', ['-c', `command -v ${tool}`]).status !== 0) return `${tool} (apt-get install -y iproute2 iptables)`;
  return undefined;
}

const need = missing();
if (need !== undefined && process.env.CI !== 'true') {
  test('getOriginalDst in a network namespace: NOT RUN, this machine lacks ' + need, (t) => {
    t.log(`!!! the SO_ORIGINAL_DST test needs ${need}; it did not run`);
    t.fail(`missing ${need}`);
  });
} else {
  test('getOriginalDst reports where an iptables-REDIRECTed connection was going', async (t) => {
    const ns = `vsm-odst-${randomBytes(3).toString('hex')}`;
    await run('ip', ['netns', 'add', ns]);
    t.teardown(() => run('ip', ['netns', 'delete', ns]).then(() => undefined));
    await run('ip', ['-n', ns, 'link', 'set', 'lo', 'up']);
    await run('ip', ['netns', 'exec', ns, 'iptables', '-t', 'nat', '-A', 'OUTPUT', '-p', 'tcp', '-d', '127.0.0.1', '--dport', '80', '-j', 'REDIRECT', '--to-ports', '15001']);
    // Inside the namespace: a native-core listener on 15001 and a client to 127.0.0.1:80.
    const script = `
      import { native } from './dist/proxy/native/index.js';
      import { getOriginalDst } from './dist/proxy/native/original-dst.js';
      import net from 'node:net';
      const [lfd] = native.listen('inet', '127.0.0.1', 15001, 16, (fd) => {
        const dst = getOriginalDst(fd, 'inet');
        let plain = null;
        try { getOriginalDst(fd, 'inet6'); } catch (err) { plain = err.code; }
        console.log(JSON.stringify({ dst, ipv6Lookup: plain }));
        native.close(fd); native.close(lfd);
      });
      net.connect(80, '127.0.0.1').on('error', () => {}).on('close', () => {});
    `;
    const { stdout } = await run('ip', ['netns', 'exec', ns, process.execPath, '--input-type=module', '-e', script], { cwd: root, timeout: 20_000 });
    const result = JSON.parse(stdout.trim()) as { dst: { address: string; port: number }; ipv6Lookup: string | null };
    t.deepEqual(result.dst, { address: '127.0.0.1', port: 80 });
    t.truthy(result.ipv6Lookup, 'asking the IPv6 table for an IPv4 connection fails with a code');
  });

  test('getOriginalDst on a connection that was not redirected fails with a code, not a wrong answer', async (t) => {
    const script = `
      import { native } from './dist/proxy/native/index.js';
      import { getOriginalDst } from './dist/proxy/native/original-dst.js';
      import net from 'node:net';
      const [lfd, port] = native.listen('inet', '127.0.0.1', 0, 16, (fd) => {
        let out;
        try { out = { dst: getOriginalDst(fd, 'inet') }; } catch (err) { out = { code: err.code }; }
        console.log(JSON.stringify(out));
        native.close(fd); native.close(lfd);
      });
      net.connect(port, '127.0.0.1').on('error', () => {});
    `;
    const ns = `vsm-odst-${randomBytes(3).toString('hex')}`;
    await run('ip', ['netns', 'add', ns]);
    t.teardown(() => run('ip', ['netns', 'delete', ns]).then(() => undefined));
    await run('ip', ['-n', ns, 'link', 'set', 'lo', 'up']);
    // With conntrack active in the namespace (a nat rule exists), an unredirected connection maps to itself or has no entry.
    await run('ip', ['netns', 'exec', ns, 'iptables', '-t', 'nat', '-A', 'OUTPUT', '-p', 'tcp', '--dport', '9', '-j', 'REDIRECT', '--to-ports', '10']);
    const { stdout } = await run('ip', ['netns', 'exec', ns, process.execPath, '--input-type=module', '-e', script], { cwd: root, timeout: 20_000 });
    const result = JSON.parse(stdout.trim()) as { dst?: { address: string; port: number }; code?: string };
    if (result.code !== undefined) t.regex(result.code, /^E[A-Z]+$/);
    else t.is(result.dst!.address, '127.0.0.1', 'an unredirected connection reports its own destination');
  });
}

test('the native core loads with its whole API (a Node upgrade that breaks N-API fails here)', async (t) => {
  const { native } = await import('../../proxy/native/index.js');
  for (const fn of ['listen', 'connect', 'readStart', 'readStop', 'close', 'reset', 'relay', 'relayBytes', 'relayAbort', 'relayReset', 'openCount', 'acceptFailures', 'pendingBytes', 'ref', 'duplexOpen', 'duplexRead', 'duplexWrite', 'duplexShutdown', 'localCid', 'originalDst']) {
    t.is(typeof (native as unknown as Record<string, unknown>)[fn], 'function', fn);
  }
  t.is(native.VMADDR_CID_ANY, 0xffffffff);
  t.is(native.VMADDR_CID_LOCAL, 1);
  t.deepEqual(native.RELAY_OUTCOMES, ['closed', 'downstream_error', 'upstream_error', 'idle_timeout', 'aborted']);
});
