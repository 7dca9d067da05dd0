// The overload decision (like Envoy's overload manager): from readings of the
// process's resources, whether it should shed new connections, and why. Pure;
// the readings come from overload-monitor.ts.

export type OverloadResource = 'fds' | 'memory';

export const OVERLOAD_RESOURCES: readonly OverloadResource[] = ['fds', 'memory'];

export interface OverloadThresholds {
  /** Overloaded while fewer descriptors than this are free (the admin endpoint and the core's own work need some). */
  minFreeFds: number;
  /** Overloaded while the resident set is at least this; null: no memory limit. */
  maxMemoryBytes: number | null;
}

export interface OverloadReadings {
  /** RLIMIT_NOFILE (soft). */
  fdLimit: number;
  fdsOpen: number;
  rssBytes: number;
  /** Accepts that failed for lack of a resource since the previous reading, by errno name. */
  acceptFailures: Readonly<Record<string, number>>;
}

export interface OverloadCause {
  resource: OverloadResource;
  /** One line for logs and /ready, e.g. "40 free of 256 descriptors (min_free_fds 64)". */
  detail: string;
}

/** Empty: not overloaded. */
export type OverloadState = readonly OverloadCause[];

/** Accept errors that say which resource ran out. */
const ACCEPT_ERRNO_RESOURCE: Readonly<Record<string, OverloadResource>> = { EMFILE: 'fds', ENFILE: 'fds', ENOBUFS: 'memory', ENOMEM: 'memory' };

const MIB = 1024 * 1024;

export function overloadState(readings: OverloadReadings, thresholds: OverloadThresholds): OverloadState {
  const failed: Partial<Record<OverloadResource, string[]>> = {};
  for (const [code, n] of Object.entries(readings.acceptFailures)) {
    const resource = ACCEPT_ERRNO_RESOURCE[code];
    if (resource !== undefined && n > 0) (failed[resource] ??= []).push(`${n} accepts failed with ${code}`);
  }
  const causes: OverloadCause[] = [];
  const free = readings.fdLimit - readings.fdsOpen;
  const fds = free < thresholds.minFreeFds ? [`${Math.max(free, 0)} free of ${readings.fdLimit} descriptors (min_free_fds ${thresholds.minFreeFds})`] : [];
  fds.push(...(failed.fds ?? []));
  if (fds.length > 0) causes.push({ resource: 'fds', detail: fds.join(', ') });
  const limit = thresholds.maxMemoryBytes;
  const memory = limit !== null && readings.rssBytes >= limit ? [`resident set ${mib(readings.rssBytes)} MiB (max_memory ${mib(limit)} MiB)`] : [];
  memory.push(...(failed.memory ?? []));
  if (memory.length > 0) causes.push({ resource: 'memory', detail: memory.join(', ') });
  return causes;
}

/** "fds: 40 free of 256 descriptors (min_free_fds 64); memory: ..." */
export function describeOverload(state: OverloadState): string {
  return state.map((c) => `${c.resource}: ${c.detail}`).join('; ');
}

/** The soft "Max open files" limit from /proc/self/limits text; undefined if absent. */
export function parseFdLimit(limits: string): number | undefined {
  const match = /^Max open files\s+(\d+|unlimited)\s/m.exec(limits);
  if (!match) return undefined;
  return match[1] === 'unlimited' ? Number.POSITIVE_INFINITY : Number(match[1]);
}

function mib(bytes: number): string {
  return (bytes / MIB).toFixed(bytes % MIB === 0 ? 0 : 1);
}
