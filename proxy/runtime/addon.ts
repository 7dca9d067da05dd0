// Loading one of the addons `npm ci` builds (binding.gyp) into build/Release/:
// the data plane's core (vsockmesh_native.node) and the server roles' trim
// addon (vsockmesh_trim.node). The same file is found from the sources
// (proxy/<dir>/) and from the build output (dist/proxy/<dir>/); a missing one
// is a clear error saying how to build it.

import { createRequire } from 'node:module';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

/** The addon `file` under build/Release/ (`what` names it in the error when it is not built). */
export function loadBuiltAddon<T>(file: string, what: string): T {
  const candidates = [`../../build/Release/${file}`, `../../../build/Release/${file}`].map((p) => fileURLToPath(new URL(p, import.meta.url)));
  const path = candidates.find((p) => existsSync(p));
  if (path === undefined) throw new Error(`${what} is not built (looked for ${candidates.join(', ')}): run "npm ci" or "npx node-gyp rebuild"`);
  return createRequire(import.meta.url)(path) as T;
}
