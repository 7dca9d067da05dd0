// The warm path's decision cache in the core (warm.c), through the addon: no
// sockets. Keys, generations, dropped installs, replaced entries, forgetting.

import test from 'ava';
import { warmGeneration, warmInstall, warmInstallOutbound, warmInvalidate, warmLookup, warmLookupOutbound, type WarmEntry, type WarmOutboundEntry } from '../../proxy/native/warm.js';
import { TLV, encodeProxyHeader, tcpAddresses, textTlv } from '../../proxy/proxy-protocol.js';
import { native } from '../../proxy/native/index.js';

const entry: WarmEntry = { target: { family: 'inet', host: '127.0.0.1', port: 8080 }, proxyProtocol: false, connectTimeoutMs: 5000, idleTimeoutMs: 0 };
// Listener ids of their own per test: the cache is one per process.
let nextListener = 900_000;
const listener = (): number => nextListener++;

test('an entry installed under the current generation is found by its listener and destination port, with its label', (t) => {
  const l = listener();
  const id = warmInstall(l, 8080, 'unauthenticated', warmGeneration(), entry);
  t.true(id > 0);
  t.deepEqual(warmLookup(l, 8080), { id, label: 'unauthenticated' });
  t.is(warmLookup(l, 8081), undefined, 'another port');
  t.is(warmLookup(l + 1, 8080), undefined, 'another listener');
});

test('a bump kills every entry installed before it', (t) => {
  const l = listener();
  warmInstall(l, 80, 'none', warmGeneration(), entry);
  warmInstall(l, 81, 'none', warmGeneration(), entry);
  t.truthy(warmLookup(l, 80));
  warmInvalidate();
  t.is(warmLookup(l, 80), undefined);
  t.is(warmLookup(l, 81), undefined);
});

test('an install carrying the generation before a bump is dropped: a decision made before a change never lands after it', (t) => {
  const l = listener();
  const decidedUnder = warmGeneration();
  warmInvalidate();
  t.is(warmInstall(l, 80, 'none', decidedUnder, entry), 0);
  t.is(warmLookup(l, 80), undefined);
  const now = warmGeneration();
  t.not(now, decidedUnder);
  t.true(warmInstall(l, 80, 'none', now, entry) > 0);
  t.truthy(warmLookup(l, 80));
});

test('a second install of a key replaces its entry (new id, new label)', (t) => {
  const l = listener();
  const g = warmGeneration();
  const first = warmInstall(l, 80, 'none', g, entry);
  const second = warmInstall(l, 80, 'unauthenticated', g, entry);
  t.not(first, second);
  t.deepEqual(warmLookup(l, 80), { id: second, label: 'unauthenticated' });
});

test('a key installed again after a bump lives under the new generation only', (t) => {
  const l = listener();
  warmInstall(l, 80, 'none', warmGeneration(), entry);
  warmInvalidate();
  const id = warmInstall(l, 80, 'none', warmGeneration(), entry);
  t.deepEqual(warmLookup(l, 80), { id, label: 'none' });
});

test('warmForget drops every entry of one listener, and only of it', (t) => {
  const l = listener();
  const other = listener();
  const g = warmGeneration();
  for (const port of [1, 2, 3, 65535]) warmInstall(l, port, 'none', g, entry);
  warmInstall(other, 1, 'none', g, entry);
  native.warmForget(l);
  for (const port of [1, 2, 3, 65535]) t.is(warmLookup(l, port), undefined);
  t.truthy(warmLookup(other, 1));
});

test('bad installs throw: a port out of range, an unknown label, a vsock target, a bad address', (t) => {
  const g = warmGeneration();
  t.throws(() => native.warmInstall(1, 65536, 0, g, 'inet', '127.0.0.1', 80, false, 1, 0));
  t.throws(() => native.warmInstall(1, 80, 2, g, 'inet', '127.0.0.1', 80, false, 1, 0));
  t.throws(() => native.warmInstall(1, 80, 0, g, 'vsock', 3, 80, false, 1, 0));
  t.throws(() => native.warmInstall(1, 80, 0, g, 'inet', 'not-an-ip', 80, false, 1, 0));
  t.is(warmLookup(1, 80), undefined);
});

test('many keys (more than the buckets) each keep their own entry', (t) => {
  const l = listener();
  const g = warmGeneration();
  const ids = new Map<number, number>();
  for (let port = 1000; port < 3000; port++) ids.set(port, warmInstall(l, port, 'none', g, entry));
  for (const [port, id] of ids) t.is(warmLookup(l, port)?.id, id);
});

