// The host relay's config (YAML, like the sidecar's) and its policy: which
// source CID (as the kernel reports it) may reach which destination CID and ports.

import { adminSettings, bindCid, cid, controlInsecure, controlTls, controlTransportIssue, checkReplicaAddresses, duration, hostPort, replicaAddresses, identitySettings, logSettings, maxConnections, name, overloadSettings, vsockPort, z } from './fields.js';
import type { ControlTlsFiles, IdentitySettings, LogLevel, OverloadSettings, SocketAddress } from './types.js';

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
  /** null: no identity. The host agent's is spiffe://<trust-domain>/hv/<hypervisor id> (vm_manager.hypervisor_id, else node.id). */
  identity: IdentitySettings | null;
  admin: SocketAddress | null;
  log: { level: LogLevel; accessLog: boolean };
  drainTimeoutMs: number;
  overload: OverloadSettings;
  /** maxConnections: guest connections the relay keeps open at once; null: no limit of its own. */
  listen: { cid: number; port: number; maxConnections: number | null };
  headerTimeoutMs: number;
  connectTimeoutMs: number;
  idleTimeoutMs: number;
  /** Static policy; null when the VM manager decides. */
  policy: RelayRule[] | null;
  /** The VM manager decides (AuthorizeRelay) for this hypervisor; null: the static policy does. */
  vmManager: RelayVmManagerSettings | null;
  /** The VM manager client's identity files (tls:); null with identity null too: plain text (insecure: true). */
  controlTls: ControlTlsFiles | null;
  /** The attestation endpoint guests get their first certificate from; null: none. */
  attestation: AttestationSettings | null;
}

/** Where the host agent listens for guests' attestation requests, and where it forwards them. */
export interface AttestationSettings {
  /** vsock port on the relay's CID (guests dial CID 2). */
  port: number;
  /** The control plane serving Identity.CertifyAttested (host:port). */
  controlPlane: string;
  /** How long a guest has to send its request. */
  requestTimeoutMs: number;
  /** Requests served at once; null: only the relay's limits. */
  maxConnections: number | null;
}

/** The attestation port's default (the relay's is 15100). */
export const DEFAULT_ATTESTATION_PORT = 15101;

export interface RelayVmManagerSettings {
  /** host:port of the VM manager's gRPC API, one per replica. */
  addresses: string[];
  /** This relay's hypervisor, as the VM manager knows it. */
  hypervisorId: string;
  queryTimeoutMs: number;
  /** How long an answer (allowed or not) is reused for the same source, destination and port. */
  cacheTtlMs: number;
  /**
   * Whether relayed connections start with the signed assertion of the source
   * VM (relay-assertion.ts). Off only while destination sidecars that predate
   * it are being upgraded: they would read it as a bad PROXY header.
   */
  assertSource: boolean;
}

/** `sourceVmId`: the VM the VM manager found behind the source CID (what the relay asserts to the destination). */
export type RelayDecision = { allowed: true; sourceVmId?: string } | { allowed: false; reason: 'source_not_allowed' | 'destination_not_allowed' | 'vm_manager_unavailable'; detail: string };

/** Deny by default: a source needs a rule, and the destination must be in it. */
export function relayDecision(policy: readonly RelayRule[], sourceCid: number, destination: { cid: number; port: number }): RelayDecision {
  const rules = policy.filter((r) => r.sourceCid === sourceCid);
  if (rules.length === 0) return { allowed: false, reason: 'source_not_allowed', detail: `source CID ${sourceCid} has no relay policy` };
  const ok = rules.some((r) => r.destinations.some((d) => d.cid === destination.cid && (d.ports === null || d.ports.includes(destination.port))));
  if (ok) return { allowed: true };
  return { allowed: false, reason: 'destination_not_allowed', detail: `source CID ${sourceCid} may not reach ${destination.cid}:${destination.port}` };
}

