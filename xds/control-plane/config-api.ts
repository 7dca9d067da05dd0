// The config API (vsockmesh.config.v1) over the mesh store, and its client
// for `vsockmesh ctl`. A change that would make the mesh invalid gets
// INVALID_ARGUMENT listing the problems by path (field) and changes nothing;
// one that cannot be written to the mesh store gets UNAVAILABLE and changes
// nothing; one that names a mod revision the entry is no longer at gets
// ABORTED and changes nothing; success means written and visible.

import * as grpc from '@grpc/grpc-js';
import type { PeerCertificate } from 'node:tls';
import type { WhoAmIResponse, WhoAmIResponse__Output } from '../generated/vsockmesh/config/v1/WhoAmIResponse.js';
import { channelCredentials, channelOptions, type ControlTransport } from '../security/transport.js';
import { ConfigError } from '../../proxy/runtime/config-file.js';
import { NotFoundError, VsockmeshError } from '../../proxy/runtime/errors.js';
import { parseDuration } from '../../proxy/runtime/duration.js';
import type { Logger } from '../../proxy/runtime/log.js';
import type { DeleteRequest__Output } from '../generated/vsockmesh/config/v1/DeleteRequest.js';
import type { DeleteResponse } from '../generated/vsockmesh/config/v1/DeleteResponse.js';
import type { MeshConfigClient as WireClient, MeshConfigHandlers } from '../generated/vsockmesh/config/v1/MeshConfig.js';
import type { Route, Route__Output } from '../generated/vsockmesh/config/v1/Route.js';
import type { PeerAuthentication, PeerAuthentication__Output } from '../generated/vsockmesh/config/v1/PeerAuthentication.js';
import type { Policy, Policy__Output } from '../generated/vsockmesh/config/v1/Policy.js';
import type { Service, Service__Output } from '../generated/vsockmesh/config/v1/Service.js';
import type { SyncStatusRequest, SyncStatusRequest__Output } from '../generated/vsockmesh/config/v1/SyncStatusRequest.js';
import type { SyncStatusResponse, SyncStatusResponse__Output } from '../generated/vsockmesh/config/v1/SyncStatusResponse.js';
import { configProto } from '../proto.js';
import { DEFAULT_STATUS_PAGE_SIZE, MAX_GRPC_RECEIVE_BYTES, MAX_PROBLEMS_IN_ERROR, MAX_STATUS_PAGE_SIZE, MAX_XDS_NODE_ID_LENGTH, quoteBounded } from './bounds.js';
import { MeshChangeConflictError, type MeshStore, type RawEntry, type RawMesh, type StoredEntry } from './mesh-store.js';
import { StoreUnavailableError } from '../store/store.js';
import type { SyncStatus } from './types.js';
import { statusName, statusOf, unaryCall, type CallStatus } from '../grpc-status.js';

export function serviceToRaw(s: Service__Output): RawEntry {
  return {
    name: s.name,
    port: s.port,
    ...(s.outbound_port > 0 && s.outbound_port !== s.port && { outbound_port: s.outbound_port }),
    ...(s.protocol !== '' && { protocol: s.protocol }),
    ...(s.connect_timeout_ms > 0 && { connect_timeout: `${s.connect_timeout_ms}ms` }),
    // Round robin is the default: stored entries name only another policy.
    ...(s.lb_policy !== '' && s.lb_policy !== 'round_robin' && { lb_policy: s.lb_policy }),
  };
}

export function serviceFromRaw(raw: RawEntry): Service {
  const port = Number(raw.port);
  return {
    name: raw.name,
    port,
    outbound_port: Number(raw.outbound_port ?? port),
    protocol: String(raw.protocol ?? 'tcp'),
    connect_timeout_ms: parseDuration(String(raw.connect_timeout ?? '5s')) ?? 0,
    lb_policy: String(raw.lb_policy ?? 'round_robin'),
  };
}

export function peerAuthenticationToRaw(p: PeerAuthentication__Output): RawEntry {
  return { name: p.name, ...(p.service !== '' && { service: p.service }), ...(p.port > 0 && { port: p.port }), mode: p.mode };
}

export function peerAuthenticationFromRaw(raw: RawEntry): PeerAuthentication {
  return { name: raw.name, service: String(raw.service ?? ''), port: Number(raw.port ?? 0), mode: String(raw.mode).toUpperCase() };
}

interface RawRule {
  prefix: string;
  headers?: Array<{ name: string; exact?: string; prefix?: string; present?: boolean }>;
  clusters: Array<{ service: string; weight?: number }>;
}

