// The ADS stream's rules as pure transitions, without gRPC: a test client
// plays the server's part (apply each request, write every owed response
// with the snapshot of the moment; or, while "blocked", only note snapshot
// changes) and looks at what comes out. State of the world and delta: ACK,
// NACK, stale nonces, wildcard and named subscriptions, unsubscribe,
// initial_resource_versions, push order, EDS after CDS, SotW EDS/RDS with
// only what the client may not have, coalescing, bounds.

import test from 'ava';
import * as grpc from '@grpc/grpc-js';
import {
  applyRequest,
  newStream,
  nextResponse,
  snapshotChanged,
  type AdsStreamKind,
  type DeltaRequest,
  type Failure,
  type SotwRequest,
  type StreamEvent,
  owedNames,
  type StreamState,
} from '../../xds/control-plane/ads-stream.js';
import { ackedOf, versionChanges, versionsOf } from '../../xds/control-plane/acked-versions.js';
import { MAX_NACK_TEXT_BYTES, MAX_XDS_NAMES_PER_STREAM, MAX_XDS_NODE_ID_LENGTH, MAX_XDS_RESOURCE_NAME_LENGTH } from '../../xds/control-plane/bounds.js';
import type { Snapshot } from '../../xds/control-plane/snapshot.js';
import { assignment, baseResources, CDS, cluster, EDS, LDS, listener, RDS, routes, snap } from '../helpers/xds-resources.js';

/** A response as the client sees it: resources by name (with versions for delta), removals for delta. */
interface Sent {
  typeUrl: string;
  version: string;
  nonce: string;
  names: string[];
  versions: Array<[string, string]>;
  removed: string[];
}

interface Step {
  events: StreamEvent[];
  failure: Failure | null;
  sent: Sent[];
}

const NODE = { id: 'node-a', cluster: 'test' };

/** One stream with the server's loop around the transitions. */
class Stream {
  state: StreamState;
  snapshot: Snapshot | undefined;
  /** The write buffer is full: nothing is written until unblock(). */
  blocked = false;

  constructor(kind: AdsStreamKind, snapshot?: Snapshot) {
    this.state = newStream(kind);
    this.snapshot = snapshot;
  }

  send(req: SotwRequest | DeltaRequest): Step {
    const outcome = applyRequest(this.state, req);
    this.state = outcome.state;
    return { events: outcome.events, failure: outcome.failure, sent: outcome.failure === null ? this.flush() : [] };
  }

  /** The node's snapshot changed. */
  set(snapshot: Snapshot): Sent[] {
    this.snapshot = snapshot;
    this.state = snapshotChanged(this.state, snapshot);
    return this.flush();
  }

  unblock(): Sent[] {
    this.blocked = false;
    return this.flush();
  }

  /** Whatever is owed now. */
  flushNow(): Sent[] {
    return this.flush();
  }

  private flush(): Sent[] {
    const sent: Sent[] = [];
    const snapshot = this.snapshot;
    if (this.blocked || snapshot === undefined) return sent;
    for (let next = nextResponse(this.state, snapshot); next !== null; next = nextResponse(this.state, snapshot)) {
      this.state = next.state;
      const r = next.response;
      if ('names' in r) {
        const all = snapshot.resources[r.typeUrl];
        const names = (r.names ?? [...all.keys()]).filter((n) => all.has(n));
        sent.push({ typeUrl: r.typeUrl, version: r.version, nonce: r.nonce, names, versions: names.map((n) => [n, all.get(n)!.version]), removed: [] });
      } else {
        sent.push({ typeUrl: r.typeUrl, version: r.version, nonce: r.nonce, names: r.resources.map((x) => x.name), versions: r.resources.map((x) => [x.name, x.version]), removed: r.removed });
      }
    }
    return sent;
  }
}

function ack(res: Sent, resourceNames: string[] = []): SotwRequest {
  return { type_url: res.typeUrl, version_info: res.version, response_nonce: res.nonce, resource_names: resourceNames };
}

const only = <T>(list: T[]): T => {
  if (list.length !== 1) throw new Error(`expected one, got ${list.length}`);
  return list[0]!;
};

const acks = (events: StreamEvent[]) => events.filter((e) => e.type === 'ack');

/** A SotW stream subscribed to CDS (wildcard), EDS [c1], LDS (wildcard), RDS [r1], everything ACKed. */
function subscribedSotw(snapshot: Snapshot): { s: Stream; last: Record<string, Sent> } {
  const s = new Stream('sotw', snapshot);
  const cds = only(s.send({ node: NODE, type_url: CDS }).sent);
  s.send(ack(cds));
  const eds = only(s.send({ type_url: EDS, resource_names: ['c1'] }).sent);
  s.send(ack(eds, ['c1']));
  const lds = only(s.send({ type_url: LDS }).sent);
  s.send(ack(lds));
  const rds = only(s.send({ type_url: RDS, resource_names: ['r1'] }).sent);
  s.send(ack(rds, ['r1']));
  return { s, last: { [CDS]: cds, [EDS]: eds, [LDS]: lds, [RDS]: rds } };
}

// ---- state of the world -------------------------------------------------------------------

test('sotw: a wildcard CDS request gets every cluster, a named EDS request the named assignments that exist; nonces increase', (t) => {
  const s = new Stream('sotw', snap(baseResources(), 'v1'));
  const first = s.send({ node: NODE, type_url: CDS, resource_names: [] });
  t.deepEqual(first.events, [
    { type: 'identified', nodeId: 'node-a' },
    { type: 'requested', typeUrl: CDS },
  ]);
  const cds = only(first.sent);
  t.like(cds, { typeUrl: CDS, version: 'v1', names: ['c1', 'c2'] });
  const eds = only(s.send({ type_url: EDS, resource_names: ['c1', 'missing'] }).sent);
  t.like(eds, { typeUrl: EDS, version: 'v1' });
  t.deepEqual(eds.names, ['c1'], 'only the named assignments that exist');
  t.true(Number(eds.nonce) > Number(cds.nonce), 'nonces increase on the stream');
  t.is(s.state.nodeId, 'node-a');
});

