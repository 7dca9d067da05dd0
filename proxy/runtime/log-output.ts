// Where the log sink's chunks go: stdout, written so that a reader that stops
// reading never blocks the event loop.
// - A pipe or a socket (container runtimes, journald): through process.stdout,
//   which libuv writes non-blocking from the event loop. A stalled reader holds
//   no thread, and process.exit() does not wait for it.
// - A file or a terminal: fs.write on libuv's threadpool, one write at a time,
//   so a stalled terminal holds at most one pool thread. (process.stdout would
//   write those synchronously, on the event loop.) EAGAIN, when another
//   program made the descriptor non-blocking, is retried after a pause.

import { fstatSync, write } from 'node:fs';
import net from 'node:net';
import { systemClock, type Clock } from './clock.js';
import type { LogWriter } from './log-sink.js';

/** Pause before writing again after EAGAIN. */
export const EAGAIN_RETRY_MS = 50;

/** Writes to a libuv stream; its callback comes once the kernel has the bytes. */
export function streamWriter(stream: NodeJS.WritableStream): LogWriter {
  // Each failure also comes back through its write's callback, where the sink counts it.
  stream.on('error', () => {});
  return { write: (chunk, done) => void stream.write(chunk, (err) => done(err ?? null)) };
}

/** Writes to a file descriptor on the threadpool, the whole chunk before `done`. */
export function fdWriter(fd: number, clock: Clock = systemClock): LogWriter {
  return {
    write(chunk, done) {
      const bytes = Buffer.from(chunk);
      const from = (offset: number): void =>
        write(fd, bytes, offset, bytes.length - offset, null, (err, n) => {
          if (err?.code === 'EAGAIN') clock.setTimer(() => from(offset), EAGAIN_RETRY_MS);
          else if (err) done(err);
          else if (offset + n < bytes.length) from(offset + n);
          else done(null);
        });
      from(0);
    },
  };
}

/** The writer for this process's stdout (see the head comment for which and why). */
export function stdoutWriter(): LogWriter {
  let pipeOrSocket = false;
  try {
    const stat = fstatSync(1);
    pipeOrSocket = stat.isFIFO() || stat.isSocket();
  } catch {
    // fd 1 closed: fdWriter's writes fail and the sink counts the lines as dropped.
  }
  return pipeOrSocket && process.stdout instanceof net.Socket ? streamWriter(process.stdout) : fdWriter(1);
}
