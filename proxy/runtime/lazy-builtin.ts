// A Node built-in loaded on first use, not at start: each module a process
// loads stays resident (its code, compiled functions, module records), so
// modules that only some configurations need are loaded by the first caller
// that needs them. The load is one synchronous require, once.

import { createRequire } from 'node:module';

const load = createRequire(import.meta.url);

/** A getter for the built-in `specifier` (e.g. 'node:http2'), loaded the first time it is called. */
export function lazyBuiltin<T>(specifier: string): () => T {
  let loaded: T | undefined;
  return () => (loaded ??= load(specifier) as T);
}
