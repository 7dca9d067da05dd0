// The host relay's config (YAML, like the sidecar's) and its policy: which
// source CID (as the kernel reports it) may reach which destination CID and ports.

import { z } from 'zod/v3';
import { parseDuration } from './duration.js';
import type { LogLevel, SocketAddress } from './types.js';

export interface RelayDestinationRule {
  cid: number;
  /** null: any port. */
  ports: number[] | null;
}

export interface RelayRule {
  sourceCid: number;
  destinations: RelayDestinationRule[];
}

export interface HostRelayConfig {
  node: { id: string };
  admin: SocketAddress | null;
  log: { level: LogLevel; accessLog: boolean };
  drainTimeoutMs: number;
  listen: { cid: number; port: number };
  headerTimeoutMs: number;
  connectTimeoutMs: number;
  idleTimeoutMs: number;
  policy: RelayRule[];
}

export type RelayDecision = { allowed: true } | { allowed: false; reason: 'source_not_allowed' | 'destination_not_allowed'; detail: string };

/** Deny by default: a source needs a rule, and the destination must be in it. */
export function relayDecision(policy: readonly RelayRule[], sourceCid: number, destination: { cid: number; port: number }): RelayDecision {
  const rules = policy.filter((r) => r.sourceCid === sourceCid);
  if (rules.length === 0) return { allowed: false, reason: 'source_not_allowed', detail: `source CID ${sourceCid} has no relay policy` };
  const ok = rules.some((r) => r.destinations.some((d) => d.cid === destination.cid && (d.ports === null || d.ports.includes(destination.port))));
  if (ok) return { allowed: true };
  return { allowed: false, reason: 'destination_not_allowed', detail: `source CID ${sourceCid} may not reach ${destination.cid}:${destination.port}` };
}

const U32 = 0xffffffff;
const cid = z.number({ invalid_type_error: 'must be a context ID number' }).int().min(1, { message: 'must be a context ID 1..4294967294' }).max(U32 - 1, { message: 'must be a context ID 1..4294967294' });
const vsockPort = z.number({ invalid_type_error: 'must be a vsock port number' }).int().min(1, { message: 'must be a vsock port 1..4294967294' }).max(U32 - 1, { message: 'must be a vsock port 1..4294967294' });
const port = z.number({ invalid_type_error: 'must be a port number' }).int().min(0, { message: 'must be an integer 0..65535' }).max(65535, { message: 'must be an integer 0..65535' });

function duration(fallback: string) {
  return z
    .string({ invalid_type_error: 'must be a duration string such as "250ms", "5s", "1m" or "1h"' })
    .default(fallback)
    .transform((text, ctx) => {
      const ms = parseDuration(text);
      if (ms === undefined) {
        ctx.addIssue({ code: 'custom', message: `"${text}" is not a duration such as "250ms", "5s", "1m" or "1h"` });
        return z.NEVER;
      }
      return ms;
    });
}

export const hostRelayConfigSchema = z
  .object({
    node: z.object({ id: z.string().regex(/^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/, { message: 'must be 1-128 characters of letters, digits, ".", "_" or "-"' }) }).strict(),
    admin: z
      .object({ address: z.string().default('127.0.0.1'), port: port.default(15300) })
      .strict()
      .nullable()
      .default({ address: '127.0.0.1', port: 15300 }),
    log: z
      .object({ level: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'), access_log: z.boolean().default(true) })
      .strict()
      .default({}),
    drain_timeout: duration('30s'),
    listen: z
      .object({ cid: z.union([z.literal('any'), cid]).default('any'), port: z.union([z.literal(0), vsockPort]).default(15100) })
      .strict()
      .default({}),
    header_timeout: duration('2s'),
    connect_timeout: duration('2s'),
    idle_timeout: duration('1h'),
    policy: z
      .array(
        z
          .object({
            source_cid: cid,
            destinations: z
              .array(z.object({ cid, ports: z.array(vsockPort).min(1, { message: 'list ports, or leave out "ports" for any port' }).optional() }).strict())
              .min(1, { message: 'must list at least one destination' }),
          })
          .strict(),
      )
      .min(1, { message: 'must have at least one rule: the relay denies everything else' }),
  })
  .strict()
  .transform(
    (c): HostRelayConfig => ({
      node: c.node,
      admin: c.admin,
      log: { level: c.log.level, accessLog: c.log.access_log },
      drainTimeoutMs: c.drain_timeout,
      listen: { cid: c.listen.cid === 'any' ? U32 : c.listen.cid, port: c.listen.port },
      headerTimeoutMs: c.header_timeout,
      connectTimeoutMs: c.connect_timeout,
      idleTimeoutMs: c.idle_timeout,
      policy: c.policy.map((r) => ({ sourceCid: r.source_cid, destinations: r.destinations.map((d) => ({ cid: d.cid, ports: d.ports ?? null })) })),
    }),
  );
