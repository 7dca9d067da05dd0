// The rules of one ADS stream as pure state transitions, for both
// state-of-the-world (StreamAggregatedResources) and incremental
// (DeltaAggregatedResources) streams (go-control-plane keeps the same apart
// from its gRPC loop: pkg/server/stream/v3). No I/O, no clock: the server
// (ads-server.ts) feeds requests and snapshots in and writes what comes out.
//
//   applyRequest(state, request)  → state, events (ACK, NACK, stale nonce, ...), failure
//   snapshotChanged(state, snap)  → state (which types owe a response)
//   nextResponse(state, snap)     → state, the next response owed (push order) or null
//
// Responses are built when they are written, from the snapshot current at
// that moment: a stream whose write buffer is full asks for no next response
// until it drains, so it owes at most one response per type, with the latest
// state.
//
// Protocol decisions (see the xDS REST and gRPC protocol doc):
// - The first request must carry node.id (else INVALID_ARGUMENT); later ones
//   may omit node; a different node id later on is ignored.
// - type_url is required (ADS); types other than CDS/EDS/LDS/RDS are ignored.
// - SotW: a request with a response_nonce other than the last one sent for
//   its type is stale and ignored entirely. A request without a nonce (the
//   first one for a type, or a client's re-request) is always answered, even
//   when the client already has the version. A request with the latest nonce
//   is an ACK (version_info = the version sent) or a NACK (error_detail set);
//   either way it is answered only if it changes the subscription. Pushes on
//   snapshot changes go to every subscribed type whose version differs from
//   the one last sent, in the order CDS, EDS, LDS, RDS, and every CDS
//   response is followed by an EDS response when EDS is subscribed (even an
//   unchanged or NACKed EDS version: Envoy warms clusters on it).
// - SotW EDS and RDS responses carry only what the client may not have: the
//   xDS protocol lets them leave resources out (only LDS and CDS must be
//   complete; an EDS or RDS resource absent from a response is kept, not
//   deleted, by Envoy, grpc-js-xds and our client), so one service's endpoint
//   change is one assignment on the wire, not all of them (issue 15). A name
//   is sent when the version the stream last had ACKed for it differs from
//   the snapshot's, or when it went out since the last ACK (a NACK of that
//   response may have come back stale: its resource is sent until a
//   response carrying it is ACKed). A request without a nonce, a NACK, an
//   ACK of another version and the EDS response after a CDS response start
//   over: that response carries every subscribed resource (see owedNames).
// - LDS/CDS: an empty first resource_names, or "*", is a wildcard (the full
//   state is sent); EDS/RDS: the named resources that exist.
// - Delta: subscribe/unsubscribe always apply (they are deltas; dropping one
//   would lose it), ACK/NACK only with the latest nonce. initial_resource_versions
//   (first request of a type) seed what the client has: only resources of
//   another version are sent, names it has that no longer exist come back in
//   removed_resources. The first request of a type is always answered (maybe
//   empty); later changes only when something is added, changed or removed.
//   No EDS-after-CDS rule (delta clients keep their assignments).
// - Bounds (bounds.ts): a node id, a resource name or version longer than its
//   bound fails the stream with INVALID_ARGUMENT; a request naming, or a
//   stream subscribed to, more resource names than MAX_XDS_NAMES_PER_STREAM
//   fails it with RESOURCE_EXHAUSTED. A NACK's text is cut to MAX_NACK_TEXT_BYTES.

import * as grpc from '@grpc/grpc-js';
import { RESOURCE_TYPE_URLS, TYPE_URLS, type ResourceTypeUrl } from '../envoy/proto.js';
import { ackedOf, versionChanges, versionsOf, VersionsOf } from './acked-versions.js';
import { MAX_NACK_TEXT_BYTES, MAX_XDS_NAMES_PER_STREAM, MAX_XDS_NODE_ID_LENGTH, MAX_XDS_RESOURCE_NAME_LENGTH, truncateUtf8 } from './bounds.js';
import type { Snapshot, VersionedResource } from './snapshot.js';
import { sharedNameSet } from './stream-sharing.js';

export type AdsStreamKind = 'sotw' | 'delta';

