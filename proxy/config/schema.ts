// YAML/JSON shape of the sidecar config (snake_case, like Envoy) and its
// validation into domain types. Every problem is reported with its path.

import { isIP } from 'node:net';
import { z } from 'zod';
import { parseDuration } from './duration.js';
import type { SidecarConfig } from './types.js';

const port = z
  .number({ error: 'must be a port number' })
  .int({ error: 'must be an integer 0..65535 (0 picks a free port)' })
  .min(0, { error: 'must be an integer 0..65535 (0 picks a free port)' })
  .max(65535, { error: 'must be an integer 0..65535 (0 picks a free port)' });

const destinationPort = z
  .number({ error: 'must be a port number' })
  .int({ error: 'must be an integer 1..65535' })
  .min(1, { error: 'must be an integer 1..65535' })
  .max(65535, { error: 'must be an integer 1..65535' });

const ipAddress = z.string({ error: 'must be an IP address string' }).refine((s) => isIP(s) !== 0, {
  error: 'must be an IPv4 or IPv6 address (host names are not resolved)',
});

const loopbackAddress = ipAddress.refine((s) => s === '::1' || /^127\.\d+\.\d+\.\d+$/.test(s), {
  error: 'must be a loopback address (127.0.0.0/8 or ::1): outbound listeners serve only local apps',
});

const name = z
  .string({ error: 'must be a string' })
  .regex(/^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/, { error: 'must be 1-128 characters of letters, digits, ".", "_" or "-"' });

function duration(fallback: string, min = 1) {
  return z
    .string({ error: 'must be a duration string such as "250ms", "5s", "1m" or "1h"' })
    .default(fallback)
    .transform((text, ctx) => {
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
    });
}

const socketAddress = z.strictObject({ address: ipAddress, port: destinationPort });

const endpoint = z
  .strictObject({
    address: ipAddress,
    port: destinationPort,
    vm_id: name.optional(),
    peer: socketAddress.optional(),
  })
  .transform((e) => ({
    address: e.address,
    port: e.port,
    ...(e.vm_id !== undefined && { vmId: e.vm_id }),
    ...(e.peer !== undefined && { peer: e.peer }),
  }));

const cluster = z
  .strictObject({
    name,
    connect_timeout: duration('5s'),
    authority: z.string().min(1).max(255).optional(),
    endpoints: z.array(endpoint).min(1, { error: 'must list at least one endpoint' }),
  })
  .transform((c) => ({
    name: c.name,
    connectTimeoutMs: c.connect_timeout,
    ...(c.authority !== undefined && { authority: c.authority }),
    endpoints: c.endpoints,
  }));

const outboundListener = z
  .strictObject({
    kind: z.literal('outbound'),
    name,
    addresses: z.array(loopbackAddress).min(1, { error: 'must list at least one address' }).default(['127.0.0.1']),
    port,
    cluster: name,
    idle_timeout: duration('1h'),
  })
  .transform((l) => ({
    kind: l.kind,
    name: l.name,
    addresses: l.addresses,
    port: l.port,
    cluster: l.cluster,
    idleTimeoutMs: l.idle_timeout,
  }));

const inboundPort = z.union(
  [
    destinationPort.transform((p) => ({ port: p, target: { address: '127.0.0.1', port: p } })),
    z
      .strictObject({ port: destinationPort, target: socketAddress.optional() })
      .transform((p) => ({ port: p.port, target: p.target ?? { address: '127.0.0.1', port: p.port } })),
  ],
  { error: 'must be a port number or {port, target: {address, port}}' },
);

const inboundListener = z
  .strictObject({
    kind: z.literal('inbound'),
    name,
    addresses: z.array(ipAddress).min(1, { error: 'must list at least one address' }).default(['0.0.0.0']),
    port,
    header_timeout: duration('5s'),
    max_header_bytes: z
      .number({ error: 'must be a number' })
      .int()
      .min(28, { error: 'must be 28..65551 (a PROXY v2 header with IPv4 addresses is 28 bytes)' })
      .max(65551, { error: 'must be 28..65551 (the PROXY v2 maximum)' })
      .default(4096),
    idle_timeout: duration('1h'),
    connect_timeout: duration('5s'),
    ports: z.array(inboundPort).min(1, { error: 'must declare at least one local port (the inbound side connects to nothing else)' }),
  })
  .transform((l) => ({
    kind: l.kind,
    name: l.name,
    addresses: l.addresses,
    port: l.port,
    headerTimeoutMs: l.header_timeout,
    maxHeaderBytes: l.max_header_bytes,
    idleTimeoutMs: l.idle_timeout,
    connectTimeoutMs: l.connect_timeout,
    ports: l.ports,
  }));

