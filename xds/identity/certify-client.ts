// The client side of Certify and of the JoinTokens API.
//
// Certify over TLS: the control plane must present an X509-SVID of the trust
// domain naming a control-plane replica (spiffe://<td>/cp/<name>), checked
// against the bootstrap bundle on first contact and against the bundle of the
// last answer afterwards. A renewal presents the current certificate as the
// client certificate (that is its authentication); the channel is made for
// each call, because the credentials are the material of that moment.
// `insecure`: plain text (a control plane started with --insecure): a first
// certificate through a join token still works, a renewal cannot (there is
// no client certificate to present).

import * as grpc from '@grpc/grpc-js';
import type { PeerCertificate } from 'node:tls';
import type { CertifyAnswer, CertifyCredential } from '../../proxy/identity/renewing-source.js';
import { extensionsOf } from '../../proxy/identity/certificate-facts.js';
import { parseMeshIdentity } from '../../proxy/identity/spiffe.js';
import { callError } from '../grpc-status.js';
import type { IdentityClient as WireIdentityClient } from '../generated/vsockmesh/identity/v1/Identity.js';
import type { JoinTokensClient as WireJoinTokensClient } from '../generated/vsockmesh/identity/v1/JoinTokens.js';
import type { CertifyResponse__Output } from '../generated/vsockmesh/identity/v1/CertifyResponse.js';
import type { CreateJoinTokenRequest } from '../generated/vsockmesh/identity/v1/CreateJoinTokenRequest.js';
import type { CreateJoinTokenResponse__Output } from '../generated/vsockmesh/identity/v1/CreateJoinTokenResponse.js';
import type { JoinTokenInfo__Output } from '../generated/vsockmesh/identity/v1/JoinTokenInfo.js';
import { identityProto } from '../proto.js';

export interface CertifyClientOptions {
  trustDomain: string;
  /** PEM roots to check the control plane with before there is a certificate (first contact). */
  bootstrapBundlePem?: string;
  /** Plain text: only against a control plane started with --insecure. */
  insecure?: boolean;
  timeoutMs?: number;
}

/** The certify() a renewing source is given (proxy/identity/renewing-source.ts): one Certify call per use. */
export function certifyClient(address: string, options: CertifyClientOptions): (csrPem: string, credential: CertifyCredential) => Promise<CertifyAnswer> {
  if (options.insecure !== true && options.bootstrapBundlePem === undefined) throw new Error('certify client: a bootstrap trust bundle is required unless insecure');
  const timeoutMs = options.timeoutMs ?? 10_000;
  return async (csrPem, credential) => {
    const credentials = channelCredentials(options, credential);
    const Client = identityProto().vsockmesh.identity.v1.Identity;
    // A name for SNI (an IP address is not allowed there); the server's identity is checked by its SPIFFE ID, not by this name.
    const client: WireIdentityClient = new Client(address, credentials, options.insecure === true ? {} : { 'grpc.ssl_target_name_override': options.trustDomain });
    try {
      const response = await new Promise<CertifyResponse__Output>((resolve, reject) => {
        const request = 'joinToken' in credential ? { csr: csrPem, join_token: credential.joinToken } : { csr: csrPem, client_chain: credential.material.chainPem };
        client.Certify(request, { deadline: new Date(Date.now() + timeoutMs) }, (err, res) => (err ? reject(callError(err)) : resolve(res!)));
      });
      return { chainPem: response.certificate_chain, bundlePem: response.trust_bundle, notAfter: new Date(response.not_after_ms) };
    } finally {
      client.close();
    }
  };
}

function channelCredentials(options: CertifyClientOptions, credential: CertifyCredential): grpc.ChannelCredentials {
  if (options.insecure === true) return grpc.credentials.createInsecure();
  const verify = { checkServerIdentity: (_host: string, cert: PeerCertificate) => controlPlaneIdentityProblem(cert, options.trustDomain) };
  if ('material' in credential) {
    const m = credential.material;
    return grpc.credentials.createSsl(Buffer.from(m.bundlePem), Buffer.from(m.keyPem), Buffer.from(m.chainPem), verify);
  }
  return grpc.credentials.createSsl(Buffer.from(options.bootstrapBundlePem!), null, null, verify);
}

/** The server certificate must name a control-plane replica of the trust domain (the chain itself is checked by TLS against the bundle). */
function controlPlaneIdentityProblem(cert: PeerCertificate, trustDomain: string): Error | undefined {
  let uris: string[];
  try {
    uris = extensionsOf(cert.raw).uriSans;
  } catch {
    return new Error('the control plane\'s certificate does not parse');
  }
  const id = uris.length === 1 ? parseMeshIdentity(uris[0]!) : undefined;
  if (id?.ok !== true || id.value.kind !== 'cp' || id.value.trustDomain !== trustDomain) {
    return new Error(`the server is not a control plane of ${trustDomain} (its certificate names ${uris.join(', ') || 'no SPIFFE ID'})`);
  }
  return undefined;
}

/** The JoinTokens API as `ctl tokens` uses it; a failed call rejects with a CallError. */
export class JoinTokensApiClient {
  private readonly client: WireJoinTokensClient;

  constructor(
    readonly address: string,
    private readonly timeoutMs = 5_000,
    credentials: grpc.ChannelCredentials = grpc.credentials.createInsecure(),
  ) {
    const Client = identityProto().vsockmesh.identity.v1.JoinTokens;
    this.client = new Client(address, credentials);
  }

  private call<Res>(start: (o: { deadline: Date }, cb: (err: grpc.ServiceError | null, res?: Res) => void) => void): Promise<Res> {
    return new Promise((resolve, reject) => {
      start({ deadline: new Date(Date.now() + this.timeoutMs) }, (err, res) => (err ? reject(callError(err)) : resolve(res as Res)));
    });
  }

  create(request: CreateJoinTokenRequest): Promise<CreateJoinTokenResponse__Output> {
    return this.call((o, cb) => this.client.CreateJoinToken(request, o, cb));
  }
  async list(): Promise<JoinTokenInfo__Output[]> {
    return (await this.call<{ tokens: JoinTokenInfo__Output[] }>((o, cb) => this.client.ListJoinTokens({}, o, cb))).tokens;
  }
  revoke(id: string): Promise<unknown> {
    return this.call((o, cb) => this.client.RevokeJoinToken({ id }, o, cb));
  }
  close(): void {
    this.client.close();
  }
}
