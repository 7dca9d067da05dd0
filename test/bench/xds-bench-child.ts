// The load process of the xDS fan-out benchmark (xds-bench.ts): many
// lightweight state-of-the-world ADS clients in one Node process, each its own
// gRPC stream with its own node id, spread over a few grpc-js channels (each
// channel its own HTTP/2 connection).
//
//   node --import tsx xds-bench-child.ts '{"address": "127.0.0.1:PORT", "nodes": ["vm-00000", ...], "channels": 10}'
//
// With "identityDir": mutual TLS, each client on its own connection with its
// own SVID (<dir>/<node>.json: key, chain, bundle), as sidecars connect.
//
// Every client does what a sidecar does on the wire (xds/client/ads-client.ts)
// without applying anything: wildcard CDS and LDS; EDS for the EDS clusters
// CDS gave it; RDS for the route configurations its API listeners name; an
// ACK (version_info + response_nonce) for every response, sent as soon as the
// response is read. Only CDS and LDS responses are decoded (for the names to
// subscribe to); of EDS and RDS responses only version_info, type_url and
// nonce are read (what an ACK needs; sotwHeader()), so the clients stay light
// and the figures are mostly the control plane's.
//
// Commands, one JSON line each on stdin:
//   {"cmd": "arm", "round": N}     every client notes the EDS version it has ACKed; replies {"event": "armed"}
//   {"cmd": "wait", "round": N, "t0": MS, "callStart": MS, "timeoutMs": MS}
//        waits until every client has ACKed an EDS version other than the one noted
//        (or the timeout), replies {"event": "round", ...}: per client the time of that
//        EDS response and of its ACK, relative to t0 (the change call's return; ms on the
//        shared monotonic clock, see nowMs()), and what else arrived since "arm".
// Events on stdout: {"event": "progress"}, {"event": "synced"} once every client
// has ACKed all four types, {"event": "stream_error"} for a stream that ended.

import { readFileSync } from 'node:fs';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { staticSource, type IdentityMaterial } from '../../proxy/identity/certificate-source.js';
import { channelCredentials, channelOptions } from '../../xds/security/transport.js';
import type * as grpc from '@grpc/grpc-js';
import { TYPE_URLS, unpackAny, type Any__Output, type DiscoveryRequest, type ResourceTypeUrl } from '../../xds/envoy/proto.js';
import { adsChannel, nowMs, openSotwLight, type LightResponse, type LightSotwStream } from './xds-bench-lib.js';

interface Options {
  address: string;
  nodes: string[];
  channels: number;
  /** HTTP/2 flow-control window of each connection (grpc-node.flow_control_window); default grpc-js's. */
  flowControlWindow?: number;
  /** mTLS: a directory with one identity per node (<node>.json, IdentityMaterial); one connection per client. */
  identityDir?: string;
}

type Short = 'cds' | 'eds' | 'lds' | 'rds';
const SHORT: Record<ResourceTypeUrl, Short> = {
  [TYPE_URLS.Cluster]: 'cds',
  [TYPE_URLS.ClusterLoadAssignment]: 'eds',
  [TYPE_URLS.Listener]: 'lds',
  [TYPE_URLS.RouteConfiguration]: 'rds',
};
const SHORTS: Short[] = ['cds', 'eds', 'lds', 'rds'];
/** The types whose responses are decoded (for names); of the others only what an ACK needs is read. */
const DECODED: ReadonlySet<string> = new Set([TYPE_URLS.Cluster, TYPE_URLS.Listener]);

interface TypeState {
  typeUrl: ResourceTypeUrl;
  nonce: string;
  /** Version last ACKed (null: none yet). */
  acked: string | null;
  /** Subscribed names (EDS, RDS); CDS and LDS are wildcards. */
  names: string[];
}

function emit(event: Record<string, unknown>): void {
  process.stdout.write(`${JSON.stringify(event)}\n`);
}

function progress(msg: string): void {
  process.stderr.write(`[load ${new Date().toISOString().slice(11, 19)}] ${msg}\n`);
}

/** Names of the EDS clusters' assignments in a CDS response (decoded once per distinct resource). */
const clusterCache = new Map<string, string | null>();
function edsNames(resources: Any__Output[]): string[] {
  const names: string[] = [];
  for (const any of resources) {
    const key = any.value.toString('base64');
    let name = clusterCache.get(key);
    if (name === undefined) {
      const c = unpackAny(any, TYPE_URLS.Cluster);
      name = c.type === 'EDS' ? c.eds_cluster_config?.service_name || c.name : null;
      clusterCache.set(key, name);
    }
    if (name !== null) names.push(name);
  }
  return names.sort();
}

