// YAML/JSON shape of the sidecar config (snake_case, like Envoy) and its
// validation into domain types. Every problem is reported with its path.
//
import { U32, PORT, adminSettings, controlInsecure, controlTls, controlTransportIssue, replicaAddresses, checkReplicaAddresses, bindCid, cid, destinationPort, duration, identitySettings, ipAddress, logSettings, maxConnections, name, optionalDuration, overloadSettings, port, vsockPort, z } from './fields.js';
import { forwardProxyListenerConfig, inboundListenerConfig, localPort, outboundListenerConfig } from './listener-defaults.js';
import { listenerRoutes, routeConfigSchema } from './route-config.js';
import { DEFAULT_INSPECT_MAX_BYTES, DEFAULT_INSPECT_TIMEOUT_MS, MAX_INSPECT_MAX_BYTES, MIN_INSPECT_MAX_BYTES } from '../http/inspector.js';
import { DEFAULT_TRUST_DOMAIN } from '../identity/spiffe.js';
import type { ListenerConfig, PeerTlsSettings, SidecarConfig } from './types.js';
import { isLoopbackAddress } from '../runtime/loopback.js';

/**
 * The schema of the whole file, built for each validation and then left to the
 * garbage collector: its ~400 zod objects (each with ~30 bound methods) held
 * ~1 MiB of heap for the life of a sidecar that validates its file once, at start.
 */