test('sotw: an ACK is reported with the version sent and triggers no resend', (t) => {
  const s = new Stream('sotw', snap(baseResources(), 'v1'));
  const cds = only(s.send({ node: NODE, type_url: CDS }).sent);
  const step = s.send(ack(cds));
  t.deepEqual(step.sent, []);
  t.deepEqual(step.events, [
    { type: 'requested', typeUrl: CDS },
    { type: 'ack', typeUrl: CDS, version: 'v1' },
  ]);
  t.deepEqual(acks(s.send({ type_url: CDS, version_info: 'other', response_nonce: cds.nonce }).events), [], 'the latest nonce with another version is no ACK');
});

test('sotw: a snapshot change is pushed in the order CDS, EDS, LDS, RDS, only for changed types', (t) => {
  const s = new Stream('sotw', snap(baseResources(), 'v1'));
  // Subscribe in another order than the push order.
  const rds = only(s.send({ node: NODE, type_url: RDS, resource_names: ['r1'] }).sent);
  s.send(ack(rds, ['r1']));
  const lds = only(s.send({ type_url: LDS }).sent);
  s.send(ack(lds));
  const eds = only(s.send({ type_url: EDS, resource_names: ['c1'] }).sent);
  s.send(ack(eds, ['c1']));
  const [cds1, edsAfter, ...rest] = s.send({ type_url: CDS }).sent;
  t.is(cds1!.typeUrl, CDS);
  t.is(edsAfter!.typeUrl, EDS, 'the first CDS response is followed by EDS too');
  t.deepEqual(rest, []);
  t.deepEqual([...s.send(ack(cds1!)).sent, ...s.send(ack(edsAfter!, ['c1'])).sent], []);

  const next = baseResources();
  next[CDS] = [cluster('c1', 2), cluster('c2')];
  next[EDS] = [assignment('c1', '10.0.0.9'), assignment('c2', '10.0.0.2')];
  next[LDS] = [listener('l1', 15001), listener('l2', 15002)];
  next[RDS] = [routes('r1', 'c2')];
  const pushed = s.set(snap(next, 'v2'));
  t.deepEqual(
    pushed.map((r) => r.typeUrl),
    [CDS, EDS, LDS, RDS],
    'EDS changed and followed CDS: sent once',
  );
  t.true(pushed.every((r) => r.version === 'v2'));
  t.deepEqual(pushed[2]!.names, ['l1', 'l2'], 'LDS is the full state');
  for (const r of pushed) t.deepEqual(s.send(ack(r, r.typeUrl === EDS ? ['c1'] : r.typeUrl === RDS ? ['r1'] : [])).sent, []);

  // Only EDS and RDS change: only they are pushed, EDS first.
  next[EDS] = [assignment('c1', '10.0.0.10'), assignment('c2', '10.0.0.2')];
  next[RDS] = [routes('r1', 'c1')];
  t.deepEqual(
    s.set(snap(next, 'v2', { [EDS]: 'v3', [RDS]: 'v3' })).map((r) => [r.typeUrl, r.version]),
    [
      [EDS, 'v3'],
      [RDS, 'v3'],
    ],
  );
});

test('sotw: EDS is sent again after every CDS push, even unchanged', (t) => {
  const { s, last } = subscribedSotw(snap(baseResources(), 'v1'));
  const next = baseResources();
  next[CDS] = [cluster('c1', 5), cluster('c2')];
  const [cds, eds, ...rest] = s.set(snap(next, 'v1', { [CDS]: 'v2' }));
  t.like(cds, { typeUrl: CDS, version: 'v2' });
  t.like(eds, { typeUrl: EDS, version: 'v1', names: ['c1'] });
  t.not(eds!.nonce, last[EDS]!.nonce);
  t.deepEqual(rest, [], 'LDS and RDS did not change');
  t.deepEqual(s.send(ack(cds!)).sent, []);
  const edsAck = s.send(ack(eds!, ['c1']));
  t.deepEqual(edsAck.sent, []);
  t.deepEqual(acks(edsAck.events), [{ type: 'ack', typeUrl: EDS, version: 'v1' }]);
});

test('sotw: a NACK is reported with its message and the version it refuses, and the version is not resent', (t) => {
  const s = new Stream('sotw', snap(baseResources(), 'v1'));
  const lds = only(s.send({ node: NODE, type_url: LDS }).sent);
  const nack = s.send({ type_url: LDS, version_info: '', response_nonce: lds.nonce, error_detail: { code: grpc.status.INVALID_ARGUMENT, message: 'listeners[0].address.port_value: must be 1..65535' } });
  t.deepEqual(nack.sent, [], 'not resent');
  t.deepEqual(nack.events, [
    { type: 'requested', typeUrl: LDS },
    { type: 'nack', typeUrl: LDS, version: 'v1', error: 'listeners[0].address.port_value: must be 1..65535' },
  ]);
  t.deepEqual(acks(nack.events), []);
  // Re-setting the same version pushes nothing; a new version is pushed and can be ACKed.
  t.deepEqual(s.set(snap(baseResources(), 'v1')), []);
  const fixed = only(s.set(snap({ ...baseResources(), [LDS]: [listener('l1', 15009)] }, 'v1', { [LDS]: 'v2' })));
  t.is(fixed.version, 'v2');
  t.deepEqual(acks(s.send(ack(fixed)).events), [{ type: 'ack', typeUrl: LDS, version: 'v2' }]);
  const bare = s.send({ type_url: LDS, response_nonce: fixed.nonce, error_detail: { code: 13 } }).events.at(-1);
  t.deepEqual(bare, { type: 'nack', typeUrl: LDS, version: 'v2', error: 'gRPC status 13' }, 'a NACK without a message names its code');
});

test("sotw: a NACK's text is cut to 4 KiB, marked as truncated", (t) => {
  const s = new Stream('sotw', snap(baseResources(), 'v1'));
  const cds = only(s.send({ node: NODE, type_url: CDS }).sent);
  const error = `clusters[0]: ${'bad '.repeat(25_000)}`;
  const nack = s.send({ type_url: CDS, version_info: '', response_nonce: cds.nonce, error_detail: { code: 3, message: error } }).events.at(-1);
  t.deepEqual(nack, { type: 'nack', typeUrl: CDS, version: 'v1', error: `${error.slice(0, MAX_NACK_TEXT_BYTES)}... (truncated, ${error.length} bytes)` });
});

