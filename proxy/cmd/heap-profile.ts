// The young generation (V8's semi-space) by the kind of work a proxy does.
// The bin's shebang sets 1 MiB: an idle L4 sidecar's RSS is what that size
// is for. A sidecar whose work is HTTP allocates tens of KiB per request in
// Node's http/http2, so at 1 MiB it scavenges every few dozen requests and
// pays for it in CPU per request. V8 sizes the young generation only when it
// makes its heap, so `--heap-profile http` re-executes the process (execv:
// same pid, no second process) with the profile's flags after the
// shebang's, before anything starts; later node flags win over earlier ones.
// The control plane and the VM manager hold and re-encode large registries
// and snapshots: at 1 MiB a change at 10,000 VMs spent over half its CPU in
// GC, so they run the `server` profile by default (their settle once quiet
// after a burst goes through their own trim addon: proxy/runtime/quiet-trim.ts).
// A sidecar's default is `auto`: `http` when its config file declares HTTP
// work (a `protocol: http` listener, a capture listener's HTTP inspector, the
// forward proxy), `idle` otherwise; listeners pushed over xDS are not known
// before the heap is made, so a sidecar whose HTTP listeners all come from the
// control plane is given `--heap-profile http` by its operator.

import type { ListenerConfig } from '../config/types.js';

/** Node flags per profile: `idle` adds none (the shebang's, or whatever node was started with). */
export const HEAP_PROFILES = {
  idle: [],
  http: ['--max-semi-space-size=8'],
  server: ['--max-semi-space-size=16'],
} as const satisfies Record<string, readonly string[]>;

export type HeapProfile = keyof typeof HEAP_PROFILES;

export const HEAP_PROFILE_NAMES = Object.keys(HEAP_PROFILES) as HeapProfile[];

/** What `--heap-profile` takes: a profile, or `auto` (a sidecar's default: chosen from its config file's listeners). */
export type HeapProfileChoice = HeapProfile | 'auto';

/** The profile a sidecar's listeners call for: `http` when any of them parses HTTP requests, else `idle`. */
export function heapProfileForListeners(listeners: readonly ListenerConfig[]): HeapProfile {
  const parsesHttp = (l: ListenerConfig): boolean => l.kind === 'forward_proxy' || (l.kind === 'outbound' && (l.http !== undefined || l.httpInspector !== undefined));
  return listeners.some(parsesHttp) ? 'http' : 'idle';
}

/**
 * The node arguments to run `profile` with: `execArgv` then the profile's
 * flags; null when there is nothing to change (no flags, or each already the
 * last of its name, as after the re-exec).
 */
export function heapProfileExecArgv(profile: HeapProfile, execArgv: readonly string[]): string[] | null {
  const flags: readonly string[] = HEAP_PROFILES[profile];
  const flagName = (arg: string): string => arg.split('=', 1)[0]!;
  const last = (name: string): string | undefined => execArgv.findLast((arg) => flagName(arg) === name);
  if (flags.every((flag) => last(flagName(flag)) === flag)) return null;
  return [...execArgv, ...flags];
}

/** Re-executes this process with `profile`'s node flags unless it runs with them already; returns when nothing changes. */
export async function applyHeapProfile(profile: HeapProfile): Promise<void> {
  const execArgv = heapProfileExecArgv(profile, process.execArgv);
  if (execArgv === null) return;
  const { native } = await import('../native/index.js');
  native.exec(process.execPath, [process.execPath, ...execArgv, ...process.argv.slice(1)]);
}
