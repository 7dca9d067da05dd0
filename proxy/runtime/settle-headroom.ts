// Headroom after a server role's settle. The control plane and the VM
// manager settle their memory once quiet after a burst (quiet-trim.ts
// serverSettle, which runs its collections through withHeapHeadroom: V8's
// memory-reducing GCs, then malloc_trim).
// A memory-reducing GC also sets the old generation's next limit at its
// minimal growth: 1.1 times what survived (V8's "minimal" growing mode),
// where a normal GC grows it by a factor from the GC and allocation speeds.
// The next change after a settle (the first after a sync, and any after a
// quiet spell, the usual case) promotes more than that 10 % (1,000 node
// snapshots, a response per stream) and runs a full mark-compact of the whole
// heap in the middle of its push: the change after a settle cost twice the CPU
// of one without (README, "Running at scale", "The change after a settle").
// So the settle runs with V8's heap growing factor set to 1 + percent/100
// and set back afterwards: the collections free and compact the same (the
// RSS after a settle is unchanged), only the next limit leaves room for a
// change. A GC outside the settle grows the heap as it did.
// 100 %, not 50: V8 starts marking the old generation once the room left
// under its limit falls below the young generation's capacity (16 MiB grown;
// our reading of V8's incremental-marking limit), so with 1.5 times what
// survived (~50 MiB live at 10,000 VMs and 1,000 streams) a full mark-compact
// still came in the second or third change after every settle (8 of 8 runs);
// with twice, none in the first three (README, "Running at scale", "The
// changes after a settle").

import { setFlagsFromString } from 'node:v8';
import type { SettleResult } from './settle-memory.js';

/** The old generation's room after a settle, in percent of what survived it (V8's --heap-growing-percent while the settle runs). */
export const SETTLE_HEAP_GROWING_PERCENT = 100;

/** The --heap-growing-percent the process was started with (the last one in its node flags), 0 (V8's own factor) when none. */
export function startedGrowingPercent(execArgv: readonly string[]): number {
  let percent = 0;
  for (let i = 0; i < execArgv.length; i++) {
    const arg = execArgv[i]!;
    const m = /^--heap[-_]growing[-_]percent(?:=(.*))?$/.exec(arg);
    if (m === null) continue;
    const value = m[1] ?? execArgv[i + 1];
    const n = Number(value);
    if (value !== undefined && value !== '' && Number.isInteger(n) && n >= 0) percent = n;
  }
  return percent;
}

/**
 * `settle` run with V8's heap growing factor at 1 + `percent`/100, then set
 * back to what the process was started with (also when `settle` throws).
 * `setFlags`: V8's flag setter (tests pass their own).
 */
export function withHeapHeadroom(
  settle: () => SettleResult | void,
  percent: number = SETTLE_HEAP_GROWING_PERCENT,
  execArgv: readonly string[] = process.execArgv,
  setFlags: (flags: string) => void = setFlagsFromString,
): () => SettleResult | void {
  if (!Number.isInteger(percent) || percent < 1) throw new Error(`heap headroom must be a whole percentage ≥ 1, got ${percent}`);
  const after = startedGrowingPercent(execArgv);
  return () => {
    setFlags(`--heap-growing-percent=${percent}`);
    try {
      return settle();
    } finally {
      setFlags(`--heap-growing-percent=${after}`);
    }
  };
}