/** The fields of a DiscoveryRequest the rules read (the generated message has them all). */
export interface SotwRequest {
  node?: { id?: string } | null;
  type_url: string;
  version_info?: string;
  resource_names?: string[];
  response_nonce?: string;
  error_detail?: { code?: number; message?: string } | null;
}

/** The fields of a DeltaDiscoveryRequest the rules read. */
export interface DeltaRequest {
  node?: { id?: string } | null;
  type_url: string;
  resource_names_subscribe?: string[];
  resource_names_unsubscribe?: string[];
  initial_resource_versions?: Record<string, string>;
  response_nonce?: string;
  error_detail?: { code?: number; message?: string } | null;
}

/** One type on one stream. */
export interface TypeState {
  /** The client asked for this type on this stream. */
  readonly requested: boolean;
  /** Last nonce sent for the type ('' before the first response). */
  readonly nonce: string;
  /** Version of the last response sent. */
  readonly sentVersion: string | null;
  /** A response is owed (built when it is written). */
  readonly dirty: boolean;
  readonly wildcard: boolean;
  /** Explicitly subscribed names (besides the wildcard). */
  readonly names: ReadonlySet<string>;
  /**
   * Delta: versions of the resources the client has (as far as we know), by
   * name; SotW EDS/RDS: the versions it ACKed, of its subscribed names only
   * (once it ACKed a response built from a resource map, a view of that map's
   * versions, acked-versions.ts: it also has names the stream is not subscribed to).
   */
  readonly known: ReadonlyMap<string, string>;
  /** SotW EDS/RDS: resources sent since the last ACK (their latest version), by name. */
  readonly unacked: ReadonlyMap<string, string>;
  /** SotW EDS/RDS: the resource map the last response was built from (an ACK of it: the client holds its versions); null: none, or unknown (the next response is full). */
  readonly sentFrom: ReadonlyMap<string, VersionedResource> | null;
  /** Delta: the next response goes out even if empty (first request of the type). */
  readonly mustRespond: boolean;
}

export interface StreamState {
  readonly kind: AdsStreamKind;
  /** From the first request on. */
  readonly nodeId: string | null;
  /** Responses sent so far on the stream (the last nonce). */
  readonly sent: number;
  readonly types: ReadonlyMap<ResourceTypeUrl, TypeState>;
}

/** What a request told the server, for its sync status, metrics and log. */
export type StreamEvent =
  /** The stream's first request named its node. */
  | { type: 'identified'; nodeId: string }
  /** A request for a served type (the node and type are listed in the sync status from now on). */
  | { type: 'requested'; typeUrl: ResourceTypeUrl }
  /** A request for a type this server does not serve: ignored. */
  | { type: 'unserved'; typeUrl: string }
  | { type: 'ack'; typeUrl: ResourceTypeUrl; version: string | null }
  /** `error` cut to MAX_NACK_TEXT_BYTES. */
  | { type: 'nack'; typeUrl: ResourceTypeUrl; version: string; error: string }
  | { type: 'stale'; typeUrl: ResourceTypeUrl; nonce: string; latest: string };

/** Why the stream ends with an error status; `reason` (logged) when a request went beyond a bound. */
export interface Failure {
  code: grpc.status;
  details: string;
  reason?: 'node_id_too_long' | 'resource_name_too_long' | 'too_many_resource_names';
}

export interface RequestOutcome {
  state: StreamState;
  events: StreamEvent[];
  /** Non-null: fail the stream with it (after handling `events`). */
  failure: Failure | null;
}

/** A state-of-the-world response: the resources named (null: all of the type) as of the snapshot it was built from. */
export interface SotwResponse {
  typeUrl: ResourceTypeUrl;
  version: string;
  nonce: string;
  names: readonly string[] | null;
}

/** A delta response: resources added or changed, names removed. */
export interface DeltaResponse {
  typeUrl: ResourceTypeUrl;
  version: string;
  nonce: string;
  resources: VersionedResource[];
  removed: string[];
}

/** Types with a wildcard subscription (an empty first request asks for all). */
const WILDCARD_TYPES: ReadonlySet<string> = new Set([TYPE_URLS.Listener, TYPE_URLS.Cluster]);

