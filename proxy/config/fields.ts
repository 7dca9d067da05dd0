// Field schemas shared by the sidecar's and the host relay's config files, so
// both say the same thing about the same mistake.
//
// zod's v3 API (shipped inside the zod 4 package): it costs a sidecar about a
// third of the resident memory the v4 API does, and config parsing needs
// nothing v4 adds.

import { isIP } from 'node:net';
import { z } from 'zod/v3';
import { parseDuration } from '../runtime/duration.js';
import { parseSize } from '../runtime/size.js';
import { DEFAULT_TRUST_DOMAIN, trustDomainProblem } from '../identity/spiffe.js';
import type { IdentitySettings, OverloadSettings } from './types.js';

export { z };

export const U32 = 0xffffffff;
export const PORT = 'must be an integer 0..65535 (0 picks a free port)';
const DESTINATION_PORT = 'must be an integer 1..65535';
const CID = 'must be a context ID 1..4294967294 (1: local loopback, 2: the host, 3 and up: guests)';
const VSOCK_PORT = 'must be a vsock port 1..4294967294';

export const port = z.number({ invalid_type_error: 'must be a port number' }).int({ message: PORT }).min(0, { message: PORT }).max(65535, { message: PORT });

export const destinationPort = z
  .number({ invalid_type_error: 'must be a port number' })
  .int({ message: DESTINATION_PORT })
  .min(1, { message: DESTINATION_PORT })
  .max(65535, { message: DESTINATION_PORT });

export const ipAddress = z
  .string({ invalid_type_error: 'must be an IP address string' })
  .refine((s) => isIP(s) !== 0, { message: 'must be an IPv4 or IPv6 address (host names are not resolved)' });

export const name = z
  .string({ invalid_type_error: 'must be a string' })
  .regex(/^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/, { message: 'must be 1-128 characters of letters, digits, ".", "_" or "-"' });

export const cid = z.number({ invalid_type_error: 'must be a context ID number' }).int({ message: CID }).min(1, { message: CID }).max(U32 - 1, { message: CID });

export const vsockPort = z
  .number({ invalid_type_error: 'must be a vsock port number' })
  .int({ message: VSOCK_PORT })
  .min(1, { message: VSOCK_PORT })
  .max(U32 - 1, { message: VSOCK_PORT });

/** A CID to bind: "any" (VMADDR_CID_ANY) or a number. */
export const bindCid = z
  .union([z.literal('any'), cid])
  .default('any')
  .transform((c) => (c === 'any' ? U32 : c));

export const logSettings = z
  .object({
    level: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
    access_log: z.boolean({ invalid_type_error: 'must be true or false' }).default(true),
  })
  .strict()
  .default({ level: 'info', access_log: true })
  .transform((l) => ({ level: l.level, accessLog: l.access_log }));

/** Admin endpoint settings with a role's default port; null disables it. */
export function adminSettings(defaultPort: number) {
  return z
    .object({ address: ipAddress.default('127.0.0.1'), port: port.default(defaultPort) })
    .strict()
    .nullable()
    .default({ address: '127.0.0.1', port: defaultPort });
}

const DURATION = 'must be a duration string such as "250ms", "5s", "1m" or "1h"';

function toMs(text: string, min: number, ctx: z.RefinementCtx): number {
  const ms = parseDuration(text);
  if (ms === undefined) {
    ctx.addIssue({ code: 'custom', message: `"${text}" is not a duration such as "250ms", "5s", "1m" or "1h"` });
    return z.NEVER;
  }
  if (ms < min) {
    ctx.addIssue({ code: 'custom', message: `must be at least ${min}ms` });
    return z.NEVER;
  }
  return ms;
}

/** A duration string ("250ms", "5s", "1m", "1h") as milliseconds, at least `min`. */
export function duration(fallback: string, min = 1) {
  return z
    .string({ invalid_type_error: DURATION })
    .default(fallback)
    .transform((text, ctx) => toMs(text, min, ctx));
}

