// The identity API the control plane serves with its CA: Certify (a CSR in,
// an X509-SVID out) and JoinTokens (the operator's side of the bootstrap).
//
// Who may have which identity is decided here, in one place:
//   - with a join token: the identity the CSR asks for, when it is a VM's or
//     a hypervisor's of this trust domain and the token was made for exactly
//     that VM (hypervisor); the token is spent (join-tokens.ts);
//   - without one: the identity of the client certificate the call was made
//     with (a renewal), verified as an X509-SVID of this CA's trust bundle;
//     the CSR must ask for that same identity;
//   - CertifyAttested: a host agent's client certificate, for the VM the
//     registry places on its hypervisor at the vsock CID it attested
//     (attested-check.ts).
// Every refusal is a status with a snake_case reason, logged and counted
// (vsockmesh_certify_total{result="refused",reason}); a token or a key is
// never logged or echoed.

import * as grpc from '@grpc/grpc-js';
import { X509Certificate } from 'node:crypto';
import { Counter, Registry as MetricsRegistry } from '../../proxy/runtime/prom-client.js';
import { parseMeshIdentity } from '../../proxy/identity/spiffe.js';
import { pemCertificates } from '../../proxy/identity/certificate-facts.js';
import { MAX_CHAIN_CERTIFICATES, verifySvid } from '../../proxy/identity/svid.js';
import { NotFoundError, VsockmeshError, type ErrorCode } from '../../proxy/runtime/errors.js';
import type { Logger } from '../../proxy/runtime/log.js';
import type { CertifyRequest__Output } from '../generated/vsockmesh/identity/v1/CertifyRequest.js';
import type { CertifyResponse } from '../generated/vsockmesh/identity/v1/CertifyResponse.js';
import type { CreateJoinTokenRequest__Output } from '../generated/vsockmesh/identity/v1/CreateJoinTokenRequest.js';
import type { CreateJoinTokenResponse } from '../generated/vsockmesh/identity/v1/CreateJoinTokenResponse.js';
import type { IdentityHandlers } from '../generated/vsockmesh/identity/v1/Identity.js';
import type { JoinTokensHandlers } from '../generated/vsockmesh/identity/v1/JoinTokens.js';
import { statusName, statusOf } from '../grpc-status.js';
import { identityProto } from '../proto.js';
import type { VmRecord } from '../../proxy/resolve/types.js';
import type { CertifyAttestedRequest__Output } from '../generated/vsockmesh/identity/v1/CertifyAttestedRequest.js';
import { attestedDecision } from './attested-check.js';
import { CertifyRefusal, type CertificateAuthority, type IssuedSvid } from './ca.js';
import { inspectCsr } from './csr-check.js';
import { DEFAULT_JOIN_TOKEN_TTL_MS, JoinTokenError, type JoinTokenKind, type JoinTokens } from './join-tokens.js';

/** Why a Certify call was refused, beyond the CSR's own reasons (csr-check.ts) and the token's (join-tokens.ts). */
export type CertifyDenial = 'missing_csr' | 'no_credentials' | 'bad_peer_certificate' | 'wrong_trust_domain' | 'not_joinable' | 'token_store_failed' | 'missing_vm_id' | 'no_registry';

/** The status of each refusal reason: the caller's input (INVALID_ARGUMENT), who it is (UNAUTHENTICATED), what it may have (PERMISSION_DENIED). */
const DENIAL_CODES: Record<string, ErrorCode> = {
  missing_csr: 'INVALID_ARGUMENT',
  no_credentials: 'UNAUTHENTICATED',
  bad_peer_certificate: 'UNAUTHENTICATED',
  malformed_token: 'UNAUTHENTICATED',
  unknown_token: 'UNAUTHENTICATED',
  token_used: 'UNAUTHENTICATED',
  token_expired: 'UNAUTHENTICATED',
  wrong_subject: 'PERMISSION_DENIED',
  wrong_trust_domain: 'PERMISSION_DENIED',
  not_joinable: 'PERMISSION_DENIED',
  not_entitled: 'PERMISSION_DENIED',
  ca_expired: 'UNAVAILABLE',
  token_store_failed: 'UNAVAILABLE',
  missing_vm_id: 'INVALID_ARGUMENT',
  no_registry: 'UNAVAILABLE',
  not_host_agent: 'PERMISSION_DENIED',
  local_cid: 'PERMISSION_DENIED',
  unknown_vm: 'PERMISSION_DENIED',
  vm_on_other_hypervisor: 'PERMISSION_DENIED',
  cid_mismatch: 'PERMISSION_DENIED',
  wrong_identity: 'PERMISSION_DENIED',
};