/** Types whose SotW responses carry only the resources the client may not have (the others are the full state). */
const PARTIAL_TYPES: ReadonlySet<string> = new Set([TYPE_URLS.ClusterLoadAssignment, TYPE_URLS.RouteConfiguration]);

const EMPTY_NAMES: ReadonlySet<string> = new Set();
const EMPTY_KNOWN: ReadonlyMap<string, string> = new Map();
const EMPTY_RESOURCES: ReadonlyMap<string, VersionedResource> = new Map();

const NEW_TYPE: TypeState = { requested: false, nonce: '', sentVersion: null, dirty: false, wildcard: false, names: EMPTY_NAMES, known: EMPTY_KNOWN, unacked: EMPTY_KNOWN, sentFrom: null, mustRespond: false };

export function newStream(kind: AdsStreamKind): StreamState {
  return { kind, nodeId: null, sent: 0, types: new Map() };
}

function isResourceType(typeUrl: string): typeUrl is ResourceTypeUrl {
  return (RESOURCE_TYPE_URLS as readonly string[]).includes(typeUrl);
}

function withType(state: StreamState, typeUrl: ResourceTypeUrl, st: TypeState): StreamState {
  const types = new Map(state.types);
  types.set(typeUrl, st);
  return { ...state, types };
}

function resourcesOf(snapshot: Snapshot, typeUrl: ResourceTypeUrl): ReadonlyMap<string, VersionedResource> {
  return snapshot.resources[typeUrl] ?? EMPTY_RESOURCES;
}

function versionOf(snapshot: Snapshot, typeUrl: ResourceTypeUrl): string {
  return snapshot.versions[typeUrl] ?? '';
}

function someMissing(names: Iterable<string>, from: { has(name: string): boolean }): boolean {
  for (const name of names) if (!from.has(name)) return true;
  return false;
}

/** `a` with the entries of `b` set over it (a new map). */
function withEntries(a: ReadonlyMap<string, string>, b: ReadonlyMap<string, string>): Map<string, string> {
  const out = new Map(a);
  for (const [k, v] of b) out.set(k, v);
  return out;
}

function sameSet(a: ReadonlySet<string>, b: ReadonlySet<string>): boolean {
  if (a.size !== b.size) return false;
  for (const x of a) if (!b.has(x)) return false;
  return true;
}

// ---- bounds -------------------------------------------------------------------------

type NamedRequest = Pick<SotwRequest, 'resource_names'> & Pick<DeltaRequest, 'resource_names_subscribe' | 'resource_names_unsubscribe' | 'initial_resource_versions'>;

function tooMany(field: string, count: number): Failure {
  return { code: grpc.status.RESOURCE_EXHAUSTED, reason: 'too_many_resource_names', details: `${field}: ${count} names, more than ${MAX_XDS_NAMES_PER_STREAM}` };
}

function longestOver(field: string, names: Iterable<string>): Failure | null {
  let i = 0;
  for (const name of names) {
    if (name.length > MAX_XDS_RESOURCE_NAME_LENGTH) {
      return { code: grpc.status.INVALID_ARGUMENT, reason: 'resource_name_too_long', details: `${field}[${i}]: ${name.length} characters, more than ${MAX_XDS_RESOURCE_NAME_LENGTH}` };
    }
    i++;
  }
  return null;
}

/** The first bound a request goes beyond (node id on the stream's first request, names and their length), or null. */
export function requestRefusal(req: NamedRequest & { node?: { id?: string } | null }, first: boolean): Failure | null {
  const id = req.node?.id ?? '';
  if (first && id.length > MAX_XDS_NODE_ID_LENGTH) {
    return { code: grpc.status.INVALID_ARGUMENT, reason: 'node_id_too_long', details: `node.id: ${id.length} characters, more than ${MAX_XDS_NODE_ID_LENGTH}` };
  }
  const initial = req.initial_resource_versions ?? {};
  const lists: Array<[string, string[]]> = [
    ['resource_names', req.resource_names ?? []],
    ['resource_names_subscribe', req.resource_names_subscribe ?? []],
    ['resource_names_unsubscribe', req.resource_names_unsubscribe ?? []],
    ['initial_resource_versions', Object.keys(initial)],
  ];
  for (const [field, names] of lists) {
    if (names.length > MAX_XDS_NAMES_PER_STREAM) return tooMany(field, names.length);
    const over = longestOver(field, names);
    if (over) return over;
  }
  return longestOver('initial_resource_versions (versions)', Object.values(initial));
}