/** Route configuration names the API listeners of an LDS response take over RDS. */
function routeNames(resources: Any__Output[]): string[] {
  const names = new Set<string>();
  for (const any of resources) {
    const l = unpackAny(any, TYPE_URLS.Listener);
    const api = l.api_listener?.api_listener;
    if (!api) continue;
    const hcm = unpackAny(api, TYPE_URLS.HttpConnectionManager);
    if (hcm.route_specifier === 'rds' && hcm.rds?.route_config_name) names.add(hcm.rds.route_config_name);
  }
  return [...names].sort();
}

const sameList = (a: readonly string[], b: readonly string[]): boolean => a.length === b.length && a.every((x, i) => x === b[i]);

class Client {
  readonly types: Record<Short, TypeState>;
  private sentNode = false;
  private readonly stream: LightSotwStream;
  error: string | null = null;
  // ---- the armed round
  baseline: string | null = null;
  respAt: number | null = null;
  ackAt: number | null = null;
  newVersion: string | null = null;

  constructor(
    readonly nodeId: string,
    channel: grpc.Client,
    private readonly stats: RoundStats,
    private readonly onSynced: () => void,
  ) {
    this.types = {
      cds: { typeUrl: TYPE_URLS.Cluster, nonce: '', acked: null, names: [] },
      eds: { typeUrl: TYPE_URLS.ClusterLoadAssignment, nonce: '', acked: null, names: [] },
      lds: { typeUrl: TYPE_URLS.Listener, nonce: '', acked: null, names: [] },
      rds: { typeUrl: TYPE_URLS.RouteConfiguration, nonce: '', acked: null, names: [] },
    };
    this.stream = openSotwLight(channel, DECODED);
    this.stream.on('data', (r: LightResponse) => this.onResponse(r));
    this.stream.on('error', (err: Error) => this.fail(err.message));
    this.stream.on('end', () => this.fail('stream ended by the server'));
    this.send({ type_url: TYPE_URLS.Cluster, resource_names: [] });
    this.send({ type_url: TYPE_URLS.Listener, resource_names: [] });
  }

  get synced(): boolean {
    return SHORTS.every((t) => this.types[t].acked !== null) && this.types.eds.names.length > 0 && this.types.rds.names.length > 0;
  }

  close(): void {
    this.error ??= 'closed';
    this.stream.cancel();
  }

  private fail(message: string): void {
    if (this.error !== null) return;
    this.error = message;
    emit({ event: 'stream_error', node: this.nodeId, message });
  }

  private send(req: DiscoveryRequest): void {
    if (!this.sentNode) {
      req.node = { id: this.nodeId, cluster: 'xds-bench' };
      this.sentNode = true;
    }
    this.stream.write(req);
  }

  private ack(st: TypeState, r: LightResponse): void {
    st.nonce = r.nonce;
    st.acked = r.version;
    this.send({ type_url: st.typeUrl, version_info: r.version, response_nonce: r.nonce, resource_names: st.names });
  }

  private subscribe(st: TypeState, names: string[]): void {
    if (sameList(names, st.names)) return;
    st.names = names;
    this.send({ type_url: st.typeUrl, version_info: st.acked ?? '', response_nonce: st.nonce, resource_names: names });
  }

  private onResponse(r: LightResponse): void {
    const at = nowMs();
    const short = SHORT[r.typeUrl as ResourceTypeUrl];
    if (short === undefined) return;
    const wasSynced = this.synced;
    this.stats.responses[short]++;
    this.stats.bytes[short] += r.bytes;
    const st = this.types[short];
    switch (short) {
      case 'cds': {
        const names = edsNames(r.msg!.resources);
        this.ack(st, r);
        this.subscribe(this.types.eds, names);
        break;
      }
      case 'lds': {
        const names = routeNames(r.msg!.resources);
        this.ack(st, r);
        this.subscribe(this.types.rds, names);
        break;
      }
      case 'eds': {
        this.ack(st, r);
        if (this.stats.armed && this.ackAt === null && r.version !== this.baseline) {
          this.respAt = at;
          this.ackAt = nowMs();
          this.newVersion = r.version;
        }
        break;
      }
      case 'rds':
        this.ack(st, r);
        break;
    }
    if (!wasSynced && this.synced) this.onSynced();
  }
}

interface RoundStats {
  armed: boolean;
  responses: Record<Short, number>;
  bytes: Record<Short, number>;
}

const zero = (): Record<Short, number> => ({ cds: 0, eds: 0, lds: 0, rds: 0 });

function quantile(sorted: readonly number[], p: number): number {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))]!;
}

