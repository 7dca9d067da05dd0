// How a server process ends: the first SIGTERM/SIGINT, or a drain through the
// admin endpoint, drains, stops and exits 0; a second signal stops at once
// (exit 1). After an admin drain the supervisor starts a fresh process (the
// systemd units say Restart=always): that is how a drained process is undrained.

import type { Logger } from './log.js';

export interface DrainableServer {
  drain(): Promise<unknown>;
  stop(): Promise<void>;
}

/** How the process exits and hears signals (tests pass their own). */
export interface ProcessIo {
  exit(logger: Logger, code: number): Promise<void>;
  signals: { on(signal: NodeJS.Signals, listener: (signal: NodeJS.Signals) => void): unknown };
}

export interface ProcessDrain {
  /** Drains, stops and exits 0; later calls return the same promise (POST /drain). */
  drainThenExit(): Promise<void>;
  /** Installs the handlers: the first SIGTERM/SIGINT drains then exits, a second one stops at once. */
  handleSignals(): void;
}

export function processDrain(server: DrainableServer, logger: Logger, io: ProcessIo): ProcessDrain {
  let signals = 0;
  let drained: Promise<void> | undefined;
  const drainThenExit = (): Promise<void> =>
    (drained ??= server.drain().then(async () => {
      // A second signal took over: its exit code stands.
      if (signals > 1) return;
      await server.stop();
      await io.exit(logger, 0);
    }));
  const onSignal = (signal: NodeJS.Signals): void => {
    signals++;
    if (signals > 1) {
      logger.warn({ signal }, 'second signal: stopping now');
      void server.stop().finally(() => io.exit(logger, 1));
      return;
    }
    logger.info({ signal }, drained ? 'signal received: already draining' : 'signal received: draining');
    void drainThenExit();
  };
  return {
    drainThenExit: () => {
      if (!drained) logger.info({ reason: 'admin' }, 'the process exits when the drain has finished; its supervisor starts a fresh one');
      return drainThenExit();
    },
    handleSignals: () => {
      io.signals.on('SIGTERM', onSignal);
      io.signals.on('SIGINT', onSignal);
    },
  };
}

/** How long an exit waits for buffered log lines to be written (a stalled stdout reader must not hold the exit). */
export const EXIT_LOG_FLUSH_MS = 2_000;

/** Exits with `code` once the log lines buffered so far are written, or after EXIT_LOG_FLUSH_MS without them. */
export function exitAfterFlush(logger: Logger, code: number): Promise<void> {
  return new Promise(() => {
    const timer = setTimeout(() => {
      process.stderr.write(`vsockmesh: log lines not written within ${EXIT_LOG_FLUSH_MS} ms (stdout not read); exiting without them\n`);
      process.exit(code);
    }, EXIT_LOG_FLUSH_MS);
    logger.flush((err) => {
      clearTimeout(timer);
      if (err) process.stderr.write(`log flush failed: ${err.message}\n`);
      process.exit(code);
    });
  });
}