/** The status code a Certify refusal reason is answered with (csr_* reasons: INVALID_ARGUMENT). */
export function certifyDenialCode(reason: string): ErrorCode {
  return DENIAL_CODES[reason] ?? 'INVALID_ARGUMENT';
}

export class CertifyDenied extends VsockmeshError {
  constructor(
    readonly reason: string,
    message: string,
  ) {
    super(certifyDenialCode(reason), message);
  }
}

/** A leaf and the intermediates above it are a few KiB; the bound keeps parsing cheap. */
export const MAX_CLIENT_CHAIN_CHARS = 64 * 1024;

/** How the caller proved who it is. */
export type CertifyPath = 'join_token' | 'renewal' | 'attested';

/** The registry's record of a VM (the control plane's view of the VM manager); undefined: none. */
export type VmLookup = (vmId: string) => VmRecord | undefined;

export interface IdentityServiceOptions {
  ca: CertificateAuthority;
  tokens: JoinTokens;
  logger: Logger;
}

export class IdentityService {
  readonly metrics = new MetricsRegistry();
  readonly ca: CertificateAuthority;
  private readonly certified: Counter<'result' | 'reason'>;
  private readonly tokenCalls: Counter<'method' | 'code'>;

  constructor(private readonly options: IdentityServiceOptions) {
    this.ca = options.ca;
    const registers = [this.metrics];
    this.certified = new Counter({ name: 'vsockmesh_certify_total', help: 'Certify and CertifyAttested calls: result issued (reason: join_token, renewal or attested) or refused (reason: why)', labelNames: ['result', 'reason'], registers });
    this.tokenCalls = new Counter({ name: 'vsockmesh_join_token_calls_total', help: 'JoinTokens API calls by method and gRPC status', labelNames: ['method', 'code'], registers });
  }

  /** For /config_dump: the CA's certificates and the tokens outstanding (never a secret). */
  describe(): unknown {
    const tokens = this.options.tokens.lastListed();
    return { ca: this.ca.describe(), joinTokens: { outstanding: tokens.filter((l) => !l.used && Date.parse(l.expiresAt) > Date.now()).length, kept: tokens.length } };
  }

  /** `vms`: where CertifyAttested looks the VM up. */
  addTo(server: grpc.Server, vms?: VmLookup): void {
    const proto = identityProto().vsockmesh.identity.v1;
    server.addService(proto.Identity.service, this.certifyHandlers(vms));
    server.addService(proto.JoinTokens.service, this.joinTokenHandlers());
  }

  /**
   * Signs `request.csr` for the identity the caller proves: its join token's,
   * or (`peer`, the verified TLS client certificate) its own. Throws
   * CertifyDenied.
   */
  async certify(request: { csr: string; joinToken: string; clientChain: string }, peer: X509Certificate | undefined): Promise<{ svid: IssuedSvid; path: CertifyPath; tokenId?: string }> {
    if (request.csr === '') throw new CertifyDenied('missing_csr', 'csr: required (a PEM PKCS#10 request)');
    if (request.joinToken !== '') return this.certifyWithToken(request.csr, request.joinToken);
    if (peer === undefined) throw new CertifyDenied('no_credentials', 'no join token and no client certificate: a first certificate needs a join token, a renewal the current certificate (TLS)');
    return { svid: await this.sign(request.csr, this.verifiedPeer(peer, request.clientChain)), path: 'renewal' };
  }

  /**
   * Signs `request.csr` for the VM a host agent (`peer`) attested: only when
   * the registry (`vms`) places that VM on the caller's hypervisor at that
   * CID and the CSR asks for exactly its identity. Throws CertifyDenied.
   */
  async certifyAttested(request: { csr: string; vmId: string; cid: number; clientChain: string }, peer: X509Certificate | undefined, vms: VmLookup | undefined): Promise<IssuedSvid> {
    if (request.csr === '') throw new CertifyDenied('missing_csr', 'csr: required (a PEM PKCS#10 request)');
    if (request.vmId === '') throw new CertifyDenied('missing_vm_id', 'vm_id: required (the VM the host agent attested)');
    if (peer === undefined) throw new CertifyDenied('no_credentials', 'CertifyAttested needs the host agent\'s client certificate (TLS)');
    const caller = parseMeshIdentity(this.verifiedPeer(peer, request.clientChain));
    if (!caller.ok) throw new CertifyDenied('bad_peer_certificate', `the client certificate is not a mesh identity: ${caller.message}`);
    if (vms === undefined) throw new CertifyDenied('no_registry', 'this control plane has no VM registry to attest against');
    const asked = await inspectCsr(request.csr);
    if (!asked.ok) throw new CertifyDenied(asked.reason, asked.message);
    const decision = attestedDecision({ caller: caller.value, trustDomain: this.ca.trustDomain, vmId: request.vmId, cid: request.cid, asked: asked.spiffeId, vm: vms(request.vmId) });
    if (!decision.ok) throw new CertifyDenied(decision.reason, decision.message);
    return this.sign(request.csr, decision.spiffeId);
  }

