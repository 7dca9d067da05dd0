// The store in one file (the embedded default with a state file): the memory
// store, whose every change is first written durably (own temporary file,
// fsync, rename, directory fsync: proxy/runtime/durable-file.ts) and applied
// only once that succeeded. A change that cannot be written is refused and
// changes nothing: `UNAVAILABLE: not applied: cannot write <what>: ENOSPC (write)`.
//
// The file is one JSON document: epoch, revision, records and leases. Watch
// history is not kept: after a reopen, watches start at the revision the file
// holds (an older one gets OUT_OF_RANGE). Leases restart their TTL in full
// on reopen, as etcd's do after a leader change.

import { readFile } from 'node:fs/promises';
import { fileErrorText, writeFileDurably } from '../../proxy/runtime/durable-file.js';
import { ConfigError } from '../../proxy/runtime/config-file.js';
import { MemoryStore, type StoreState } from './memory-store.js';
import { StoreUnavailableError, type StoreRecord } from './store.js';

export const STORE_FILE_FORMAT = 'vsockmesh-store';
const STORE_FILE_VERSION = 1;

export interface FileStoreOptions {
  /** What the file is, in errors: `mesh state file`. */
  what?: string;
  /**
   * A file that exists but is not a store file (an older format): its text
   * turned into records, written as a store file at once (replacing it in
   * one rename). Without it such a file refuses the open.
   */
  legacy?: (text: string) => Array<{ key: string; value: string }>;
}

export class FileStore extends MemoryStore {
  override readonly kind = 'file' as const;

  private constructor(
    readonly path: string,
    private readonly what: string,
    state: StoreState | undefined,
  ) {
    super(state);
  }

  /** The store kept in `path` (created empty when it does not exist; its directory must). */
  static async open(path: string, options: FileStoreOptions = {}): Promise<FileStore> {
    const what = options.what ?? 'store file';
    let text: string | undefined;
    try {
      text = await readFile(path, 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw new ConfigError(path, [`(file): cannot read: ${fileErrorText(err)}`]);
    }
    if (text === undefined) return new FileStore(path, what, undefined);
    if (!isStoreFile(text)) {
      if (options.legacy === undefined) throw new ConfigError(path, [`(file): not a ${STORE_FILE_FORMAT} file`]);
      const store = new FileStore(path, what, undefined);
      const puts = options.legacy(text);
      if (puts.length > 0) await store.commit({ puts });
      else await store.persist({ epoch: await store.epoch(), revision: 0, records: [], leases: [] });
      return store;
    }
    return new FileStore(path, what, parseStoreFile(path, text));
  }

  protected override async persist(next: StoreState): Promise<void> {
    try {
      await writeFileDurably(this.path, `${JSON.stringify({ format: STORE_FILE_FORMAT, version: STORE_FILE_VERSION, ...next })}\n`);
    } catch (err) {
      throw new StoreUnavailableError(`not applied: cannot write ${this.what}: ${fileErrorText(err)}`, { cause: err });
    }
  }
}

function isStoreFile(text: string): boolean {
  return text.startsWith(`{"format":"${STORE_FILE_FORMAT}"`);
}

/** The state in a store file, every field checked (a file that does not read refuses the start, naming what). */
function parseStoreFile(path: string, text: string): StoreState {
  let data: Record<string, unknown>;
  try {
    data = JSON.parse(text) as Record<string, unknown>;
  } catch (err) {
    throw new ConfigError(path, [`(file): not JSON: ${(err as Error).message}`]);
  }
  const problems: string[] = [];
  const revision = data.revision;
  if (data.version !== STORE_FILE_VERSION) problems.push(`version: ${JSON.stringify(data.version)}, this version reads ${STORE_FILE_VERSION}`);
  if (typeof data.epoch !== 'string' || data.epoch === '') problems.push('epoch: must be a non-empty string');
  if (!Number.isSafeInteger(revision) || (revision as number) < 0) problems.push('revision: must be an integer ≥ 0');
  const records = Array.isArray(data.records) ? (data.records as StoreRecord[]) : (problems.push('records: must be a list'), []);
  records.forEach((r, i) => {
    const ok =
      typeof r === 'object' && r !== null && typeof r.key === 'string' && typeof r.value === 'string' && typeof r.lease === 'string' && Number.isSafeInteger(r.createRevision) && Number.isSafeInteger(r.modRevision) && r.modRevision <= (revision as number);
    if (!ok) problems.push(`records[${i}]: must be { key, value, createRevision, modRevision ≤ revision, lease }`);
  });
  const leases = Array.isArray(data.leases) ? (data.leases as StoreState['leases']) : (problems.push('leases: must be a list'), []);
  leases.forEach((l, i) => {
    if (typeof l !== 'object' || l === null || typeof l.id !== 'string' || !Number.isSafeInteger(l.ttlMs) || l.ttlMs <= 0) problems.push(`leases[${i}]: must be { id, ttlMs > 0 }`);
  });
  if (problems.length > 0) throw new ConfigError(path, problems);
  return { epoch: data.epoch as string, revision: revision as number, records, leases };
}