test('sotw: a request with a stale nonce is ignored entirely', (t) => {
  const s = new Stream('sotw', snap(baseResources(), 'v1'));
  const first = only(s.send({ node: NODE, type_url: EDS, resource_names: ['c1'] }).sent);
  const second = only(s.set(snap(baseResources(), 'v1', { [EDS]: 'v2' })));
  t.is(second.version, 'v2');
  // The ACK of the first response (and a new subscription on it) comes after the second was sent: stale.
  const late = [
    s.send(ack(first, ['c1', 'c2'])),
    s.send({ type_url: EDS, version_info: 'v1', response_nonce: first.nonce, resource_names: ['c2'], error_detail: { code: 3, message: 'late NACK' } }),
    s.send({ type_url: EDS, version_info: 'v1', response_nonce: 'no-such-nonce', resource_names: ['c2'] }),
  ];
  t.deepEqual(
    late.flatMap((step) => step.sent),
    [],
  );
  t.deepEqual(
    late.map((step) => step.events),
    [
      [{ type: 'requested', typeUrl: EDS }, { type: 'stale', typeUrl: EDS, nonce: first.nonce, latest: second.nonce }],
      [{ type: 'requested', typeUrl: EDS }, { type: 'stale', typeUrl: EDS, nonce: first.nonce, latest: second.nonce }],
      [{ type: 'requested', typeUrl: EDS }, { type: 'stale', typeUrl: EDS, nonce: 'no-such-nonce', latest: second.nonce }],
    ],
  );
  t.deepEqual([...s.state.types.get(EDS)!.names], ['c1'], 'the subscription is unchanged');
  const ok = s.send(ack(second, ['c1']));
  t.deepEqual(ok.sent, []);
  t.deepEqual(acks(ok.events), [{ type: 'ack', typeUrl: EDS, version: 'v2' }]);
});

test('sotw: changing the EDS subscription is answered with the assignments of the new names', (t) => {
  const s = new Stream('sotw', snap(baseResources(), 'v1'));
  const r1 = only(s.send({ node: NODE, type_url: EDS, resource_names: ['c1'] }).sent);
  t.deepEqual(r1.names, ['c1']);
  const r2 = only(s.send(ack(r1, ['c1', 'c2'])).sent);
  t.deepEqual(r2.names, ['c2'], 'the client has c1 (ACKed): only the new name');
  t.is(r2.version, 'v1');
  const r3 = only(s.send(ack(r2, ['c2'])).sent);
  t.deepEqual(r3.names, [], 'c1 dropped: answered, the client keeps c2');
  const same = s.send(ack(r3, ['c2']));
  t.deepEqual(same.sent, [], 'the same names again: an ACK, no answer');
  t.deepEqual(acks(same.events), [{ type: 'ack', typeUrl: EDS, version: 'v1' }]);
  // Only c2 is subscribed now: a change of c1 still bumps the type version, pushed without a resource.
  const r4 = only(s.set(snap({ ...baseResources(), [EDS]: [assignment('c1', '10.9.9.9'), assignment('c2', '10.0.0.2')] }, 'v1', { [EDS]: 'v2' })));
  t.deepEqual([r4.version, r4.names], ['v2', []]);
  s.send(ack(r4, ['c2']));
  t.deepEqual(only(s.send(ack(r4, ['c1', 'c2'])).sent).names, ['c1'], 'subscribed again: c1 is sent again');
});

test('sotw: wildcard: an empty first list or "*" for CDS and LDS, kept by later empty lists, ended by names; EDS and RDS are never wildcard', (t) => {
  const s = new Stream('sotw', snap(baseResources(), 'v1'));
  const cds = only(s.send({ node: NODE, type_url: CDS }).sent);
  t.true(s.state.types.get(CDS)!.wildcard);
  t.deepEqual(s.send(ack(cds)).sent, [], 'an empty list after a wildcard keeps it (legacy wildcard)');
  t.true(s.state.types.get(CDS)!.wildcard);
  const named = only(s.send(ack(cds, ['c2'])).sent);
  t.deepEqual(named.names, ['c2'], 'names end the wildcard');
  t.deepEqual(s.send(ack(named, [])).sent.map((r) => r.names), [[]], 'an empty list then subscribes to nothing: answered with nothing');
  t.false(s.state.types.get(CDS)!.wildcard);
  t.deepEqual(s.set(snap({ ...baseResources(), [CDS]: [cluster('c1', 9)] }, 'v1', { [CDS]: 'v2' })), [], 'nothing subscribed: nothing pushed');
  const star = only(s.send({ type_url: LDS, resource_names: ['*', 'l9'] }).sent);
  t.deepEqual(star.names, ['l1'], '"*" with names: the whole state');
  t.true(s.state.types.get(LDS)!.wildcard);
  s.send({ type_url: EDS, resource_names: [] });
  t.false(s.state.types.get(EDS)!.wildcard, 'an empty EDS list names nothing');
  t.deepEqual(s.send({ type_url: RDS, resource_names: ['*'] }).sent.map((r) => r.names), [[]], 'RDS "*" names a route configuration called "*"');
});

test('sotw: a request without a nonce is always answered, even when the client has the version', (t) => {
  const s = new Stream('sotw', snap(baseResources(), 'v1'));
  const cds = only(s.send({ node: NODE, type_url: CDS }).sent);
  s.send(ack(cds));
  const again = only(s.send({ type_url: CDS, version_info: 'v1' }).sent);
  t.like(again, { typeUrl: CDS, version: 'v1', names: ['c1', 'c2'] });
  t.not(again.nonce, cds.nonce);
});

test('sotw: a node waits for a snapshot: requests are remembered and answered once one comes', (t) => {
  const s = new Stream('sotw');
  t.deepEqual(s.send({ node: { id: 'node-x' }, type_url: LDS }).sent, [], 'no snapshot yet: no answer');
  const d = only(s.set(snap({ [LDS]: [listener('default-l', 15100)] }, 'd1')));
  t.deepEqual(d.names, ['default-l']);
  s.send(ack(d));
  const own = only(s.set(snap({ [LDS]: [listener('own-l', 15101)] }, 'x1')));
  t.deepEqual([own.version, own.names], ['x1', ['own-l']]);
});

