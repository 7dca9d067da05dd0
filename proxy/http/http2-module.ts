// node:http2, loaded on the first HTTP listener: ~0.5 MiB of RSS that a
// sidecar with L4 listeners only never needs.

import { createRequire } from 'node:module';
import type http2 from 'node:http2';

let loaded: typeof http2 | undefined;

export function http2Module(): typeof http2 {
  loaded ??= createRequire(import.meta.url)('node:http2') as typeof http2;
  return loaded;
}