export function sidecarConfigSchema() {
  const loopbackAddress = ipAddress.refine(isLoopbackAddress, {
    message: 'must be a loopback address (127.0.0.0/8 or ::1): outbound listeners serve only local apps',
  });

  const socketAddress = z.object({ address: ipAddress, port: destinationPort }).strict();

  const vsockAddress = z.object({ cid, port: vsockPort }).strict();

  const transportPolicy = z.enum(['prefer-vsock', 'tcp-only', 'vsock-only']);

  const vsockEndpoint = z.discriminatedUnion('mode', [
    z.object({ mode: z.literal('direct'), cid, port: vsockPort }).strict(),
    z.object({ mode: z.literal('host-relay'), cid, port: vsockPort, relay: vsockAddress.default({ cid: 2, port: 15100 }) }).strict(),
  ]);

  const endpoint = z
    .object({
      address: ipAddress,
      port: destinationPort,
      vm_id: name.optional(),
      peer: socketAddress.optional(),
      // `mode` defaults to direct; the discriminated union needs it present.
      vsock: z.preprocess((v) => (typeof v === 'object' && v !== null && !('mode' in v) ? { ...v, mode: 'direct' } : v), vsockEndpoint).optional(),
    })
    .strict()
    .transform((e) => ({
      address: e.address,
      port: e.port,
      ...(e.vm_id !== undefined && { vmId: e.vm_id }),
      ...(e.peer !== undefined && { peer: e.peer }),
      ...(e.vsock !== undefined && { vsock: e.vsock }),
    }));

  const resolveTarget = z.union(
    [
      z.object({ address: ipAddress, port: destinationPort }).strict().transform((r) => ({ kind: 'ip_port' as const, ip: r.address, port: r.port })),
      z.object({ vm: name, port: destinationPort }).strict().transform((r) => ({ kind: 'vm' as const, vmId: r.vm, port: r.port })),
      z.object({ service: name }).strict().transform((r) => ({ kind: 'service' as const, name: r.service })),
      z.object({ original_destination: z.literal(true) }).strict().transform(() => ({ kind: 'original_dst' as const })),
    ],
    { errorMap: () => ({ message: 'must be {address, port}, {vm, port}, {service} or {original_destination: true}' }) },
  );

  const cluster = z
    .object({
      name,
      connect_timeout: duration('5s'),
      authority: z.string().min(1).max(255).optional(),
      endpoints: z.array(endpoint).optional(),
      resolve: resolveTarget.optional(),
      lb_policy: z.enum(['round_robin', 'least_request']).default('round_robin'),
    })
    .strict()
    .superRefine((c, ctx) => {
      if (c.resolve === undefined && (c.endpoints === undefined || c.endpoints.length === 0)) {
        ctx.addIssue({ code: 'custom', path: ['endpoints'], message: 'must list at least one endpoint (or resolve the destination through the VM manager)' });
      }
      if (c.resolve !== undefined && c.endpoints !== undefined) {
        ctx.addIssue({ code: 'custom', path: ['resolve'], message: 'a cluster has either static endpoints or resolve, not both' });
      }
    })
    .transform((c) => ({
      name: c.name,
      connectTimeoutMs: c.connect_timeout,
      ...(c.authority !== undefined && { authority: c.authority }),
      endpoints: c.endpoints ?? [],
      ...(c.resolve !== undefined && { resolve: c.resolve }),
      ...(c.lb_policy === 'least_request' && { lbPolicy: 'least_request' as const }),
    }));

  const INSPECT_BYTES = `must be ${MIN_INSPECT_MAX_BYTES}..${MAX_INSPECT_MAX_BYTES}`;

  /** A capture listener's HTTP inspector: how many first bytes, and how long, it waits for a request line or the h2 preface. */
  const httpInspector = z
    .object({
      max_bytes: z
        .number({ invalid_type_error: 'must be a number' })
        .int({ message: INSPECT_BYTES })
        .min(MIN_INSPECT_MAX_BYTES, { message: INSPECT_BYTES })
        .max(MAX_INSPECT_MAX_BYTES, { message: INSPECT_BYTES })
        .default(DEFAULT_INSPECT_MAX_BYTES),
      timeout: duration(`${DEFAULT_INSPECT_TIMEOUT_MS}ms`),
    })
    .strict();

  const outboundListener = z
    .object({
      kind: z.literal('outbound'),
      name,
      addresses: z.array(loopbackAddress).min(1, { message: 'must list at least one address' }).default(['127.0.0.1']),
      port,
      /** tcp: the cluster of every connection. http: of every request, unless route_config routes them. */
      cluster: name.optional(),
      protocol: z.enum(['tcp', 'http']).default('tcp'),
      route_config: routeConfigSchema().optional(),
      http_inspector: httpInspector.optional(),
      forwarded: z.enum(['append', 'none']).optional(),
      /** h2c (prior knowledge): `frames` (frame by frame, the default) or `node` (Node's http2). */
      h2c: z.enum(['node', 'frames']).optional(),
      idle_timeout: optionalDuration(),
      max_connections: maxConnections,
      /** The native warm path for plain TCP (README, "The outbound warm path"); false turns it off. */
      warm_path: z.boolean({ invalid_type_error: 'must be true or false' }).optional(),
    })
    .strict();

  const HEAD_BYTES = 'must be 256..65536';

  const forwardProxyListener = z
    .object({
      kind: z.literal('forward_proxy'),
      name,
      addresses: z.array(ipAddress).min(1, { message: 'must list at least one address' }).default(['127.0.0.1']),
      port,
      pass_through: z.boolean({ invalid_type_error: 'must be true or false' }).default(false),
      header_timeout: optionalDuration(),
      max_header_bytes: z.number({ invalid_type_error: 'must be a number' }).int({ message: HEAD_BYTES }).min(256, { message: HEAD_BYTES }).max(65536, { message: HEAD_BYTES }).optional(),
      idle_timeout: optionalDuration(),
      max_connections: maxConnections,
    })
    .strict();

  const inboundPort = z.union(
    [
      destinationPort.transform((p) => localPort(p)),
      z
        .object({ port: destinationPort, target: socketAddress.optional(), proxy_protocol: z.boolean().optional() })
        .strict()
        .transform((p) => ({ ...localPort(p.port, p.target), ...(p.proxy_protocol === true && { proxyProtocol: true }) })),
    ],
    { errorMap: () => ({ message: 'must be a port number or {port, target: {address, port}, proxy_protocol: true|false}' }) },
  );

  const MAX_HEADER = 'must be 28..65551 (28: a PROXY v2 header with IPv4 addresses; 65551: the protocol maximum)';

  const inboundListener = z
    .object({
      kind: z.literal('inbound'),
      name,
      transport: z.enum(['tcp', 'vsock']).optional(),
      addresses: z.array(ipAddress).min(1, { message: 'must list at least one address' }).default(['0.0.0.0']),
      // TCP ports are checked against 65535 beside the schema (crossReferences), vsock ports are 32-bit.
      port: z
        .number({ invalid_type_error: 'must be a port number' })
        .int({ message: PORT })
        .min(0, { message: PORT })
        .max(U32 - 1, { message: 'must be an integer 0..4294967294 (0 picks a free port)' }),
      cid: bindCid,
      allowed_peer_cids: z.array(cid).optional(),
      peer_authorization: z.enum(['allow-list', 'registry']).optional(),
      header_timeout: optionalDuration(),
      max_header_bytes: z
        .number({ invalid_type_error: 'must be a number' })
        .int({ message: MAX_HEADER })
        .min(28, { message: MAX_HEADER })
        .max(65551, { message: MAX_HEADER })
        .optional(),
      idle_timeout: optionalDuration(),
      connect_timeout: optionalDuration(),
      ports: z.array(inboundPort).min(1, { message: 'must declare at least one local port (the inbound side connects to nothing else)' }),
      allowed_peer_ids: z.array(z.string().regex(/^spiffe:\/\/[a-z0-9._-]+\/\S+$/, { message: 'must be a SPIFFE ID (spiffe://<trust-domain>/<path>)' })).optional(),
      max_connections: maxConnections,
      warm_path: z.boolean({ invalid_type_error: 'must be true or false' }).optional(),
    })
    .strict();

  const PEM_FILE = 'must be the path of a PEM file';

  const peerTls = z
    .object({
      mode: z.enum(['disable', 'permissive', 'strict']).default('disable'),
      key_file: z.string({ invalid_type_error: PEM_FILE }).min(1, { message: PEM_FILE }).optional(),
      chain_file: z.string({ invalid_type_error: PEM_FILE }).min(1, { message: PEM_FILE }).optional(),
      bundle_file: z.string({ invalid_type_error: PEM_FILE }).min(1, { message: PEM_FILE }).optional(),
      trust_domain: z
        .string({ invalid_type_error: 'must be a trust domain' })
        .regex(/^[a-z0-9._-]{1,255}$/, { message: 'must be a trust domain: 1-255 lowercase letters, digits, ".", "_" or "-"' })
        .default(DEFAULT_TRUST_DOMAIN),
      handshake_timeout: duration('5s'),
      reload_interval: duration('10s', 10),
      originate: z.boolean({ invalid_type_error: 'must be true or false' }).default(true),
      proxy_header: z.enum(['inside_tls', 'before_tls']).default('inside_tls'),
      over_vsock: z.boolean({ invalid_type_error: 'must be true or false' }).default(false),
      max_connection_age: optionalDuration(1_000),
      max_connection_age_grace: duration('30s', 0),
    })
    .strict()
    .default({})
    .superRefine((p, ctx) => {
      const files = ['key_file', 'chain_file', 'bundle_file'] as const;
      if (p.over_vsock && files.some((field) => p[field] === undefined)) {
        ctx.addIssue({ code: 'custom', path: ['over_vsock'], message: 'needs the peer identity files (key_file, chain_file, bundle_file)' });
      }
      // Under disable the files are optional (they serve the modes the control plane pushes), but all three or none.
      if (p.mode === 'disable' && files.every((field) => p[field] === undefined)) return;
      for (const field of files) {
        if (p[field] === undefined) ctx.addIssue({ code: 'custom', path: [field], message: p.mode === 'disable' ? 'required with the other identity files' : `required when mode is ${p.mode}` });
      }
    })
    .transform(
      (p): PeerTlsSettings =>
        p.key_file === undefined
          ? { mode: 'disable' }
          : {
              mode: p.mode,
              files: { key: p.key_file!, chain: p.chain_file!, bundle: p.bundle_file! },
              trustDomain: p.trust_domain,
              handshakeTimeoutMs: p.handshake_timeout,
              reloadIntervalMs: p.reload_interval,
              originate: p.originate,
              proxyHeader: p.proxy_header,
              overVsock: p.over_vsock,
              maxConnectionAge: p.max_connection_age === undefined ? null : { maxAgeMs: p.max_connection_age, graceMs: p.max_connection_age_grace },
            },
    );

  const listener = z
    .discriminatedUnion('kind', [outboundListener, inboundListener, forwardProxyListener])
    .superRefine((l, ctx) => {
      if (l.kind !== 'outbound') return;
      if (l.route_config !== undefined && l.protocol !== 'http' && l.http_inspector === undefined) ctx.addIssue({ code: 'custom', path: ['route_config'], message: 'only for protocol: http (or with http_inspector)' });
      if (l.forwarded !== undefined && l.protocol !== 'http' && l.http_inspector === undefined) ctx.addIssue({ code: 'custom', path: ['forwarded'], message: 'only for protocol: http (or with http_inspector)' });
      if (l.h2c !== undefined && l.protocol !== 'http' && l.http_inspector === undefined) ctx.addIssue({ code: 'custom', path: ['h2c'], message: 'only for protocol: http (or with http_inspector)' });
      if (l.http_inspector !== undefined && l.protocol === 'http') ctx.addIssue({ code: 'custom', path: ['http_inspector'], message: 'only for protocol: tcp (a capture listener); protocol: http parses every connection already' });
      if (l.cluster === undefined && l.route_config === undefined) ctx.addIssue({ code: 'custom', path: ['cluster'], message: 'required (or, with protocol: http, a route_config)' });
    })
    .transform(
    (l): ListenerConfig =>
      l.kind === 'forward_proxy'
        ? forwardProxyListenerConfig({
            name: l.name,
            addresses: l.addresses,
            port: l.port,
            passThrough: l.pass_through,
            headerTimeoutMs: l.header_timeout,
            maxHeaderBytes: l.max_header_bytes,
            idleTimeoutMs: l.idle_timeout,
            maxConnections: l.max_connections,
          })
        : l.kind === 'outbound'
        ? outboundListenerConfig({
            name: l.name,
            addresses: l.addresses,
            port: l.port,
            cluster: l.cluster ?? '',
            idleTimeoutMs: l.idle_timeout,
            maxConnections: l.max_connections,
            warmPath: l.warm_path,
            forwarded: l.forwarded,
            h2c: l.h2c,
            http: l.protocol === 'http' ? { routes: listenerRoutes(l.name, l.route_config, l.cluster) } : undefined,
            httpInspector:
              l.http_inspector === undefined
                ? undefined
                : { maxBytes: l.http_inspector.max_bytes, timeoutMs: l.http_inspector.timeout, routes: { name: l.name, virtualHosts: l.route_config?.virtual_hosts ?? [] } },
          })
        : inboundListenerConfig({
            name: l.name,
            transport: l.transport,
            addresses: l.addresses,
            port: l.port,
            vsockCid: l.cid,
            allowedPeerCids: l.allowed_peer_cids,
            peerAuthorization: l.peer_authorization,
            headerTimeoutMs: l.header_timeout,
            maxHeaderBytes: l.max_header_bytes,
            idleTimeoutMs: l.idle_timeout,
            connectTimeoutMs: l.connect_timeout,
            ports: l.ports,
            allowedPeerIds: l.allowed_peer_ids,
            maxConnections: l.max_connections,
            warmPath: l.warm_path,
          }),
  );

  return z
    .object({
      node: z.object({ id: name }).strict(),
      vsock: z
        .object({
          enabled: z.boolean({ invalid_type_error: 'must be true or false' }).default(true),
          breaker_window: duration('30s'),
          connect_timeout: duration('1s'),
          policy: transportPolicy.default('prefer-vsock'),
        })
        .strict()
        .default({})
        .transform((v) => ({ enabled: v.enabled, breakerWindowMs: v.breaker_window, connectTimeoutMs: v.connect_timeout, policy: v.policy })),
      vm_manager: z
        .object({
          ...replicaAddresses,
          query_timeout: duration('500ms'),
          negative_ttl: duration('5s'),
          migration_grace: duration('5s', 0),
          // Older than vsock.policy: when given, it still decides resolved clusters (and only them).
          policy: transportPolicy.optional(),
        })
        .strict()
        .superRefine(checkReplicaAddresses)
        .optional()
        .transform((v) =>
          v === undefined
            ? null
            : { addresses: v.addresses ?? [v.address!], queryTimeoutMs: v.query_timeout, negativeTtlMs: v.negative_ttl, migrationGraceMs: v.migration_grace, policy: v.policy },
        ),
      xds: z
        .object({ ...replicaAddresses, cluster: name.optional() })
        .strict()
        .superRefine(checkReplicaAddresses)
        .optional(),
      tls: controlTls,
      identity: identitySettings,
      insecure: controlInsecure,
      admin: adminSettings(15000),
      log: logSettings,
      drain_timeout: duration('30s', 0),
      overload: overloadSettings,
      peer_tls: peerTls,
      listeners: z.array(listener).default([]),
      clusters: z.array(cluster).default([]),
    })
    .strict()
    .transform(
      (c): SidecarConfig => ({
        node: c.node,
        identity: c.identity,
        xds: c.xds ? { addresses: c.xds.addresses ?? [c.xds.address!], cluster: c.xds.cluster ?? c.node.id } : null,
        controlTls: c.tls,
        vsock: c.vsock,
        vmManager: c.vm_manager && { ...c.vm_manager, policy: c.vm_manager.policy ?? c.vsock.policy },
        admin: c.admin,
        log: c.log,
        drainTimeoutMs: c.drain_timeout,
        overload: c.overload,
        peerTls: c.peer_tls,
        listeners: c.listeners,
        clusters: c.clusters,
      }),
    );
}

