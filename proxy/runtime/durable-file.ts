// Writing a file so that a reply of success means it is on disk: a temporary
// file of its own (concurrent writers never share one), fsync, rename over the
// target, then fsync of the directory (only that makes the rename itself
// survive a power loss). A failed write leaves the previous file as it was and
// no temporary file behind.

import { open, rename, unlink } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';

let sequence = 0;

export interface DurableWriteOptions {
  /** File mode of a new file (default 0600: state files can name every VM). */
  mode?: number;
}

/**
 * `data` whole, or piece by piece (a large file need never be one string):
 * each piece is written before the next is asked for.
 */
export async function writeFileDurably(path: string, data: string | Uint8Array | Iterable<string | Uint8Array> | AsyncIterable<string | Uint8Array>, options: DurableWriteOptions = {}): Promise<void> {
  const tmp = temporaryPath(path);
  const handle = await open(tmp, 'wx', options.mode ?? 0o600);
  try {
    if (typeof data === 'string' || data instanceof Uint8Array) await handle.writeFile(data);
    // writeFile on a handle writes all of a piece from the current position: the pieces follow each other.
    else for await (const piece of data) await handle.writeFile(piece);
    await handle.sync();
    await handle.close();
    await rename(tmp, path);
  } catch (err) {
    await handle.close().catch(() => undefined);
    await unlink(tmp).catch(() => undefined);
    throw err;
  }
  await syncDirectory(dirname(path));
}

/** `.NAME.PID.N.tmp` beside `path`: a name of this process's own. */
function temporaryPath(path: string): string {
  return join(dirname(path), `.${basename(path)}.${process.pid}.${++sequence}.tmp`);
}

/** Whether `name` (in the directory of `path`) is a temporary file a durable write of `path` left behind (the writer was killed). */
export function isTemporaryOf(path: string, name: string): boolean {
  const prefix = `.${basename(path)}.`;
  return name.startsWith(prefix) && /^\d+\.\d+\.tmp$/.test(name.slice(prefix.length));
}

/** fsync of a directory: makes the creations, renames and removals in it durable. */
export async function syncDirectory(dir: string): Promise<void> {
  const handle = await open(dir, 'r');
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}

/** `ENOSPC: no space left on device` style text of a failed file operation, for "not applied: cannot write ...: <this>". */
export function fileErrorText(err: unknown): string {
  const e = err as NodeJS.ErrnoException;
  if (typeof e?.code === 'string') return `${e.code}${e.syscall ? ` (${e.syscall})` : ''}`;
  return e instanceof Error ? e.message : String(err);
}
