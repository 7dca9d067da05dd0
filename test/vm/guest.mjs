#!/usr/bin/env node
// Runs one command inside a throw-away QEMU guest in which AF_VSOCK works over
// vsock_loopback (CID 1 = VMADDR_CID_LOCAL). The host never opens an AF_VSOCK
// socket and the guest gets no vhost-vsock device: vsock exists only inside it.
//
// The guest boots the host's Debian kernel with a busybox initramfs (built once
// into a cache), sees the host's / read-only over 9p under a tmpfs overlay (it
// can write anywhere; writes vanish), and runs the command with the host's cwd
// and environment plus VSOCKMESH_IN_GUEST=1. The command's stdout and stderr are
// pipes inside the guest and reach the host separately over two UARTs.
//
// Library:  const r = await runInGuest(['uname', '-r']);  // { code, stdout, stderr, accel, bootMs, outcome, ... }
// CLI:      node test/vm/guest.mjs [--timeout S] [--mem 1G] [--smp N] [--share DIR]... [-v] -- cmd args...
//
// KVM is used when /dev/kvm opens and the CPU has hardware virtualisation (vmx/svm);
// otherwise TCG. VSOCKMESH_GUEST_ACCEL=kvm|tcg forces one.
// Cache: ${XDG_CACHE_HOME:-/tmp}/vsockmesh-guest/<kernel>-<hash>/ (safe to delete when no run is active;
// entries unused for 2 hours are removed by the next run).