test('sotw: a stream that cannot write owes at most one response per type, built from the latest snapshot when it can write again', (t) => {
  const { s } = subscribedSotw(snap(baseResources(), 'v0'));
  s.blocked = true;
  for (let i = 1; i <= 200; i++) t.deepEqual(s.set(snap({ ...baseResources(), [CDS]: [cluster('c1', 1, `x${i}`), cluster('c2')] }, 'v0', { [CDS]: `v${i}` })), []);
  const after = s.unblock();
  t.deepEqual(
    after.map((r) => [r.typeUrl, r.version]),
    [
      [CDS, 'v200'],
      [EDS, 'v0'],
    ],
    'the latest CDS version, once, then EDS after it',
  );
  t.deepEqual(s.unblock(), []);
});

// ---- state of the world: EDS and RDS carry only what the client may not have ----------------

test('owedNames: a subscribed name that exists is owed when its ACKed version differs or it went out since the last ACK', (t) => {
  const all = snap(baseResources(), 'v1').resources[EDS];
  const v = (name: string) => all.get(name)!.version;
  const none = new Map<string, string>();
  const owed = (names: string[], known: Map<string, string>, unacked: Map<string, string>) => owedNames({ names: new Set(names), known, unacked }, all);

  t.deepEqual(owed(['c1', 'c2', 'gone'], none, none).names, ['c1', 'c2'], 'nothing known: every subscribed name that exists');
  t.deepEqual(owed(['c1', 'c2'], new Map([['c1', v('c1')], ['c2', v('c2')]]), none).names, [], 'everything ACKed at its version: nothing');
  t.deepEqual(owed(['c1', 'c2'], new Map([['c1', v('c1')], ['c2', 'old']]), none).names, ['c2'], 'another version ACKed');
  t.deepEqual(owed(['c1', 'c2'], new Map([['c1', v('c1')], ['c2', v('c2')]]), new Map([['c1', 'other']])).names, ['c1'], 'sent since the last ACK, even at the ACKed version');
  t.deepEqual(owed(['c2'], new Map([['c1', 'old']]), none).names, ['c2'], 'names not subscribed are not sent');

  const out = owed(['c1', 'c2'], new Map([['c1', v('c1')], ['c9', 'x']]), new Map([['c7', 'y']]));
  t.deepEqual([...out.unacked], [['c7', 'y'], ['c2', v('c2')]], 'what is sent joins the unacked, at its version');
  t.deepEqual([...out.known], [['c1', v('c1')]], 'an ACKed name gone from the snapshot is forgotten');
  const same = { names: new Set(['c1']), known: new Map([['c1', v('c1')]]), unacked: none };
  const kept = owedNames(same, all);
  t.true(kept.known === same.known && kept.unacked === same.unacked, 'nothing owed: the maps are kept as they are');
});

/** A SotW stream subscribed to EDS c1, c2 and RDS r1, r2, everything ACKed. */
function partialSotw(): { s: Stream; resources: Record<string, ReturnType<typeof baseResources>[typeof EDS]> } {
  const resources = { ...baseResources(), [RDS]: [routes('r1'), routes('r2', 'c2')] };
  const s = new Stream('sotw', snap(resources, 'v1'));
  s.send(ack(only(s.send({ node: NODE, type_url: EDS, resource_names: ['c1', 'c2'] }).sent), ['c1', 'c2']));
  s.send(ack(only(s.send({ type_url: RDS, resource_names: ['r1', 'r2'] }).sent), ['r1', 'r2']));
  return { s, resources };
}

const EDS_NAMES = ['c1', 'c2'];

/** ACKs each response with the names partialSotw subscribed to. */
function ackAll(s: Stream, sent: Sent[]): void {
  for (const r of sent) ackOne(s, r);
}

function ackOne(s: Stream, r: Sent): void {
  const steps = s.send(ack(r, r.typeUrl === EDS ? EDS_NAMES : r.typeUrl === RDS ? ['r1', 'r2'] : []));
  if (steps.sent.length > 0 || !steps.events.some((e) => e.type === 'ack')) throw new Error(`${r.typeUrl} ${r.nonce}: not a plain ACK`);
}

test('sotw: an EDS or RDS push carries only the resources whose version differs from the one ACKed; CDS and LDS stay complete', (t) => {
  const { s, resources } = partialSotw();
  ackAll(s, s.send({ type_url: CDS }).sent);
  ackAll(s, s.send({ type_url: LDS }).sent);
  const next = { ...resources, [CDS]: [cluster('c1'), cluster('c2', 7)], [EDS]: [assignment('c1', '10.0.0.1'), assignment('c2', '10.0.9.2')], [LDS]: [listener('l1', 15001), listener('l2', 15002)], [RDS]: [routes('r1', 'c2'), routes('r2', 'c2')] };
  const pushed = s.set(snap(next, 'v2'));
  t.deepEqual(
    pushed.map((r) => [r.typeUrl, r.names]),
    [
      [CDS, ['c1', 'c2']],
      [EDS, ['c1', 'c2']],
      [LDS, ['l1', 'l2']],
      [RDS, ['r1']],
    ],
    'CDS and LDS whole, EDS whole after CDS, RDS only the changed one',
  );
  ackAll(s, pushed);
  const eds = only(s.set(snap({ ...next, [EDS]: [assignment('c1', '10.0.9.1'), assignment('c2', '10.0.9.2')] }, 'v2', { [EDS]: 'v3' })));
  t.deepEqual([eds.version, eds.names], ['v3', ['c1']], 'one assignment changed: only it, with the new type version');
  t.deepEqual(acks(s.send(ack(eds, EDS_NAMES)).events), [{ type: 'ack', typeUrl: EDS, version: 'v3' }]);
  const back = only(s.set(snap({ ...next, [EDS]: [assignment('c1', '10.0.9.1'), assignment('c2', '10.0.0.2')] }, 'v2', { [EDS]: 'v4' })));
  t.deepEqual(back.names, ['c2']);
});

