// SPIFFE IDs (spiffe://<trust-domain>/<path>) and the four kinds of mesh
// identity built on them. The rules are the SPIFFE ID standard's, applied as
// strictly as go-spiffe does: no normalisation (a different spelling is a
// different, refused ID), so the string a certificate carries is the string
// a policy names. Pure: no I/O.

export const DEFAULT_TRUST_DOMAIN = 'vsockmesh.local';
/** The standard's bound on a whole SPIFFE ID, in bytes of its UTF-8 (here: ASCII) text. */
export const MAX_SPIFFE_ID_BYTES = 2048;
/** A trust domain is a DNS-like name: at most 255 characters. */
export const MAX_TRUST_DOMAIN_CHARS = 255;

const SCHEME = 'spiffe://';
const TRUST_DOMAIN_CHARS = /^[a-z0-9._-]+$/;
const SEGMENT_CHARS = /^[A-Za-z0-9._-]+$/;

/**
 * The identities of the mesh, by path: `vm/<vm-id>` a VM's sidecar,
 * `hv/<hypervisor-id>` a hypervisor's host agent, `cp/<name>` a control-plane
 * or VM-manager replica, `operator/<name>` a person or automation using ctl.
 */
export const IDENTITY_KINDS = ['vm', 'hv', 'cp', 'operator'] as const;
export type IdentityKind = (typeof IDENTITY_KINDS)[number];

export interface SpiffeId {
  /** Lowercase letters, digits, ".", "-", "_". */
  readonly trustDomain: string;
  /** "" (the trust domain's own ID) or "/segment/..." */
  readonly path: string;
}

export interface MeshIdentity {
  readonly trustDomain: string;
  readonly kind: IdentityKind;
  /** One path segment: a VM id, a hypervisor id, a replica or operator name. */
  readonly name: string;
}

/** Why a text is not a SPIFFE ID (snake_case: these become log and metric reasons). */
export type SpiffeIdProblem =
  | 'too_long'
  | 'wrong_scheme'
  | 'missing_trust_domain'
  | 'trust_domain_too_long'
  | 'bad_trust_domain_char'
  | 'port_not_allowed'
  | 'userinfo_not_allowed'
  | 'query_not_allowed'
  | 'fragment_not_allowed'
  | 'empty_segment'
  | 'trailing_slash'
  | 'dot_segment'
  | 'bad_path_char';

/** Why a SPIFFE ID is not a mesh identity. */
export type MeshIdentityProblem = SpiffeIdProblem | 'not_a_mesh_identity' | 'unknown_kind';

export type Parsed<T, Reason extends string> = { ok: true; value: T } | { ok: false; reason: Reason; message: string };

const refuse = <R extends string>(reason: R, message: string): { ok: false; reason: R; message: string } => ({ ok: false, reason, message });

/** Trust domain rules, or undefined when `trustDomain` is one. */
export function trustDomainProblem(trustDomain: string): { reason: SpiffeIdProblem; message: string } | undefined {
  if (trustDomain === '') return { reason: 'missing_trust_domain', message: 'the trust domain is empty' };
  if (trustDomain.length > MAX_TRUST_DOMAIN_CHARS) return { reason: 'trust_domain_too_long', message: `the trust domain is ${trustDomain.length} characters, at most ${MAX_TRUST_DOMAIN_CHARS}` };
  if (trustDomain.includes('@')) return { reason: 'userinfo_not_allowed', message: 'a trust domain has no user info' };
  if (trustDomain.includes(':')) return { reason: 'port_not_allowed', message: 'a trust domain has no port' };
  if (!TRUST_DOMAIN_CHARS.test(trustDomain)) return { reason: 'bad_trust_domain_char', message: `the trust domain ${JSON.stringify(trustDomain)} may hold only lowercase letters, digits, ".", "-" and "_"` };
  return undefined;
}