  /** The SPIFFE ID of a TLS client certificate that verifies as an X509-SVID under this CA's bundle. */
  private verifiedPeer(peer: X509Certificate, clientChain: string): string {
    const { ca } = this.options;
    const verdict = verifySvid([peer, ...this.intermediates(peer, clientChain)], ca.trustBundle(), new Date());
    if (!verdict.ok) throw new CertifyDenied('bad_peer_certificate', `the client certificate is not a valid identity of ${ca.trustDomain}: ${verdict.message} (${verdict.reason})`);
    return verdict.spiffeId;
  }

  /** The certificates above the TLS client certificate: as the client says (when its chain starts with that very certificate), else this CA's own. */
  private intermediates(peer: X509Certificate, clientChain: string): X509Certificate[] {
    const presented = clientChain.length > MAX_CLIENT_CHAIN_CHARS ? [] : pemCertificates(clientChain);
    if (presented.length > 1 && presented.length <= MAX_CHAIN_CERTIFICATES) {
      try {
        const certs = presented.map((p) => new X509Certificate(p));
        if (certs[0]!.fingerprint256 === peer.fingerprint256) return certs.slice(1);
      } catch {
        // Unusable: fall back to the intermediates this CA knows.
      }
    }
    return this.options.ca.chainAbove(peer.issuer);
  }

  private async certifyWithToken(csr: string, token: string): Promise<{ svid: IssuedSvid; path: CertifyPath; tokenId: string }> {
    const { ca, tokens } = this.options;
    // The CSR is checked before the token is spent: a malformed request does not burn it.
    const asked = await inspectCsr(csr);
    if (!asked.ok) throw new CertifyDenied(asked.reason, asked.message);
    const identity = parseMeshIdentity(asked.spiffeId);
    if (!identity.ok) throw new CertifyDenied('not_joinable', `the CSR asks for ${asked.spiffeId}, not a mesh identity: ${identity.message}`);
    const { trustDomain, kind, name } = identity.value;
    if (trustDomain !== ca.trustDomain) throw new CertifyDenied('wrong_trust_domain', `the CSR asks for ${asked.spiffeId}, outside the trust domain ${ca.trustDomain}`);
    if (kind !== 'vm' && kind !== 'hv') throw new CertifyDenied('not_joinable', `the CSR asks for ${asked.spiffeId}: a join token gives a VM's or a hypervisor's identity only`);
    let consumed: Awaited<ReturnType<JoinTokens['consume']>>;
    try {
      consumed = await tokens.consume(token, { kind, name });
    } catch (err) {
      this.options.logger.error({ reason: 'token_store_failed', error: (err as Error).message }, 'join token store write failed');
      throw new CertifyDenied('token_store_failed', 'the join token could not be spent durably; try again');
    }
    if (!consumed.ok) throw new CertifyDenied(consumed.reason, consumed.message);
    return { svid: await this.sign(csr, asked.spiffeId), path: 'join_token', tokenId: consumed.id };
  }

  private async sign(csr: string, entitled: string): Promise<IssuedSvid> {
    try {
      return await this.options.ca.sign(csr, entitled);
    } catch (err) {
      if (err instanceof CertifyRefusal) throw new CertifyDenied(err.reason, err.message);
      throw err;
    }
  }

  private certifyHandlers(vms: VmLookup | undefined): IdentityHandlers {
    const { logger } = this.options;
    /** Answers one Certify-like call: the SVID, or the refusal (logged and counted). */
    const answer = (call: grpc.ServerUnaryCall<unknown, unknown>, work: Promise<{ svid: IssuedSvid; path: CertifyPath; tokenId?: string; vmCid?: number }>, callback: grpc.sendUnaryData<CertifyResponse>): void => {
      work.then(
        ({ svid, path, tokenId, vmCid }) => {
          this.certified.inc({ result: 'issued', reason: path });
          const leaf = new X509Certificate(svid.chain[0]!);
          logger.info(
            { spiffe_id: svid.spiffeId, serial: leaf.serialNumber, not_after: svid.notAfter.toISOString(), via: path, ...(tokenId !== undefined && { token_id: tokenId }), ...(vmCid !== undefined && { cid: vmCid, host_agent: peerCertificate(call)?.subjectAltName ?? null }) },
            `certified ${svid.spiffeId}`,
          );
          callback(null, { certificate_chain: svid.chain.join(''), not_after_ms: svid.notAfter.getTime(), trust_bundle: svid.trustBundle.join(''), spiffe_id: svid.spiffeId } satisfies CertifyResponse);
        },
        (err: unknown) => {
          const reason = err instanceof CertifyDenied ? err.reason : 'internal_error';
          const status = statusOf(err);
          this.certified.inc({ result: 'refused', reason });
          const level = status.code === grpc.status.INTERNAL || status.code === grpc.status.UNAVAILABLE ? 'error' : 'warn';
          logger[level]({ reason, code: statusName(status.code), peer: call.getPeer(), error: status.details }, `Certify refused: ${status.details}`);
          callback({ code: status.code, details: `${status.details} (${reason})` });
        },
      );
    };
    return {
      Certify: (call, callback) => {
        const request = call.request as CertifyRequest__Output;
        answer(call, this.certify({ csr: request.csr, joinToken: request.join_token, clientChain: request.client_chain }, peerCertificate(call)), callback);
      },
      CertifyAttested: (call, callback) => {
        const request = call.request as CertifyAttestedRequest__Output;
        const work = this.certifyAttested({ csr: request.csr, vmId: request.vm_id, cid: request.cid, clientChain: request.client_chain }, peerCertificate(call), vms).then((svid) => ({ svid, path: 'attested' as const, vmCid: request.cid }));
        answer(call, work, callback);
      },
    };
  }