test('sotw: EDS resources sent since the last ACK go out again until a response carrying them is ACKed (a NACK of theirs may come back stale)', (t) => {
  const { s, resources } = partialSotw();
  const changed = (c1: string, c2: string, v: string) => snap({ ...resources, [EDS]: [assignment('c1', c1), assignment('c2', c2)] }, 'v1', { [EDS]: v });
  const first = only(s.set(changed('10.0.1.1', '10.0.0.2', 'v2')));
  t.deepEqual(first.names, ['c1']);
  // c2 changes before the client answered; its NACK of the first response then comes back stale.
  const second = only(s.set(changed('10.0.1.1', '10.0.2.2', 'v3')));
  t.deepEqual(second.names, ['c1', 'c2'], 'c1 again: the client may have refused it');
  const stale = s.send({ type_url: EDS, version_info: 'v1', response_nonce: first.nonce, resource_names: EDS_NAMES, error_detail: { code: 3, message: 'c1: bad' } });
  t.is(stale.events.at(-1)?.type, 'stale');
  s.send(ack(second, EDS_NAMES));
  const third = only(s.set(changed('10.0.1.1', '10.0.3.2', 'v4')));
  t.deepEqual(third.names, ['c2'], 'once ACKed, c1 is not sent again');
  s.send(ack(third, EDS_NAMES));

  // A resource changed and changed back before the ACK: the client may hold the middle version, it is sent.
  const mid = only(s.set(changed('10.0.4.1', '10.0.3.2', 'v5')));
  t.deepEqual(mid.names, ['c1']);
  t.deepEqual(only(s.set(changed('10.0.1.1', '10.0.3.2', 'v6'))).names, ['c1']);
});

test('sotw: after a NACK, an ACK of another version, a request without a nonce, or a CDS push, the next EDS response carries every subscribed assignment', (t) => {
  const cases: Array<[string, (s: Stream, last: Sent) => void]> = [
    ['NACK', (s, last) => s.send({ type_url: EDS, version_info: 'v1', response_nonce: last.nonce, resource_names: EDS_NAMES, error_detail: { code: 3, message: 'c1: bad' } })],
    ['ACK of another version', (s, last) => s.send({ ...ack(last, EDS_NAMES), version_info: 'v0' })],
    ['request without a nonce', (s) => s.send({ type_url: EDS, version_info: 'v2', resource_names: EDS_NAMES })],
  ];
  for (const [what, answer] of cases) {
    const { s, resources } = partialSotw();
    const last = only(s.set(snap({ ...resources, [EDS]: [assignment('c1', '10.0.1.1'), assignment('c2', '10.0.0.2')] }, 'v1', { [EDS]: 'v2' })));
    t.deepEqual(last.names, ['c1']);
    answer(s, last);
    const next = s.set(snap({ ...resources, [EDS]: [assignment('c1', '10.0.1.1'), assignment('c2', '10.0.0.2')] }, 'v1', { [EDS]: 'v3' }));
    const all = [...s.flushNow(), ...next].filter((r) => r.typeUrl === EDS);
    t.deepEqual(all.at(-1)?.names, EDS_NAMES, what);
  }
  const { s, resources } = partialSotw();
  ackAll(s, s.send({ type_url: CDS }).sent);
  const [cds, eds] = s.set(snap({ ...resources, [CDS]: [cluster('c1', 3), cluster('c2')] }, 'v1', { [CDS]: 'v2' }));
  t.is(cds!.typeUrl, CDS);
  t.deepEqual([eds!.typeUrl, eds!.names], [EDS, EDS_NAMES], 'after CDS: every assignment (Envoy warms the clusters on them)');
});

test('sotw: streams that ACKed responses built from the same assignments share what they hold (no copy per ACK), and a change is compared once for all of them', (t) => {
  const a = partialSotw();
  const b = partialSotw();
  const base = a.resources;
  const next = snap({ ...base, [EDS]: [assignment('c1', '10.0.7.1'), assignment('c2', '10.0.0.2')] }, 'v1', { [EDS]: 'v2' });
  const [ea, eb] = [only(a.s.set(next)), only(b.s.set(next))];
  t.deepEqual([ea.names, eb.names], [['c1'], ['c1']]);
  a.s.send(ack(ea, EDS_NAMES));
  b.s.send(ack(eb, EDS_NAMES));
  const [ka, kb] = [a.s.state.types.get(EDS)!.known, b.s.state.types.get(EDS)!.known];
  t.is(ka, kb, 'one view of the ACKed assignments for both streams');
  t.deepEqual([ka.get('c1'), ka.get('c2')], [next.resources[EDS].get('c1')!.version, next.resources[EDS].get('c2')!.version]);
  const later = snap({ ...base, [EDS]: [assignment('c1', '10.0.7.1'), assignment('c2', '10.0.8.2')] }, 'v1', { [EDS]: 'v3' });
  t.deepEqual([only(a.s.set(later)).names, only(b.s.set(later)).names], [['c2'], ['c2']]);
  t.is(versionChanges(next.resources[EDS], later.resources[EDS]), versionChanges(next.resources[EDS], later.resources[EDS]), 'the pair is compared once');
});

test('sotw: a name subscribed in an ACK after a response built from a map that has it is sent (the client held only the names it had asked for)', (t) => {
  const resources = baseResources();
  const s = new Stream('sotw', snap(resources, 'v1'));
  const first = only(s.send({ node: NODE, type_url: EDS, resource_names: ['c1'] }).sent);
  t.deepEqual(first.names, ['c1']);
  const more = s.send(ack(first, ['c1', 'c2']));
  t.deepEqual(acks(more.events).length, 1);
  t.deepEqual(only(more.sent).names, ['c2'], 'c2 was in the map the ACKed response came from, but not subscribed then');
  s.send(ack(only(more.sent), ['c1', 'c2']));
  // c1 changes; the ACK of its response drops c2, the ACK of the next asks for it again: sent again.
  const changed = only(s.set(snap({ ...resources, [EDS]: [assignment('c1', '10.0.3.1'), assignment('c2', '10.0.0.2')] }, 'v1', { [EDS]: 'v9' })));
  t.deepEqual(changed.names, ['c1']);
  const dropped = only(s.send(ack(changed, ['c1'])).sent);
  t.deepEqual(dropped.names, [], 'nothing the client may not have');
  t.deepEqual(only(s.send(ack(dropped, ['c1', 'c2'])).sent).names, ['c2'], 'dropped, then asked for again: sent again');
});

