// A tmpfs of its own, a few hundred KiB large, for tests of a full disk
// (ENOSPC). Mounting needs root (CI runs as root); anywhere else the test
// fails with the reason rather than passing without running.

import { execFile } from 'node:child_process';
import { mkdtemp, open, rm, unlink } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import type { ExecutionContext } from 'ava';

const run = promisify(execFile);

export interface SmallFilesystem {
  /** The mount point: write what should run out of space here. */
  dir: string;
  /** Fills every free byte (a file named .filler). */
  fill(): Promise<void>;
  /** Removes the filler: the space is free again. */
  free(): Promise<void>;
}

export async function smallFilesystem(t: ExecutionContext, sizeBytes = 512 * 1024): Promise<SmallFilesystem> {
  const dir = await mkdtemp(join(tmpdir(), 'vsockmesh-smallfs-'));
  try {
    await run('mount', ['-t', 'tmpfs', '-o', `size=${sizeBytes},mode=0700`, 'tmpfs', dir]);
  } catch (err) {
    await rm(dir, { recursive: true, force: true });
    throw new Error(`cannot mount a tmpfs for the full-disk test (needs root): ${(err as Error).message}`, { cause: err });
  }
  t.teardown(async () => {
    await run('umount', [dir]).catch(() => run('umount', ['-l', dir]));
    await rm(dir, { recursive: true, force: true });
  });
  const filler = join(dir, '.filler');
  return {
    dir,
    async fill() {
      const handle = await open(filler, 'a');
      const block = Buffer.alloc(4096, 0x78);
      try {
        for (;;) await handle.write(block);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'ENOSPC') throw err;
      } finally {
        await handle.close();
      }
    },
    async free() {
      await unlink(filler).catch((err: NodeJS.ErrnoException) => {
        if (err.code !== 'ENOENT') throw err;
      });
    },
  };
}
