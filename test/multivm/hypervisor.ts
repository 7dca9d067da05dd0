// The hypervisor of the multi-VM suite: runs INSIDE the outer QEMU guest
// (test/multivm/run.mjs boots it), loads vhost_vsock there, and boots the inner
// guests with their own CIDs as child processes (torn down by PID). Each inner
// guest runs vmagent: a control port for one shell command per connection.
// This machine never opens AF_VSOCK or /dev/vhost-vsock: only the outer guest does.

import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { assertInGuest } from '../vm/guest-env.js';
import { InnerCommand, type CommandResult } from './control.js';
import innerGuest from './inner-guest.json' with { type: 'json' };

const run = promisify(execFile);

/** Fails loudly anywhere but the outer guest booted by test/multivm/run.mjs (not even in the single-guest suite's guest). */
export function assertInOuterGuest(): void {
  assertInGuest();
  if (process.env.VSOCKMESH_MULTIVM !== '1') {
    throw new Error('the multi-VM suite runs only inside its outer QEMU guest (node test/multivm/run.mjs); refusing to load vhost_vsock here');
  }
}

/** The outer guest becomes a vsock host: /dev/vhost-vsock for the inner guests' vhost-vsock devices. */
export async function loadVhostVsock(): Promise<void> {
  assertInOuterGuest();
  await run('modprobe', ['vhost_vsock']);
  if (!existsSync('/dev/vhost-vsock')) throw new Error('modprobe vhost_vsock left no /dev/vhost-vsock');
}

export interface InnerImage {
  kernel: string;
  initrd: string;
}

/** From the environment test/multivm/run.mjs gives the outer guest. */
export function innerImage(): InnerImage {
  const kernel = process.env.VSOCKMESH_MULTIVM_KERNEL;
  const initrd = process.env.VSOCKMESH_MULTIVM_INITRD;
  if (!kernel || !initrd) throw new Error('VSOCKMESH_MULTIVM_KERNEL and VSOCKMESH_MULTIVM_INITRD are not set (boot through test/multivm/run.mjs)');
  return { kernel, initrd };
}

/** Where the guests' logs go: a host directory shared into the outer guest, kept on failure. */
export function logDir(): string {
  const dir = process.env.VSOCKMESH_MULTIVM_LOGS;
  if (!dir) throw new Error('VSOCKMESH_MULTIVM_LOGS is not set (boot through test/multivm/run.mjs)');
  return dir;
}

export interface InnerVmSpec {
  name: string;
  cid: number;
  mem?: string;
  /** The outer guest's / read-only inside the guest (9p), so Node can run there: only for measuring its start-up. */
  shareRoot?: boolean;
}

/** Under TCG inside TCG a microvm cannot calibrate its TSC (no HPET, PIT too slow to trust): the kernel gets the rate from us. */
function tscKhz(): number {
  const m = /^cpu MHz\s*:\s*([\d.]+)/m.exec(readFileSync('/proc/cpuinfo', 'utf8'));
  if (!m) throw new Error('no "cpu MHz" in /proc/cpuinfo: cannot boot a microvm guest');
  return Math.round(Number(m[1]) * 1000);
}

function qemuArgs(spec: Required<InnerVmSpec>, image: InnerImage, consolePath: string): string[] {
  const append = [
    'console=ttyS0',
    'quiet',
    'loglevel=3',
    'panic=-1',
    'rdinit=/init',
    'mitigations=off',
    'no_timer_check',
    'tsc=reliable',
    'lpj=10000000',
    'random.trust_cpu=on',
    // Boot work a test VM does not need, each costing seconds when emulated twice over:
    // the crypto self-tests, zeroing every allocation, audit, probing absent legacy UARTs.
    'cryptomgr.notests',
    'init_on_alloc=0',
    'audit=0',
    '8250.nr_uarts=1',
    `tsc_early_khz=${tscKhz()}`,
    `${innerGuest.cmdlineMark}=${spec.name}`,
  ].join(' ');
  const rootShare = spec.shareRoot
    ? ['-fsdev', `local,id=${innerGuest.rootShare.tag},path=/,security_model=none,readonly=on`, '-device', `virtio-9p-device,fsdev=${innerGuest.rootShare.tag},mount_tag=${innerGuest.rootShare.tag}`]
    : [];
  return [
    '-nodefaults',
    '-no-user-config',
    '-display',
    'none',
    '-no-reboot',
    '-accel',
    'tcg,tb-size=64',
    '-cpu',
    'max',
    // No PCI and fewer devices to probe: it boots faster than q35 when nested.
    '-machine',
    'microvm',
    '-m',
    spec.mem,
    '-smp',
    '1',
    '-kernel',
    image.kernel,
    '-initrd',
    image.initrd,
    '-append',
    append,
    '-serial',
    `file:${consolePath}`,
    '-device',
    `vhost-vsock-device,guest-cid=${spec.cid}`,
    ...rootShare,
  ];
}

