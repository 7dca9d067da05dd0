// A request's x-request-id when the client sent none: a random (v4) UUID from
// node:crypto, loaded on the first such request, not at start: ~0.6 MiB of
// settled RSS that a sidecar without HTTP listeners (or peer TLS) never needs.

import { createRequire } from 'node:module';
import type crypto from 'node:crypto';

let uuid: typeof crypto.randomUUID | undefined;

/** A random v4 UUID (node:crypto's `randomUUID`, which draws from a pool of random bytes). */
export function randomUUID(): string {
  uuid ??= (createRequire(import.meta.url)('node:crypto') as typeof crypto).randomUUID;
  return uuid();
}