// ---- requests -----------------------------------------------------------------------

function nackText(detail: { code?: number; message?: string }): string {
  return truncateUtf8(detail.message || `gRPC status ${detail.code ?? 0}`, MAX_NACK_TEXT_BYTES);
}

/** The client's answer to the last response of a type: an ACK or a NACK when `nonce` is the latest, else stale. */
function answer(typeUrl: ResourceTypeUrl, st: TypeState, nonce: string, req: SotwRequest | DeltaRequest, events: StreamEvent[]): 'stale' | 'ack' | 'nack' {
  if (nonce !== st.nonce) {
    events.push({ type: 'stale', typeUrl, nonce, latest: st.nonce });
    return 'stale';
  }
  if (req.error_detail != null) {
    events.push({ type: 'nack', typeUrl, version: st.sentVersion ?? '', error: nackText(req.error_detail) });
    return 'nack';
  }
  return 'ack';
}

function sotwType(typeUrl: ResourceTypeUrl, st: TypeState, req: SotwRequest, events: StreamEvent[]): TypeState {
  const nonce = req.response_nonce ?? '';
  // What the client holds: on an ACK, what it had and everything sent since; otherwise unknown (the next response carries everything).
  let known = EMPTY_KNOWN;
  let acked = false;
  if (nonce !== '') {
    const said = answer(typeUrl, st, nonce, req, events);
    if (said === 'stale') return st;
    if (said === 'ack' && (req.version_info ?? '') === st.sentVersion) {
      events.push({ type: 'ack', typeUrl, version: st.sentVersion });
      acked = true;
      // EDS/RDS: the response carried every subscribed name the client might not have at the map's version (owedNames), so it now holds that map's version of each.
      if (st.sentFrom !== null) known = versionsOf(st.sentFrom);
      else known = st.unacked.size === 0 ? st.known : withEntries(st.known, st.unacked);
    }
  }
  const first = !st.requested;
  // An ACK mostly lists the names subscribed already: the stream keeps its set (one set per stream, not one per ACK; a new one equal to another stream's is that one: stream-sharing.ts).
  const listed = new Set(req.resource_names ?? []);
  const star = listed.delete('*');
  const names = sameSet(listed, st.names) ? st.names : sharedNameSet(listed);
  let wildcard: boolean;
  if (!WILDCARD_TYPES.has(typeUrl)) wildcard = false;
  else if (star) wildcard = true;
  else if (names.size === 0) wildcard = first || st.wildcard; // legacy wildcard: an empty list, first or kept
  else wildcard = false;
  const changed = wildcard !== st.wildcard || names !== st.names;
  // What the client holds is of the names it was subscribed to: a view of a whole map, cut to them before the subscription changes.
  if (names !== st.names) known = ackedOf(known, st.names);
  // The client drops what it unsubscribed from: forget it (it is sent again if subscribed again). The same names as before: nothing to drop (what it knows was kept to them).
  if (!wildcard && (names !== st.names || st.wildcard) && someMissing(known.keys(), names)) known = new Map([...known].filter(([name]) => names.has(name)));
  // No nonce: an initial request (or a re-request): always answered.
  // Unless ACKed, what the client holds is not what the last response was built from.
  return { ...st, requested: true, wildcard, names, known, unacked: EMPTY_KNOWN, sentFrom: acked ? st.sentFrom : null, dirty: st.dirty || nonce === '' || changed };
}

