// The inner guests' boot files for the multi-VM suite, built on the host from
// the same Debian kernel and static busybox as the outer guest (test/vm/guest.mjs)
// and cached next to them: the outer guest's kernel (booted through PVH) and a
// small initramfs with busybox, the static test/multivm/vmagent.c and the
// virtio vsock transport. No Node inside: under TCG inside TCG Node and the
// sidecar take minutes to start (measured by node-start.ts; README, "vsock").
// 9p modules come along for that measurement only.

import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import innerGuest from './inner-guest.json' with { type: 'json' };
import { GuestSetupError, cacheDir, checkPrerequisites, cpioNewc, moduleEntries, prepareGuestFiles, which, writeAtomic } from '../vm/guest.mjs';

/** virtio over MMIO (the inner guests are microvms) and the guest side of vsock: the kernel gives the guest its CID. */
const INNER_MODULES = ['virtio_mmio', 'vmw_vsock_virtio_transport'];
/** 9p over virtio, loaded by node-start.ts (over the control channel) in a guest booted with the outer guest's / shared. */
const ROOT_SHARE_MODULES = [...INNER_MODULES, '9pnet_virtio', '9p'];
// What the outer guest's side (hypervisor.ts) relies on: the kernel command-line
// token vmagent insists on, the console line that says ready, the control port.
const { cmdlineMark: INNER_CMDLINE_MARK, say: INNER_SAY, readyLine: INNER_READY, controlPort: CONTROL_PORT } = innerGuest;

const agentSource = fileURLToPath(new URL('vmagent.c', import.meta.url));
const sources = [agentSource, fileURLToPath(import.meta.url), fileURLToPath(new URL('inner-guest.json', import.meta.url))];

/** Compiles vmagent.c with the host's C compiler, static (it needs no loader in the guest). */
function buildAgent(dir) {
  const cc = which('cc') ?? which('gcc');
  if (!cc) throw new GuestSetupError('the multi-VM suite needs a C compiler for its inner-guest agent (apt-get install -y gcc libc6-dev)', ['gcc', 'libc6-dev']);
  const out = join(dir, 'vmagent');
  try {
    const defines = [`-DINNER_CMDLINE_MARK="${INNER_CMDLINE_MARK}="`, `-DINNER_SAY="${INNER_SAY}"`, `-DINNER_READY="${INNER_READY}"`, `-DCONTROL_PORT=${CONTROL_PORT}`];
    execFileSync(cc, ['-static', '-O2', '-Wall', '-Werror', ...defines, '-o', `${out}.tmp`, agentSource], { stdio: ['ignore', 'pipe', 'pipe'] });
  } catch (err) {
    throw new GuestSetupError(`cannot build test/multivm/vmagent.c (a static binary needs libc6-dev): ${String(err.stderr ?? err.message).trim()}`, ['libc6-dev']);
  }
  return readFileSync(`${out}.tmp`);
}

function cacheKey(pre) {
  const h = createHash('sha256');
  for (const p of sources) h.update(readFileSync(p));
  h.update(`\0${pre.kernel.kver}\0${ROOT_SHARE_MODULES.join(' ')}\0`);
  for (const p of [pre.busybox, pre.kernel.depFile]) {
    const s = statSync(p);
    h.update(`${p}:${s.size}:${s.mtimeMs}\0`);
  }
  return `inner-${pre.kernel.kver}-${h.digest('hex').slice(0, 16)}`;
}

/**
 * Builds (once) and returns the inner guests' kernel and initramfs.
 * @returns {{ kernel: string, initrd: string, pvh: boolean }}
 */
export function prepareInnerImage() {
  const pre = checkPrerequisites();
  if (!pre.ok) throw new GuestSetupError(`the multi-VM suite cannot start: ${pre.problems.join('; ')}`, pre.missing);
  const outer = prepareGuestFiles(pre);
  const dir = cacheDir(cacheKey(pre));
  const initrd = join(dir, 'initramfs.cpio');
  if (!existsSync(initrd)) {
    const work = mkdtempSync(join(dir, 'build-'));
    try {
      const folder = (name) => ({ name, mode: 0o040755 });
      const entries = ['bin', 'dev', 'proc', 'sys', 'tmp', 'run', 'lib', 'lib/mod', 'lib/mod-9p'].map(folder);
      entries.push({ name: 'dev/console', mode: 0o020600, rdev: [5, 1] });
      entries.push({ name: 'bin/busybox', mode: 0o100755, data: readFileSync(pre.busybox) });
      // The applets as symlinks in the archive: \`busybox --install\` at boot costs tens of seconds nested.
      for (const applet of execFileSync(pre.busybox, ['--list'], { encoding: 'utf8' }).split('\n')) {
        if (/^[\w.[-]+$/.test(applet) && applet !== 'busybox') entries.push({ name: `bin/${applet}`, mode: 0o120777, data: Buffer.from('busybox') });
      }
      entries.push({ name: 'bin/vmagent', mode: 0o100755, data: buildAgent(work) });
      // vmagent is /init itself (PID 1): no shell and no insmod at boot, every exec costs seconds nested.
      entries.push({ name: 'init', mode: 0o120777, data: Buffer.from('bin/vmagent') });
      entries.push(...moduleEntries(pre.kernel.kver, INNER_MODULES, 'lib/mod'));
      entries.push(...moduleEntries(pre.kernel.kver, ROOT_SHARE_MODULES, 'lib/mod-9p'));
      writeAtomic(initrd, cpioNewc(entries));
    } finally {
      rmSync(work, { recursive: true, force: true });
    }
  }
  return { kernel: outer.kernel, initrd, pvh: outer.pvh };
}
