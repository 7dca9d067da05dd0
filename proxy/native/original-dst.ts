// Transparent mode: where a connection that iptables REDIRECTed to the
// sidecar was originally headed (SO_ORIGINAL_DST / IP6T_SO_ORIGINAL_DST).

import type net from 'node:net';
import { native } from './index.js';

export interface OriginalDestination {
  address: string;
  port: number;
}

/**
 * The original destination of a redirected TCP connection: a socket of the
 * native core by fd (with its family), or a net.Socket. Throws with a code
 * (ENOENT: no NAT entry, i.e. the connection was not redirected).
 */
export function getOriginalDst(socket: net.Socket): OriginalDestination;
export function getOriginalDst(fd: number, family: 'inet' | 'inet6'): OriginalDestination;
export function getOriginalDst(target: number | net.Socket, family?: 'inet' | 'inet6'): OriginalDestination {
  let fd: number;
  let fam: 'inet' | 'inet6';
  if (typeof target === 'number') {
    fd = target;
    fam = family ?? 'inet';
  } else {
    fd = (target as unknown as { _handle?: { fd?: number } })._handle?.fd ?? -1;
    fam = target.remoteFamily === 'IPv6' && !target.remoteAddress?.startsWith('::ffff:') ? 'inet6' : 'inet';
  }
  if (fd < 0) throw Object.assign(new Error('getOriginalDst: the socket has no file descriptor (closed, or not a TCP socket)'), { code: 'EBADF' });
  const [address, port] = native.originalDst(fd, fam);
  return { address, port };
}