test('acked versions: a view of a map reads as the map of its versions; changes between two maps; a view cut to the names subscribed', (t) => {
  const from = snap(baseResources(), 'v1').resources[EDS];
  const to = snap({ ...baseResources(), [EDS]: [assignment('c1', '10.0.5.1'), assignment('c3', '10.0.0.3')] }, 'v1').resources[EDS];
  const view = versionsOf(from);
  t.is(versionsOf(from), view, 'one view per map');
  const plain = new Map([...from].map(([name, r]) => [name, r.version]));
  t.deepEqual([...view], [...plain]);
  t.deepEqual([[...view.keys()], [...view.values()], view.size, view.has('c2'), view.has('zz'), view.get('zz')], [[...plain.keys()], [...plain.values()], plain.size, true, false, undefined]);
  const seen: string[] = [];
  view.forEach((v, k) => seen.push(`${k}=${v}`));
  t.deepEqual(seen, [...plain].map(([k, v]) => `${k}=${v}`));
  t.deepEqual(versionChanges(from, to), { changed: ['c1', 'c3'], removed: ['c2'] });
  t.deepEqual(versionChanges(from, from), { changed: [], removed: [] });
  t.deepEqual([...ackedOf(view, ['c2', 'zz'])], [['c2', plain.get('c2')]]);
  const explicit = new Map([['c9', 'x']]);
  t.is(ackedOf(explicit, ['c1']), explicit, 'a plain map is what it is');
});

test('sotw: an EDS resource gone from the snapshot and back is sent again', (t) => {
  const { s, resources } = partialSotw();
  const gone = only(s.set(snap({ ...resources, [EDS]: [assignment('c2', '10.0.0.2')] }, 'v1', { [EDS]: 'v2' })));
  t.deepEqual(gone.names, []);
  s.send(ack(gone, EDS_NAMES));
  t.deepEqual(only(s.set(snap(resources, 'v1', { [EDS]: 'v3' }))).names, ['c1']);
});

test('sotw and delta: the first request must name the node; later ones may omit it, another id is ignored; type_url is required; other types are ignored', (t) => {
  for (const kind of ['sotw', 'delta'] as const) {
    const noId = new Stream(kind, snap(baseResources(), 'v1')).send({ node: { cluster: 'no-id' } as { id?: string }, type_url: CDS });
    t.deepEqual(noId.failure, { code: grpc.status.INVALID_ARGUMENT, details: 'node.id is required on the first request of an ADS stream' }, kind);
    t.deepEqual(noId.sent, []);
    t.deepEqual(new Stream(kind).send({ type_url: CDS }).failure?.code, grpc.status.INVALID_ARGUMENT, `${kind}: no node at all`);
    const s = new Stream(kind, snap(baseResources(), 'v1'));
    t.is(s.send({ node: NODE, type_url: CDS }).sent.length, 1);
    const later = s.send({ node: { id: 'node-b' }, type_url: EDS, ...(kind === 'sotw' ? { resource_names: ['c2'] } : { resource_names_subscribe: ['c2'] }) });
    t.deepEqual([later.failure, later.sent.map((r) => r.names)], [null, [['c2']]], kind);
    t.is(s.state.nodeId, 'node-a', 'the first node id stays');
    const unserved = s.send({ type_url: 'type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret' });
    t.deepEqual([unserved.failure, unserved.sent, unserved.events], [null, [], [{ type: 'unserved', typeUrl: 'type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret' }]]);
    t.deepEqual(s.send({ type_url: '' }).failure, { code: grpc.status.INVALID_ARGUMENT, details: 'type_url is required on an ADS stream' });
  }
});

test('bounds: a node id, resource name or version beyond its bound fails the stream with INVALID_ARGUMENT naming the field and a reason', (t) => {
  const s = () => new Stream('sotw', snap(baseResources(), 'v1'));
  t.deepEqual(s().send({ node: { id: 'n'.repeat(MAX_XDS_NODE_ID_LENGTH + 1) }, type_url: CDS }).failure, {
    code: grpc.status.INVALID_ARGUMENT,
    reason: 'node_id_too_long',
    details: `node.id: ${MAX_XDS_NODE_ID_LENGTH + 1} characters, more than ${MAX_XDS_NODE_ID_LENGTH}`,
  });
  t.deepEqual(s().send({ node: { id: 'n'.repeat(MAX_XDS_NODE_ID_LENGTH) }, type_url: CDS }).sent[0]?.names, ['c1', 'c2'], 'a node id at the bound is served');
  t.like(s().send({ node: NODE, type_url: EDS, resource_names: ['c1', 'c'.repeat(MAX_XDS_RESOURCE_NAME_LENGTH + 1)] }).failure, {
    reason: 'resource_name_too_long',
    details: `resource_names[1]: ${MAX_XDS_RESOURCE_NAME_LENGTH + 1} characters, more than ${MAX_XDS_RESOURCE_NAME_LENGTH}`,
  });
  const d = new Stream('delta', snap(baseResources(), 'v1'));
  t.like(d.send({ node: NODE, type_url: CDS, initial_resource_versions: { c1: 'v'.repeat(MAX_XDS_RESOURCE_NAME_LENGTH + 1) } }).failure, {
    code: grpc.status.INVALID_ARGUMENT,
    reason: 'resource_name_too_long',
    details: `initial_resource_versions (versions)[0]: ${MAX_XDS_RESOURCE_NAME_LENGTH + 1} characters, more than ${MAX_XDS_RESOURCE_NAME_LENGTH}`,
  });
  t.like(new Stream('delta').send({ node: NODE, type_url: EDS, resource_names_unsubscribe: ['u'.repeat(MAX_XDS_RESOURCE_NAME_LENGTH + 1)] }).failure, { details: `resource_names_unsubscribe[0]: ${MAX_XDS_RESOURCE_NAME_LENGTH + 1} characters, more than ${MAX_XDS_RESOURCE_NAME_LENGTH}` });
});

