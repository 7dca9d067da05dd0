// The registry on disk: a snapshot and a log of the changes since, so that a
// write costs what the change costs, however large the registry.
//
//   PATH            the snapshot (--state-file): a header line, then one JSON
//                   line per hypervisor and per VM; replaced whole (temporary
//                   file, fsync, rename, directory fsync), never appended to.
//   PATH.log.N      log segments: one JSON line per change (RegistryChange),
//                   appended and fdatasync'ed before the change is applied.
//
// The snapshot's header names the first segment that follows it
// (`log_segment`): start-up loads the snapshot, then replays segments N, N+1,
// ... in order (state-load.ts). Compaction starts a new segment, writes a
// snapshot of the state as it was when the old segment ended, then removes
// the segments the snapshot covers; a crash at any point leaves a snapshot
// and segments that together hold every acknowledged change.

import { open, readdir, unlink, type FileHandle } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { isTemporaryOf, syncDirectory, writeFileDurably } from '../../proxy/runtime/durable-file.js';
import type { Registry, RegistryChange } from './registry.js';
import type { HypervisorRecord, VmRecord } from '../../proxy/resolve/types.js';

export const SNAPSHOT_FORMAT = 'vsockmesh-vm-registry-snapshot';
export const SNAPSHOT_VERSION = 2;

/** Compaction starts once the log is larger than this and than the last snapshot. */
export const DEFAULT_COMPACT_AFTER_BYTES = 8 * 1024 * 1024;

/** The snapshot's first line. */
export interface SnapshotHeader {
  format: typeof SNAPSHOT_FORMAT;
  version: typeof SNAPSHOT_VERSION;
  epoch: string;
  revision: number;
  /** The first log segment that follows this snapshot. */
  log_segment: number;
  /** How many hypervisor lines, then VM lines, follow. */
  hypervisors: number;
  vms: number;
}

export type RegistryRecords = ReturnType<Registry['records']>;

export const segmentPath = (path: string, n: number): string => `${path}.log.${n}`;

/** The log segments beside `path`, by number. */
export async function listSegments(path: string): Promise<Array<{ n: number; path: string }>> {
  const prefix = `${basename(path)}.log.`;
  const names = await readdir(dirname(path));
  return names
    .filter((name) => name.startsWith(prefix) && /^[1-9]\d{0,15}$/.test(name.slice(prefix.length)))
    .map((name) => ({ n: Number(name.slice(prefix.length)), path: join(dirname(path), name) }))
    .sort((a, b) => a.n - b.n);
}

/** The snapshot, piece by piece: no single string holds the whole registry. */
function* snapshotPieces(records: RegistryRecords, logSegment: number): Generator<string> {
  const header: SnapshotHeader = {
    format: SNAPSHOT_FORMAT,
    version: SNAPSHOT_VERSION,
    epoch: records.epoch,
    revision: records.revision,
    log_segment: logSegment,
    hypervisors: records.hypervisors.length,
    vms: records.vms.length,
  };
  let piece = `${JSON.stringify(header)}\n`;
  const lines: Array<[string, readonly (HypervisorRecord | VmRecord)[]]> = [
    ['hypervisor', records.hypervisors],
    ['vm', records.vms],
  ];
  for (const [key, list] of lines) {
    for (const record of list) {
      piece += `${JSON.stringify({ [key]: record })}\n`;
      if (piece.length >= 64 * 1024) {
        yield piece;
        piece = '';
      }
    }
  }
  yield piece;
}

export interface StateLogOptions {
  /** Compaction starts once the current segment is larger than this and than the last snapshot (default 8 MiB). */
  compactAfterBytes?: number;
  /** A background compaction ended (err set when it failed; the segments it would have replaced stay). */
  onCompaction?: (result: { err?: unknown; snapshotBytes: number; segment: number }) => void;
}

export class StateLog {
  private size = 0;
  /** A failed append may have left part of its lines: the segment must be cut back to `size` before the next one. */
  private damaged = false;
  /** The segment's size at which compaction starts: the bound, or the last snapshot's size when that is larger. */
  private compactAt: number;
  private compacting: Promise<void> | undefined;

  private constructor(
    readonly path: string,
    private handle: FileHandle,
    private segment: number,
    private readonly options: StateLogOptions,
  ) {
    this.compactAt = options.compactAfterBytes ?? DEFAULT_COMPACT_AFTER_BYTES;
  }