const listener = z.discriminatedUnion('kind', [outboundListener, inboundListener], {
  error: 'must be "outbound" or "inbound"',
});

export const sidecarConfigSchema = z
  .strictObject({
    node: z.strictObject({ id: name }),
    admin: z
      .strictObject({ address: ipAddress.default('127.0.0.1'), port: port.default(15000) })
      .nullable()
      .default({ address: '127.0.0.1', port: 15000 }),
    log: z
      .strictObject({
        level: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
        access_log: z.boolean().default(true),
      })
      .default({ level: 'info', access_log: true })
      .transform((l) => ({ level: l.level, accessLog: l.access_log })),
    drain_timeout: duration('30s', 0),
    listeners: z.array(listener).default([]),
    clusters: z.array(cluster).default([]),
  })
  // Cross-reference checks run even when fields have problems of their own, so
  // one pass lists everything; they read the data defensively for that reason.
  .check(z.superRefine(crossReferences, { when: () => true }))
  .transform(
    (c): SidecarConfig => ({
      node: c.node,
      admin: c.admin,
      log: c.log,
      drainTimeoutMs: c.drain_timeout,
      listeners: c.listeners,
      clusters: c.clusters,
    }),
  );

type Issues = z.core.$RefinementCtx;

function crossReferences(c: { listeners?: unknown; clusters?: unknown }, ctx: Issues): void {
  const clusters = Array.isArray(c.clusters) ? (c.clusters as Array<{ name?: unknown }>) : [];
  const listeners = Array.isArray(c.listeners) ? (c.listeners as Array<Record<string, unknown>>) : [];
  const clusterNames = new Set<unknown>();
  clusters.forEach((cl, i) => {
    if (typeof cl?.name !== 'string') return;
    if (clusterNames.has(cl.name)) ctx.addIssue({ code: 'custom', path: ['clusters', i, 'name'], message: `duplicate cluster name "${cl.name}"` });
    clusterNames.add(cl.name);
  });
  const listenerNames = new Set<unknown>();
  const binds = new Map<string, number>();
  listeners.forEach((l, i) => {
    if (typeof l !== 'object' || l === null) return;
    if (typeof l.name === 'string') {
      if (listenerNames.has(l.name)) ctx.addIssue({ code: 'custom', path: ['listeners', i, 'name'], message: `duplicate listener name "${l.name}"` });
      listenerNames.add(l.name);
    }
    if (l.kind === 'outbound' && typeof l.cluster === 'string' && !clusterNames.has(l.cluster)) {
      ctx.addIssue({ code: 'custom', path: ['listeners', i, 'cluster'], message: `unknown cluster "${l.cluster}"` });
    }
    if (l.kind === 'inbound' && Array.isArray(l.ports)) {
      const seen = new Set<number>();
      l.ports.forEach((p: unknown, j: number) => {
        const port = typeof p === 'number' ? p : (p as { port?: unknown } | null)?.port;
        if (typeof port !== 'number') return;
        if (seen.has(port)) ctx.addIssue({ code: 'custom', path: ['listeners', i, 'ports', j], message: `duplicate port ${port}` });
        seen.add(port);
      });
    }
    if (typeof l.port !== 'number' || l.port === 0 || !Array.isArray(l.addresses)) return;
    for (const address of l.addresses) {
      const key = `${String(address)}:${l.port}`;
      const other = binds.get(key);
      if (other !== undefined) ctx.addIssue({ code: 'custom', path: ['listeners', i, 'port'], message: `${key} is also bound by listeners[${other}]` });
      binds.set(key, i);
    }
  });
}
