// The control plane's identity API from its CA (the one instance that also
// issues the control plane's own cp/<name>, security/process-identity.ts):
// Certify with that CA, and the join tokens, kept in --identity-dir (else in
// memory). The directory is made (0700) when it does not exist: with
// --ca-cert/--ca-key nothing else creates it, and the first token would fail.

import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { fileErrorText } from '../../proxy/runtime/durable-file.js';
import type { Logger } from '../../proxy/runtime/log.js';
import type { CertificateAuthority } from './ca.js';
import { IdentityService } from './certify-server.js';
import { fileTokenStore, memoryTokenStore } from './join-token-store.js';
import { JoinTokens } from './join-tokens.js';

export const JOIN_TOKENS_FILE = 'join-tokens.json';

export async function openIdentity(ca: CertificateAuthority, dir: string | undefined, logger: Logger): Promise<IdentityService> {
  if (dir === undefined) logger.warn({ reason: 'join_tokens_in_memory' }, 'no --identity-dir: join tokens are kept in memory and lost at restart');
  else
    await mkdir(dir, { recursive: true, mode: 0o700 }).catch((err: unknown) => {
      throw new Error(`--identity-dir ${dir}: cannot create: ${fileErrorText(err)}`, { cause: err });
    });
  const tokens = await JoinTokens.open({ store: dir === undefined ? memoryTokenStore() : fileTokenStore(join(dir, JOIN_TOKENS_FILE)) });
  const described = ca.describe();
  logger.info({ trust_domain: ca.trustDomain, upstream: described.upstream, roots: described.roots.map((r) => r.subject), leaf_lifetime_ms: ca.leafLifetimeMs }, 'CA ready: the identity API (Certify, JoinTokens) is served');
  return new IdentityService({ ca, tokens, logger });
}