/** The schema of the host relay's file, built for each validation (see schema.ts's sidecarConfigSchema: a sidecar loads this module too). */
export function hostRelayConfigSchema() {
  return z
    .object({
      node: z.object({ id: name }).strict(),
      admin: adminSettings(15300),
      log: logSettings,
      drain_timeout: duration('30s', 0),
      overload: overloadSettings,
      listen: z
        .object({
          cid: bindCid,
          port: z.union([z.literal(0), vsockPort], { errorMap: () => ({ message: 'must be 0 (any free port) or a vsock port 1..4294967294' }) }).default(15100),
          max_connections: maxConnections,
        })
        .strict()
        .default({})
        .transform((l) => ({ cid: l.cid, port: l.port, maxConnections: l.max_connections })),
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
        .min(1, { message: 'must have at least one rule: the relay denies everything else' })
        .optional(),
      vm_manager: z
        .object({ ...replicaAddresses, hypervisor_id: name, query_timeout: duration('500ms'), cache_ttl: duration('2s', 0), assert_source: z.boolean().default(true) })
        .strict()
        .superRefine(checkReplicaAddresses)
        .optional(),
      tls: controlTls,
      identity: identitySettings,
      insecure: controlInsecure,
      attestation: z
        .object({
          port: vsockPort.default(DEFAULT_ATTESTATION_PORT),
          control_plane: hostPort.optional(),
          request_timeout: duration('10s'),
          max_connections: maxConnections,
        })
        .strict()
        .optional(),
    })
    .strict()
    .superRefine((c, ctx) => {
      const transport = controlTransportIssue(c);
      if (transport !== undefined) ctx.addIssue({ code: 'custom', ...transport });
      if (c.identity?.attest) ctx.addIssue({ code: 'custom', path: ['identity', 'attest'], message: 'a host agent enrols with a join token (join_token_file): it is the one that attests guests' });
      if (c.attestation !== undefined) {
        if (c.vm_manager === undefined) ctx.addIssue({ code: 'custom', path: ['attestation'], message: 'needs a vm_manager section: the VM manager\'s records say which VM has a CID' });
        if (c.tls === null && c.identity === null) ctx.addIssue({ code: 'custom', path: ['attestation'], message: 'needs the host agent\'s own identity (a tls or identity section): the CA signs only for a host agent it can authenticate' });
        if (c.attestation.control_plane === undefined && c.identity === null) ctx.addIssue({ code: 'custom', path: ['attestation', 'control_plane'], message: 'required without an identity section: the control plane serving Identity.CertifyAttested (host:port)' });
      }
      if (c.policy === undefined && c.vm_manager === undefined) {
        ctx.addIssue({ code: 'custom', path: ['policy'], message: 'required (or a vm_manager section): the relay denies everything it is not told to allow' });
      }
      if (c.policy !== undefined && c.vm_manager !== undefined) {
        ctx.addIssue({ code: 'custom', path: ['vm_manager'], message: 'give either a static policy or a vm_manager, not both' });
      }
    })
    .transform(
      (c): HostRelayConfig => ({
        node: c.node,
        identity: c.identity,
        admin: c.admin,
        log: c.log,
        drainTimeoutMs: c.drain_timeout,
        overload: c.overload,
        listen: c.listen,
        headerTimeoutMs: c.header_timeout,
        connectTimeoutMs: c.connect_timeout,
        idleTimeoutMs: c.idle_timeout,
        policy: c.policy?.map((r) => ({ sourceCid: r.source_cid, destinations: r.destinations.map((d) => ({ cid: d.cid, ports: d.ports ?? null })) })) ?? null,
        vmManager: c.vm_manager
          ? { addresses: c.vm_manager.addresses ?? [c.vm_manager.address!], hypervisorId: c.vm_manager.hypervisor_id, queryTimeoutMs: c.vm_manager.query_timeout, cacheTtlMs: c.vm_manager.cache_ttl, assertSource: c.vm_manager.assert_source }
          : null,
        controlTls: c.tls,
        attestation: c.attestation
          ? { port: c.attestation.port, controlPlane: c.attestation.control_plane ?? c.identity!.controlPlane, requestTimeoutMs: c.attestation.request_timeout, maxConnections: c.attestation.max_connections }
          : null,
      }),
    );
}