async function main(): Promise<void> {
  const o = JSON.parse(process.argv[2] ?? '{}') as Options;
  const started = nowMs();
  const nChannels = o.identityDir === undefined ? Math.max(1, Math.min(o.channels, o.nodes.length)) : o.nodes.length;
  const window = o.flowControlWindow === undefined ? {} : { 'grpc-node.flow_control_window': o.flowControlWindow };
  const channels = Array.from({ length: nChannels }, (_, i) => {
    if (o.identityDir === undefined) return adsChannel(o.address, window);
    // A sidecar's credentials: its own SVID, the control plane checked as a cp/<name> of the trust domain.
    const material = JSON.parse(readFileSync(path.join(o.identityDir, `${o.nodes[i]!}.json`), 'utf8')) as IdentityMaterial;
    const transport = { source: staticSource({ ...material, notAfter: new Date(material.notAfter) }) };
    return adsChannel(o.address, { ...window, ...channelOptions(transport) }, channelCredentials(transport));
  });
  const stats: RoundStats = { armed: false, responses: zero(), bytes: zero() };
  let synced = 0;
  let syncedAt = 0;
  const clients: Client[] = [];
  const onSynced = (): void => {
    synced++;
    if (synced === clients.length) {
      syncedAt = nowMs();
      emit({ event: 'synced', ms: syncedAt - started, responses: stats.responses, bytes: stats.bytes, channels: nChannels });
    }
  };
  for (let i = 0; i < o.nodes.length; i++) clients.push(new Client(o.nodes[i]!, channels[i % nChannels]!, stats, onSynced));
  const timer = setInterval(() => {
    if (synced < clients.length) progress(`${synced}/${clients.length} clients have ACKed all four types`);
    const errors = clients.filter((c) => c.error !== null).length;
    emit({ event: 'progress', synced, errors });
  }, 2_000);
  timer.unref();

  const rl = createInterface({ input: process.stdin });
  let round = 0;
  for await (const line of rl) {
    if (line.trim() === '') continue;
    const cmd = JSON.parse(line) as { cmd: string; round?: number; t0?: number; callStart?: number; timeoutMs?: number };
    if (cmd.cmd === 'arm') {
      // What arrived between rounds (a late push of the previous change would show here).
      const between = { responses: stats.responses, bytes: stats.bytes };
      round = cmd.round ?? round + 1;
      for (const c of clients) {
        c.baseline = c.types.eds.acked;
        c.respAt = null;
        c.ackAt = null;
        c.newVersion = null;
      }
      stats.responses = zero();
      stats.bytes = zero();
      stats.armed = true;
      emit({ event: 'armed', round, between });
    } else if (cmd.cmd === 'wait') {
      const deadline = nowMs() + (cmd.timeoutMs ?? 30_000);
      const cpu0 = process.cpuUsage();
      while (clients.some((c) => c.ackAt === null && c.error === null) && nowMs() < deadline) await new Promise((r) => setTimeout(r, 5));
      // Anything else this change causes (e.g. the moved VM's own LDS) arrives at about the same time.
      await new Promise((r) => setTimeout(r, 50));
      stats.armed = false;
      const t0 = cmd.t0 ?? 0;
      const callStart = cmd.callStart ?? t0;
      const done = clients.filter((c) => c.ackAt !== null);
      const acks = done.map((c) => c.ackAt! - t0).sort((a, b) => a - b);
      const resps = done.map((c) => c.respAt! - t0).sort((a, b) => a - b);
      const cpu = process.cpuUsage(cpu0);
      emit({
        event: 'round',
        round: cmd.round ?? round,
        clients: clients.length,
        updated: done.length,
        missing: clients.filter((c) => c.ackAt === null).map((c) => c.nodeId).slice(0, 10),
        errors: clients.filter((c) => c.error !== null).length,
        versions: [...new Set(done.map((c) => c.newVersion))].length,
        callMs: t0 - callStart,
        firstResponseMs: resps[0] ?? NaN,
        lastResponseMs: resps.at(-1) ?? NaN,
        ackP50Ms: quantile(acks, 50),
        ackP90Ms: quantile(acks, 90),
        ackP99Ms: quantile(acks, 99),
        lastAckMs: acks.at(-1) ?? NaN,
        responses: stats.responses,
        bytes: stats.bytes,
        waitCpuMs: (cpu.user + cpu.system) / 1000,
      });
      // From here on, counts are of what arrives between rounds (reported at the next "arm").
      stats.responses = zero();
      stats.bytes = zero();
    } else if (cmd.cmd === 'exit') {
      break;
    }
  }
  clearInterval(timer);
  for (const c of clients) c.close();
  for (const ch of channels) ch.close();
  process.exit(0);
}

main().catch((err: unknown) => {
  emit({ event: 'fatal', message: (err as Error).stack ?? String(err) });
  process.exit(1);
});