/** A header match on the wire: the one condition it sets (none set: left for the mesh validation to refuse). */
function headerToRaw(h: { name: string; exact: string; prefix: string; present: boolean }): NonNullable<RawRule['headers']>[number] {
  return { name: h.name, ...(h.exact !== '' && { exact: h.exact }), ...(h.prefix !== '' && { prefix: h.prefix }), ...(h.present && { present: true }) };
}

export function routeToRaw(r: Route__Output): RawEntry {
  return {
    name: r.name,
    domains: [...r.domains],
    routes: r.rules.map((rule) => ({
      prefix: rule.prefix,
      ...(rule.headers.length > 0 && { headers: rule.headers.map(headerToRaw) }),
      clusters: rule.services.map((s) => ({ service: s.service, weight: s.weight || 1 })),
    })),
  };
}

export function routeFromRaw(raw: RawEntry): Route {
  return {
    name: raw.name,
    domains: (raw.domains as string[] | undefined) ?? [],
    rules: ((raw.routes as RawRule[] | undefined) ?? []).map((rule) => ({
      prefix: rule.prefix,
      headers: (rule.headers ?? []).map((h) => ({ name: h.name, exact: h.exact ?? '', prefix: h.prefix ?? '', present: h.present === true })),
      services: rule.clusters.map((c) => ({ service: c.service, weight: c.weight ?? 1 })),
    })),
  };
}

/** A stored entry on the wire, with the mod revision a compare-and-swap names. */
function withRevision<Res>(fromRaw: (r: RawEntry) => Res, stored: StoredEntry): Res & { mod_revision: number } {
  return { ...fromRaw(stored), mod_revision: stored.modRevision };
}

export function policyToRaw(p: Policy__Output): RawEntry {
  return {
    name: p.name,
    service: p.service,
    ...(p.ports.length > 0 && { ports: [...p.ports] }),
    action: p.action,
    principals: [...p.principals],
    ...(p.shadow && { shadow: true }),
  };
}

export function policyFromRaw(raw: RawEntry): Policy {
  return {
    name: raw.name,
    service: String(raw.service ?? ''),
    ports: (raw.ports as number[] | undefined) ?? [],
    action: String(raw.action ?? ''),
    principals: (raw.principals as string[] | undefined) ?? [],
    shadow: raw.shadow === true,
  };
}

/** The status of a failed call, and the reason it is logged with (none: not worth a log line). */
function fail(err: unknown): CallStatus & { reason?: string } {
  const status = statusOf(err);
  if (err instanceof ConfigError) {
    const more = err.problems.length - MAX_PROBLEMS_IN_ERROR;
    const listed = err.problems.slice(0, MAX_PROBLEMS_IN_ERROR).join('; ');
    return { ...status, details: more > 0 ? `${listed}; and ${more} more problems` : listed, reason: 'invalid_mesh_change' };
  }
  if (err instanceof StoreUnavailableError) return { ...status, reason: 'mesh_state_write_failed' };
  if (err instanceof MeshChangeConflictError) return { ...status, reason: 'mesh_change_conflict' };
  if (err instanceof NotFoundError) return status;
  if (status.code === grpc.status.INVALID_ARGUMENT) return { ...status, reason: 'invalid_request' };
  return { ...status, reason: 'internal_error' };
}

export interface SyncStatusSource {
  /** One page of nodes in node id order (see AdsServer.syncStatusPage). */
  page(page: { limit: number; after?: string; nodeId?: string }): { statuses: SyncStatus[]; nodeIds: string[]; next: string | undefined };
  /** Versions served now to these nodes and to nodes without their own snapshot (''), by `node|type URL`. */
  currentVersions(nodeIds: string[]): Record<string, string>;
}

/** page_token: the last node id of the previous page, opaque to clients. */
const PAGE_TOKEN_PREFIX = 'after:';

function pageToken(afterNodeId: string): string {
  return Buffer.from(`${PAGE_TOKEN_PREFIX}${afterNodeId}`).toString('base64url');
}

function afterNodeId(token: string): string | undefined {
  if (token === '') return undefined;
  const text = Buffer.from(token, 'base64url').toString('utf8');
  if (!text.startsWith(PAGE_TOKEN_PREFIX) || text.length > PAGE_TOKEN_PREFIX.length + MAX_XDS_NODE_ID_LENGTH) {
    throw new VsockmeshError('INVALID_ARGUMENT', `page_token: ${quoteBounded(token)} is not a next_page_token this server gave`);
  }
  return text.slice(PAGE_TOKEN_PREFIX.length);
}

