// V8's optimising compiler (TurboFan) and the start-up. The bin's shebang
// (and the systemd units) start node with --no-turbofan: start-up alone
// (module loading, config parsing) made V8 optimise ~20 functions, and the
// first TurboFan compile pages in several MiB of an idle process's RSS. Once
// the command has started (a serving role is ready), TurboFan is turned on:
// V8 then optimises hot code at its usual pace, counted from V8's own
// interrupt budget all along. (The start-up used to be kept unoptimised with a
// budget 60× V8's instead; after start the per-connection JavaScript then ran
// in V8's interpreter for tens of thousands of connections, and lowering the
// budget at ready left every function that ran at start-up on the large one
// until its first tick: measured slower for the first ~10,000 connections.)
// An idle sidecar still optimises nothing: nothing of it runs. Short commands
// (ctl, validate-config) end before it matters; `demo`, which serves until
// Ctrl-C once its traffic is done, stays interpreted (a few connections).

import { setFlagsFromString } from 'node:v8';

const NAMES: Record<string, boolean> = { '--turbofan': true, '--opt': true, '--no-turbofan': false, '--no-opt': false };

/** The flag to set once started: `--turbofan` when the node flags' last word on TurboFan is off (the shebang's), else null. */
export function afterStartUpFlag(execArgv: readonly string[]): string | null {
  const last = execArgv.map((arg) => NAMES[arg.replaceAll('_', '-')]).findLast((on) => on !== undefined);
  return last === false ? '--turbofan' : null;
}

/** Turns TurboFan on if the start-up kept it off (a no-op otherwise); functions already hot are optimised at their next tick. */
export function endStartUp(execArgv: readonly string[] = process.execArgv): void {
  const flag = afterStartUpFlag(execArgv);
  if (flag !== null) setFlagsFromString(flag);
}