import { execFileSync, spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import {
  closeSync,
  constants as fsc,
  existsSync,
  mkdirSync,
  mkdtempSync,
  openSync,
  readFileSync,
  readSync,
  readdirSync,
  renameSync,
  rmSync,
  statSync,
  utimesSync,
  writeFileSync,
} from 'node:fs';
import { cpus } from 'node:os';
import net from 'node:net';
import { basename, delimiter, isAbsolute, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { gunzipSync } from 'node:zlib';

/** Exit code reported when the command ran out of time (qemu was killed). */
export const EXIT_TIMEOUT = 124;
/** Exit code reported when the guest never reported a status (boot failure, panic, qemu error). */
export const EXIT_NO_STATUS = 125;

export const APT_PACKAGES = ['qemu-system-x86', 'linux-image-amd64', 'busybox-static'];
export const INSTALL_HINT = `apt-get update && apt-get install -y ${APT_PACKAGES.join(' ')}`;

/**
 * Kernel modules the guest needs; each is resolved with its dependencies, in load order.
 * veth and the nat table for the host's iptables (nf_tables backend: owner, tcp and REDIRECT
 * through nft_compat) are for transparent capture between namespaces (capture-vsock.test.ts).
 */
const MODULES = ['virtio_pci', '9pnet_virtio', '9p', 'vsock_loopback', 'overlay', 'virtio_rng', 'veth', 'nf_tables', 'nft_compat', 'nft_chain_nat', 'nf_nat', 'xt_REDIRECT', 'xt_owner', 'xt_tcpudp'];
/** Printed by the guest's /init on the console; the host watches for these. */
const MARK = 'vsockmesh-guest:';
/** Kernel command-line token the guest tests check (an env var alone could leak onto a host). */
export const GUEST_CMDLINE_MARK = 'vsockmesh.guest=1';
const RUN_TAG = 'vsmrun';
const RUN_DIR_IN_GUEST = '/run/vsockmesh-guest';

const harnessPath = fileURLToPath(import.meta.url);

export class GuestSetupError extends Error {
  constructor(message, missing = []) {
    super(message);
    this.name = 'GuestSetupError';
    /** apt packages that would fix it */
    this.missing = missing;
  }
}

// ---------------------------------------------------------------- prerequisites

export function which(cmd) {
  for (const dir of (process.env.PATH ?? '/usr/bin:/bin').split(delimiter)) {
    const p = join(dir, cmd);
    try {
      if (statSync(p).isFile()) return p;
    } catch {
      // not in this directory
    }
  }
  return null;
}

function readAt(fd, position, length) {
  const buf = Buffer.alloc(length);
  const n = readSync(fd, buf, 0, length, position);
  return buf.subarray(0, n);
}

/** Program headers of an ELF64 little-endian file, or null when it is not one. */
function elfProgramHeaders(path) {
  const fd = openSync(path, 'r');
  try {
    const eh = readAt(fd, 0, 64);
    if (eh.length < 64 || eh.readUInt32BE(0) !== 0x7f454c46 || eh[4] !== 2 || eh[5] !== 1) return null;
    const phoff = Number(eh.readBigUInt64LE(32));
    const phentsize = eh.readUInt16LE(54);
    const phnum = eh.readUInt16LE(56);
    const table = readAt(fd, phoff, phentsize * phnum);
    const headers = [];
    for (let i = 0; i < phnum; i++) {
      const o = i * phentsize;
      headers.push({ type: table.readUInt32LE(o), offset: Number(table.readBigUInt64LE(o + 8)), filesz: Number(table.readBigUInt64LE(o + 32)) });
    }
    return { headers, read: (offset, length) => readAt(fd, offset, length), close: () => closeSync(fd) };
  } catch (err) {
    closeSync(fd);
    throw err;
  }
}

/** True for an ELF executable without a PT_INTERP header. (Grepping for "ld-linux" is wrong: static busybox contains it.) */
export function isStaticElf(path) {
  const elf = elfProgramHeaders(path);
  if (!elf) return false;
  elf.close();
  return !elf.headers.some((h) => h.type === 3 /* PT_INTERP */);
}

/** True when an ELF vmlinux carries the Xen PVH entry note (QEMU boots such an ELF directly). */
function hasPvhNote(path) {
  const elf = elfProgramHeaders(path);
  if (!elf) return false;
  try {
    for (const h of elf.headers.filter((x) => x.type === 4 /* PT_NOTE */)) {
      const notes = elf.read(h.offset, h.filesz);
      for (let o = 0; o + 12 <= notes.length; ) {
        const namesz = notes.readUInt32LE(o);
        const descsz = notes.readUInt32LE(o + 4);
        const type = notes.readUInt32LE(o + 8);
        const name = notes.toString('latin1', o + 12, o + 12 + Math.max(0, namesz - 1));
        if (name === 'Xen' && type === 18 /* XEN_ELFNOTE_PHYS32_ENTRY */) return true;
        o += 12 + align4(namesz) + align4(descsz);
      }
    }
    return false;
  } finally {
    elf.close();
  }
}

/** The newest installed kernel with a bootable image and vsock_loopback as a module. */
function findKernel() {
  let versions;
  try {
    versions = readdirSync('/lib/modules');
  } catch {
    return null;
  }
  versions.sort((a, b) => b.localeCompare(a, 'en', { numeric: true }));
  for (const kver of versions) {
    const image = `/boot/vmlinuz-${kver}`;
    const depFile = `/lib/modules/${kver}/modules.dep`;
    try {
      closeSync(openSync(image, 'r'));
      if (/\/vsock_loopback\.ko[.:]/.test(readFileSync(depFile, 'utf8'))) return { kver, image, depFile };
    } catch {
      // unreadable or incomplete install: try the next one
    }
  }
  return null;
}

/**
 * Checks what the guest needs on the host. Never throws.
 * @returns {{ ok: boolean, problems: string[], missing: string[], qemu?: string, busybox?: string, kernel?: {kver: string, image: string, depFile: string} }}
 */
export function checkPrerequisites() {
  const problems = [];
  const missing = new Set();
  const qemu = which('qemu-system-x86_64');
  if (!qemu) {
    problems.push('qemu-system-x86_64 is not on PATH');
    missing.add('qemu-system-x86');
  }
  const busybox = ['/bin/busybox', '/usr/bin/busybox'].find((p) => existsSync(p));
  if (!busybox) {
    problems.push('busybox is not installed');
    missing.add('busybox-static');
  } else if (!isStaticElf(busybox)) {
    problems.push(`${busybox} is dynamically linked (the initramfs needs the static one)`);
    missing.add('busybox-static');
  }
  const kernel = findKernel();
  if (!kernel) {
    problems.push('no kernel in /boot with vsock_loopback in /lib/modules/<version>');
    missing.add('linux-image-amd64');
  }
  if (!which('modprobe')) {
    problems.push('modprobe is not on PATH');
    missing.add('kmod');
  }
  if (!which('mkfifo')) {
    problems.push('mkfifo is not on PATH');
    missing.add('coreutils');
  }
  return { ok: problems.length === 0, problems, missing: [...missing], qemu: qemu ?? undefined, busybox, kernel: kernel ?? undefined };
}

function requirePrerequisites() {
  const pre = checkPrerequisites();
  if (!pre.ok) {
    const extra = pre.missing.filter((p) => !APT_PACKAGES.includes(p));
    throw new GuestSetupError(
      `the vsock test guest cannot start: ${pre.problems.join('; ')}.\n` +
        `Install what it needs with:\n    ${INSTALL_HINT}${extra.length > 0 ? ` ${extra.join(' ')}` : ''}`,
      pre.missing,
    );
  }
  return pre;
}

// ---------------------------------------------------------------- accelerator

function cpuHasVirtualisation() {
  try {
    return /^flags\s*:.*\b(vmx|svm)\b/m.test(readFileSync('/proc/cpuinfo', 'utf8'));
  } catch {
    return false;
  }
}

/**
 * KVM when /dev/kvm opens read-write and the CPU has vmx/svm (a /dev/kvm without
 * them, e.g. kvm_pvm on a PVM guest, opens fine but cannot run a stock kernel);
 * TCG otherwise. VSOCKMESH_GUEST_ACCEL=kvm|tcg forces one.
 */
export function chooseAccel(forced = process.env.VSOCKMESH_GUEST_ACCEL) {
  if (forced === 'kvm' || forced === 'tcg') return { accel: forced, reason: `forced by VSOCKMESH_GUEST_ACCEL=${forced}` };
  if (forced !== undefined && forced !== '' && forced !== 'auto') {
    throw new GuestSetupError(`VSOCKMESH_GUEST_ACCEL must be kvm, tcg or auto, not ${JSON.stringify(forced)}`);
  }
  try {
    closeSync(openSync('/dev/kvm', fsc.O_RDWR | fsc.O_CLOEXEC));
  } catch (err) {
    return { accel: 'tcg', reason: `/dev/kvm cannot be opened (${err.code ?? err.message})` };
  }
  if (!cpuHasVirtualisation()) {
    return { accel: 'tcg', reason: '/dev/kvm opens but the CPU has no vmx/svm flag (paravirtual KVM, e.g. kvm_pvm, cannot boot a stock kernel)' };
  }
  return { accel: 'kvm', reason: '/dev/kvm is usable' };
}

function accelArgs(accel) {
  return accel === 'kvm' ? ['-accel', 'kvm', '-cpu', 'host'] : ['-accel', 'tcg,thread=multi', '-cpu', 'max'];
}

// ---------------------------------------------------------------- initramfs and kernel (cached)

function align4(n) {
  return (n + 3) & ~3;
}

/** A newc cpio archive (what the kernel unpacks as an initramfs). entries: { name, mode, data?, rdev? } */
export function cpioNewc(entries) {
  const parts = [];
  const field = (n) => n.toString(16).padStart(8, '0');
  const push = (name, mode, data = Buffer.alloc(0), rdev = [0, 0], ino = 0) => {
    const nameBuf = Buffer.from(`${name}\0`);
    const isDir = (mode & 0o170000) === 0o040000;
    const header =
      '070701' +
      [ino, mode, 0, 0, isDir ? 2 : 1, 0, data.length, 0, 0, rdev[0], rdev[1], nameBuf.length, 0].map(field).join('');
    parts.push(Buffer.from(header), nameBuf, Buffer.alloc(align4(110 + nameBuf.length) - 110 - nameBuf.length));
    parts.push(data, Buffer.alloc(align4(data.length) - data.length));
  };
  entries.forEach((e, i) => push(e.name, e.mode, e.data, e.rdev, i + 1));
  push('TRAILER!!!', 0);
  return Buffer.concat(parts);
}

/** `modprobe --show-depends` takes ONE module per call (further words are parameters). Returns .ko paths in load order. */
export function moduleLoadOrder(kver, modules = MODULES) {
  const order = [];
  for (const mod of modules) {
    let out;
    try {
      out = execFileSync('modprobe', ['-S', kver, '--show-depends', mod], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
    } catch (err) {
      throw new GuestSetupError(`modprobe -S ${kver} --show-depends ${mod} failed: ${String(err.stderr ?? err.message).trim()}`, ['linux-image-amd64']);
    }
    for (const line of out.split('\n')) {
      const m = /^insmod (\S+)/.exec(line);
      if (m && !order.includes(m[1])) order.push(m[1]);
    }
  }
  return order;
}

function decompressModule(path) {
  if (path.endsWith('.gz')) return { name: basename(path, '.gz'), data: gunzipSync(readFileSync(path)) };
  for (const [ext, tool] of [['.xz', 'xz'], ['.zst', 'zstd']]) {
    if (path.endsWith(ext)) {
      if (!which(tool)) throw new GuestSetupError(`${path} is compressed and ${tool} is not installed`, [tool === 'xz' ? 'xz-utils' : 'zstd']);
      return { name: basename(path, ext), data: execFileSync(tool, ['-dc', path], { maxBuffer: 256 << 20 }) };
    }
  }
  return { name: basename(path), data: readFileSync(path) };
}

const MODULE_SIGNATURE_MARK = Buffer.from('~Module signature appended~\n');

/**
 * The module without its appended signature: checking it (RSA over the whole
 * module) is the slowest part of insmod under emulation, seconds per module when
 * nested. Debian does not enforce signatures without Secure Boot, so an unsigned
 * module loads (and only taints the kernel).
 */
export function stripModuleSignature(data) {
  const markAt = data.length - MODULE_SIGNATURE_MARK.length;
  if (markAt < 12 || !data.subarray(markAt).equals(MODULE_SIGNATURE_MARK)) return data;
  // struct module_signature (12 bytes) ends just before the mark; its last field is the signature length.
  const info = markAt - 12;
  const signatureLength = data.readUInt32BE(info + 8) + data[info + 3] + data[info + 4];
  return data.subarray(0, Math.max(0, info - signatureLength));
}

/** Kernel modules (with their dependencies, in load order) as initramfs entries under `dir`, plus `dir/order`. */
export function moduleEntries(kver, modules, dir) {
  const entries = [];
  const names = [];
  for (const ko of moduleLoadOrder(kver, modules)) {
    const { name, data } = decompressModule(ko);
    entries.push({ name: `${dir}/${name}`, mode: 0o100644, data: stripModuleSignature(data) });
    names.push(name);
  }
  entries.push({ name: `${dir}/order`, mode: 0o100644, data: Buffer.from(`${names.join('\n')}\n`) });
  return entries;
}

/** The guest's /init (busybox sh). It reports on the console (ttyS0); the command's output goes to ttyS1/ttyS2. */
const INIT_SCRIPT = String.raw`#!/bin/busybox sh
# /init of the vsockmesh test guest; generated by test/vm/guest.mjs
/bin/busybox --install -s /bin
export PATH=/bin
say() { echo "${MARK} $*"; }
fatal() { say "FATAL: $*"; poweroff -f; sleep 5; }
uptime_s() { cut -d' ' -f1 /proc/uptime; }

mount -t proc proc /proc && mount -t sysfs sysfs /sys && mount -t devtmpfs devtmpfs /dev || fatal "mounting /proc /sys /dev"
while read -r m; do insmod "/lib/mod/$m" || fatal "insmod $m"; done < /lib/mod/order

# host / read-only (lower), tmpfs (upper): the guest can write anywhere, nothing reaches the host
mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000,cache=loose,ro hostroot /lower || fatal "9p mount of the host's /"
mount -t tmpfs -o mode=0755 upper /upper && mkdir -p /upper/data /upper/work || fatal "tmpfs for the overlay"
mount -t overlay -o lowerdir=/lower,upperdir=/upper/data,workdir=/upper/work,index=off,xino=off,metacopy=off,redirect_dir=off \
  overlay /newroot || fatal "overlay mount"
R=/newroot
mount -t proc proc $R/proc || fatal "proc"
mount -t sysfs sysfs $R/sys || fatal "sysfs"
mount -t devtmpfs devtmpfs $R/dev || fatal "devtmpfs"
mkdir -p $R/dev/pts $R/dev/shm
ln -sf /proc/self/fd $R/dev/fd && ln -sf fd/0 $R/dev/stdin && ln -sf fd/1 $R/dev/stdout && ln -sf fd/2 $R/dev/stderr
mount -t devpts -o newinstance,ptmxmode=0666,mode=0620 devpts $R/dev/pts || fatal "devpts"
mount -t tmpfs -o mode=1777 shm $R/dev/shm || fatal "/dev/shm"
# /tmp is deliberately not a fresh tmpfs: the host's /tmp stays visible (through the overlay)
mount -t tmpfs -o mode=0755 run $R/run || fatal "/run"
mkdir -p $R${RUN_DIR_IN_GUEST}
mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000,cache=none ${RUN_TAG} $R${RUN_DIR_IN_GUEST} || fatal "9p mount of the run dir"
# host directories shared read-write at their own paths (options.shares): "<tag> <path>" per line
while read -r tag dir; do
  mkdir -p "$R$dir" && mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000,cache=mmap "$tag" "$R$dir" || fatal "9p mount of $dir"
done < $R${RUN_DIR_IN_GUEST}/shares
ip link set lo up || fatal "lo up"
hostname vsockmesh-guest
stty -F /dev/ttyS1 raw -echo && stty -F /dev/ttyS2 raw -echo || fatal "raw mode on ttyS1/ttyS2"

say "ready $(uptime_s)"
# the command writes to pipes (as under CI), which cat copies to the UARTs
mkfifo /out /err
cat /out > /dev/ttyS1 & OUT=$!
cat /err > /dev/ttyS2 & ERR=$!
env -i /bin/chroot $R /bin/sh ${RUN_DIR_IN_GUEST}/cmd.sh < /dev/null > /out 2> /err
RC=$?
# a background process the command left behind may hold the pipes: wait 1 s at most
n=0
while [ $n -lt 10 ] && { kill -0 $OUT || kill -0 $ERR; } 2>/dev/null; do sleep 0.1; n=$((n + 1)); done
kill $OUT $ERR 2>/dev/null
echo $RC > $R${RUN_DIR_IN_GUEST}/rc
sync
say "exit $RC $(uptime_s)"
poweroff -f
`;

/** Everything that changes the built files goes into the cache key (the harness source covers /init). */
function cacheKey(pre) {
  const h = createHash('sha256');
  h.update(readFileSync(harnessPath));
  h.update(`\0${pre.kernel.kver}\0${MODULES.join(' ')}\0`);
  for (const p of [pre.busybox, pre.kernel.depFile, pre.kernel.image]) {
    const s = statSync(p);
    h.update(`${p}:${s.size}:${s.mtimeMs}\0`);
  }
  return `${pre.kernel.kver}-${h.digest('hex').slice(0, 16)}`;
}

export function cacheRoot() {
  return join(process.env.XDG_CACHE_HOME || '/tmp', 'vsockmesh-guest');
}

/** Writes via a temporary name and renames, so concurrent runs never see half a file. */
export function writeAtomic(path, data) {
  const tmp = `${path}.tmp-${process.pid}`;
  writeFileSync(tmp, data);
  renameSync(tmp, path);
}

function buildInitramfs(pre, path) {
  const dir = (name) => ({ name, mode: 0o040755 });
  const entries = ['bin', 'dev', 'proc', 'sys', 'lower', 'upper', 'newroot', 'lib', 'lib/mod'].map(dir);
  entries.push({ name: 'dev/console', mode: 0o020600, rdev: [5, 1] });
  entries.push({ name: 'bin/busybox', mode: 0o100755, data: readFileSync(pre.busybox) });
  entries.push({ name: 'init', mode: 0o100755, data: Buffer.from(INIT_SCRIPT) });
  entries.push(...moduleEntries(pre.kernel.kver, MODULES, 'lib/mod'));
  writeAtomic(path, cpioNewc(entries));
}

/**
 * The uncompressed ELF vmlinux, booted through its PVH entry note: this skips the
 * in-guest decompression of the bzImage (seconds under TCG). Returns null (bzImage
 * is used) when the image has no xz payload, xz is missing, or the ELF has no PVH note.
 */
function extractVmlinux(image, path) {
  if (!which('xz')) return 'xz is not installed';
  const bz = readFileSync(image);
  const at = bz.indexOf(Buffer.from([0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00]));
  if (at < 0) return 'no xz payload in the kernel image';
  const tmp = `${path}.tmp-${process.pid}`;
  const payload = `${path}.xz-${process.pid}`;
  try {
    // From a file, not a pipe: xz stops reading after the first stream, and writing the rest into its stdin then fails with EPIPE.
    writeFileSync(payload, bz.subarray(at));
    const elf = execFileSync('xz', ['-dc', '--single-stream', payload], { maxBuffer: 1 << 30, stdio: ['ignore', 'pipe', 'ignore'] });
    writeFileSync(tmp, elf);
    if (!hasPvhNote(tmp)) return 'the extracted vmlinux has no PVH entry note';
    renameSync(tmp, path);
    return null;
  } catch (err) {
    return `xz failed: ${err.message}`;
  } finally {
    rmSync(tmp, { force: true });
    rmSync(payload, { force: true });
  }
}

/** Cache entries (and run dirs of crashed runs) unused this long are removed; a run lasts minutes, and every use renews its entry. */
const CACHE_IDLE_MS = 2 * 3600_000;

/**
 * A cache directory for `key`, marked as used now; removes the other entries
 * nobody used for CACHE_IDLE_MS (older kernels, earlier harness versions).
 */
export function cacheDir(key) {
  const root = cacheRoot();
  const dir = join(root, key);
  mkdirSync(dir, { recursive: true });
  const now = new Date();
  utimesSync(dir, now, now);
  for (const name of readdirSync(root)) {
    const path = join(root, name);
    try {
      if (name !== key && now.getTime() - statSync(path).mtimeMs > CACHE_IDLE_MS) rmSync(path, { recursive: true, force: true });
    } catch {
      // removed meanwhile by a concurrent run
    }
  }
  return dir;
}

/** Builds (once) and returns the cached initramfs and the kernel to boot. */
export function prepareGuestFiles(pre = requirePrerequisites()) {
  const dir = cacheDir(cacheKey(pre));
  const initrd = join(dir, 'initramfs.cpio');
  if (!existsSync(initrd)) buildInitramfs(pre, initrd);
  const vmlinux = join(dir, 'vmlinux');
  const noVmlinux = join(dir, 'no-vmlinux');
  if (!existsSync(vmlinux) && !existsSync(noVmlinux)) {
    const why = extractVmlinux(pre.kernel.image, vmlinux);
    if (why) writeAtomic(noVmlinux, `${why}\n`);
  }
  const kernel = existsSync(vmlinux) ? vmlinux : pre.kernel.image;
  return { dir, initrd, kernel, kver: pre.kernel.kver, pvh: kernel === vmlinux };
}

// ---------------------------------------------------------------- one run

const shq = (s) => `'${String(s).replaceAll("'", `'\\''`)}'`;
const SKIPPED_ENV = new Set(['PWD', 'OLDPWD', 'SHLVL', '_']);

/** The host's open-files limit ([soft, hard]), which the guest's command gets too (the guest's default is 1024). */
function openFilesLimit() {
  try {
    const m = /^Max open files\s+(\S+)\s+(\S+)/m.exec(readFileSync('/proc/self/limits', 'utf8'));
    return m ? [m[1], m[2]] : null;
  } catch {
    return null;
  }
}

/** The guest runs this with /bin/sh (the host's) in an empty environment. */
function commandScript(argv, cwd, env) {
  const lines = ['# generated by test/vm/guest.mjs'];
  const nofile = openFilesLimit();
  if (nofile) lines.push(`ulimit -Hn ${nofile[1]} && ulimit -Sn ${nofile[0]} || echo 'vsockmesh guest: cannot set ulimit -n ${nofile[0]}' >&2`);
  for (const [name, value] of Object.entries(env)) {
    if (value === undefined || SKIPPED_ENV.has(name) || !/^[A-Za-z_][A-Za-z0-9_]*$/.test(name)) continue;
    lines.push(`export ${name}=${shq(value)}`);
  }
  lines.push(`cd -- ${shq(cwd)} || exit 126`);
  lines.push(`exec ${argv.map(shq).join(' ')}`);
  return `${lines.join('\n')}\n`;
}

/** 9p tag of the i-th shared host directory. */
const shareTag = (i) => `vsmshare${i}`;

function qemuArgs({ files, accel, mem, smp, runDir, fifos, shares }) {
  const append = [
    'console=ttyS0',
    'quiet',
    'loglevel=3',
    'panic=-1',
    'rdinit=/init',
    'mitigations=off',
    'no_timer_check',
    'tsc=reliable',
    'lpj=10000000', // skips delay-loop calibration
    'random.trust_cpu=on',
    '8250.nr_uarts=3',
    GUEST_CMDLINE_MARK,
  ].join(' ');
  const uart = (id, path) => ['-chardev', `file,id=${id},path=${path}`, '-serial', `chardev:${id}`];
  return [
    '-nodefaults',
    '-no-user-config',
    '-display',
    'none',
    '-no-reboot',
    ...accelArgs(accel),
    '-machine',
    'q35',
    '-m',
    mem,
    '-smp',
    String(smp),
    '-kernel',
    files.kernel,
    '-initrd',
    files.initrd,
    '-append',
    append,
    ...uart('console', fifos.console),
    ...uart('out', fifos.stdout),
    ...uart('err', fifos.stderr),
    '-device',
    'virtio-rng-pci',
    '-fsdev',
    'local,id=hostroot,path=/,security_model=none,readonly=on,multidevs=remap',
    '-device',
    'virtio-9p-pci,fsdev=hostroot,mount_tag=hostroot',
    '-fsdev',
    `local,id=${RUN_TAG},path=${runDir},security_model=none`,
    '-device',
    `virtio-9p-pci,fsdev=${RUN_TAG},mount_tag=${RUN_TAG}`,
    ...shares.flatMap((dir, i) => ['-fsdev', `local,id=${shareTag(i)},path=${dir},security_model=none`, '-device', `virtio-9p-pci,fsdev=${shareTag(i)},mount_tag=${shareTag(i)}`]),
  ];
}

/**
 * A FIFO that qemu writes a UART into and we read from. We hold a write end
 * ourselves (O_RDWR never blocks on a FIFO), so reads wait for data instead of
 * seeing EOF before qemu opens it, and EOF comes exactly when we let go after qemu exits.
 */
function openFifo(path, onData) {
  execFileSync('mkfifo', ['-m', '0600', path]);
  const hold = openSync(path, fsc.O_RDWR | fsc.O_CLOEXEC);
  const reader = new net.Socket({ fd: openSync(path, fsc.O_RDONLY | fsc.O_NONBLOCK | fsc.O_CLOEXEC), readable: true, writable: false });
  const chunks = [];
  reader.on('data', (chunk) => {
    chunks.push(chunk);
    onData?.(chunk);
  });
  const ended = new Promise((resolve) => reader.once('close', resolve));
  return {
    text: () => Buffer.concat(chunks).toString('utf8'),
    /** Lets EOF through; resolves when everything qemu wrote has been read. */
    async finish() {
      closeSync(hold);
      await ended;
    },
  };
}

const defaultSmp = () => (cpus().length <= 2 ? 1 : 2);

/**
 * Runs argv in a fresh guest.
 * @param {string[]} argv
 * @param {object} [options]
 * @param {string} [options.cwd] host directory to run in (default process.cwd())
 * @param {Record<string, string|undefined>} [options.env] exported into the guest (default process.env); VSOCKMESH_IN_GUEST=1 and VSOCKMESH_GUEST_ACCEL are added
 * @param {number} [options.timeoutMs] whole run, boot included (default 600 s)
 * @param {number} [options.bootTimeoutMs] until /init is ready (default 60 s KVM, 180 s TCG)
 * @param {string} [options.mem] guest memory (default 1G)
 * @param {string[]} [options.shares] host directories the guest sees read-write at the same paths (its writes there reach the host)
 * @param {number} [options.smp] vCPUs (default 1 on hosts with <= 2 CPUs, else 2)
 * @param {'kvm'|'tcg'|'auto'} [options.accel] default: VSOCKMESH_GUEST_ACCEL, else auto
 * @param {(chunk: Buffer) => void} [options.onStdout] streamed as it arrives
 * @param {(chunk: Buffer) => void} [options.onStderr]
 * @param {(chunk: Buffer) => void} [options.onConsole] the guest's kernel console
 * @param {AbortSignal} [options.signal] kills the guest (outcome 'no-status')
 * @returns {Promise<{ code: number, outcome: 'exited'|'timeout'|'no-status', stdout: string, stderr: string,
 *   accel: 'kvm'|'tcg', accelReason: string, bootMs: number|null, totalMs: number, console: string, error?: string }>}
 */
export async function runInGuest(argv, options = {}) {
  if (!Array.isArray(argv) || argv.length === 0) throw new TypeError('runInGuest: argv must be a non-empty array');
  const pre = requirePrerequisites();
  const { accel, reason: accelReason } = chooseAccel(options.accel ?? process.env.VSOCKMESH_GUEST_ACCEL);
  const files = prepareGuestFiles(pre);
  const timeoutMs = options.timeoutMs ?? 600_000;
  const bootTimeoutMs = Math.min(timeoutMs, options.bootTimeoutMs ?? (accel === 'kvm' ? 60_000 : 180_000));

  const shares = (options.shares ?? []).map((dir) => {
    if (!isAbsolute(dir) || !statSync(dir, { throwIfNoEntry: false })?.isDirectory() || /\s/.test(dir)) {
      throw new GuestSetupError(`runInGuest: a shared directory must be an existing absolute path without spaces, not ${JSON.stringify(dir)}`);
    }
    return dir;
  });
  const runDir = mkdtempSync(join(cacheRoot(), 'run-'));
  try {
    const env = { ...(options.env ?? process.env), VSOCKMESH_IN_GUEST: '1', VSOCKMESH_GUEST_ACCEL: accel };
    writeFileSync(join(runDir, 'cmd.sh'), commandScript(argv, options.cwd ?? process.cwd(), env));
    writeFileSync(join(runDir, 'shares'), shares.map((dir, i) => `${shareTag(i)} ${dir}\n`).join(''));
    return await boot({ pre, files, accel, accelReason, runDir, timeoutMs, bootTimeoutMs, shares, options });
  } finally {
    rmSync(runDir, { recursive: true, force: true });
  }
}

async function boot({ pre, files, accel, accelReason, runDir, timeoutMs, bootTimeoutMs, shares, options }) {
  const fifos = { console: join(runDir, 'console.fifo'), stdout: join(runDir, 'out.fifo'), stderr: join(runDir, 'err.fifo') };
  const started = performance.now();
  let bootMs = null;
  let failure = null; // { outcome, error }
  let qemu = null;
  const stop = (outcome, error) => {
    failure ??= { outcome, error };
    qemu?.kill('SIGKILL');
  };

  let consoleTail = '';
  const consoleFifo = openFifo(fifos.console, (chunk) => {
    options.onConsole?.(chunk);
    consoleTail = (consoleTail + chunk.toString('latin1')).slice(-4096);
    if (bootMs === null && consoleTail.includes(`${MARK} ready`)) bootMs = Math.round(performance.now() - started);
  });
  const outFifo = openFifo(fifos.stdout, options.onStdout);
  const errFifo = openFifo(fifos.stderr, options.onStderr);

  const args = qemuArgs({ files, accel, mem: options.mem ?? '1G', smp: options.smp ?? defaultSmp(), runDir, fifos, shares });
  qemu = spawn(pre.qemu, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  let qemuOutput = '';
  const collectQemu = (chunk) => {
    qemuOutput += chunk.toString('utf8');
    // KVM internal errors pause the VM instead of ending qemu: stop at once
    if (/KVM internal error|emulation failure|kvm_buf_set_msrs/.test(qemuOutput)) stop('no-status', `qemu reported a KVM failure under ${accel}`);
  };
  qemu.stdout.on('data', collectQemu);
  qemu.stderr.on('data', collectQemu);
  const exited = new Promise((resolve) => {
    qemu.on('error', (err) => resolve({ code: null, signal: null, spawnError: err }));
    qemu.on('close', (code, signal) => resolve({ code, signal }));
  });

  const onAbort = () => stop('no-status', 'the run was aborted');
  options.signal?.addEventListener('abort', onAbort, { once: true });
  if (options.signal?.aborted) onAbort();
  const timers = [
    setTimeout(() => stop('timeout', `timed out after ${timeoutMs / 1000} s`), timeoutMs),
    setTimeout(() => {
      if (bootMs === null) stop('no-status', `the guest did not finish booting within ${bootTimeoutMs / 1000} s (${accel})`);
    }, bootTimeoutMs),
  ];
  const exit = await exited;
  timers.forEach(clearTimeout);
  options.signal?.removeEventListener('abort', onAbort);
  await Promise.all([consoleFifo.finish(), outFifo.finish(), errFifo.finish()]);

  const totalMs = Math.round(performance.now() - started);
  const rcText = existsSync(join(runDir, 'rc')) ? readFileSync(join(runDir, 'rc'), 'utf8').trim() : '';
  const result = {
    stdout: outFifo.text(),
    stderr: errFifo.text(),
    console: consoleFifo.text(),
    accel,
    accelReason,
    bootMs,
    totalMs,
    kernel: files.kernel,
  };
  if (!failure && /^\d+$/.test(rcText)) return { ...result, code: Number(rcText), outcome: 'exited' };
  const details = [
    qemuOutput.trim() ? `qemu said:\n${indent(qemuOutput.trim())}` : 'qemu printed nothing.',
    result.console.trim() ? `guest console:\n${indent(result.console.trim())}` : 'the guest console is empty.',
  ];
  if (failure?.outcome === 'timeout') {
    const error = [`vsockmesh guest: the command ${failure.error} under ${accel}; qemu was killed.`, ...details].join('\n');
    return { ...result, code: EXIT_TIMEOUT, outcome: 'timeout', error };
  }
  const how = exit.spawnError
    ? `qemu could not start: ${exit.spawnError.message}`
    : (failure?.error ?? `qemu ended (${exit.signal ? `signal ${exit.signal}` : `exit code ${exit.code}`}) before the guest reported a status`);
  const error = [`vsockmesh guest: ${how}.`, ...details].join('\n');
  return { ...result, code: EXIT_NO_STATUS, outcome: 'no-status', error };
}

const indent = (text) => text.replace(/\r/g, '').replace(/^/gm, '  | ');

// ---------------------------------------------------------------- CLI

const USAGE = `usage: node test/vm/guest.mjs [--timeout S] [--mem 1G] [--smp N] [--share DIR]... [-v] -- cmd args...

Runs cmd in a throw-away QEMU guest where AF_VSOCK works (vsock_loopback, CID 1),
with the host's cwd, environment and filesystem (read-only; writes vanish, except
in each --share DIR, which the guest sees read-write at the same path).
Exit status: the command's own; ${EXIT_TIMEOUT} on timeout; ${EXIT_NO_STATUS} when the guest never
reported one (the console log is printed). VSOCKMESH_GUEST_ACCEL=kvm|tcg forces the accelerator.`;

function parseCli(args) {
  const opts = { timeoutMs: 600_000, verbose: false };
  for (let i = 0; i < args.length; i++) {
    const a = args[i];
    const value = () => {
      if (i + 1 >= args.length) throw new GuestSetupError(`${a} needs a value\n${USAGE}`);
      return args[++i];
    };
    if (a === '--') return { opts, argv: args.slice(i + 1) };
    if (a === '--timeout') opts.timeoutMs = positive(a, value()) * 1000;
    else if (a === '--mem') opts.mem = value();
    else if (a === '--smp') opts.smp = positive(a, value());
    else if (a === '--share') (opts.shares ??= []).push(value());
    else if (a === '-v' || a === '--verbose') opts.verbose = true;
    else if (a === '-h' || a === '--help') return { help: true };
    else return { opts, argv: args.slice(i) };
  }
  return { opts, argv: [] };
}

function positive(flag, text) {
  const n = Number(text);
  if (!Number.isFinite(n) || n <= 0) throw new GuestSetupError(`${flag} must be a positive number, not ${JSON.stringify(text)}`);
  return n;
}

async function cli() {
  let parsed;
  try {
    parsed = parseCli(process.argv.slice(2));
  } catch (err) {
    process.stderr.write(`${err.message}\n`);
    return 2;
  }
  if (parsed.help || parsed.argv.length === 0) {
    process.stderr.write(`${USAGE}\n`);
    return parsed.help ? 0 : 2;
  }
  const { opts, argv } = parsed;
  const abort = new globalThis.AbortController();
  const signals = { SIGINT: 130, SIGTERM: 143, SIGHUP: 129 };
  let killedBy = null;
  const onSignal = (name) => {
    killedBy = name;
    abort.abort();
  };
  for (const name of Object.keys(signals)) process.once(name, onSignal);
  try {
    const r = await runInGuest(argv, {
      ...opts,
      signal: abort.signal,
      onStdout: (c) => process.stdout.write(c),
      onStderr: (c) => process.stderr.write(c),
    });
    if (opts.verbose) {
      process.stderr.write(`guest: ${r.accel} (${r.accelReason}); kernel ${r.kernel}\n`);
      process.stderr.write(`guest: boot ${fmtMs(r.bootMs)}, total ${fmtMs(r.totalMs)}, outcome ${r.outcome}, code ${r.code}\n`);
      if (r.outcome === 'exited') process.stderr.write(indent(r.console.trim()) + '\n');
    }
    if (killedBy) return signals[killedBy];
    if (r.error) process.stderr.write(`${r.error}\n`);
    return r.code;
  } catch (err) {
    process.stderr.write(`${err instanceof GuestSetupError ? err.message : err.stack}\n`);
    return EXIT_NO_STATUS;
  }
}

export const fmtMs = (ms) => (ms === null || ms === undefined ? 'n/a' : `${(ms / 1000).toFixed(1)} s`);

if (process.argv[1] === harnessPath) {
  process.exitCode = await cli();
}
