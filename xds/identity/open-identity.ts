// The control plane's identity API from its CA (the one instance that also
// issues the control plane's own cp/<name>, security/process-identity.ts):
// Certify with that CA, and the join tokens, kept in the replicas' shared
// store (--store) so that a token works once whichever replica is asked, else
// in --identity-dir, else in memory. The directory is made (0700) when it does
// not exist: with --ca-cert/--ca-key nothing else creates it, and the first
// token would fail.

import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { fileErrorText } from '../../proxy/runtime/durable-file.js';
import type { Logger } from '../../proxy/runtime/log.js';
import type { CertificateAuthority } from './ca.js';
import { IdentityService } from './certify-server.js';
import type { Store } from '../store/store.js';
import { fileTokenStore, JoinTokenStore, memoryTokenStore } from './join-token-store.js';
import { JoinTokens } from './join-tokens.js';

export const JOIN_TOKENS_FILE = 'join-tokens.json';

export async function openIdentity(ca: CertificateAuthority, dir: string | undefined, logger: Logger, shared?: Store): Promise<IdentityService> {
  if (dir === undefined && shared === undefined) logger.warn({ reason: 'join_tokens_in_memory' }, 'no --identity-dir: join tokens are kept in memory and lost at restart');
  else if (dir !== undefined)
    await mkdir(dir, { recursive: true, mode: 0o700 }).catch((err: unknown) => {
      throw new Error(`--identity-dir ${dir}: cannot create: ${fileErrorText(err)}`, { cause: err });
    });
  const store = shared !== undefined ? new JoinTokenStore(shared) : dir !== undefined ? await fileTokenStore(join(dir, JOIN_TOKENS_FILE)) : memoryTokenStore();
  const tokens = await JoinTokens.open({ store });
  const described = ca.describe();
  logger.info({ trust_domain: ca.trustDomain, upstream: described.upstream, roots: described.roots.map((r) => r.subject), leaf_lifetime_ms: ca.leafLifetimeMs }, 'CA ready: the identity API (Certify, JoinTokens) is served');
  return new IdentityService({ ca, tokens, logger });
}
