// Shared by the xDS benchmark (xds-bench.ts) and its load process
// (xds-bench-child.ts): lightweight ADS streams that keep the size of every
// message received, the inventory and mesh files, a clock both processes
// share, and a reader for V8 CPU profiles. Not a test.

import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { stringify as toYaml } from 'yaml';
import { HEAP_PROFILES } from '../../proxy/cmd/heap-profile.js';
import {
  adsServiceDefinition,
  type DeltaDiscoveryRequest,
  type DeltaDiscoveryResponse__Output,
  type DiscoveryRequest,
  type DiscoveryResponse__Output,
} from '../../xds/envoy/proto.js';

// ---- clock -------------------------------------------------------------------------

/**
 * Milliseconds (µs resolution) on CLOCK_MONOTONIC: process.hrtime reads the
 * system-wide monotonic clock on Linux, so readings of different processes on
 * one machine compare directly (V8's CPU profiles use the same clock, in µs).
 */
export function nowMs(): number {
  return Number(process.hrtime.bigint() / 1000n) / 1000;
}

// ---- the fixtures ------------------------------------------------------------------

export const vmId = (i: number, width = 5): string => `vm-${String(i).padStart(width, '0')}`;
export const hvId = (h: number): string => `hv-${String(h).padStart(2, '0')}`;
export const serviceName = (s: number): string => `svc-${String(s).padStart(2, '0')}`;
/** A unique IPv4 address per VM: 10.1.0.0 onwards. */
export const vmAddress = (i: number): string => `10.${1 + (i >>> 16)}.${(i >>> 8) & 255}.${i & 255}`;
export const APP_PORT = 8080;
export const SIDECAR_TCP_PORT = 15006;
export const SIDECAR_VSOCK_PORT = 15007;
/** Outbound listener port of service s (unique per service, clear of the app and sidecar ports). */
export const outboundPort = (s: number): number => 18000 + s;

export interface Placement {
  vm: string;
  hypervisor: string;
  service: string;
  cid: number;
}

/**
 * VM i on hypervisor hvOf(i) serving service serviceOf(i); CIDs are unique
 * over the whole inventory (3 + i), so a VM keeps its CID when it moves.
 */
export function inventoryYaml(placements: readonly Placement[], hypervisors: readonly string[]): string {
  return toYaml({
    hypervisors: hypervisors.map((id) => ({ id, vsock_mode: 'host-relay', relay_port: 15100 })),
    vms: placements.map((p, i) => ({
      id: p.vm,
      hypervisor: p.hypervisor,
      cid: p.cid,
      addresses: [vmAddress(i)],
      sidecar: { tcp_port: SIDECAR_TCP_PORT, vsock_port: SIDECAR_VSOCK_PORT },
      services: [{ name: p.service, port: APP_PORT }],
      labels: { app: p.service, env: 'bench' },
    })),
  });
}

export function meshYaml(services: readonly string[]): string {
  return toYaml({ services: services.map((name, s) => ({ name, port: APP_PORT, outbound_port: outboundPort(s), protocol: 'tcp', connect_timeout: '2s' })), routes: [] });
}

// ---- ADS streams that keep message sizes -------------------------------------------

/** A message as received, with the size of its serialized form (the gRPC message, before decoding). */
export interface Sized<T> {
  msg: T;
  bytes: number;
}

/**
 * A grpc-js channel for ADS streams. Its own subchannel pool, so every
 * channel is its own HTTP/2 connection (grpc-js otherwise shares one
 * connection between channels with the same target and options).
 */
export function adsChannel(address: string, options: grpc.ClientOptions = {}, credentials: grpc.ChannelCredentials = grpc.credentials.createInsecure()): grpc.Client {
  return new grpc.Client(address, credentials, {
    'grpc.use_local_subchannel_pool': 1,
    'grpc.max_receive_message_length': 256 * 1024 * 1024,
    'grpc.max_send_message_length': 16 * 1024 * 1024,
    ...options,
  });
}

export type SotwStream = grpc.ClientDuplexStream<DiscoveryRequest, Sized<DiscoveryResponse__Output>>;
export type DeltaStream = grpc.ClientDuplexStream<DeltaDiscoveryRequest, Sized<DeltaDiscoveryResponse__Output>>;

/** StreamAggregatedResources on `channel`; each response comes with its serialized size. */
export function openSotw(channel: grpc.Client): SotwStream {
  const m = adsServiceDefinition().StreamAggregatedResources;
  return channel.makeBidiStreamRequest(m.path, m.requestSerialize, (buf: Buffer) => ({ msg: m.responseDeserialize(buf), bytes: buf.length }));
}

