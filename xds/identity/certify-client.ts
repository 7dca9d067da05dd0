// The client side of Certify and of the JoinTokens API.
//
// Certify over TLS (security/transport.ts): the control plane must present an
// X509-SVID of the trust domain naming a control-plane replica
// (spiffe://<td>/cp/<name>), checked against the bootstrap bundle on first
// contact (no client certificate yet: the join token authenticates) and
// against the bundle of the current material afterwards. A renewal presents
// the current certificate as the client certificate (that is its
// authentication); the channel is made for each call, because the
// credentials are the material of that moment.

import * as grpc from '@grpc/grpc-js';
import { staticSource } from '../../proxy/identity/certificate-source.js';
import type { CertifyAnswer, CertifyCredential } from '../../proxy/identity/renewing-source.js';
import type { ForwardAttested } from '../../proxy/identity/attestation-endpoint.js';
import { unaryCall } from '../grpc-status.js';
import type { IdentityClient as WireIdentityClient } from '../generated/vsockmesh/identity/v1/Identity.js';
import type { JoinTokensClient as WireJoinTokensClient } from '../generated/vsockmesh/identity/v1/JoinTokens.js';
import type { CertifyResponse__Output } from '../generated/vsockmesh/identity/v1/CertifyResponse.js';
import type { CreateJoinTokenRequest } from '../generated/vsockmesh/identity/v1/CreateJoinTokenRequest.js';
import type { CreateJoinTokenResponse__Output } from '../generated/vsockmesh/identity/v1/CreateJoinTokenResponse.js';
import type { JoinTokenInfo__Output } from '../generated/vsockmesh/identity/v1/JoinTokenInfo.js';
import { identityProto } from '../proto.js';
import { bootstrapChannelCredentials, channelCredentials, channelOptions, type ControlTransport } from '../security/transport.js';

export interface CertifyClientOptions {
  trustDomain: string;
  /** PEM roots to check the control plane with before there is a certificate (first contact). */
  bootstrapBundlePem: string;
  timeoutMs?: number;
}

/** The certify() a renewing source is given (proxy/identity/renewing-source.ts): one Certify call per use. */
export function certifyClient(address: string, options: CertifyClientOptions): (csrPem: string, credential: CertifyCredential) => Promise<CertifyAnswer> {
  const timeoutMs = options.timeoutMs ?? 10_000;
  return async (csrPem, credential) => {
    const credentials = 'material' in credential ? channelCredentials({ source: staticSource(credential.material) }) : bootstrapChannelCredentials(options.trustDomain, options.bootstrapBundlePem);
    const Client = identityProto().vsockmesh.identity.v1.Identity;
    // A name for SNI (an IP address is not allowed there); the server's identity is checked by its SPIFFE ID, not by this name.
    const client: WireIdentityClient = new Client(address, credentials, { 'grpc.ssl_target_name_override': options.trustDomain });
    try {
      const request = 'joinToken' in credential ? { csr: csrPem, join_token: credential.joinToken } : { csr: csrPem, client_chain: credential.material.chainPem };
      const response = await unaryCall<CertifyResponse__Output>(timeoutMs, (o, cb) => client.Certify(request, o, cb));
      return { chainPem: response.certificate_chain, bundlePem: response.trust_bundle, notAfter: new Date(response.not_after_ms) };
    } finally {
      client.close();
    }
  };
}

/**
 * Identity.CertifyAttested as a host agent calls it: under its own identity
 * (`transport`, the same mutual TLS as its VM manager client), one channel for
 * the life of the returned client; its certificate's chain goes with each
 * request (a replica or a restarted CA may not know the intermediate). A
 * refusal rejects with a CallError.
 */
export function certifyAttestedClient(address: string, transport: ControlTransport, timeoutMs = 10_000): { forward: ForwardAttested; close(): void } {
  const Client = identityProto().vsockmesh.identity.v1.Identity;
  const client: WireIdentityClient = new Client(address, channelCredentials(transport), channelOptions(transport));
  return {
    forward: async ({ csr, vmId, cid }) => {
      const chain = 'source' in transport ? transport.source.current().chainPem : '';
      const response = await unaryCall<CertifyResponse__Output>(timeoutMs, (o, cb) => client.CertifyAttested({ csr, vm_id: vmId, cid, client_chain: chain }, o, cb));
      return { chainPem: response.certificate_chain, bundlePem: response.trust_bundle, notAfter: new Date(response.not_after_ms), spiffeId: response.spiffe_id };
    },
    close: () => client.close(),
  };
}

/** The JoinTokens API as `ctl tokens` uses it; a failed call rejects with a CallError. */
export class JoinTokensApiClient {
  private readonly client: WireJoinTokensClient;

  constructor(
    readonly address: string,
    transport: ControlTransport,
    private readonly timeoutMs = 5_000,
  ) {
    const Client = identityProto().vsockmesh.identity.v1.JoinTokens;
    this.client = new Client(address, channelCredentials(transport), channelOptions(transport));
  }

  private call<Res>(start: (o: { deadline: Date }, cb: (err: grpc.ServiceError | null, res?: Res) => void) => void): Promise<Res> {
    return unaryCall(this.timeoutMs, start);
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
