// node:http2, loaded on the first HTTP listener: ~0.5 MiB of RSS that a
// sidecar with L4 listeners only never needs.

import type http2 from 'node:http2';
import { lazyBuiltin } from '../runtime/lazy-builtin.js';

export const http2Module = lazyBuiltin<typeof http2>('node:http2');
