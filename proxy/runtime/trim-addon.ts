// The server roles' settle addon (vsockmesh_trim.node, proxy/native/server-trim.cc): the
// control plane and the VM manager never load the data plane's core
// (proxy/native/index.ts, vsockmesh_native.node; role-modules test) but do need glibc's
// malloc_trim after a sync. Loaded only when a role settles (quiet-trim.ts).

import { loadBuiltAddon } from './addon.js';

export interface TrimAddon {
  /** malloc_trim(0): whether glibc gave memory back to the system. */
  trim(): boolean;
  /** V8's memory-reducing full GCs (compacting, shrinking the young generation). */
  reduceMemory(): void;
}

/** The addon; throws a clear error when it is not built. */
export function loadTrimAddon(): TrimAddon {
  return loadBuiltAddon<TrimAddon>('vsockmesh_trim.node', 'vsockmesh trim addon');
}