/** Path segment rules for one segment (a mesh identity's name), or undefined when it is one. */
export function segmentProblem(segment: string): { reason: SpiffeIdProblem; message: string } | undefined {
  if (segment === '') return { reason: 'empty_segment', message: 'a path segment is empty' };
  if (segment === '.' || segment === '..') return { reason: 'dot_segment', message: `the path segment ${JSON.stringify(segment)} is not allowed` };
  if (!SEGMENT_CHARS.test(segment)) return { reason: 'bad_path_char', message: `the path segment ${JSON.stringify(segment)} may hold only letters, digits, ".", "-" and "_"` };
  return undefined;
}

export function parseSpiffeId(text: string): Parsed<SpiffeId, SpiffeIdProblem> {
  const bytes = Buffer.byteLength(text, 'utf8');
  if (bytes > MAX_SPIFFE_ID_BYTES) return refuse('too_long', `a SPIFFE ID is at most ${MAX_SPIFFE_ID_BYTES} bytes, this one ${bytes}`);
  if (!text.startsWith(SCHEME)) return refuse('wrong_scheme', `a SPIFFE ID starts with "${SCHEME}" (lowercase)`);
  if (text.includes('?')) return refuse('query_not_allowed', 'a SPIFFE ID has no query');
  if (text.includes('#')) return refuse('fragment_not_allowed', 'a SPIFFE ID has no fragment');
  const rest = text.slice(SCHEME.length);
  const slash = rest.indexOf('/');
  const trustDomain = slash === -1 ? rest : rest.slice(0, slash);
  const path = slash === -1 ? '' : rest.slice(slash);
  const domain = trustDomainProblem(trustDomain);
  if (domain !== undefined) return refuse(domain.reason, domain.message);
  if (path !== '') {
    const segments = path.slice(1).split('/');
    for (const [i, segment] of segments.entries()) {
      if (segment === '' && i === segments.length - 1) return refuse('trailing_slash', 'a SPIFFE ID path does not end with "/"');
      const problem = segmentProblem(segment);
      if (problem !== undefined) return refuse(problem.reason, problem.message);
    }
  }
  return { ok: true, value: { trustDomain, path } };
}

export function formatSpiffeId(id: SpiffeId): string {
  return `${SCHEME}${id.trustDomain}${id.path}`;
}

/** The SPIFFE ID of a trust domain itself (the URI SAN a signing certificate may carry). */
export function trustDomainId(trustDomain: string): string {
  return `${SCHEME}${trustDomain}`;
}

export function isIdentityKind(value: string): value is IdentityKind {
  return (IDENTITY_KINDS as readonly string[]).includes(value);
}

/** A SPIFFE ID of the form spiffe://<trust-domain>/<kind>/<name>. */
export function parseMeshIdentity(text: string): Parsed<MeshIdentity, MeshIdentityProblem> {
  const parsed = parseSpiffeId(text);
  if (!parsed.ok) return parsed;
  const segments = parsed.value.path.split('/').slice(1);
  if (segments.length !== 2) return refuse('not_a_mesh_identity', `${text} is not of the form spiffe://<trust-domain>/<kind>/<name>`);
  const [kind, name] = segments as [string, string];
  if (!isIdentityKind(kind)) return refuse('unknown_kind', `"${kind}" is not an identity kind (${IDENTITY_KINDS.join(', ')})`);
  return { ok: true, value: { trustDomain: parsed.value.trustDomain, kind, name } };
}

/** A mesh identity checked and formatted, e.g. for the VM id a join token names. */
export function meshIdentityId(trustDomain: string, kind: IdentityKind, name: string): Parsed<string, SpiffeIdProblem> {
  const problem = trustDomainProblem(trustDomain) ?? segmentProblem(name);
  if (problem !== undefined) return refuse(problem.reason, problem.message);
  const id = `${SCHEME}${trustDomain}/${kind}/${name}`;
  // The length bound is the whole ID's.
  const parsed = parseSpiffeId(id);
  return parsed.ok ? { ok: true, value: id } : parsed;
}