  private joinTokenHandlers(): JoinTokensHandlers {
    const { tokens, logger } = this.options;
    const run = <Res>(method: string, fn: () => Promise<Res>, callback: grpc.sendUnaryData<Res>): void => {
      fn().then(
        (res) => {
          this.tokenCalls.inc({ method, code: 'OK' });
          callback(null, res);
        },
        (err: unknown) => {
          const status = err instanceof JoinTokenError ? { code: err.reason === 'too_many_tokens' ? grpc.status.RESOURCE_EXHAUSTED : grpc.status.INVALID_ARGUMENT, details: err.message } : statusOf(err);
          const reason = err instanceof JoinTokenError ? err.reason : err instanceof NotFoundError ? 'unknown_token' : status.code === grpc.status.INVALID_ARGUMENT ? 'invalid_request' : 'internal_error';
          this.tokenCalls.inc({ method, code: statusName(status.code) });
          logger[status.code === grpc.status.INTERNAL ? 'error' : 'warn']({ method, reason, code: statusName(status.code), error: status.details }, `JoinTokens ${method} refused: ${status.details}`);
          callback(status);
        },
      );
    };
    return {
      CreateJoinToken: (call, callback) =>
        run(
          'CreateJoinToken',
          async () => {
            const request = call.request as CreateJoinTokenRequest__Output;
            const subject = joinSubject(request);
            const created = await tokens.create(subject, request.ttl_ms === 0 ? DEFAULT_JOIN_TOKEN_TTL_MS : request.ttl_ms);
            logger.info({ token_id: created.id, kind: subject.kind, name: subject.name, expires_at: created.expiresAt.toISOString() }, `join token ${created.id} created for ${subject.kind} ${subject.name}`);
            return { token: created.token, id: created.id, expires_at_ms: created.expiresAt.getTime() } satisfies CreateJoinTokenResponse;
          },
          callback,
        ),
      ListJoinTokens: (_call, callback) =>
        run('ListJoinTokens', async () => ({ tokens: (await tokens.list()).map((l) => ({ id: l.id, kind: l.kind, name: l.name, expires_at_ms: Date.parse(l.expiresAt), used: l.used })) }), callback),
      RevokeJoinToken: (call, callback) =>
        run(
          'RevokeJoinToken',
          async () => {
            const { id } = call.request;
            if (!(await tokens.revoke(id))) throw new NotFoundError(`join token ${JSON.stringify(id.slice(0, 64))}`, `no join token ${JSON.stringify(id.slice(0, 64))}`);
            logger.info({ token_id: id }, `join token ${id} revoked`);
            return {};
          },
          callback,
        ),
    };
  }
}

function joinSubject(request: CreateJoinTokenRequest__Output): { kind: JoinTokenKind; name: string } {
  if (request.subject === 'vm_id') return { kind: 'vm', name: request.vm_id ?? '' };
  if (request.subject === 'hypervisor_id') return { kind: 'hv', name: request.hypervisor_id ?? '' };
  throw new VsockmeshError('INVALID_ARGUMENT', 'vm_id or hypervisor_id: one is required');
}

/** The client certificate of a call over TLS that the handshake verified (grpc-js gives none otherwise). */
function peerCertificate(call: grpc.ServerUnaryCall<unknown, unknown>): X509Certificate | undefined {
  const raw = call.getAuthContext()?.sslPeerCertificate?.raw;
  if (raw === undefined) return undefined;
  try {
    return new X509Certificate(raw);
  } catch {
    return undefined;
  }
}
