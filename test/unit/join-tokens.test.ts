import test from 'ava';
import { createHash } from 'node:crypto';
import { mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileTokenStore, JoinTokenStore, memoryTokenStore, type JoinTokenRecord } from '../../xds/identity/join-token-store.js';
import { MemoryStore } from '../../xds/store/memory-store.js';
import type { StoreTxn, StoreTxnResult } from '../../xds/store/store.js';
import { DEFAULT_JOIN_TOKEN_TTL_MS, EXPIRED_RETENTION_MS, JoinTokens, MAX_JOIN_TOKEN_TTL_MS, MIN_JOIN_TOKEN_TTL_MS, consumeVerdict } from '../../xds/identity/join-tokens.js';

const MINUTE = 60_000;
const vmA = { kind: 'vm', name: 'vm-a' } as const;
const vmB = { kind: 'vm', name: 'vm-b' } as const;

/** A wall clock that moves only when told. */
function clock(start = Date.UTC(2026, 0, 1)) {
  let time = start;
  return { now: () => time, advance: (ms: number) => void (time += ms) };
}

async function tokens(store: JoinTokenStore = memoryTokenStore(), c = clock()) {
  return { tokens: await JoinTokens.open({ store, now: c.now }), clock: c, store };
}

test('a token is single use: the first consume succeeds, the second is refused as used', async (t) => {
  const { tokens: jt } = await tokens();
  const { token, id } = await jt.create(vmA, 10 * MINUTE);
  t.deepEqual(await jt.consume(token, vmA), { ok: true, id });
  const again = await jt.consume(token, vmA);
  t.false(again.ok);
  if (!again.ok) t.is(again.reason, 'token_used');
});

test('two consumes of one token at the same time: exactly one succeeds', async (t) => {
  const { tokens: jt } = await tokens();
  const { token } = await jt.create(vmA, 10 * MINUTE);
  const verdicts = await Promise.all(Array.from({ length: 10 }, () => jt.consume(token, vmA)));
  t.is(verdicts.filter((v) => v.ok).length, 1);
  t.deepEqual(
    verdicts.filter((v) => !v.ok).map((v) => (v.ok ? '' : v.reason)),
    Array(9).fill('token_used'),
  );
});

test('a token expires at its TTL: valid just before, refused from then on', async (t) => {
  const { tokens: jt, clock: c } = await tokens();
  const first = await jt.create(vmA, 10 * MINUTE);
  const second = await jt.create(vmA, 10 * MINUTE);
  t.is(first.expiresAt.getTime(), c.now() + 10 * MINUTE);
  c.advance(10 * MINUTE - 1);
  t.true((await jt.consume(first.token, vmA)).ok);
  c.advance(1);
  const late = await jt.consume(second.token, vmA);
  t.false(late.ok);
  if (!late.ok) t.is(late.reason, 'token_expired');
});

test('a token is bound to its VM: presented for another VM it is refused, and spent', async (t) => {
  const { tokens: jt } = await tokens();
  const { token } = await jt.create(vmA, 10 * MINUTE);
  const wrong = await jt.consume(token, vmB);
  t.false(wrong.ok);
  if (!wrong.ok) {
    t.is(wrong.reason, 'wrong_subject');
    t.regex(wrong.message, /for vm vm-a, not vm vm-b/);
  }
  const after = await jt.consume(token, vmA);
  t.false(after.ok);
  if (!after.ok) t.is(after.reason, 'token_used');
});

test('a VM token does not enrol a hypervisor of the same name', async (t) => {
  const { tokens: jt } = await tokens();
  const { token } = await jt.create(vmA, 10 * MINUTE);
  const verdict = await jt.consume(token, { kind: 'hv', name: 'vm-a' });
  t.false(verdict.ok);
  if (!verdict.ok) t.is(verdict.reason, 'wrong_subject');
});

test('a wrong secret for a known id, an unknown id and a malformed token are refused without spending the real token', async (t) => {
  const { tokens: jt } = await tokens();
  const { token, id } = await jt.create(vmA, 10 * MINUTE);
  const secret = token.split('.')[2]!;
  const flipped = `vjt1.${id}.${secret[0] === 'A' ? 'B' : 'A'}${secret.slice(1)}`;
  const reasons = [];
  for (const presented of [flipped, `vjt1.${'0'.repeat(16)}.${secret}`, 'not-a-token', `${token}x`, '']) {
    const verdict = await jt.consume(presented, vmA);
    reasons.push(verdict.ok ? 'ok' : verdict.reason);
    if (!verdict.ok) t.false(verdict.message.includes(secret));
  }
  t.deepEqual(reasons, ['unknown_token', 'unknown_token', 'malformed_token', 'malformed_token', 'malformed_token']);
  t.true((await jt.consume(token, vmA)).ok);
});