test('bounds: a request naming, or a stream subscribed to, more resource names than the bound fails with RESOURCE_EXHAUSTED', (t) => {
  const many = (n: number, prefix: string): string[] => Array.from({ length: n }, (_, i) => `${prefix}${i}`);
  const atBound = new Stream('sotw', snap(baseResources(), 'v1')).send({ node: NODE, type_url: EDS, resource_names: ['c1', ...many(MAX_XDS_NAMES_PER_STREAM - 1, 'x')] });
  t.deepEqual(atBound.sent.map((r) => r.names), [['c1']], 'at the bound: served (the one name that exists)');
  t.deepEqual(new Stream('sotw').send({ node: NODE, type_url: EDS, resource_names: many(MAX_XDS_NAMES_PER_STREAM + 1, 'x') }).failure, {
    code: grpc.status.RESOURCE_EXHAUSTED,
    reason: 'too_many_resource_names',
    details: `resource_names: ${MAX_XDS_NAMES_PER_STREAM + 1} names, more than ${MAX_XDS_NAMES_PER_STREAM}`,
  });
  // Delta subscriptions add up across requests and types.
  const half = MAX_XDS_NAMES_PER_STREAM / 2;
  const d = new Stream('delta', snap(baseResources(), 'v1'));
  t.is(d.send({ node: NODE, type_url: EDS, resource_names_subscribe: many(half, 'e') }).failure, null);
  t.is(d.send({ type_url: RDS, resource_names_subscribe: many(half, 'r') }).failure, null);
  t.deepEqual(d.send({ type_url: RDS, resource_names_subscribe: ['one-more'] }).failure, {
    code: grpc.status.RESOURCE_EXHAUSTED,
    reason: 'too_many_resource_names',
    details: `the stream's subscriptions: ${MAX_XDS_NAMES_PER_STREAM + 1} names, more than ${MAX_XDS_NAMES_PER_STREAM}`,
  });
});

test('sotw: streams that subscribe to the same names and ACK the same responses share their name set and ACKed versions (one of each, not one per stream)', (t) => {
  const v1 = snap(baseResources(), 'v1');
  const a = subscribedSotw(v1);
  const b = subscribedSotw(v1);
  const ea = a.s.state.types.get(EDS)!;
  const eb = b.s.state.types.get(EDS)!;
  t.deepEqual([...ea.names], ['c1']);
  t.is(ea.names, eb.names, 'one name set');
  // What the client holds: the ACKed response's map of versions (a view of the whole map, acked-versions.ts).
  t.is(ea.known.get('c1'), v1.resources[EDS].get('c1')!.version);
  t.is(ea.known, eb.known, 'one map of ACKed versions');
  // A change: both get the new assignment, ACK it and again share one map, with the new version.
  const v2 = snap({ ...baseResources(), [EDS]: [assignment('c1', '10.0.0.9'), assignment('c2', '10.0.0.2')] }, 'v2');
  for (const x of [a, b]) {
    const eds = only(x.s.set(v2).filter((r) => r.typeUrl === EDS));
    t.deepEqual(eds.names, ['c1']);
    x.s.send(ack(eds, ['c1']));
  }
  const ka = a.s.state.types.get(EDS)!.known;
  t.is(ka.get('c1'), v2.resources[EDS].get('c1')!.version);
  t.is(ka, b.s.state.types.get(EDS)!.known);
  t.not(ka, ea.known, 'the earlier map is left as it was');
  t.is(ea.known.get('c1'), v1.resources[EDS].get('c1')!.version);
  // A stream with another subscription keeps a set of its own.
  const c = new Stream('sotw', v1);
  c.send({ node: NODE, type_url: EDS, resource_names: ['c1', 'c2'] });
  t.deepEqual([...c.state.types.get(EDS)!.names], ['c1', 'c2']);
  t.not(c.state.types.get(EDS)!.names, ea.names);
});

// ---- delta -------------------------------------------------------------------------------

test('delta: subscribe, only changed resources, unsubscribe, removal, ACK and NACK', (t) => {
  const s0 = snap(baseResources(), 'v1');
  const d = new Stream('delta', s0);
  const cds = only(d.send({ node: NODE, type_url: CDS }).sent);
  t.like(cds, { typeUrl: CDS, version: 'v1', removed: [] });
  t.deepEqual(cds.versions, [
    ['c1', s0.resources[CDS].get('c1')!.version],
    ['c2', s0.resources[CDS].get('c2')!.version],
  ]);
  t.true(d.state.types.get(CDS)!.wildcard, 'an empty first CDS subscription is a wildcard');
  t.deepEqual(acks(d.send({ type_url: CDS, response_nonce: cds.nonce }).events), [{ type: 'ack', typeUrl: CDS, version: 'v1' }]);
  const eds = only(d.send({ type_url: EDS, resource_names_subscribe: ['c1', 'c2'] }).sent);
  t.deepEqual(eds.names, ['c1', 'c2']);
  const edsAck = d.send({ type_url: EDS, response_nonce: eds.nonce });
  t.deepEqual(edsAck.sent, []);
  t.deepEqual(acks(edsAck.events), [{ type: 'ack', typeUrl: EDS, version: 'v1' }]);

  // Only c2's cluster changes: only c2 is sent (and no EDS after CDS in delta).
  const r2 = baseResources();
  r2[CDS] = [cluster('c1'), cluster('c2', 7)];
  const cds2 = only(d.set(snap(r2, 'v1', { [CDS]: 'v2' })));
  t.like(cds2, { typeUrl: CDS, version: 'v2', names: ['c2'] });
  d.send({ type_url: CDS, response_nonce: cds2.nonce });

  // Unsubscribe from c1's assignment: a change of c1 is not sent, a change of c2 is.
  t.deepEqual(d.send({ type_url: EDS, resource_names_unsubscribe: ['c1'], response_nonce: eds.nonce }).sent, [], 'an unsubscribe needs no answer');
  r2[EDS] = [assignment('c1', '10.1.1.1'), assignment('c2', '10.0.0.2')];
  t.deepEqual(d.set(snap(r2, 'v1', { [CDS]: 'v2', [EDS]: 'v2' })), [], 'no update for an unsubscribed name');
  r2[EDS] = [assignment('c1', '10.1.1.1'), assignment('c2', '10.2.2.2')];
  t.deepEqual(only(d.set(snap(r2, 'v1', { [CDS]: 'v2', [EDS]: 'v3' }))).names, ['c2']);

  // Removing cluster c2 and its assignment: removed_resources.
  const [cds4, eds4, ...rest] = d.set(snap({ [CDS]: [cluster('c1')], [EDS]: [assignment('c1', '10.1.1.1')] }, 'v4'));
  t.like(cds4, { typeUrl: CDS, version: 'v4', names: [], removed: ['c2'] });
  t.like(eds4, { typeUrl: EDS, names: [], removed: ['c2'] });
  t.deepEqual(rest, []);
  const nack = d.send({ type_url: CDS, response_nonce: cds4!.nonce, error_detail: { code: 3, message: 'cannot remove c2: in use' } });
  t.deepEqual(nack.sent, [], 'a NACK is not answered');
  t.deepEqual(nack.events.at(-1), { type: 'nack', typeUrl: CDS, version: 'v4', error: 'cannot remove c2: in use' });
  t.deepEqual(acks(nack.events), []);
  t.deepEqual(d.send({ type_url: EDS, response_nonce: 'stale' }).events.at(-1), { type: 'stale', typeUrl: EDS, nonce: 'stale', latest: eds4!.nonce });
  t.deepEqual(acks(d.send({ type_url: EDS, response_nonce: eds4!.nonce }).events), [{ type: 'ack', typeUrl: EDS, version: 'v4' }]);
});