/** A duration as duration() reads it, or undefined when left out (the default is the caller's: see listener-defaults.ts). */
export function optionalDuration(min = 1) {
  return z
    .string({ invalid_type_error: DURATION })
    .optional()
    .transform((text, ctx) => (text === undefined ? undefined : toMs(text, min, ctx)));
}

/** The identity files of a sidecar's or host relay's control-plane clients (VM manager, ADS): PEM, reloaded when they change. */
export const controlTls = z
  .object({ cert: z.string().min(1), key: z.string().min(1), ca: z.string().min(1) })
  .strict()
  .optional()
  .transform((v) => (v === undefined ? null : { certPath: v.cert, keyPath: v.key, caPath: v.ca }));

/** insecure: true, the only way to plain-text control-plane clients. */
export const controlInsecure = z.boolean({ invalid_type_error: 'must be true or false' }).optional();

/**
 * Secure by default: the control-plane clients (vm_manager, xds) take their
 * identity from exactly one place: files (tls:), a certificate from the
 * control plane's CA (identity:), or nowhere, by name (insecure: true).
 * Absent sections are undefined or null (after their transform).
 */
export function controlTransportIssue(c: { tls?: unknown; identity?: unknown; insecure?: unknown; vm_manager?: unknown; xds?: unknown }): { path: string[]; message: string } | undefined {
  const given = (['tls', 'identity', 'insecure'] as const).filter((k) => (k === 'insecure' ? c.insecure === true : c[k] !== undefined && c[k] !== null));
  if (given.length > 1) return { path: [given[1]!], message: `give one of a tls section, an identity section or insecure: true, not ${given.join(' and ')}` };
  if (given.length === 0 && (c.vm_manager !== undefined || c.xds !== undefined)) {
    return { path: ['tls'], message: 'required by the control-plane clients (vm_manager, xds): tls: {cert, key, ca} files, or an identity section (a certificate from the control plane through a join token); or insecure: true for a control plane started with --insecure' };
  }
  return undefined;
}

/** A gRPC target: `host:port` or `[IPv6]:port`. */
export const hostPort = z.string().regex(/^[^\s:[\]]+:\d{1,5}$|^\[[0-9a-fA-F:.]+\]:\d{1,5}$/, { message: 'must be host:port' });

/** Replicas a control-plane client may name (`addresses:`). */
export const MAX_CONTROL_PLANE_ADDRESSES = 16;

/**
 * A control-plane client's servers: `address: host:port` (one), or
 * `addresses: [..]` (replicas, tried in order, the next when one fails);
 * not both. A host name may have several DNS records: grpc-js tries each.
 */
export const replicaAddresses = {
  address: hostPort.optional(),
  addresses: z
    .array(hostPort, { invalid_type_error: 'must be a list of host:port' })
    .min(1, { message: 'must list at least one host:port' })
    .max(MAX_CONTROL_PLANE_ADDRESSES, { message: `must list at most ${MAX_CONTROL_PLANE_ADDRESSES} host:port` })
    .optional(),
};

/** The issue with `address`/`addresses`, if any (for a superRefine). */
export function replicaAddressesIssue(v: { address?: string | undefined; addresses?: string[] | undefined }): { path: string[]; message: string } | undefined {
  if (v.address === undefined && v.addresses === undefined) return { path: ['address'], message: 'required (or addresses: [host:port, ...] for several replicas)' };
  if (v.address !== undefined && v.addresses !== undefined) return { path: ['addresses'], message: 'give address or addresses, not both' };
  const seen = new Set<string>();
  for (const a of v.addresses ?? []) {
    if (seen.has(a)) return { path: ['addresses'], message: `"${a}" is listed twice` };
    seen.add(a);
  }
  return undefined;
}