test('consumeVerdict is the pure decision: order of the checks', (t) => {
  const secret = Buffer.alloc(32, 7);
  const sha256 = createHash('sha256').update(secret).digest();
  const record: JoinTokenRecord = { id: 'a'.repeat(16), sha256: sha256.toString('hex'), kind: 'vm', name: 'vm-a', expiresAt: 1000, used: false };
  const reason = (r: JoinTokenRecord | undefined, hash: Buffer, now: number, subject: { kind: 'vm' | 'hv'; name: string } = vmA) => {
    const v = consumeVerdict(r, hash, subject, now);
    return v.ok ? 'ok' : v.reason;
  };
  t.is(reason(record, sha256, 999), 'ok');
  t.is(reason(undefined, sha256, 0), 'unknown_token');
  t.is(reason(record, Buffer.alloc(32), 0), 'unknown_token');
  // A wrong secret says nothing else about the record, even when it is used and expired.
  t.is(reason({ ...record, used: true }, Buffer.alloc(32), 5000), 'unknown_token');
  t.is(reason({ ...record, used: true }, sha256, 5000, vmB), 'token_used');
  t.is(reason(record, sha256, 1000, vmB), 'token_expired');
  t.is(reason(record, sha256, 0, vmB), 'wrong_subject');
});

test('create refuses a bad VM name, a TTL out of bounds, and more tokens than the bound', async (t) => {
  const { tokens: jt } = await tokens();
  for (const name of ['', '..', 'a/b', 'vm a']) await t.throwsAsync(jt.create({ kind: 'vm', name }, 10 * MINUTE), { message: /join token subject/ });
  await t.throwsAsync(jt.create(vmA, MIN_JOIN_TOKEN_TTL_MS - 1), { message: /join token ttl/ });
  await t.throwsAsync(jt.create(vmA, MAX_JOIN_TOKEN_TTL_MS + 1), { message: /join token ttl/ });
  await t.throwsAsync(jt.create(vmA, 1.5 * MINUTE + 0.5), { message: /join token ttl/ });
  t.is((await jt.create(vmA)).expiresAt.getTime() - Date.UTC(2026, 0, 1), DEFAULT_JOIN_TOKEN_TTL_MS);
  const bounded = await JoinTokens.open({ store: memoryTokenStore(), maxTokens: 2, now: clock().now });
  await bounded.create(vmA, MINUTE);
  await bounded.create(vmB, MINUTE);
  await t.throwsAsync(bounded.create(vmA, MINUTE), { message: /2 join tokens are outstanding, at most 2/ });
});

test('expired records are dropped an hour after expiry, making room under the bound', async (t) => {
  const c = clock();
  const bounded = await JoinTokens.open({ store: memoryTokenStore(), maxTokens: 1, now: c.now });
  await bounded.create(vmA, MINUTE);
  c.advance(MINUTE + EXPIRED_RETENTION_MS - 1);
  await t.throwsAsync(bounded.create(vmB, MINUTE), { message: /outstanding/ });
  c.advance(1);
  await bounded.create(vmB, MINUTE);
  t.deepEqual(
    (await bounded.list()).map((l) => l.name),
    ['vm-b'],
  );
});

test('the token file holds the hash of the secret, never the token; it is mode 0600 and survives a restart', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'vsockmesh-tokens-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const path = join(dir, 'join-tokens.json');
  const c = clock();
  const first = await JoinTokens.open({ store: await fileTokenStore(path), now: c.now });
  const used = await first.create(vmA, 10 * MINUTE);
  const pending = await first.create(vmB, 10 * MINUTE);
  t.true((await first.consume(used.token, vmA)).ok);

  const text = await readFile(path, 'utf8');
  t.is((await stat(path)).mode & 0o777, 0o600);
  for (const { token } of [used, pending]) {
    const secret = token.split('.')[2]!;
    t.false(text.includes(token));
    t.false(text.includes(secret));
    t.false(text.includes(Buffer.from(secret, 'base64url').toString('hex')));
    t.true(text.includes(createHash('sha256').update(Buffer.from(secret, 'base64url')).digest('hex')));
  }

  const second = await JoinTokens.open({ store: await fileTokenStore(path), now: c.now });
  const replay = await second.consume(used.token, vmA);
  t.false(replay.ok);
  if (!replay.ok) t.is(replay.reason, 'token_used');
  t.true((await second.consume(pending.token, vmB)).ok);
  t.deepEqual((await second.list()).map((l) => [l.name, l.used]).sort(), [['vm-a', true], ['vm-b', true]]);
});