/** Who a call comes from, as the server's guard sees it (WhoAmI). */
export type CallerOf = (call: { getAuthContext(): { sslPeerCertificate?: PeerCertificate | undefined } }) => WhoAmIResponse;

export function configApiHandlers(store: MeshStore, sync: SyncStatusSource, logger: Logger, callerOf: CallerOf): MeshConfigHandlers {
  const run = <Res>(method: string, fn: () => Promise<Res>, callback: grpc.sendUnaryData<Res>): void => {
    fn().then(
      (res) => callback(null, res),
      (err: unknown) => {
        const { reason, ...status } = fail(err);
        if (reason !== undefined) {
          const level = status.code === grpc.status.INVALID_ARGUMENT || status.code === grpc.status.ABORTED ? 'warn' : 'error';
          logger[level]({ method, reason, code: statusName(status.code), error: status.details }, `config API ${method} refused: ${status.details}`);
        }
        callback(status);
      },
    );
  };
  const applied = (method: string, name: string): void => logger.info({ method, name }, `config API ${method} ${name}: applied`);
  /** Put and Delete of one kind: the store decides (in order, durably); the reply says what is stored. */
  const put =
    <Req extends { mod_revision: number }, Res>(method: string, kind: keyof RawMesh, toRaw: (r: Req) => RawEntry, fromRaw: (r: RawEntry) => Res): grpc.handleUnaryCall<Req, Res> =>
    (call, callback) =>
      run(
        method,
        async () => {
          const stored = await store.put(kind, toRaw(call.request), call.request.mod_revision);
          applied(method, stored.name);
          return withRevision(fromRaw, stored);
        },
        callback,
      );
  const remove =
    (method: string, kind: keyof RawMesh, what: string): grpc.handleUnaryCall<DeleteRequest__Output, DeleteResponse> =>
    (call, callback) =>
      run(
        method,
        async () => {
          if (!(await store.delete(kind, call.request.name, call.request.mod_revision))) throw new NotFoundError(`${what} ${quoteBounded(call.request.name)}`, `no ${what} ${quoteBounded(call.request.name)}`);
          applied(method, call.request.name);
          return {};
        },
        callback,
      );
  return {
    PutService: put('PutService', 'services', serviceToRaw, serviceFromRaw),
    DeleteService: remove('DeleteService', 'services', 'service'),
    ListServices: (_call, callback) => callback(null, { services: store.rawServices().map((e) => withRevision(serviceFromRaw, e)) }),
    PutRoute: put('PutRoute', 'routes', routeToRaw, routeFromRaw),
    DeleteRoute: remove('DeleteRoute', 'routes', 'route'),
    ListRoutes: (_call, callback) => callback(null, { routes: store.rawRoutes().map((e) => withRevision(routeFromRaw, e)) }),
    PutPolicy: put('PutPolicy', 'policies', policyToRaw, policyFromRaw),
    DeletePolicy: remove('DeletePolicy', 'policies', 'policy'),
    ListPolicies: (_call, callback) => callback(null, { policies: store.rawPolicies().map((e) => withRevision(policyFromRaw, e)) }),
    PutPeerAuthentication: put('PutPeerAuthentication', 'peer_authentication', peerAuthenticationToRaw, peerAuthenticationFromRaw),
    DeletePeerAuthentication: remove('DeletePeerAuthentication', 'peer_authentication', 'peer authentication'),
    ListPeerAuthentications: (_call, callback) =>
      callback(null, { peer_authentications: store.rawPeerAuthentication().map((e) => withRevision(peerAuthenticationFromRaw, e)) }),
    GetSyncStatus: (call, callback) =>
      run('GetSyncStatus', async () => syncStatusPage(sync, call.request), callback),
    WhoAmI: (call, callback) => run('WhoAmI', async () => callerOf(call), callback),
  };
}

/** One page of GetSyncStatus. */
function syncStatusPage(sync: SyncStatusSource, request: SyncStatusRequest__Output): SyncStatusResponse {
  if (request.node_id.length > MAX_XDS_NODE_ID_LENGTH) throw new VsockmeshError('INVALID_ARGUMENT', `node_id: ${request.node_id.length} characters, more than ${MAX_XDS_NODE_ID_LENGTH}`);
  // AIP-158: 0 is the default, larger than the most is lowered to it.
  const limit = Math.min(request.page_size || DEFAULT_STATUS_PAGE_SIZE, MAX_STATUS_PAGE_SIZE);
  const after = afterNodeId(request.page_token);
  const page = sync.page({ limit, ...(after !== undefined && { after }), ...(request.node_id !== '' && { nodeId: request.node_id }) });
  const statuses = page.statuses.map((s) => ({
    node_id: s.nodeId,
    type_url: s.typeUrl,
    last_sent_version: s.lastSentVersion ?? '',
    last_sent_at_ms: s.lastSentAt ?? 0,
    last_ack_version: s.lastAckVersion ?? '',
    last_ack_at_ms: s.lastAckAt ?? 0,
    last_nack_version: s.lastNack?.version ?? '',
    last_nack_error: s.lastNack?.error ?? '',
    last_nack_at_ms: s.lastNack?.at ?? 0,
  }));
  return { statuses, current_versions: sync.currentVersions(page.nodeIds), next_page_token: page.next === undefined ? '' : pageToken(page.next) };
}