function deltaType(typeUrl: ResourceTypeUrl, st: TypeState, req: DeltaRequest, events: StreamEvent[]): TypeState {
  const nonce = req.response_nonce ?? '';
  if (nonce !== '' && answer(typeUrl, st, nonce, req, events) === 'ack') events.push({ type: 'ack', typeUrl, version: st.sentVersion });
  const subscribe = req.resource_names_subscribe ?? [];
  const unsubscribe = req.resource_names_unsubscribe ?? [];
  let { wildcard, names, known, mustRespond, dirty } = st;
  if (!st.requested) {
    wildcard = (WILDCARD_TYPES.has(typeUrl) && subscribe.length === 0) || subscribe.includes('*');
    known = new Map(Object.entries(req.initial_resource_versions ?? {}));
    mustRespond = true;
    dirty = true;
  }
  if (subscribe.length > 0 || unsubscribe.length > 0) {
    const next = new Set(names);
    for (const name of subscribe) {
      if (name === '*') wildcard = true;
      else next.add(name);
    }
    for (const name of unsubscribe) {
      if (name === '*') wildcard = false;
      else next.delete(name);
    }
    names = sharedNameSet(next);
    dirty = true;
  }
  // The client drops what it unsubscribed from: forget it (it is sent again if subscribed again).
  if (!wildcard && someMissing(known.keys(), names)) known = new Map([...known].filter(([name]) => names.has(name)));
  return { ...st, requested: true, wildcard, names, known, mustRespond, dirty };
}

/** Applies one request of the stream: its node, subscription changes, ACK/NACK/stale nonce; which types now owe a response. */
export function applyRequest(state: StreamState, req: SotwRequest | DeltaRequest): RequestOutcome {
  const events: StreamEvent[] = [];
  const fail = (failure: Failure): RequestOutcome => ({ state, events, failure });
  const refusal = requestRefusal(req, state.nodeId === null);
  if (refusal !== null) return fail(refusal);
  if (state.nodeId === null) {
    const id = req.node?.id ?? '';
    if (id === '') return fail({ code: grpc.status.INVALID_ARGUMENT, details: 'node.id is required on the first request of an ADS stream' });
    state = { ...state, nodeId: id };
    events.push({ type: 'identified', nodeId: id });
  }
  if (req.type_url === '') return fail({ code: grpc.status.INVALID_ARGUMENT, details: 'type_url is required on an ADS stream' });
  const typeUrl = req.type_url;
  if (!isResourceType(typeUrl)) {
    events.push({ type: 'unserved', typeUrl });
    return { state, events, failure: null };
  }
  events.push({ type: 'requested', typeUrl });
  const st = state.types.get(typeUrl) ?? NEW_TYPE;
  const next = state.kind === 'sotw' ? sotwType(typeUrl, st, req as SotwRequest, events) : deltaType(typeUrl, st, req as DeltaRequest, events);
  if (next !== st) state = withType(state, typeUrl, next);
  let held = 0;
  for (const t of state.types.values()) held += t.names.size;
  if (held > MAX_XDS_NAMES_PER_STREAM) return fail(tooMany("the stream's subscriptions", held));
  return { state, events, failure: null };
}

// ---- snapshots and responses --------------------------------------------------------

function subscribed(st: TypeState): boolean {
  return st.requested && (st.wildcard || st.names.size > 0);
}

/** The node's snapshot changed: which types now owe a response (SotW: subscribed ones whose version differs from the one sent; delta: every requested one, nextResponse tells whether anything changed for the client). */
export function snapshotChanged(state: StreamState, snapshot: Snapshot): StreamState {
  let types: Map<ResourceTypeUrl, TypeState> | undefined;
  for (const [typeUrl, st] of state.types) {
    const owed = state.kind === 'sotw' ? subscribed(st) && versionOf(snapshot, typeUrl) !== st.sentVersion : st.requested;
    if (!owed || st.dirty) continue;
    types ??= new Map(state.types);
    types.set(typeUrl, { ...st, dirty: true });
  }
  return types === undefined ? state : { ...state, types };
}

/**
 * SotW EDS/RDS: the subscribed names a response carries (those that exist
 * and that the client may not have at the snapshot's version: another
 * version ACKed, or sent since the last ACK), and what the stream then
 * remembers (they are unacked; ACKed versions of names gone from the
 * snapshot are forgotten, so that one coming back is sent).
 */