test('each change a decision may read invalidates: policies, peer modes (those who change them call warmInvalidate)', async (t) => {
  const { InboundAuthorization } = await import('../../proxy/policy/inbound-authorization.js');
  const { NO_POLICIES } = await import('../../proxy/policy/rbac.js');
  const l = listener();
  warmInstall(l, 80, 'none', warmGeneration(), entry);
  const authorization = new InboundAuthorization({ refusals: { warn: () => {} } as never, metrics: {} as never });
  authorization.replace(NO_POLICIES);
  t.is(warmLookup(l, 80), undefined, 'a policy replacement');
  const { InboundPeerModes } = await import('../../proxy/listeners/inbound-peer-modes.js');
  const logger = { info: () => {}, warn: () => {} } as never;
  const modes = new InboundPeerModes('in', [{ port: 80 } as never], 'disable', false, logger);
  warmInstall(l, 80, 'none', warmGeneration(), entry);
  modes.set({ 80: 'disable' });
  t.truthy(warmLookup(l, 80), 'no change: entries live');
  modes.set({ 80: 'permissive' });
  t.is(warmLookup(l, 80), undefined, 'a peer mode change');
});

// ---- the outbound hop's entries: keyed by the listener alone --------------------

const v4Header = encodeProxyHeader({ command: 'proxy', addresses: tcpAddresses({ address: '0.0.0.0', port: 0 }, { address: '127.0.0.1', port: 8080 }), tlvs: [textTlv(TLV.VSOCKMESH_SOURCE_VM, 'vm-a')] });
const v6Header = encodeProxyHeader({ command: 'proxy', addresses: tcpAddresses({ address: '::', port: 0 }, { address: '127.0.0.1', port: 8080 }), tlvs: [textTlv(TLV.VSOCKMESH_SOURCE_VM, 'vm-a')] });
const outbound = (n: number): WarmOutboundEntry => ({
  endpoints: Array.from({ length: n }, (_, i) => ({ target: { family: 'inet', host: '127.0.0.1', port: 9000 + i }, header: i % 2 === 0 ? { inet: v4Header, inet6: v6Header } : null })),
  connectTimeoutMs: 5000,
  idleTimeoutMs: 0,
});

test('an outbound entry is found by its listener under the current generation, the first endpoint next', (t) => {
  const l = listener();
  const id = warmInstallOutbound(l, warmGeneration(), outbound(3));
  t.true(id > 0);
  t.deepEqual(warmLookupOutbound(l), { id, next: 0, endpoints: 3 });
  t.is(warmLookupOutbound(l + 1), undefined, 'another listener');
  t.is(warmLookup(l, 0), undefined, 'not an inbound key');
});

test('an outbound entry dies on a bump; an install carrying the old generation is dropped; a second install replaces the first', (t) => {
  const l = listener();
  const before = warmGeneration();
  const first = warmInstallOutbound(l, before, outbound(1));
  const second = warmInstallOutbound(l, before, outbound(2));
  t.not(first, second);
  t.deepEqual(warmLookupOutbound(l), { id: second, next: 0, endpoints: 2 });
  warmInvalidate();
  t.is(warmLookupOutbound(l), undefined);
  t.is(warmInstallOutbound(l, before, outbound(1)), 0);
  t.is(warmLookupOutbound(l), undefined);
  t.true(warmInstallOutbound(l, warmGeneration(), outbound(1)) > 0);
});

test('warmForget drops the outbound entry of its listener, and only its', (t) => {
  const l = listener();
  const other = listener();
  warmInstallOutbound(l, warmGeneration(), outbound(1));
  warmInstallOutbound(other, warmGeneration(), outbound(1));
  native.warmForget(l);
  t.is(warmLookupOutbound(l), undefined);
  t.truthy(warmLookupOutbound(other));
});

test('bad outbound installs throw: no endpoint, a vsock target, a bad address, a header of the wrong family or too short, not a PROXY header', (t) => {
  const g = warmGeneration();
  const l = listener();
  t.throws(() => native.warmInstallOutbound(l, g, 1, 0, []));
  t.throws(() => native.warmInstallOutbound(l, g, 1, 0, ['inet', '127.0.0.1', 80, null]));
  t.throws(() => native.warmInstallOutbound(l, g, 1, 0, ['vsock', 3, 80, null, null]));
  t.throws(() => native.warmInstallOutbound(l, g, 1, 0, ['inet', 'not-an-ip', 80, null, null]));
  t.throws(() => native.warmInstallOutbound(l, g, 1, 0, ['inet', '127.0.0.1', 80, v6Header, null]), undefined, 'an IPv6 header where an IPv4 one goes');
  t.throws(() => native.warmInstallOutbound(l, g, 1, 0, ['inet', '127.0.0.1', 80, null, v4Header]), undefined, 'an IPv4 header where an IPv6 one goes');
  t.throws(() => native.warmInstallOutbound(l, g, 1, 0, ['inet', '127.0.0.1', 80, v4Header.subarray(0, 20), null]), undefined, 'too short');
  const notProxy = Buffer.from(v4Header);
  notProxy[12] = 0x20;
  t.throws(() => native.warmInstallOutbound(l, g, 1, 0, ['inet', '127.0.0.1', 80, notProxy, null]), undefined, 'a LOCAL command');
  t.is(warmLookupOutbound(l), undefined);
});