/** The config API as `ctl` uses it; a failed call rejects with a CallError (the gRPC status name as `code`). */
export class MeshConfigApiClient {
  private readonly client: WireClient;

  constructor(
    readonly address: string,
    transport: ControlTransport,
    private readonly timeoutMs = 5_000,
  ) {
    const Client = configProto().vsockmesh.config.v1.MeshConfig;
    // The largest reply: ListRoutes of the largest mesh (MAX_MESH_BYTES as JSON, less as protobuf), or a full status page (~3.4 MB).
    this.client = new Client(address, channelCredentials(transport), { ...channelOptions(transport), 'grpc.max_receive_message_length': MAX_GRPC_RECEIVE_BYTES });
  }

  private call<Res>(start: (o: { deadline: Date }, cb: (err: grpc.ServiceError | null, res?: Res) => void) => void): Promise<Res> {
    return unaryCall(this.timeoutMs, start);
  }

  putService(s: Service): Promise<Service__Output> {
    return this.call((o, cb) => this.client.PutService(s, o, cb));
  }
  /** `modRevision` > 0: only if the service is still at that revision (else ABORTED). */
  deleteService(name: string, modRevision = 0): Promise<unknown> {
    return this.call((o, cb) => this.client.DeleteService({ name, mod_revision: modRevision }, o, cb));
  }
  async listServices(): Promise<Service__Output[]> {
    return (await this.call<{ services: Service__Output[] }>((o, cb) => this.client.ListServices({}, o, cb))).services;
  }
  putRoute(r: Route): Promise<Route__Output> {
    return this.call((o, cb) => this.client.PutRoute(r, o, cb));
  }
  deleteRoute(name: string, modRevision = 0): Promise<unknown> {
    return this.call((o, cb) => this.client.DeleteRoute({ name, mod_revision: modRevision }, o, cb));
  }
  async listRoutes(): Promise<Route__Output[]> {
    return (await this.call<{ routes: Route__Output[] }>((o, cb) => this.client.ListRoutes({}, o, cb))).routes;
  }
  putPolicy(p: Policy): Promise<Policy__Output> {
    return this.call((o, cb) => this.client.PutPolicy(p, o, cb));
  }
  /** `modRevision` > 0: only if the policy is still at that revision (else ABORTED). */
  deletePolicy(name: string, modRevision = 0): Promise<unknown> {
    return this.call((o, cb) => this.client.DeletePolicy({ name, mod_revision: modRevision }, o, cb));
  }
  async listPolicies(): Promise<Policy__Output[]> {
    return (await this.call<{ policies: Policy__Output[] }>((o, cb) => this.client.ListPolicies({}, o, cb))).policies;
  }
  putPeerAuthentication(p: PeerAuthentication): Promise<PeerAuthentication__Output> {
    return this.call((o, cb) => this.client.PutPeerAuthentication(p, o, cb));
  }
  /** `modRevision` > 0: only if the entry is still at that revision (else ABORTED). */
  deletePeerAuthentication(name: string, modRevision = 0): Promise<unknown> {
    return this.call((o, cb) => this.client.DeletePeerAuthentication({ name, mod_revision: modRevision }, o, cb));
  }
  async listPeerAuthentications(): Promise<PeerAuthentication__Output[]> {
    return (await this.call<{ peer_authentications: PeerAuthentication__Output[] }>((o, cb) => this.client.ListPeerAuthentications({}, o, cb))).peer_authentications;
  }
  /** One page (see SyncStatusRequest). */
  syncStatus(request: SyncStatusRequest = {}): Promise<SyncStatusResponse__Output> {
    return this.call((o, cb) => this.client.GetSyncStatus(request, o, cb));
  }
  whoAmI(): Promise<WhoAmIResponse__Output> {
    return this.call((o, cb) => this.client.WhoAmI({}, o, cb));
  }
  close(): void {
    this.client.close();
  }
}