export interface CrossReferenceIssue {
  path: Array<string | number>;
  message: string;
}

/**
 * Checks between fields (names unique, clusters exist, binds distinct). Runs on
 * the raw input, beside the schema, so one pass lists every problem; it reads
 * the data defensively for that reason.
 */
export function crossReferences(raw: unknown): CrossReferenceIssue[] {
  const issues: CrossReferenceIssue[] = [];
  if (typeof raw !== 'object' || raw === null) return issues;
  const c = raw as { listeners?: unknown; clusters?: unknown; vsock?: { enabled?: unknown }; vm_manager?: unknown; xds?: unknown; tls?: unknown; identity?: unknown; insecure?: unknown; peer_tls?: { mode?: unknown } };
  const transport = controlTransportIssue(c);
  if (transport !== undefined) issues.push(transport);
  const peerTlsOn = c.peer_tls?.mode === 'permissive' || c.peer_tls?.mode === 'strict';
  const vsockEnabled = c.vsock?.enabled !== false;
  const clusters = Array.isArray(c.clusters) ? (c.clusters as Array<{ name?: unknown } | null>) : [];
  const listeners = Array.isArray(c.listeners) ? (c.listeners as Array<Record<string, unknown> | null>) : [];
  const clusterNames = new Set<unknown>();
  clusters.forEach((cl, i) => {
    if ((cl as { resolve?: unknown } | null)?.resolve !== undefined && c.vm_manager === undefined) {
      issues.push({ path: ['clusters', i, 'resolve'], message: 'resolving needs a vm_manager section' });
    }
    if (typeof cl?.name !== 'string') return;
    if (clusterNames.has(cl.name)) issues.push({ path: ['clusters', i, 'name'], message: `duplicate cluster name "${cl.name}"` });
    clusterNames.add(cl.name);
  });
  const listenerNames = new Set<unknown>();
  const binds = new Map<string, number>();
  listeners.forEach((l, i) => {
    if (typeof l !== 'object' || l === null) return;
    if (typeof l.name === 'string') {
      if (listenerNames.has(l.name)) issues.push({ path: ['listeners', i, 'name'], message: `duplicate listener name "${l.name}"` });
      listenerNames.add(l.name);
    }
    if (l.kind === 'outbound' && typeof l.cluster === 'string' && !clusterNames.has(l.cluster)) {
      issues.push({ path: ['listeners', i, 'cluster'], message: `unknown cluster "${l.cluster}"` });
    }
    if (l.kind === 'outbound' && (l.protocol === 'http' || l.http_inspector !== undefined)) issues.push(...httpClusterIssues(l, i, clusters));
    if (l.kind === 'outbound' && l.http_inspector !== undefined && typeof l.cluster === 'string') {
      const resolve = (clusters.find((c) => c?.name === l.cluster) as { resolve?: { original_destination?: unknown } } | undefined)?.resolve;
      if (resolve?.original_destination !== true) issues.push({ path: ['listeners', i, 'http_inspector'], message: `only for a capture listener: cluster "${l.cluster}" must resolve the original destination` });
    }
    if (l.kind === 'inbound' && l.transport === 'vsock') {
      if (l.allowed_peer_ids !== undefined) issues.push({ path: ['listeners', i, 'allowed_peer_ids'], message: 'only for transport: tcp (vsock peers are known by CID)' });
      if (!vsockEnabled) issues.push({ path: ['listeners', i, 'transport'], message: 'vsock is disabled (vsock.enabled: false)' });
      if (l.peer_authorization === 'registry') {
        if (c.vm_manager === undefined) issues.push({ path: ['listeners', i, 'peer_authorization'], message: 'registry needs a vm_manager section' });
      } else if (!Array.isArray(l.allowed_peer_cids) || l.allowed_peer_cids.length === 0) {
        issues.push({ path: ['listeners', i, 'allowed_peer_cids'], message: 'a vsock inbound listener must list the peer CIDs it accepts (the kernel gives each peer its CID)' });
      }
      if (l.addresses !== undefined) issues.push({ path: ['listeners', i, 'addresses'], message: 'vsock listeners bind a CID (cid), not IP addresses' });
    }
    if (l.kind === 'inbound' && l.transport !== 'vsock' && l.allowed_peer_ids !== undefined && !peerTlsOn) {
      issues.push({ path: ['listeners', i, 'allowed_peer_ids'], message: 'needs peer_tls mode permissive or strict (a plain-text peer proves no identity)' });
    }
    if (l.kind === 'inbound' && l.transport !== 'vsock') {
      for (const field of ['cid', 'allowed_peer_cids', 'peer_authorization']) {
        if (l[field] !== undefined) issues.push({ path: ['listeners', i, field], message: 'only for transport: vsock' });
      }
      if (typeof l.port === 'number' && l.port > 65535) issues.push({ path: ['listeners', i, 'port'], message: PORT });
    }
    if (l.kind === 'inbound' && Array.isArray(l.ports)) {
      const seen = new Set<number>();
      l.ports.forEach((p: unknown, j: number) => {
        const portNumber = typeof p === 'number' ? p : (p as { port?: unknown } | null)?.port;
        if (typeof portNumber !== 'number') return;
        if (seen.has(portNumber)) issues.push({ path: ['listeners', i, 'ports', j], message: `duplicate port ${portNumber}` });
        seen.add(portNumber);
      });
    }
    if (typeof l.port !== 'number' || l.port === 0) return;
    const addresses =
      l.transport === 'vsock' ? [`vsock:${String(l.cid ?? 'any')}`] : Array.isArray(l.addresses) ? l.addresses : [l.kind === 'outbound' || l.kind === 'forward_proxy' ? '127.0.0.1' : '0.0.0.0'];
    for (const address of addresses) {
      const key = `${String(address)}:${l.port}`;
      const other = binds.get(key);
      if (other !== undefined) issues.push({ path: ['listeners', i, 'port'], message: `${key} is also bound by listeners[${other}]` });
      binds.set(key, i);
    }
  });
  return issues;
}

