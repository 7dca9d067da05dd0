// The config API (vsockmesh.config.v1) over the mesh store, and its client
// for `vsockmesh ctl`. A change that would make the mesh invalid gets
// INVALID_ARGUMENT listing every problem by path and changes nothing.

import * as grpc from '@grpc/grpc-js';
import { ConfigError } from '../../proxy/config/load.js';
import { parseDuration } from '../../proxy/config/duration.js';
import type { MeshConfigClient as WireClient, MeshConfigHandlers } from '../generated/vsockmesh/config/v1/MeshConfig.js';
import type { Route, Route__Output } from '../generated/vsockmesh/config/v1/Route.js';
import type { Service, Service__Output } from '../generated/vsockmesh/config/v1/Service.js';
import type { SyncStatusResponse__Output } from '../generated/vsockmesh/config/v1/SyncStatusResponse.js';
import { configProto } from '../proto.js';
import type { MeshStore, RawEntry } from './mesh-store.js';
import type { SyncStatus } from './types.js';
import { answeredByServer } from '../call-status.js';

export function serviceToRaw(s: Service__Output): RawEntry {
  return {
    name: s.name,
    port: s.port,
    ...(s.outbound_port > 0 && s.outbound_port !== s.port && { outbound_port: s.outbound_port }),
    ...(s.protocol !== '' && { protocol: s.protocol }),
    ...(s.connect_timeout_ms > 0 && { connect_timeout: `${s.connect_timeout_ms}ms` }),
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
  };
}

interface RawRule {
  prefix: string;
  clusters: Array<{ service: string; weight?: number }>;
}

export function routeToRaw(r: Route__Output): RawEntry {
  return {
    name: r.name,
    domains: [...r.domains],
    routes: r.rules.map((rule) => ({ prefix: rule.prefix, clusters: rule.services.map((s) => ({ service: s.service, weight: s.weight || 1 })) })),
  };
}

export function routeFromRaw(raw: RawEntry): Route {
  return {
    name: raw.name,
    domains: (raw.domains as string[] | undefined) ?? [],
    rules: ((raw.routes as RawRule[] | undefined) ?? []).map((rule) => ({ prefix: rule.prefix, services: rule.clusters.map((c) => ({ service: c.service, weight: c.weight ?? 1 })) })),
  };
}

class NotFound extends Error {}

function fail(err: unknown): { code: grpc.status; details: string } {
  if (err instanceof NotFound) return { code: grpc.status.NOT_FOUND, details: err.message };
  if (err instanceof ConfigError) return { code: grpc.status.INVALID_ARGUMENT, details: err.problems.join('; ') };
  return { code: grpc.status.INTERNAL, details: (err as Error).message };
}

export interface SyncStatusSource {
  statuses(nodeId?: string): SyncStatus[];
  /** Versions served now, by node ('' = nodes without their own snapshot) and type URL. */
  currentVersions(): Record<string, string>;
}

export function configApiHandlers(store: MeshStore, sync: SyncStatusSource): MeshConfigHandlers {
  const run = <Res>(fn: () => Promise<Res>, callback: grpc.sendUnaryData<Res>): void => {
    fn().then(
      (res) => callback(null, res),
      (err: unknown) => callback(fail(err)),
    );
  };
  return {
    PutService: (call, callback) =>
      run(async () => {
        await store.put('services', serviceToRaw(call.request));
        return serviceFromRaw(store.rawServices().find((s) => s.name === call.request.name)!);
      }, callback),
    DeleteService: (call, callback) =>
      run(async () => {
        if (!(await store.delete('services', call.request.name))) throw new NotFound(`no service "${call.request.name}"`);
        return {};
      }, callback),
    ListServices: (_call, callback) => callback(null, { services: store.rawServices().map(serviceFromRaw) }),
    PutRoute: (call, callback) =>
      run(async () => {
        await store.put('routes', routeToRaw(call.request));
        return routeFromRaw(store.rawRoutes().find((r) => r.name === call.request.name)!);
      }, callback),
    DeleteRoute: (call, callback) =>
      run(async () => {
        if (!(await store.delete('routes', call.request.name))) throw new NotFound(`no route "${call.request.name}"`);
        return {};
      }, callback),
    ListRoutes: (_call, callback) => callback(null, { routes: store.rawRoutes().map(routeFromRaw) }),
    GetSyncStatus: (call, callback) => {
      const statuses = sync.statuses(call.request.node_id || undefined).map((s) => ({
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
      callback(null, { statuses, current_versions: sync.currentVersions() });
    },
  };
}

/** The config API as `ctl` uses it; errors carry the gRPC status name as `code`. */
export class MeshConfigApiClient {
  private readonly client: WireClient;

  constructor(
    readonly address: string,
    private readonly timeoutMs = 5_000,
  ) {
    const Client = configProto().vsockmesh.config.v1.MeshConfig;
    this.client = new Client(address, grpc.credentials.createInsecure());
  }

  private call<Res>(start: (o: { deadline: Date }, cb: (err: grpc.ServiceError | null, res?: Res) => void) => void): Promise<Res> {
    return new Promise((resolve, reject) => {
      start({ deadline: new Date(Date.now() + this.timeoutMs) }, (err, res) => {
        if (err) reject(Object.assign(new Error(`${grpc.status[err.code]}: ${err.details}`), { code: grpc.status[err.code], details: err.details, answered: answeredByServer(err) }));
        else resolve(res as Res);
      });
    });
  }

  putService(s: Service): Promise<Service__Output> {
    return this.call((o, cb) => this.client.PutService(s, o, cb));
  }
  deleteService(name: string): Promise<unknown> {
    return this.call((o, cb) => this.client.DeleteService({ name }, o, cb));
  }
  async listServices(): Promise<Service__Output[]> {
    return (await this.call<{ services: Service__Output[] }>((o, cb) => this.client.ListServices({}, o, cb))).services;
  }
  putRoute(r: Route): Promise<Route__Output> {
    return this.call((o, cb) => this.client.PutRoute(r, o, cb));
  }
  deleteRoute(name: string): Promise<unknown> {
    return this.call((o, cb) => this.client.DeleteRoute({ name }, o, cb));
  }
  async listRoutes(): Promise<Route__Output[]> {
    return (await this.call<{ routes: Route__Output[] }>((o, cb) => this.client.ListRoutes({}, o, cb))).routes;
  }
  syncStatus(nodeId = ''): Promise<SyncStatusResponse__Output> {
    return this.call((o, cb) => this.client.GetSyncStatus({ node_id: nodeId }, o, cb));
  }
  close(): void {
    this.client.close();
  }
}
