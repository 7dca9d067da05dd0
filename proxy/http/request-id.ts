// A request's x-request-id when the client sent none: a random (v4) UUID from
// node:crypto, loaded on the first such request, not at start: ~0.6 MiB of
// settled RSS that a sidecar without HTTP listeners (or peer TLS) never needs.

import type crypto from 'node:crypto';
import { lazyBuiltin } from '../runtime/lazy-builtin.js';

const cryptoModule = lazyBuiltin<typeof crypto>('node:crypto');

/** A random v4 UUID (node:crypto's `randomUUID`, which draws from a pool of random bytes). */
export function randomUUID(): string {
  return cryptoModule().randomUUID();
}