test('delta: a stale nonce is no ACK, but its subscription changes still apply', (t) => {
  const d = new Stream('delta', snap(baseResources(), 'v1'));
  const first = only(d.send({ node: NODE, type_url: EDS, resource_names_subscribe: ['c1'] }).sent);
  const second = only(d.set(snap({ ...baseResources(), [EDS]: [assignment('c1', '10.5.5.5'), assignment('c2', '10.0.0.2')] }, 'v1', { [EDS]: 'v2' })));
  const late = d.send({ type_url: EDS, response_nonce: first.nonce, resource_names_subscribe: ['c2'] });
  t.deepEqual(late.events.at(-1), { type: 'stale', typeUrl: EDS, nonce: first.nonce, latest: second.nonce });
  t.deepEqual(acks(late.events), []);
  t.deepEqual(only(late.sent).names, ['c2'], 'the subscription applied and was answered');
});

test('delta: unsubscribing forgets what the client had; subscribing again sends it again; "*" turns the wildcard on and off', (t) => {
  const s0 = snap(baseResources(), 'v1');
  const d = new Stream('delta', s0);
  only(d.send({ node: NODE, type_url: RDS, resource_names_subscribe: ['r1'] }).sent);
  t.deepEqual(d.send({ type_url: RDS, resource_names_unsubscribe: ['r1'] }).sent, [], 'nothing to send for an unsubscribe');
  t.deepEqual([...d.state.types.get(RDS)!.known.keys()], [], 'the client dropped r1');
  t.deepEqual(only(d.send({ type_url: RDS, resource_names_subscribe: ['r1'] }).sent).names, ['r1'], 'sent again');
  t.deepEqual(only(d.send({ type_url: LDS, resource_names_subscribe: ['l9'] }).sent).names, [], 'a named LDS subscription: not a wildcard; the first answer may be empty');
  t.deepEqual(only(d.send({ type_url: LDS, resource_names_subscribe: ['*'] }).sent).names, ['l1'], '"*" subscribes to everything');
  d.send({ type_url: LDS, resource_names_unsubscribe: ['*'] });
  t.false(d.state.types.get(LDS)!.wildcard);
  t.deepEqual([...d.state.types.get(LDS)!.known.keys()], [], 'what only the wildcard covered is forgotten');
  t.deepEqual(d.set(snap({ ...baseResources(), [LDS]: [listener('l1', 15555)] }, 'v1', { [LDS]: 'v2' })), [], 'l1 is no longer subscribed');
});

test('delta: a reconnect with initial_resource_versions gets only what changed and removals', (t) => {
  const s1 = snap({ ...baseResources(), [CDS]: [cluster('c1'), cluster('c2'), cluster('c3')] }, 'v1');
  const d1 = new Stream('delta', s1);
  const first = only(d1.send({ node: NODE, type_url: CDS, resource_names_subscribe: ['*'] }).sent);
  t.is(first.names.length, 3);
  const had = Object.fromEntries(first.versions);

  // While the client is away: c2 changes, c3 goes.
  const s2 = snap({ ...baseResources(), [CDS]: [cluster('c1'), cluster('c2', 9)] }, 'v2');
  const d2 = new Stream('delta', s2);
  const resync = only(d2.send({ node: NODE, type_url: CDS, initial_resource_versions: had }).sent);
  t.deepEqual(resync.versions, [['c2', s2.resources[CDS].get('c2')!.version]]);
  t.deepEqual(resync.removed, ['c3']);
  t.is(resync.version, 'v2');
  t.deepEqual(acks(d2.send({ type_url: CDS, response_nonce: resync.nonce }).events), [{ type: 'ack', typeUrl: CDS, version: 'v2' }]);

  // A client that is up to date gets an empty response (the version), and ACKs it.
  const d3 = new Stream('delta', s2);
  const same = only(d3.send({ node: NODE, type_url: CDS, initial_resource_versions: { c1: s2.resources[CDS].get('c1')!.version, c2: s2.resources[CDS].get('c2')!.version } }).sent);
  t.like(same, { version: 'v2', names: [], removed: [] });
  t.deepEqual(acks(d3.send({ type_url: CDS, response_nonce: same.nonce }).events), [{ type: 'ack', typeUrl: CDS, version: 'v2' }]);
  // Named EDS with an initial version for a name not subscribed: ignored.
  const eds = only(d3.send({ type_url: EDS, resource_names_subscribe: ['c1'], initial_resource_versions: { c1: s2.resources[EDS].get('c1')!.version, zz: 'x' } }).sent);
  t.like(eds, { names: [], removed: [] });
  // A later initial_resource_versions is not a reconnect: ignored.
  d3.send({ type_url: EDS, initial_resource_versions: { c2: 'old' } });
  t.false(d3.state.types.get(EDS)!.known.has('c2'));
});

test('delta: a stream that cannot write sends, once it can, only what differs from what the client has', (t) => {
  const s0 = snap(baseResources(), 'v1');
  const d = new Stream('delta', s0);
  only(d.send({ node: NODE, type_url: CDS }).sent);
  d.blocked = true;
  d.set(snap({ ...baseResources(), [CDS]: [cluster('c1', 8), cluster('c2')] }, 'v2'));
  d.set(snap({ ...baseResources(), [CDS]: [cluster('c1'), cluster('c2')] }, 'v3'));
  t.deepEqual(d.unblock(), [], 'back where the client is: nothing to send');
  const s4 = snap({ [CDS]: [cluster('c1', 4)] }, 'v4');
  d.blocked = true;
  d.set(s4);
  t.deepEqual(
    d.unblock().map((r) => [r.typeUrl, r.version, r.versions, r.removed]),
    [[CDS, 'v4', [['c1', s4.resources[CDS].get('c1')!.version]], ['c2']]],
  );
});
