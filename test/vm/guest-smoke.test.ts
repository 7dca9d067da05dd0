// Proves the guest path end to end: AF_VSOCK over vsock_loopback inside the QEMU
// guest that test/vm/guest.mjs boots. Never run on the host (its vsock is not
// ours): outside the guest this file registers one failing test and touches no vsock.
// Runs compiled, from dist/test/vm/ (see test/vm/ava.config.mjs).

import test from 'ava';
import { spawn } from 'node:child_process';
import { existsSync, readFileSync, statSync } from 'node:fs';
import { native } from '../../proxy/native/index.js';

/** The harness sets the env marker and the kernel command-line token; an env var alone could leak onto a host. */
function inGuest(): boolean {
  if (process.env.VSOCKMESH_IN_GUEST !== '1') return false;
  try {
    return readFileSync('/proc/cmdline', 'utf8').split(/\s+/).includes('vsockmesh.guest=1');
  } catch {
    return false;
  }
}

if (!inGuest()) {
  test('the vsock suite runs only inside the vsockmesh QEMU guest', (t) => {
    t.fail(
      'refusing to open AF_VSOCK sockets here: VSOCKMESH_IN_GUEST=1 and the kernel token vsockmesh.guest=1 are missing, ' +
        'so this is not the test guest. Run: node test/vm/guest.mjs -- node node_modules/ava/entrypoints/cli.mjs --config test/vm/ava.config.mjs',
    );
  });
} else {
  registerGuestTests();
}

interface Accepted {
  fd: number;
  peerCid: number;
  peerPort: number;
}

/** Reads a native socket until EOF. */
function readAll(fd: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    native.readStart(fd, 64 * 1024, (error, chunk) => {
      if (error !== null) reject(new Error(`read on vsock fd ${fd}: ${error}`));
      else if (chunk === null) resolve(Buffer.concat(chunks));
      else chunks.push(chunk);
    });
  });
}

function registerGuestTests(): void {
  test.serial('/dev/vsock exists', (t) => {
    t.true(existsSync('/dev/vsock'), '/dev/vsock is missing: vsock_loopback did not load');
    t.true(statSync('/dev/vsock').isCharacterDevice());
  });

  test.serial('localCid() is 1 (VMADDR_CID_LOCAL): only the loopback transport is registered', (t) => {
    t.is(native.VMADDR_CID_LOCAL, 1);
    t.is(native.localCid(), native.VMADDR_CID_LOCAL);
  });

  test.serial('a native vsock listener accepts socat over VSOCK-CONNECT:1 and reports peer CID 1', async (t) => {
    const before = native.openCount();
    let onAccept!: (a: Accepted) => void;
    const accepted = new Promise<Accepted>((resolve) => (onAccept = resolve));
    const [listenFd, port] = native.listen('vsock', native.VMADDR_CID_ANY, 0, 16, (fd, peerHost, peerPort) =>
      onAccept({ fd, peerCid: Number(peerHost), peerPort }),
    );
    let listening = true;
    t.teardown(() => {
      if (listening) native.close(listenFd);
    });
    t.true(port > 0 && port !== 0xffffffff, `bound port ${port}`);

    const socat = spawn('socat', ['-', `VSOCK-CONNECT:1:${port}`], { stdio: ['pipe', 'ignore', 'pipe'] });
    let socatErr = '';
    socat.stderr.on('data', (d: Buffer) => (socatErr += d.toString()));
    const socatDone = new Promise<number | null>((resolve, reject) => {
      socat.on('error', reject);
      socat.on('close', resolve);
    });
    t.teardown(() => socat.kill('SIGKILL'));
    socat.stdin.end('hello over vsock\n');

    const conn = await accepted;
    t.is(conn.peerCid, 1, 'the peer of a loopback connection is CID 1');
    t.true(conn.peerPort > 0);
    t.is((await readAll(conn.fd)).toString(), 'hello over vsock\n');
    native.close(conn.fd);
    t.is(await socatDone, 0, `socat failed: ${socatErr}`);

    native.close(listenFd);
    listening = false;
    t.is(native.openCount(), before, 'every vsock socket of the core is closed');
  });
}
