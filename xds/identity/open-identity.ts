// The control plane's identity pieces from its command line: the CA (under
// --ca-cert/--ca-key files, or the root generated in --identity-dir), the
// join tokens (kept in --identity-dir, else in memory) and the identity API
// serving both. No CA flag and no directory: no identity API.

import { join } from 'node:path';
import type { Logger } from '../../proxy/runtime/log.js';
import { CertificateAuthority } from './ca.js';
import { IdentityService } from './certify-server.js';
import { fileTokenStore, memoryTokenStore } from './join-token-store.js';
import { JoinTokens } from './join-tokens.js';

export interface IdentityOptions {
  trustDomain: string;
  /** --ca-cert/--ca-key (and an optional --ca-bundle of roots added to the trust bundle). */
  caFiles?: { certPath: string; keyPath: string; bundlePath?: string };
  /** The generated root (when there are no CA files) and the join-token records. */
  dir?: string;
  leafLifetimeMs?: number;
}

export const JOIN_TOKENS_FILE = 'join-tokens.json';
export const GENERATED_ROOT_DIR = 'ca';

export async function openIdentity(options: IdentityOptions, logger: Logger): Promise<IdentityService | undefined> {
  const { caFiles, dir } = options;
  if (caFiles === undefined && dir === undefined) return undefined;
  const ca = await CertificateAuthority.open({
    trustDomain: options.trustDomain,
    upstream: caFiles !== undefined ? { files: caFiles } : { dir: join(dir!, GENERATED_ROOT_DIR) },
    ...(options.leafLifetimeMs !== undefined && { leafLifetimeMs: options.leafLifetimeMs }),
  });
  if (dir === undefined) logger.warn({ reason: 'join_tokens_in_memory' }, 'no --identity-dir: join tokens are kept in memory and lost at restart');
  const tokens = await JoinTokens.open({ store: dir === undefined ? memoryTokenStore() : fileTokenStore(join(dir, JOIN_TOKENS_FILE)) });
  const described = ca.describe();
  logger.info({ trust_domain: ca.trustDomain, upstream: described.upstream, roots: described.roots.map((r) => r.subject), leaf_lifetime_ms: ca.leafLifetimeMs }, 'CA ready: the identity API (Certify, JoinTokens) is served');
  return new IdentityService({ ca, tokens, logger });
}
