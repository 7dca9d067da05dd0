// One-time join tokens: how a VM without a host agent (or a host agent
// itself) proves, once, that an operator meant it to join. A token is bound
// to one VM (or hypervisor), expires, and works once.
//
// A token is `vjt1.<id>.<secret>`: the id (64 random bits, hex) finds the
// record and may be logged; the secret (256 random bits) is what proves
// possession. Only the secret's SHA-256 is kept, compared in constant time;
// the token itself is returned once, by create(), and held nowhere. A token
// presented for another VM than its own is refused and spent (it has leaked
// or been misdirected). Time is the injected wall clock (expiry outlives a
// restart). Every change is written through the store before it is answered,
// as a compare-and-swap, so replicas sharing a store agree (join-token-store.ts).

import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import { segmentProblem } from '../../proxy/identity/spiffe.js';
import type { JoinTokenRecord, JoinTokenStore } from './join-token-store.js';

export const JOIN_TOKEN_KINDS = ['vm', 'hv'] as const;
export type JoinTokenKind = (typeof JOIN_TOKEN_KINDS)[number];

/** Who a token lets join: a VM, or a hypervisor's host agent. */
export interface JoinTokenSubject {
  kind: JoinTokenKind;
  name: string;
}

export const DEFAULT_JOIN_TOKEN_TTL_MS = 10 * 60_000;
export const MIN_JOIN_TOKEN_TTL_MS = 10_000;
export const MAX_JOIN_TOKEN_TTL_MS = 7 * 24 * 3_600_000;
export const DEFAULT_MAX_JOIN_TOKENS = 10_000;
/** An expired or spent record is kept this long past its expiry, so a late replay is told why. */
export const EXPIRED_RETENTION_MS = 3_600_000;

const TOKEN = /^vjt1\.([0-9a-f]{16})\.([A-Za-z0-9_-]{43})$/;

export type JoinTokenRefusal = 'malformed_token' | 'unknown_token' | 'token_used' | 'token_expired' | 'wrong_subject';
export type JoinTokenVerdict = { ok: true; id: string } | { ok: false; reason: JoinTokenRefusal; message: string };

export interface CreatedJoinToken {
  /** The secret: shown to the operator once, stored nowhere. */
  token: string;
  id: string;
  expiresAt: Date;
}

/** A token as `ctl tokens list` would show it: no secret, no hash. */
export interface JoinTokenListing {
  id: string;
  kind: JoinTokenKind;
  name: string;
  expiresAt: string;
  used: boolean;
}

export interface JoinTokensOptions {
  store: JoinTokenStore;
  /** Wall-clock milliseconds. */
  now?: () => number;
  maxTokens?: number;
}

/** A bad create(): unknown VM name form, TTL out of bounds, too many tokens. */
export class JoinTokenError extends Error {
  constructor(
    readonly reason: 'bad_subject' | 'bad_ttl' | 'too_many_tokens',
    message: string,
  ) {
    super(message);
    this.name = 'JoinTokenError';
  }
}

/** What consuming `secretHash` for `subject` at `now` decides, given the record its id names. Pure. */
export function consumeVerdict(record: JoinTokenRecord | undefined, secretHash: Buffer, subject: JoinTokenSubject, now: number): JoinTokenVerdict {
  // A wrong secret for a known id reads as an unknown token: the answer does not tell which ids exist.
  if (record === undefined || !timingSafeEqual(Buffer.from(record.sha256, 'hex'), secretHash)) return { ok: false, reason: 'unknown_token', message: 'no such join token' };
  if (record.used) return { ok: false, reason: 'token_used', message: `join token ${record.id} has already been used` };
  if (now >= record.expiresAt) return { ok: false, reason: 'token_expired', message: `join token ${record.id} expired at ${new Date(record.expiresAt).toISOString()}` };
  if (record.kind !== subject.kind || record.name !== subject.name) {
    return { ok: false, reason: 'wrong_subject', message: `join token ${record.id} is for ${record.kind} ${record.name}, not ${subject.kind} ${subject.name}; it is now spent` };
  }
  return { ok: true, id: record.id };
}

export class JoinTokens {
  /** The tokens as this replica last read them (for /config_dump; other replicas may have changed them since). */
  private known: JoinTokenListing[] = [];

