// Where join-token records live: in memory (tests, a control plane without a
// state directory) or in one small JSON file replaced durably on every change
// (proxy/runtime/durable-file.ts, mode 0600). A record holds the SHA-256 of
// the token's secret, never the token.

import { readFile } from 'node:fs/promises';
import { z } from 'zod/v3';
import { formatIssue } from '../../proxy/runtime/config-file.js';
import { fileErrorText, writeFileDurably } from '../../proxy/runtime/durable-file.js';

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

export interface JoinTokenStore {
  load(): Promise<JoinTokenRecord[]>;
  /** Replaces every record; resolves once durable. */
  save(records: readonly JoinTokenRecord[]): Promise<void>;
}

export function memoryTokenStore(): JoinTokenStore {
  let kept: JoinTokenRecord[] = [];
  return {
    load: async () => [...kept],
    save: async (records) => {
      kept = [...records];
    },
  };
}

const FORMAT = 'vsockmesh-join-tokens';
const VERSION = 1;

export function fileTokenStore(path: string): JoinTokenStore {
  return {
    async load() {
      let text: string;
      try {
        text = await readFile(path, 'utf8');
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
        throw new Error(`join token file ${path}: cannot read: ${fileErrorText(err)}`, { cause: err });
      }
      return parseTokenFile(path, text);
    },
    async save(records) {
      const body = { format: FORMAT, version: VERSION, tokens: records.map((r) => ({ ...r, expiresAt: new Date(r.expiresAt).toISOString() })) };
      await writeFileDurably(path, `${JSON.stringify(body)}\n`, { mode: 0o600 });
    },
  };
}

const tokenFile = z
  .object({
    format: z.literal(FORMAT),
    version: z.literal(VERSION),
    tokens: z.array(
      z
        .object({
          id: z.string().regex(/^[0-9a-f]{16}$/),
          sha256: z.string().regex(/^[0-9a-f]{64}$/),
          kind: z.enum(['vm', 'hv']),
          name: z.string().min(1),
          expiresAt: z.string().datetime(),
          used: z.boolean(),
        })
        .strict(),
    ),
  })
  .strict();

function parseTokenFile(path: string, text: string): JoinTokenRecord[] {
  let body: unknown;
  try {
    body = JSON.parse(text);
  } catch {
    throw new Error(`join token file ${path}: not JSON`);
  }
  const parsed = tokenFile.safeParse(body);
  if (!parsed.success) throw new Error(`join token file ${path}: ${parsed.error.issues.map(formatIssue).join('; ')}`);
  return parsed.data.tokens.map((t) => ({ ...t, expiresAt: Date.parse(t.expiresAt) }));
}