export function owedNames(
  st: Pick<TypeState, 'names' | 'known' | 'unacked'>,
  all: ReadonlyMap<string, VersionedResource>,
): { names: string[]; known: ReadonlyMap<string, string>; unacked: ReadonlyMap<string, string> } {
  if (st.known instanceof VersionsOf && st.unacked.size === 0) {
    // Synced to a map (its response ACKed, nothing sent since): the names that changed from it, compared once for every stream synced to it.
    const { changed, removed } = versionChanges(st.known.resources, all);
    if (!removed.some((name) => st.names.has(name))) {
      const names = changed.filter((name) => st.names.has(name));
      return { names, known: st.known, unacked: names.length === 0 ? st.unacked : new Map(names.map((name) => [name, all.get(name)!.version])) };
    }
  }
  const acked = ackedOf(st.known, st.names);
  const names: string[] = [];
  let unacked: Map<string, string> | undefined;
  for (const name of st.names) {
    const r = all.get(name);
    if (r === undefined || (acked.get(name) === r.version && !st.unacked.has(name))) continue;
    names.push(name);
    (unacked ??= new Map(st.unacked)).set(name, r.version);
  }
  const known = someMissing(acked.keys(), all) ? new Map([...acked].filter(([name]) => all.has(name))) : acked;
  return { names, known, unacked: unacked ?? st.unacked };
}

function deltaResponse(typeUrl: ResourceTypeUrl, st: TypeState, snapshot: Snapshot, nonce: string): { st: TypeState; response: DeltaResponse } | null {
  const all = resourcesOf(snapshot, typeUrl);
  const resources: VersionedResource[] = [];
  const removed: string[] = [];
  for (const name of st.wildcard ? all.keys() : st.names) {
    const r = all.get(name);
    if (r !== undefined && st.known.get(name) !== r.version) resources.push(r);
  }
  for (const name of st.known.keys()) if (!all.has(name)) removed.push(name);
  if (resources.length === 0 && removed.length === 0 && !st.mustRespond) return null;
  const known = new Map(st.known);
  for (const r of resources) known.set(r.name, r.version);
  for (const name of removed) known.delete(name);
  return { st: { ...st, known, mustRespond: false }, response: { typeUrl, version: versionOf(snapshot, typeUrl), nonce, resources, removed } };
}

/**
 * The next response the stream owes, in push order (CDS, EDS, LDS, RDS), as
 * of `snapshot`, and the state once it is sent; null when none is owed.
 */
export function nextResponse(state: StreamState, snapshot: Snapshot): { state: StreamState; response: SotwResponse | DeltaResponse } | null {
  for (;;) {
    const typeUrl = RESOURCE_TYPE_URLS.find((t) => state.types.get(t)?.dirty === true);
    if (typeUrl === undefined) return null;
    let st: TypeState = { ...state.types.get(typeUrl)!, dirty: false };
    const nonce = String(state.sent + 1);
    const version = versionOf(snapshot, typeUrl);
    let response: SotwResponse | DeltaResponse;
    if (state.kind === 'sotw' && PARTIAL_TYPES.has(typeUrl)) {
      const all = resourcesOf(snapshot, typeUrl);
      const owed = owedNames(st, all);
      st = { ...st, known: owed.known, unacked: owed.unacked, sentFrom: all };
      response = { typeUrl, version, nonce, names: owed.names };
    } else if (state.kind === 'sotw') {
      response = { typeUrl, version, nonce, names: st.wildcard ? null : [...st.names] };
    } else {
      const built = deltaResponse(typeUrl, st, snapshot, nonce);
      if (built === null) {
        state = withType(state, typeUrl, st);
        continue;
      }
      st = built.st;
      response = built.response;
    }
    state = { ...withType(state, typeUrl, { ...st, nonce, sentVersion: version }), sent: state.sent + 1 };
    if (state.kind === 'sotw' && typeUrl === TYPE_URLS.Cluster) {
      const eds = state.types.get(TYPE_URLS.ClusterLoadAssignment);
      // In full: a cluster Envoy warms waits for its assignment, even unchanged.
      if (eds !== undefined && subscribed(eds)) state = withType(state, TYPE_URLS.ClusterLoadAssignment, { ...eds, dirty: true, known: EMPTY_KNOWN, sentFrom: null });
    }
    return { state, response };
  }
}
