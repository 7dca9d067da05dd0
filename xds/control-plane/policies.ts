// Authorization policies in the mesh config, as operators write them:
//
//   policies:
//     - name: db-from-web
//       service: db                  # the VMs serving db, on the port they serve it
//       ports: [5432]                # optional: these destination ports of those VMs instead
//       action: ALLOW                # or DENY
//       principals:
//         - spiffe://vsockmesh.local/vm/web-1      # exact
//         - spiffe://vsockmesh.local/vm/web-*      # prefix (one trailing "*"); or "prefix:spiffe://..."
//         - "*"                                    # any authenticated peer
//         - unauthenticated                        # a peer with no identity (plain text under permissive)
//       shadow: true                 # dry run: logged and counted, not enforced
//
// Semantics as Envoy's RBAC and Istio's AuthorizationPolicy: DENY before
// ALLOW; once an ALLOW policy selects a port, a connection no ALLOW policy
// matches is denied; no policy, allowed. Translated into RBAC network filters
// by translate-rbac.ts.

import { z } from '../../proxy/config/fields.js';
import { parseSpiffeId } from '../../proxy/identity/spiffe.js';
import type { PrincipalMatch } from '../../proxy/policy/rbac.js';
import { MAX_PORTS_PER_POLICY, MAX_PRINCIPAL_LENGTH, MAX_PRINCIPALS_PER_POLICY, quoteBounded } from './bounds.js';
import { UNAUTHENTICATED } from '../../proxy/peer-tls/peer-policy.js';

/** One policy of the mesh. */
export interface MeshPolicy {
  name: string;
  service: string;
  /** Destination ports; null: the port each selected VM serves `service` on. */
  ports: number[] | null;
  action: 'ALLOW' | 'DENY';
  principals: PrincipalMatch[];
  shadow: boolean;
}

const PREFIX = 'prefix:';
const PRINCIPAL = `must be a SPIFFE ID (spiffe://<trust-domain>/<path>), a prefix ("spiffe://.../vm/web-*" or "${PREFIX}spiffe://..."), "*" or "${UNAUTHENTICATED}"`;

/** A principal as written -> what it matches, or why not. */
export function parsePrincipal(text: string): { ok: true; value: PrincipalMatch } | { ok: false; message: string } {
  if (text === UNAUTHENTICATED) return { ok: true, value: { kind: 'unauthenticated' } };
  if (text === '*') return { ok: true, value: { kind: 'authenticated' } };
  const prefix = text.startsWith(PREFIX) ? text.slice(PREFIX.length) : text.endsWith('*') ? text.slice(0, -1) : undefined;
  if (prefix !== undefined) {
    if (!prefix.startsWith('spiffe://') || prefix.includes('*')) return { ok: false, message: `${quoteBounded(text)}: a prefix must start with "spiffe://" and have no other "*"` };
    return { ok: true, value: { kind: 'prefix', prefix } };
  }
  const id = parseSpiffeId(text);
  if (!id.ok) return { ok: false, message: `${quoteBounded(text)}: ${PRINCIPAL} (${id.message})` };
  return { ok: true, value: { kind: 'exact', id: text } };
}

const policyPort = z
  .number({ invalid_type_error: 'must be a port number' })
  .int({ message: 'must be an integer 1..65535' })
  .min(1, { message: 'must be an integer 1..65535' })
  .max(65535, { message: 'must be an integer 1..65535' });

const principal = z
  .string({ invalid_type_error: 'must be a string' })
  .max(MAX_PRINCIPAL_LENGTH, { message: `must be at most ${MAX_PRINCIPAL_LENGTH} characters` })
  .transform((text, ctx) => {
    const parsed = parsePrincipal(text);
    if (!parsed.ok) {
      ctx.addIssue({ code: 'custom', message: parsed.message });
      return z.NEVER;
    }
    return parsed.value;
  });

/** The schema of one policy; `meshName` is the mesh's DNS-label rule for names. */
export function policySchema(meshName: z.ZodString) {
  return z
    .object({
      name: meshName,
      service: meshName,
      ports: z.array(policyPort).min(1, { message: 'must list at least one port (leave ports out for the service port)' }).max(MAX_PORTS_PER_POLICY, { message: `must list at most ${MAX_PORTS_PER_POLICY} ports` }).optional(),
      action: z.string({ invalid_type_error: 'must be "ALLOW" or "DENY"', required_error: 'required: "ALLOW" or "DENY"' }).refine(
        (a): a is 'ALLOW' | 'DENY' => a === 'ALLOW' || a === 'DENY',
        (a) => ({ message: `must be "ALLOW" or "DENY" (got ${quoteBounded(a)})` }),
      ),
      principals: z
        .array(principal)
        .min(1, { message: 'must list at least one principal' })
        .max(MAX_PRINCIPALS_PER_POLICY, { message: `must list at most ${MAX_PRINCIPALS_PER_POLICY} principals` }),
      shadow: z.boolean({ invalid_type_error: 'must be true or false' }).default(false),
    })
    .strict()
    .transform(
      (p): MeshPolicy => ({ name: p.name, service: p.service, ports: p.ports ? [...new Set(p.ports)].sort((a, b) => a - b) : null, action: p.action, principals: p.principals, shadow: p.shadow }),
    );
}