/** DeltaAggregatedResources on `channel`; each response comes with its serialized size. */
export function openDelta(channel: grpc.Client): DeltaStream {
  const m = adsServiceDefinition().DeltaAggregatedResources;
  return channel.makeBidiStreamRequest(m.path, m.requestSerialize, (buf: Buffer) => ({ msg: m.responseDeserialize(buf), bytes: buf.length }));
}

/**
 * The top-level fields of a serialized DiscoveryResponse (version_info = 1,
 * type_url = 4, nonce = 5) without decoding its resources (field 2): what a
 * client needs to ACK. Field numbers from envoy/service/discovery/v3/discovery.proto.
 */
export function sotwHeader(buf: Buffer): { version: string; typeUrl: string; nonce: string } {
  let pos = 0;
  const varint = (): number => {
    let result = 0;
    let shift = 0;
    for (;;) {
      const b = buf[pos++]!;
      result += (b & 0x7f) * 2 ** shift;
      if (b < 0x80) return result;
      shift += 7;
    }
  };
  const out = { version: '', typeUrl: '', nonce: '' };
  while (pos < buf.length) {
    const tag = varint();
    const field = Math.floor(tag / 8);
    const wire = tag & 7;
    if (wire === 0) varint();
    else if (wire === 1) pos += 8;
    else if (wire === 5) pos += 4;
    else if (wire === 2) {
      const len = varint();
      if (field === 1) out.version = buf.toString('utf8', pos, pos + len);
      else if (field === 4) out.typeUrl = buf.toString('utf8', pos, pos + len);
      else if (field === 5) out.nonce = buf.toString('utf8', pos, pos + len);
      pos += len;
    } else throw new Error(`DiscoveryResponse: unexpected wire type ${wire}`);
  }
  return out;
}

/** A SotW response as a light client sees it: the fields to ACK, the size, and the decoded message only when asked for. */
export interface LightResponse {
  version: string;
  typeUrl: string;
  nonce: string;
  bytes: number;
  /** The whole message decoded (resources as Any), only for the type URLs given to openSotwLight. */
  msg: DiscoveryResponse__Output | null;
}

export type LightSotwStream = grpc.ClientDuplexStream<DiscoveryRequest, LightResponse>;

/** StreamAggregatedResources that decodes only the fields an ACK needs, except for responses of the types in `decode`. */
export function openSotwLight(channel: grpc.Client, decode: ReadonlySet<string>): LightSotwStream {
  const m = adsServiceDefinition().StreamAggregatedResources;
  return channel.makeBidiStreamRequest(m.path, m.requestSerialize, (buf: Buffer): LightResponse => {
    const h = sotwHeader(buf);
    return { ...h, bytes: buf.length, msg: decode.has(h.typeUrl) ? m.responseDeserialize(buf) : null };
  });
}

/** The size of a received SotW response serialized again with the type's own serializer (a check on Sized.bytes). */
export function reserializedSotwBytes(msg: DiscoveryResponse__Output): number {
  return adsServiceDefinition().StreamAggregatedResources.responseSerialize(msg).length;
}

export function reserializedDeltaBytes(msg: DeltaDiscoveryResponse__Output): number {
  return adsServiceDefinition().DeltaAggregatedResources.responseSerialize(msg).length;
}

// ---- V8 CPU profiles -----------------------------------------------------------------

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  children?: number[];
}

interface CpuProfile {
  nodes: ProfileNode[];
  startTime: number;
  endTime: number;
  samples: number[];
  timeDeltas: number[];
}

export interface ProfileSummary {
  file: string;
  /** The window the figures cover (ms on nowMs()'s clock), or null for the whole profile. */
  window: { fromMs: number; toMs: number } | null;
  sampledMs: number;
  /** Self time by function (and file:line), largest first. */
  self: Array<{ fn: string; ms: number; pct: number }>;
  /** Time spent inside each of the named functions (their callees included; recursion counted once). */
  inclusive: Array<{ fn: string; ms: number; pct: number }>;
  /**
   * Per stretch of the event loop busy without a break (no idle sample) in
   * which `spanOf` ran: `ms` from its first to its last sample (for a
   * synchronous function: how long it blocked the event loop, the garbage
   * collector's pauses inside included), `gcMs` of that the garbage collector,
   * `busyMs` the whole stretch (what came after it in the same stretch too,
   * e.g. writing the responses it queued).
   */
  spans: { fn: string; stretches: Array<{ ms: number; gcMs: number; busyMs: number }> };
}

