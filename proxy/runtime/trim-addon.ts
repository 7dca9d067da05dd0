// The server roles' settle addon (vsockmesh_trim.node, proxy/native/server-trim.cc): the
// control plane and the VM manager never load the data plane's core
// (proxy/native/index.ts, vsockmesh_native.node; role-modules test) but do need glibc's
// malloc_trim after a sync. Loaded only when a role settles (quiet-trim.ts).

import { createRequire } from 'node:module';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

export interface TrimAddon {
  /** malloc_trim(0): whether glibc gave memory back to the system. */
  trim(): boolean;
  /** V8's memory-reducing full GCs (compacting, shrinking the young generation). */
  reduceMemory(): void;
}

/** The addon; throws a clear error when it is not built. */
export function loadTrimAddon(): TrimAddon {
  // Same file from the sources (proxy/native) and from the build output (dist/proxy/native).
  const candidates = ['../../build/Release/vsockmesh_trim.node', '../../../build/Release/vsockmesh_trim.node'].map((p) => fileURLToPath(new URL(p, import.meta.url)));
  const path = candidates.find((p) => existsSync(p));
  if (path === undefined) throw new Error(`vsockmesh trim addon is not built (looked for ${candidates.join(', ')}): run "npm ci" or "npx node-gyp rebuild"`);
  return createRequire(import.meta.url)(path) as TrimAddon;
}
