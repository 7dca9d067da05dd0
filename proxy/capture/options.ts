// The flags of `vsockmesh iptables apply|print` checked and turned into the
// capture model (rules.ts). Pure: user and group names are resolved by the
// lookups the caller passes. Each problem is one line naming the flag.

import { isIP } from 'node:net';
import { VsockmeshError } from '../runtime/errors.js';
import type { CaptureModel, Cidr, Family } from './rules.js';

export type Ipv6Mode = 'auto' | 'on' | 'off';

/** The flags as given (repeatable ones as lists). */
export interface CaptureFlags {
  port: string;
  uid: string[];
  gid: string[];
  mark: string[];
  excludeCidr: string[];
  excludePort: string[];
  inboundPort?: string;
  inboundExcludePort: string[];
  ipv6: string;
}

/** Resolves a user or group name to its id (undefined: no such name). */
export interface IdLookups {
  uid(name: string): number | undefined;
  gid(name: string): number | undefined;
}

/** The sidecar's user when no --uid, --gid or --mark is given (deploy/systemd/vsockmesh.sysusers). */
export const DEFAULT_SIDECAR_USER = 'vsockmesh';
export const DEFAULT_CAPTURE_PORT = '15001';

/** Bad usage: exit 2, nothing changed. */
export class CaptureUsageError extends VsockmeshError {
  constructor(flag: string, problem: string) {
    super('INVALID_ARGUMENT', `${flag}: ${problem}`);
  }
}

const MAX_ID = 4294967294;

function port(flag: string, text: string): number {
  const n = /^\d+$/.test(text) ? Number(text) : NaN;
  if (!(n >= 1 && n <= 65535)) throw new CaptureUsageError(flag, `must be an integer 1..65535, not '${text}'`);
  return n;
}

function id(flag: string, text: string, lookup: (name: string) => number | undefined, what: string): number {
  if (/^\d+$/.test(text)) {
    const n = Number(text);
    if (n > MAX_ID) throw new CaptureUsageError(flag, `must be a ${what} name or an id 0..${MAX_ID}, not '${text}'`);
    return n;
  }
  if (!/^[A-Za-z_][A-Za-z0-9_.-]*\$?$/.test(text)) throw new CaptureUsageError(flag, `must be a ${what} name or an id 0..${MAX_ID}, not '${text}'`);
  const n = lookup(text);
  if (n === undefined) throw new CaptureUsageError(flag, `no such ${what} '${text}' (the sidecar's ${what}; create it first)`);
  return n;
}

function mark(text: string): string {
  const parts = /^(0[xX][0-9a-fA-F]+|\d+)(?:\/(0[xX][0-9a-fA-F]+|\d+))?$/.exec(text);
  if (!parts || [parts[1], parts[2]].some((p) => p !== undefined && Number(p) > 0xffffffff)) {
    throw new CaptureUsageError('--mark', `must be VALUE or VALUE/MASK (decimal or 0x hex, 32 bits), not '${text}'`);
  }
  return text.toLowerCase();
}

function cidr(text: string): Cidr {
  const m = /^([^/]+)\/(\d{1,3})$/.exec(text);
  const version = m ? isIP(m[1]!) : 0;
  if (!m || version === 0) throw new CaptureUsageError('--exclude-cidr', `must be an address/prefix (10.0.0.0/8, fd00::/8), not '${text}'`);
  const family: Family = version === 6 ? 6 : 4;
  if (Number(m[2]) > (family === 6 ? 128 : 32)) throw new CaptureUsageError('--exclude-cidr', `prefix of '${text}' is longer than ${family === 6 ? 128 : 32}`);
  return { family, text };
}

export function ipv6Mode(text: string): Ipv6Mode {
  if (text !== 'auto' && text !== 'on' && text !== 'off') throw new CaptureUsageError('--ipv6', `must be auto, on or off, not '${text}'`);
  return text;
}

/** The capture model the flags describe; throws CaptureUsageError on the first bad flag. */
export function captureModel(flags: CaptureFlags, lookups: IdLookups): CaptureModel {
  ipv6Mode(flags.ipv6);
  const noOwner = flags.uid.length === 0 && flags.gid.length === 0 && flags.mark.length === 0;
  const uids = noOwner ? [DEFAULT_SIDECAR_USER] : flags.uid;
  if (flags.inboundPort === undefined && flags.inboundExcludePort.length > 0) {
    throw new CaptureUsageError('--inbound-exclude-port', 'only with --inbound-port (inbound capture is off without it)');
  }
  const dedupe = <T>(values: T[]) => [...new Set(values)];
  // Names last: a typo in a port is reported before a missing user.
  const outboundPort = port('--port', flags.port);
  const excludePorts = dedupe(flags.excludePort.map((p) => port('--exclude-port', p)));
  const inbound =
    flags.inboundPort === undefined
      ? null
      : { port: port('--inbound-port', flags.inboundPort), excludePorts: dedupe(flags.inboundExcludePort.map((p) => port('--inbound-exclude-port', p))) };
  const excludeCidrs = dedupe(flags.excludeCidr).map(cidr);
  const excludeMarks = dedupe(flags.mark.map(mark));
  const excludeGids = dedupe(flags.gid.map((g) => id('--gid', g, (n) => lookups.gid(n), 'group')));
  const excludeUids = dedupe(uids.map((u) => id('--uid', u, (n) => lookups.uid(n), 'user')));
  return { outboundPort, excludeUids, excludeGids, excludeMarks, excludeCidrs, excludePorts, inbound };
}