/** An HTTP listener's routes name clusters of the file, each with static endpoints (resolving per request is not supported yet). */
function httpClusterIssues(l: Record<string, unknown>, i: number, clusters: ReadonlyArray<{ name?: unknown } | null>): CrossReferenceIssue[] {
  const issues: CrossReferenceIssue[] = [];
  const byName = new Map(clusters.map((c) => [c?.name, c as { resolve?: unknown } | null]));
  const check = (name: unknown, path: Array<string | number>): void => {
    if (typeof name !== 'string') return;
    if (!byName.has(name)) issues.push({ path, message: `unknown cluster "${name}"` });
    else if (byName.get(name)?.resolve !== undefined) issues.push({ path, message: `cluster "${name}" resolves its destination per connection: HTTP listeners route to clusters with endpoints` });
  };
  // A capture listener's own cluster resolves the original destination: only its routes must name clusters with endpoints.
  if (typeof l.cluster === 'string' && l.http_inspector === undefined && byName.get(l.cluster)?.resolve !== undefined) check(l.cluster, ['listeners', i, 'cluster']);
  const hosts = (l.route_config as { virtual_hosts?: unknown } | undefined)?.virtual_hosts;
  if (!Array.isArray(hosts)) return issues;
  hosts.forEach((h: { routes?: unknown } | null, j) => {
    if (!Array.isArray(h?.routes)) return;
    h.routes.forEach((r: { cluster?: unknown; weighted_clusters?: unknown } | null, k) => {
      const at = ['listeners', i, 'route_config', 'virtual_hosts', j, 'routes', k];
      check(r?.cluster, [...at, 'cluster']);
      if (Array.isArray(r?.weighted_clusters)) r.weighted_clusters.forEach((w: { name?: unknown } | null, m) => check(w?.name, [...at, 'weighted_clusters', m, 'name']));
    });
  });
  return issues;
}