const frameName = (n: ProfileNode): string => {
  const f = n.callFrame;
  const file = f.url === '' ? '' : ` ${path.basename(f.url.replace(/^file:\/\//, ''))}:${f.lineNumber + 1}`;
  return `${f.functionName || '(anonymous)'}${file}`;
};

/** A CPU profile with its nodes by id, and `stack(id)`: the node and its callers up to the root. */
function readProfile(file: string) {
  const profile = JSON.parse(readFileSync(file, 'utf8')) as CpuProfile;
  const byId = new Map(profile.nodes.map((n) => [n.id, n]));
  const parent = new Map<number, number>();
  for (const n of profile.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
  function* stack(id: number) {
    for (let n = byId.get(id); n !== undefined; n = byId.get(parent.get(n.id) ?? -1)) yield n;
  }
  return { profile, byId, stack };
}

/**
 * Self and inclusive time from a .cpuprofile, optionally only the samples
 * taken within `window` (same clock as nowMs(): V8 stamps samples with the
 * monotonic clock in µs). `inclusiveOf` names functions (functionName) whose
 * inclusive time is wanted.
 */
export function summarizeProfile(
  file: string,
  inclusiveOf: readonly string[],
  window: { fromMs: number; toMs: number } | null,
  spanOf = 'rebuild',
  top = 15,
): ProfileSummary {
  const { profile, byId, stack } = readProfile(file);
  const hits = new Map<number, number>();
  let t = profile.startTime;
  let sampledUs = 0;
  let useWindow = window !== null && window.toMs * 1000 > profile.startTime && window.fromMs * 1000 < profile.endTime;
  const onStack = (id: number, fn: string): boolean => {
    for (const n of stack(id)) if (n.callFrame.functionName === fn) return true;
    return false;
  };
  const spans: ProfileSummary['spans']['stretches'] = [];
  const count = (from: number, to: number): void => {
    hits.clear();
    spans.length = 0;
    sampledUs = 0;
    t = profile.startTime;
    // The current busy stretch: when it began, and the first and last sample of `spanOf` in it.
    let busyStart = NaN;
    let first = NaN;
    let last = NaN;
    let gcUs = 0;
    let gcSinceLast = 0;
    const endStretch = (end: number): void => {
      if (Number.isFinite(first)) spans.push({ ms: (last - first) / 1000, gcMs: (gcUs - gcSinceLast) / 1000, busyMs: (end - busyStart) / 1000 });
      busyStart = NaN;
      first = NaN;
      last = NaN;
      gcUs = 0;
      gcSinceLast = 0;
    };
    for (let i = 0; i < profile.samples.length; i++) {
      const dt = profile.timeDeltas[i] ?? 0;
      t += dt;
      if (t < from || t > to) continue;
      const id = profile.samples[i]!;
      const fn = byId.get(id)!.callFrame.functionName;
      if (fn === '(idle)') endStretch(t);
      else {
        if (!Number.isFinite(busyStart)) busyStart = t;
        if (onStack(id, spanOf)) {
          if (!Number.isFinite(first)) first = t;
          last = t;
          gcSinceLast = 0;
        } else if (fn === '(garbage collector)' && Number.isFinite(first)) {
          gcUs += profile.timeDeltas[i + 1] ?? dt;
          gcSinceLast += profile.timeDeltas[i + 1] ?? dt;
        }
      }
      const weight = profile.timeDeltas[i + 1] ?? dt;
      hits.set(profile.samples[i]!, (hits.get(profile.samples[i]!) ?? 0) + weight);
      sampledUs += weight;
    }
    endStretch(t);
  };
  if (useWindow) count(window!.fromMs * 1000, window!.toMs * 1000);
  if (sampledUs === 0) {
    useWindow = false;
    count(-Infinity, Infinity);
  }
  const selfBy = new Map<string, number>();
  const inclusiveBy = new Map<string, number>(inclusiveOf.map((f) => [f, 0]));
  for (const [id, us] of hits) {
    const node = byId.get(id)!;
    const name = frameName(node);
    selfBy.set(name, (selfBy.get(name) ?? 0) + us);
    const seen = new Set<string>();
    for (const n of stack(id)) {
      const fn = n.callFrame.functionName;
      if (inclusiveBy.has(fn) && !seen.has(fn)) {
        seen.add(fn);
        inclusiveBy.set(fn, inclusiveBy.get(fn)! + us);
      }
    }
  }
  const pct = (us: number): number => (sampledUs === 0 ? 0 : (us / sampledUs) * 100);
  return {
    file,
    window: useWindow ? window : null,
    sampledMs: sampledUs / 1000,
    self: [...selfBy]
      .sort((a, b) => b[1] - a[1])
      .slice(0, top)
      .map(([fn, us]) => ({ fn, ms: us / 1000, pct: pct(us) })),
    inclusive: [...inclusiveBy].map(([fn, us]) => ({ fn, ms: us / 1000, pct: pct(us) })),
    spans: { fn: spanOf, stretches: [...spans] },
  };
}

/** Where one change went in a control plane, from its CPU profile (ms on nowMs()'s clock; NaN: no such sample in the window). */
export interface ChangeTimeline {
  /** First and last sample of the rebuild (the snapshots made and handed to the streams). */
  rebuildFromMs: number;
  rebuildToMs: number;
  /** The last sample that encoded a state-of-the-world response (SotwEncoder.encode): about when the last push was handed to gRPC. */
  lastPushMs: number;
  /** Samples not idle in the window, and of them the garbage collector's. */
  busyMs: number;
  gcMs: number;
}

/** Per window (a change: from its call to its last ACK), the timeline of the change in the profile `file`. */
export function changeTimelines(file: string, windows: ReadonlyArray<{ fromMs: number; toMs: number }>): ChangeTimeline[] {
  const { profile, byId, stack } = readProfile(file);
  const onStack = new Map<number, { rebuild: boolean; encode: boolean }>();
  const marks = (id: number): { rebuild: boolean; encode: boolean } => {
    let m = onStack.get(id);
    if (m === undefined) {
      m = { rebuild: false, encode: false };
      for (const n of stack(id)) {
        if (n.callFrame.functionName === 'rebuild') m.rebuild = true;
        if (n.callFrame.functionName === 'encode' && n.callFrame.url.endsWith('sotw-encoding.js')) m.encode = true;
      }
      onStack.set(id, m);
    }
    return m;
  };
  const out = windows.map(() => ({ rebuildFromMs: NaN, rebuildToMs: NaN, lastPushMs: NaN, busyMs: 0, gcMs: 0 }));
  let t = profile.startTime;
  for (let i = 0; i < profile.samples.length; i++) {
    t += profile.timeDeltas[i] ?? 0;
    const ms = t / 1000;
    const w = windows.findIndex((x) => ms >= x.fromMs && ms <= x.toMs);
    if (w < 0) continue;
    const id = profile.samples[i]!;
    const fn = byId.get(id)!.callFrame.functionName;
    if (fn === '(idle)') continue;
    const weight = (profile.timeDeltas[i + 1] ?? 0) / 1000;
    const o = out[w]!;
    o.busyMs += weight;
    if (fn === '(garbage collector)') o.gcMs += weight;
    const m = marks(id);
    if (m.rebuild) {
      if (!Number.isFinite(o.rebuildFromMs)) o.rebuildFromMs = ms;
      o.rebuildToMs = ms;
    }
    if (m.encode) o.lastPushMs = ms;
  }
  return out;
}

/**
 * Node flags for a control plane profiled into `dir` (V8's --cpu-prof, a
 * sample every `intervalUs`). The `server` heap profile's flags come first,
 * so the CLI has nothing to re-execute: its re-exec (execv) keeps the
 * profiler's SIGPROF interval timer, and the new image, without the
 * profiler's handler, dies of the first SIGPROF before it serves.
 */
export function cpuProfileFlags(dir: string, intervalUs: number): string[] {
  return [...HEAP_PROFILES.server, '--cpu-prof', `--cpu-prof-dir=${dir}`, `--cpu-prof-interval=${intervalUs}`];
}

/** The newest .cpuprofile in `dir` (undefined if none). */
export function newestProfile(dir: string): string | undefined {
  let files: string[];
  try {
    files = readdirSync(dir).filter((f) => f.endsWith('.cpuprofile'));
  } catch {
    return undefined;
  }
  files.sort();
  const last = files.at(-1);
  return last === undefined ? undefined : path.join(dir, last);
}

// ---- /proc ---------------------------------------------------------------------------

/** Peak resident set size of a process so far (VmHWM, KiB; NaN if unreadable). */
export function hwmKiB(pid: number): number {
  try {
    const m = /^VmHWM:\s+(\d+)\s+kB/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) : NaN;
  } catch {
    return NaN;
  }
}
