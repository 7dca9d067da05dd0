// Running a role as a process, one way for every role (sidecar, host relay,
// VM manager, control plane):
//   prepare  read its inputs (config, state, inventory) and build its server;
//            a failure means the input is wrong: the reason on stderr, exit 2
//            (the systemd units do not restart on 2), nothing started;
//   start    the server, then the admin endpoint the runner serves for roles
//            without their own; a failure is logged, what started is stopped,
//            exit 1;
//   ready    signals handled from here; one `<role> ready` line (role, pid, admin address, the role's
//            own fields); /ready answers 200 from here on unless the role says why it is not
//            ready (e.g. its store is out of reach);
//   end      the first SIGTERM/SIGINT or an admin drain drains, stops, exit 0;
//            a second signal stops at once, exit 1 (process-drain.ts).

import { AdminServer, type AdminTarget } from './admin.js';
import { ConfigError } from './config-file.js';
import type { Logger } from './log.js';
import { exitAfterFlush, processDrain, type DrainableServer, type ProcessIo } from './process-drain.js';
import { startQuietTrim } from './quiet-trim.js';
import type { SettleResult } from './settle-memory.js';

export interface RoleServer extends DrainableServer {
  start(): Promise<unknown>;
}

/** What the runner's own admin endpoint shows: /ready follows the runner's state. */
export type RoleState = 'starting' | 'serving' | 'draining' | 'stopped';

export interface PreparedRole {
  logger: Logger;
  server: RoleServer;
  /** An admin endpoint for the runner to serve (started after the server, stopped after it); none when the server has its own, or port null. */
  admin?: { address: string; port: number | null; target: Pick<AdminTarget, 'renderStats' | 'statsContentType' | 'configDump'> };
  /** The role's own fields of the ready line (they win over the runner's: a server with its own admin endpoint names it). */
  ready?(): Record<string, unknown>;
  /** Why the serving role is not ready now (the runner's /ready answers 503 with it), undefined when it is. */
  notReady?(): string | undefined;
  /** Settle memory after each burst of work once the event loop is quiet (quiet-trim.ts) with this (quiet-trim's serverSettle: these roles never load the native core): roles whose work comes in large bursts (the control plane's syncs, the VM manager's seeding); undefined: never. */
  settleWhenQuiet?: () => SettleResult | void;
}

export interface Role {
  /** As in `vsockmesh <name>`: names the role in messages and the ready line. */
  name: string;
  /** `drainThenExit` is what an admin drain of a server with its own admin endpoint calls (usable once started). */
  prepare(control: { drainThenExit(): Promise<void> }): Promise<PreparedRole>;
}

/** The process as the runner uses it; tests pass their own. */
export interface RoleIo extends ProcessIo {
  stderr(text: string): void;
  /** Exit before any logger exists. */
  exitNow(code: number): void;
}

const processIo: RoleIo = {
  exit: exitAfterFlush,
  signals: process,
  stderr: (text) => void process.stderr.write(text),
  exitNow: (code) => process.exit(code),
};

/** The stderr text of a role that cannot start because its input is wrong. */
export function notStartingText(role: string, err: unknown): string {
  if (err instanceof ConfigError) return `vsockmesh ${role}: invalid config, not starting\n${err.message}\n`;
  return `vsockmesh ${role}: not starting: ${err instanceof Error ? err.message : String(err)}\n`;
}

/** The ready line's fields: who, where its admin endpoint is, then the role's own. */
export function readyFields(role: string, pid: number, admin: { address: string; port: number } | undefined, own: Record<string, unknown>): Record<string, unknown> {
  return { role, pid, admin: admin ? { address: admin.address, port: admin.port } : null, ...own };
}

/** Runs `role` until the process ends; resolves once it is ready (or has failed, with the exit under way). */
export async function runRole(role: Role, io: RoleIo = processIo): Promise<void> {
  let state: RoleState = 'starting';
  // An admin drain needs the server to be started, which needs prepare() first.
  const control = { drainThenExit: (): Promise<void> => Promise.reject(new Error(`${role.name} is not started`)) };
  let prepared: PreparedRole;
  try {
    prepared = await role.prepare({ drainThenExit: () => control.drainThenExit() });
  } catch (err) {
    io.stderr(notStartingText(role.name, err));
    io.exitNow(2);
    return;
  }
  const { logger, server } = prepared;
  const adminAt = prepared.admin && prepared.admin.port !== null ? { ...prepared.admin, port: prepared.admin.port } : undefined;
  let admin: AdminServer | undefined;
  let trim: { stop(): void } | undefined;
  const stop = async (): Promise<void> => {
    state = 'stopped';
    trim?.stop();
    await server.stop();
    await admin?.stop();
  };
  const ending = processDrain(
    {
      drain: () => {
        state = 'draining';
        return server.drain();
      },
      stop,
    },
    logger,
    io,
  );
  control.drainThenExit = ending.drainThenExit;
  const notReady = (): string | undefined => (state === 'serving' ? prepared.notReady?.() : undefined);
  if (adminAt) {
    admin = new AdminServer(
      {
        ...adminAt.target,
        isReady: () => state === 'serving' && notReady() === undefined,
        state: () => {
          const why = notReady();
          return why === undefined ? state : `not ready: ${why}`;
        },
        drain: ending.drainThenExit,
      },
      logger,
    );
  }
  try {
    await server.start();
    if (admin && adminAt) await admin.start(adminAt.address, adminAt.port);
  } catch (err) {
    logger.fatal({ err }, `${role.name} failed to start: ${(err as Error).message}`);
    await stop();
    await io.exit(logger, 1);
    return;
  }
  state = 'serving';
  if (prepared.settleWhenQuiet !== undefined) trim = startQuietTrim(logger, prepared.settleWhenQuiet);
  // Before the ready line: a supervisor that reads it may signal at once, and must find the handlers.
  ending.handleSignals();
  logger.info(readyFields(role.name, process.pid, admin?.address(), prepared.ready?.() ?? {}), `${role.name} ready`);
}