test('a consume whose write fails is refused with the error and leaves the token usable', async (t) => {
  let failing = false;
  class FailingStore extends MemoryStore {
    override commit(txn: StoreTxn): Promise<StoreTxnResult> {
      return failing ? Promise.reject(new Error('ENOSPC (write)')) : super.commit(txn);
    }
  }
  const { tokens: jt } = await tokens(new JoinTokenStore(new FailingStore()));
  const { token } = await jt.create(vmA, 10 * MINUTE);
  failing = true;
  await t.throwsAsync(jt.consume(token, vmA), { message: 'ENOSPC (write)' });
  failing = false;
  t.true((await jt.consume(token, vmA)).ok);
});

test('a token file that does not read is an error naming the file and the field', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'vsockmesh-tokens-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const path = join(dir, 'join-tokens.json');
  t.deepEqual(await (await fileTokenStore(path)).list(), []);
  await writeFile(path, '{');
  await t.throwsAsync(fileTokenStore(path), { message: `join token file ${path}: not JSON` });
  await writeFile(path, JSON.stringify({ format: 'vsockmesh-join-tokens', version: 1, tokens: [{ id: 'x', sha256: 'y', kind: 'vm', name: 'a', expiresAt: 'z', used: false }] }));
  await t.throwsAsync(fileTokenStore(path), { message: /tokens\[0\]\.id/ });
});

test('a revoked token is gone: its use is refused as unknown, the list no longer shows it, a second revoke finds nothing', async (t) => {
  const { tokens: jt, store } = await tokens();
  const { token, id } = await jt.create(vmA, 10 * MINUTE);
  const other = await jt.create(vmB, 10 * MINUTE);
  t.true(await jt.revoke(id));
  t.deepEqual(
    (await jt.list()).map((l) => l.id),
    [other.id],
  );
  t.deepEqual((await store.list()).map((r) => r.record.id), [other.id]);
  const verdict = await jt.consume(token, vmA);
  t.false(verdict.ok);
  if (!verdict.ok) t.is(verdict.reason, 'unknown_token');
  t.false(await jt.revoke(id));
});

test('two replicas on one store: a token presented to both at once is spent by one; the other answers token_used', async (t) => {
  const shared = memoryTokenStore();
  const c = clock();
  const one = await JoinTokens.open({ store: shared, now: c.now });
  const two = await JoinTokens.open({ store: shared, now: c.now });
  for (let i = 0; i < 20; i++) {
    const { token } = await one.create(vmA, 10 * MINUTE);
    const verdicts = await Promise.all([one.consume(token, vmA), two.consume(token, vmA)]);
    t.is(verdicts.filter((v) => v.ok).length, 1, `round ${i}`);
    t.deepEqual(verdicts.filter((v) => !v.ok).map((v) => (v.ok ? '' : v.reason)), ['token_used']);
  }
  // What one replica made, the other lists and can revoke.
  const { id } = await two.create(vmB, 10 * MINUTE);
  t.true((await one.list()).some((l) => l.id === id));
  t.true(await one.revoke(id));
  t.false((await two.list()).some((l) => l.id === id));
});

test('a join-tokens file of the older format is taken over: its tokens work, and it is rewritten as a store file', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'vsockmesh-tokens-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const path = join(dir, 'join-tokens.json');
  const secret = Buffer.alloc(32, 7);
  const old = { id: '0123456789abcdef', sha256: createHash('sha256').update(secret).digest('hex'), kind: 'vm', name: 'vm-a', expiresAt: new Date(Date.UTC(2026, 0, 1) + 10 * MINUTE).toISOString(), used: false };
  await writeFile(path, JSON.stringify({ format: 'vsockmesh-join-tokens', version: 1, tokens: [old] }));
  const { tokens: jt } = await tokens(await fileTokenStore(path));
  t.true((await jt.consume(`vjt1.${old.id}.${secret.toString('base64url')}`, vmA)).ok);
  t.notRegex(await readFile(path, 'utf8'), /vsockmesh-join-tokens/);
  t.deepEqual((await (await fileTokenStore(path)).list()).map((r) => [r.record.id, r.record.used]), [[old.id, true]]);
});