/** An inner guest: a qemu child process with its own CID (vhost-vsock), driven over its control port. */
export class InnerVm {
  readonly name: string;
  readonly cid: number;
  readonly consolePath: string;
  readonly startedAt = Date.now();
  private readonly child: ChildProcess;
  private qemuOutput = '';
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;

  constructor(spec: InnerVmSpec, image: InnerImage, logs: string) {
    assertInOuterGuest();
    const full: Required<InnerVmSpec> = { mem: '256M', shareRoot: false, ...spec };
    this.name = spec.name;
    this.cid = spec.cid;
    this.consolePath = join(logs, `${spec.name}.console`);
    this.child = spawn('qemu-system-x86_64', qemuArgs(full, image, this.consolePath), { stdio: ['ignore', 'pipe', 'pipe'] });
    const collect = (c: Buffer): void => {
      this.qemuOutput += c.toString('utf8');
    };
    this.child.stdout!.on('data', collect);
    this.child.stderr!.on('data', collect);
    this.exited = new Promise((resolve) => {
      this.child.on('error', (err) => {
        this.qemuOutput += `spawn failed: ${err.message}\n`;
        resolve({ code: null, signal: null });
      });
      this.child.on('exit', (code, signal) => resolve({ code, signal }));
    });
  }

  get pid(): number {
    return this.child.pid ?? -1;
  }

  get running(): boolean {
    return this.child.exitCode === null && this.child.signalCode === null;
  }

  console(): string {
    return existsSync(this.consolePath) ? readFileSync(this.consolePath, 'latin1') : '';
  }

  qemuLog(): string {
    return this.qemuOutput;
  }

  /** Resolves with the guest's uptime at ready once its control port listens (the console says so). */
  async waitReady(timeoutMs: number): Promise<{ readyMs: number; line: string }> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      // Whole lines only: the console file may end in the middle of one.
      const line = this.console()
        .split('\n')
        .slice(0, -1)
        .find((l) => l.startsWith(innerGuest.readyLine));
      if (line) return { readyMs: Date.now() - this.startedAt, line: line.trim() };
      if (!this.running) throw new Error(`${this.name} (CID ${this.cid}) ended before it was ready\nqemu: ${this.qemuOutput}\nconsole:\n${this.console()}`);
      if (Date.now() > deadline) throw new Error(`${this.name} (CID ${this.cid}) was not ready within ${timeoutMs / 1000} s\nconsole:\n${this.console()}`);
      await new Promise((r) => setTimeout(r, 500));
    }
  }

  /** A command with stdin open (end() it); output arrives as it is written. */
  start(script: string, connectTimeoutMs = 30_000): InnerCommand {
    return new InnerCommand(this.cid, innerGuest.controlPort, script, connectTimeoutMs);
  }

  /** Runs a command to its end; stdin gets `input` (or nothing). */
  async run(script: string, options: { input?: Buffer | string; timeoutMs?: number } = {}): Promise<CommandResult> {
    const command = this.start(script);
    command.end(options.input);
    const timeoutMs = options.timeoutMs ?? 300_000;
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => {
        command.kill();
        reject(new Error(`${this.name}: the command did not finish within ${timeoutMs / 1000} s: ${script}`));
      }, timeoutMs);
    });
    try {
      return await Promise.race([command.done, timeout]);
    } finally {
      clearTimeout(timer);
    }
  }

  /** Like run(), but a non-zero exit status is an error naming the output. */
  async check(script: string, options: { input?: Buffer | string; timeoutMs?: number } = {}): Promise<string> {
    const r = await this.run(script, options);
    if (r.code !== 0) throw new Error(`${this.name}: "${script}" exited ${r.code}\nstdout: ${r.stdout}\nstderr: ${r.stderr}`);
    return r.stdout;
  }

  /** Pulls the plug: SIGKILL to this guest's qemu, by PID. */
  async kill(): Promise<void> {
    if (this.running) process.kill(this.pid, 'SIGKILL');
    await this.exited;
  }

  /** Freezes the whole guest (SIGSTOP to its qemu): it answers nothing until resume(). */
  pause(): void {
    process.kill(this.pid, 'SIGSTOP');
  }

  resume(): void {
    process.kill(this.pid, 'SIGCONT');
  }
}