/** replicaAddressesIssue as a zod superRefine. */
export function checkReplicaAddresses(v: { address?: string | undefined; addresses?: string[] | undefined }, ctx: z.RefinementCtx): void {
  const issue = replicaAddressesIssue(v);
  if (issue !== undefined) ctx.addIssue({ code: 'custom', ...issue });
}

const MAX_CONNECTIONS = 'must be an integer 1..16777216 (leave it out for no limit)';

/** A connection limit; leaving it out means none. */
export const maxConnections = z
  .number({ invalid_type_error: 'must be a number of connections' })
  .int({ message: MAX_CONNECTIONS })
  .min(1, { message: MAX_CONNECTIONS })
  .max(16_777_216, { message: MAX_CONNECTIONS })
  .optional()
  .transform((n) => n ?? null);

const MIN_FREE_FDS = 'must be an integer 0..1048576';

/** The overload section, shared by the sidecar and the host relay. */
export const overloadSettings = z
  .object({
    max_connections: maxConnections,
    min_free_fds: z.number({ invalid_type_error: 'must be a number of descriptors' }).int({ message: MIN_FREE_FDS }).min(0, { message: MIN_FREE_FDS }).max(1_048_576, { message: MIN_FREE_FDS }).default(64),
    max_memory: z
      .string({ invalid_type_error: 'must be a size string such as "512MiB" or "2GiB"' })
      .optional()
      .transform((text, ctx) => {
        if (text === undefined) return null;
        const bytes = parseSize(text);
        if (bytes === undefined || bytes < 1024 * 1024) {
          ctx.addIssue({ code: 'custom', message: `"${text}" is not a size of at least 1MiB such as "512MiB" or "2GiB"` });
          return z.NEVER;
        }
        return bytes;
      }),
    check_interval: duration('1s', 10),
  })
  .strict()
  .default({})
  .transform((o): OverloadSettings => ({ maxConnections: o.max_connections, minFreeFds: o.min_free_fds, maxMemoryBytes: o.max_memory, checkIntervalMs: o.check_interval }));

/**
 * The identity section, shared by the sidecar and the host relay: the process
 * gets its SPIFFE certificate from the control plane's Certify (first through
 * a join token, or for a sidecar through its host agent over vsock (attest),
 * then renewed with the current one), and its control-plane
 * clients (VM manager, ADS) use it for mutual TLS. One of tls:, identity: or
 * insecure: true (controlTransportIssue).
 */
export const identitySettings = z
  .object({
    control_plane: hostPort,
    join_token_file: z.string().min(1, { message: 'must be a file path' }).optional(),
    attest: z.object({ port: vsockPort }).strict().optional(),
    trust_domain: z
      .string()
      .default(DEFAULT_TRUST_DOMAIN)
      .superRefine((td, ctx) => {
        const problem = trustDomainProblem(td);
        if (problem !== undefined) ctx.addIssue({ code: 'custom', message: `${problem.message} (${problem.reason})` });
      }),
    trust_bundle_file: z.string().min(1, { message: 'must be a file path' }),
    state_dir: z.string().min(1, { message: 'must be a directory path' }).optional(),
  })
  .strict()
  .superRefine((i, ctx) => {
    if (i.join_token_file === undefined && i.attest === undefined) {
      ctx.addIssue({ code: 'custom', path: ['join_token_file'], message: 'required, or attest: {port} (the first certificate through the host agent over vsock)' });
    }
    if (i.join_token_file !== undefined && i.attest !== undefined) ctx.addIssue({ code: 'custom', path: ['attest'], message: 'give join_token_file or attest for the first certificate, not both' });
  })
  .optional()
  .transform(
    (i): IdentitySettings | null =>
      i === undefined
        ? null
        : {
            controlPlane: i.control_plane,
            joinTokenFile: i.join_token_file ?? null,
            attest: i.attest ?? null,
            trustDomain: i.trust_domain,
            trustBundleFile: i.trust_bundle_file,
            stateDir: i.state_dir ?? null,
          },
  );