  private constructor(
    private readonly store: JoinTokenStore,
    private readonly now: () => number,
    private readonly maxTokens: number,
  ) {}

  static async open(options: JoinTokensOptions): Promise<JoinTokens> {
    const tokens = new JoinTokens(options.store, options.now ?? Date.now, options.maxTokens ?? DEFAULT_MAX_JOIN_TOKENS);
    await tokens.list();
    return tokens;
  }

  async create(subject: JoinTokenSubject, ttlMs: number = DEFAULT_JOIN_TOKEN_TTL_MS): Promise<CreatedJoinToken> {
    const problem = JOIN_TOKEN_KINDS.includes(subject.kind) ? segmentProblem(subject.name) : { message: `kind must be one of ${JOIN_TOKEN_KINDS.join(', ')}` };
    if (problem !== undefined) throw new JoinTokenError('bad_subject', `join token subject: ${problem.message}`);
    if (!Number.isInteger(ttlMs) || ttlMs < MIN_JOIN_TOKEN_TTL_MS || ttlMs > MAX_JOIN_TOKEN_TTL_MS) {
      throw new JoinTokenError('bad_ttl', `join token ttl: ${MIN_JOIN_TOKEN_TTL_MS} to ${MAX_JOIN_TOKEN_TTL_MS} ms, got ${ttlMs}`);
    }
    for (;;) {
      const now = this.now();
      const all = await this.store.list();
      const stale = all.filter((t) => !retained(t.record, now));
      const kept = all.length - stale.length;
      if (kept >= this.maxTokens) throw new JoinTokenError('too_many_tokens', `${kept} join tokens are outstanding, at most ${this.maxTokens}`);
      const secret = randomBytes(32);
      const record: JoinTokenRecord = { id: randomBytes(8).toString('hex'), sha256: sha256(secret).toString('hex'), kind: subject.kind, name: subject.name, expiresAt: now + ttlMs, used: false };
      // The new id must not exist yet and the records past retention go with the same commit; another replica's change meanwhile means read again.
      if (await this.store.put(record, 0, stale)) {
        await this.list();
        return { token: `vjt1.${record.id}.${secret.toString('base64url')}`, id: record.id, expiresAt: new Date(record.expiresAt) };
      }
    }
  }

  /** Spends `token` if it is valid for `subject`; a spent token never works again, whichever replica is asked. */
  async consume(token: string, subject: JoinTokenSubject): Promise<JoinTokenVerdict> {
    const match = TOKEN.exec(token);
    if (match === null) return { ok: false, reason: 'malformed_token', message: 'not a join token (vjt1.<id>.<secret>)' };
    const [, id, secret] = match as unknown as [string, string, string];
    const hash = sha256(Buffer.from(secret, 'base64url'));
    for (;;) {
      const stored = await this.store.get(id);
      const verdict = consumeVerdict(stored?.record, hash, subject, this.now());
      const spends = verdict.ok || verdict.reason === 'wrong_subject';
      if (!spends) return verdict;
      // Spent only if no one spent it first: two replicas asked at once, one wins, the other reads it used.
      if (await this.store.put({ ...stored!.record, used: true }, stored!.modRevision)) return verdict;
    }
  }

  /** Removes a token: a later use is refused as unknown. False when there is no such token. */
  async revoke(id: string): Promise<boolean> {
    for (;;) {
      const stored = await this.store.get(id);
      if (stored === undefined) return false;
      if (await this.store.delete(stored)) {
        await this.list();
        return true;
      }
    }
  }

  async list(): Promise<JoinTokenListing[]> {
    this.known = (await this.store.list()).map(({ record: r }) => ({ id: r.id, kind: r.kind, name: r.name, expiresAt: new Date(r.expiresAt).toISOString(), used: r.used }));
    return this.known;
  }

  /** The tokens as last read here, without asking the store. */
  lastListed(): JoinTokenListing[] {
    return this.known;
  }
}

/** Whether a record is still worth keeping at `now`. */
function retained(record: JoinTokenRecord, now: number): boolean {
  return now < record.expiresAt + EXPIRED_RETENTION_MS;
}

function sha256(data: Buffer): Buffer {
  return createHash('sha256').update(data).digest();
}