  /**
   * Writes a snapshot of `registry` followed by a new, empty log segment, and
   * removes the segments before it (their changes are in the snapshot) and
   * temporary files a killed writer left. Every start does this: the state
   * then starts from one snapshot, in the current format, whatever it was
   * loaded from (an older state file, an inventory, a log to replay).
   */
  static async start(path: string, registry: Registry, options: StateLogOptions = {}): Promise<StateLog> {
    const old = await listSegments(path);
    const segment = (old.at(-1)?.n ?? 0) + 1;
    const snapshotBytes = await writeSnapshot(path, registry.records(), segment);
    const handle = await openSegment(path, segment);
    const log = new StateLog(path, handle, segment, options);
    log.compactAt = Math.max(log.compactAt, snapshotBytes);
    await removeBefore(path, segment);
    return log;
  }

  /** The segment being appended to, and its bytes. */
  get position(): { segment: number; bytes: number } {
    return { segment: this.segment, bytes: this.size };
  }

  /** Appends the changes (one line each) and fdatasyncs; on failure none of them stays in the log. */
  async append(changes: readonly RegistryChange[]): Promise<void> {
    if (this.damaged) await this.cutBack();
    const data = Buffer.from(changes.map((c) => `${JSON.stringify(c)}\n`).join(''), 'utf8');
    try {
      // writeFile writes all of it (a short write is continued), at the end (O_APPEND).
      await this.handle.writeFile(data);
      await this.handle.datasync();
    } catch (err) {
      this.damaged = true;
      // Best effort now; the next append tries again before writing.
      await this.cutBack().catch(() => undefined);
      throw err;
    }
    this.size += data.length;
  }

  /** Truncates the segment to what was acknowledged (a torn or unsynced tail must not be replayed). */
  private async cutBack(): Promise<void> {
    await this.handle.truncate(this.size);
    await this.handle.datasync();
    this.damaged = false;
  }

  /** The log has outgrown its bound and no compaction runs. */
  get wantsCompaction(): boolean {
    return this.compacting === undefined && this.size > this.compactAt;
  }

  /**
   * Starts a new segment, then writes a snapshot of `records` (the state as
   * of the end of the old segment: call between appends, with the records
   * taken then) in the background. Resolves once new appends go to the new
   * segment.
   */
  async compact(records: RegistryRecords): Promise<void> {
    const next = this.segment + 1;
    let handle: FileHandle;
    try {
      handle = await openSegment(this.path, next);
    } catch (err) {
      this.compactAt = this.size + (this.options.compactAfterBytes ?? DEFAULT_COMPACT_AFTER_BYTES);
      this.options.onCompaction?.({ err, snapshotBytes: 0, segment: next });
      return;
    }
    const previous = this.handle;
    this.handle = handle;
    this.segment = next;
    this.size = 0;
    this.damaged = false;
    await previous.close().catch(() => undefined);
    this.compacting = (async () => {
      try {
        const bytes = await writeSnapshot(this.path, records, next);
        await removeBefore(this.path, next);
        this.compactAt = Math.max(this.options.compactAfterBytes ?? DEFAULT_COMPACT_AFTER_BYTES, bytes);
        this.options.onCompaction?.({ snapshotBytes: bytes, segment: next });
      } catch (err) {
        // The old segments stay (the last snapshot still needs them); the next compaction covers them too.
        this.options.onCompaction?.({ err, snapshotBytes: 0, segment: next });
      } finally {
        this.compacting = undefined;
      }
    })();
  }

  /** Waits for a compaction in progress, then closes the segment. */
  async close(): Promise<void> {
    await this.compacting;
    await this.handle.close();
  }
}

async function writeSnapshot(path: string, records: RegistryRecords, logSegment: number): Promise<number> {
  let bytes = 0;
  const counted = function* (): Generator<string> {
    for (const piece of snapshotPieces(records, logSegment)) {
      bytes += Buffer.byteLength(piece, 'utf8');
      yield piece;
    }
  };
  await writeFileDurably(path, counted());
  return bytes;
}

/** A new segment file, made durable in its directory before anything is appended to it. */
async function openSegment(path: string, n: number): Promise<FileHandle> {
  // O_APPEND: after a failed append is cut back, the next one still lands at the end.
  const handle = await open(segmentPath(path, n), 'ax', 0o600);
  try {
    await syncDirectory(dirname(path));
  } catch (err) {
    await handle.close();
    throw err;
  }
  return handle;
}

/**
 * Removes the segments before `segment` and temporary files of killed
 * writers. Not fsync'ed: a removal undone by a power loss leaves a segment
 * the snapshot already covers, which start-up skips.
 */
async function removeBefore(path: string, segment: number): Promise<void> {
  for (const old of await listSegments(path)) if (old.n < segment) await unlink(old.path).catch(() => undefined);
  for (const name of await readdir(dirname(path))) if (isTemporaryOf(path, name)) await unlink(join(dirname(path), name)).catch(() => undefined);
}
