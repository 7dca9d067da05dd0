// Facts about the guest a vsock test runs in. These tests run only inside the
// QEMU guest of test/vm/guest.mjs (vsock_loopback: every socket is at CID 1).

import { existsSync, readFileSync } from 'node:fs';
import { native } from '../../proxy/native/index.js';

/** Fails loudly on the host: nothing here may open AF_VSOCK outside the guest. */
export function assertInGuest(): void {
  const token = existsSync('/proc/cmdline') && readFileSync('/proc/cmdline', 'utf8').split(/\s+/).includes('vsockmesh.guest=1');
  if (process.env.VSOCKMESH_IN_GUEST !== '1' || !token || !existsSync('/dev/vsock')) {
    throw new Error('vsock tests run only inside the QEMU guest (node test/vm/guest.mjs -- ...); refusing to open AF_VSOCK here');
  }
}

/** The harness says which accelerator it booted with; kvm-clock tells the same (it is the clocksource only under KVM). */
export function underKvm(): boolean {
  const told = process.env.VSOCKMESH_GUEST_ACCEL;
  if (told === 'kvm' || told === 'tcg') return told === 'kvm';
  try {
    return readFileSync('/sys/devices/system/clocksource/clocksource0/current_clocksource', 'utf8').trim() === 'kvm-clock';
  } catch {
    return false;
  }
}

/** A size that is `kvm` under KVM and `tcg` under emulation (said in the test title). */
export function sized(kvm: number, tcg: number): number {
  return underKvm() ? kvm : tcg;
}

export const MiB = 1024 * 1024;

/** A vsock port nothing listens on now (bind to any port, read it, close). */
export function freeVsockPort(): number {
  const [fd, port] = native.listen('vsock', native.VMADDR_CID_ANY, 0, 1, () => {});
  native.close(fd);
  return port;
}
