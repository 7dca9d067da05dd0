// Where join-token records live: one record per token under `join-tokens/` in
// a store (xds/store/store.ts): memory (tests, a control plane without a state
// directory), a store file in --identity-dir (mode 0600; a join-tokens file of
// the older format is taken over on open), or the replicas' etcd (--store), so
// that a token spent through one replica is spent for all: every change is a
// compare-and-swap on the record's modRevision. A record holds the SHA-256 of
// the token's secret, never the token.

import { z } from 'zod/v3';
import { formatIssue } from '../../proxy/runtime/config-file.js';
import { FileStore } from '../store/file-store.js';
import { MemoryStore } from '../store/memory-store.js';
import type { Store } from '../store/store.js';

export interface JoinTokenRecord {
  readonly id: string;
  /** Hex SHA-256 of the token's secret. */
  readonly sha256: string;
  readonly kind: 'vm' | 'hv';
  readonly name: string;
  /** Wall-clock milliseconds. */
  readonly expiresAt: number;
  readonly used: boolean;
}

/** A record as read, with the revision a change to it must name. */
export interface StoredJoinToken {
  record: JoinTokenRecord;
  modRevision: number;
}

export const JOIN_TOKEN_PREFIX = 'join-tokens/';

const tokenRecord = z
  .object({
    id: z.string().regex(/^[0-9a-f]{16}$/),
    sha256: z.string().regex(/^[0-9a-f]{64}$/),
    kind: z.enum(['vm', 'hv']),
    name: z.string().min(1),
    expiresAt: z.string().datetime(),
    used: z.boolean(),
  })
  .strict();

function encode(record: JoinTokenRecord): string {
  return JSON.stringify({ ...record, expiresAt: new Date(record.expiresAt).toISOString() });
}

function decode(where: string, text: string): JoinTokenRecord {
  let body: unknown;
  try {
    body = JSON.parse(text);
  } catch {
    throw new Error(`${where}: not JSON`);
  }
  const parsed = tokenRecord.safeParse(body);
  if (!parsed.success) throw new Error(`${where}: ${parsed.error.issues.map(formatIssue).join('; ')}`);
  return { ...parsed.data, expiresAt: Date.parse(parsed.data.expiresAt) };
}

export class JoinTokenStore {
  constructor(private readonly store: Store) {}

  async get(id: string): Promise<StoredJoinToken | undefined> {
    const found = await this.store.get(JOIN_TOKEN_PREFIX + id);
    return found && { record: decode(`join token ${id}`, found.value), modRevision: found.modRevision };
  }

  async list(): Promise<StoredJoinToken[]> {
    const { records } = await this.store.list(JOIN_TOKEN_PREFIX);
    return records.map((r) => ({ record: decode(`join token ${r.key.slice(JOIN_TOKEN_PREFIX.length)}`, r.value), modRevision: r.modRevision }));
  }

  /** Writes `record` if its key is still at `modRevision` (0: absent), and deletes `drop` (each at its revision); false when any changed meanwhile. Durable once true. */
  async put(record: JoinTokenRecord, modRevision: number, drop: readonly StoredJoinToken[] = []): Promise<boolean> {
    const checks = [{ key: JOIN_TOKEN_PREFIX + record.id, modRevision }, ...drop.map((d) => ({ key: JOIN_TOKEN_PREFIX + d.record.id, modRevision: d.modRevision }))];
    const result = await this.store.commit({ checks, puts: [{ key: JOIN_TOKEN_PREFIX + record.id, value: encode(record) }], deletes: drop.map((d) => JOIN_TOKEN_PREFIX + d.record.id) });
    return result.ok;
  }

  /** Deletes the token if it is still at `modRevision`; false when it changed meanwhile. */
  async delete(token: StoredJoinToken): Promise<boolean> {
    const key = JOIN_TOKEN_PREFIX + token.record.id;
    return (await this.store.commit({ checks: [{ key, modRevision: token.modRevision }], deletes: [key] })).ok;
  }
}

/** The older join-tokens file ({format, version, tokens: [...]}) as store records, so a store file can take its place. */
const legacyFile = z.object({ format: z.literal('vsockmesh-join-tokens'), version: z.literal(1), tokens: z.array(tokenRecord) }).strict();

function legacyTokens(path: string, text: string): Array<{ key: string; value: string }> {
  let body: unknown;
  try {
    body = JSON.parse(text);
  } catch {
    throw new Error(`join token file ${path}: not JSON`);
  }
  const parsed = legacyFile.safeParse(body);
  if (!parsed.success) throw new Error(`join token file ${path}: ${parsed.error.issues.map(formatIssue).join('; ')}`);
  return parsed.data.tokens.map((t) => ({ key: JOIN_TOKEN_PREFIX + t.id, value: JSON.stringify(t) }));
}

/** The join tokens kept in the store file `path` (mode 0600 like every store file). */
export async function fileTokenStore(path: string): Promise<JoinTokenStore> {
  return new JoinTokenStore(await FileStore.open(path, { what: 'join token file', legacy: (text) => legacyTokens(path, text) }));
}

/** Join tokens in memory: lost at exit (tests; a control plane without --identity-dir or --store). */
export function memoryTokenStore(): JoinTokenStore {
  return new JoinTokenStore(new MemoryStore());
}
