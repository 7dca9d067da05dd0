// The host agent's attestation endpoint: one request per connection from a
// guest (attestation-wire.ts), read within a size bound and a deadline; the
// guest is named by the CID the kernel gave at accept (attestor.ts decides
// against the VM manager's records); the CSR then goes to the CA under the
// host agent's own identity (Identity.CertifyAttested, injected: the client
// lives in xds/), and the chain, not_after and trust bundle, or a refusal with
// its reason, go back. Every outcome is counted in
// vsockmesh_attestations_total{result,reason}; refusals are logged (sampled).
// The stream is a seam: the vsock listener (listeners/attestation.ts) passes a
// VsockSocket and the kernel's CID, tests any Duplex and a CID of their choice.

import type { Duplex } from 'node:stream';
import { Counter, type Registry } from '../runtime/prom-client.js';
import type { VmRecord } from '../resolve/types.js';
import { errorCode } from '../runtime/errors.js';
import type { RefusalLog } from '../runtime/refusal-log.js';
import type { Logger } from '../runtime/log.js';
import { decodeAttestationRequest, encodeAttestationResponse, type AttestationRequest, type AttestationResponse } from './attestation-wire.js';
import { attestationTarget } from './attestor.js';

/** What the CA answered for an attested CSR. */
export interface AttestedCertificate {
  chainPem: string;
  bundlePem: string;
  notAfter: Date;
  spiffeId: string;
}

/** Identity.CertifyAttested under the host agent's identity; rejects with an Error carrying a gRPC `code` when refused. */
export type ForwardAttested = (request: { csr: string; vmId: string; cid: number }) => Promise<AttestedCertificate>;

export interface AttestationEndpointOptions {
  hypervisorId: string;
  /** The VMs the VM manager places on this hypervisor, asked for each request. */
  vmsOnHypervisor: () => Promise<VmRecord[]>;
  forward: ForwardAttested;
  /** How long a guest has to send its whole request. */
  requestTimeoutMs: number;
  logger: Logger;
  refusals: RefusalLog;
  metrics: Registry;
  /** `listener` in refusal lines. */
  name: string;
}

export type AttestationOutcome = { result: 'issued'; vmId: string; spiffeId: string } | { result: 'refused'; reason: string; message: string };

export class AttestationEndpoint {
  private readonly attestations: Counter<'result' | 'reason'>;

  constructor(private readonly options: AttestationEndpointOptions) {
    this.attestations = new Counter({
      name: 'vsockmesh_attestations_total',
      help: 'Attestation requests from guests over vsock: result issued (reason: attested) or refused (reason: why, here or at the CA)',
      labelNames: ['result', 'reason'],
      registers: [options.metrics],
    });
  }

  /** Serves one guest connection to the end (the stream is ended or destroyed when this resolves). */
  async handle(stream: Duplex, peerCid: number): Promise<AttestationOutcome> {
    const outcome = await this.answer(stream, peerCid);
    this.attestations.inc({ result: outcome.result, reason: outcome.result === 'issued' ? 'attested' : outcome.reason });
    if (outcome.result === 'issued') this.options.logger.info({ listener: this.options.name, source_cid: peerCid, vm_id: outcome.vmId, spiffe_id: outcome.spiffeId }, `attested ${outcome.vmId} at CID ${peerCid}: certificate issued`);
    else this.options.refusals.warn({ listener: this.options.name, source_cid: peerCid, reason: outcome.reason }, `attestation refused: ${outcome.message}`);
    return outcome;
  }

  private async answer(stream: Duplex, peerCid: number): Promise<AttestationOutcome> {
    const request = await readRequest(stream, this.options.requestTimeoutMs);
    if (!request.ok) {
      // Nothing to answer on a connection that is gone or silent.
      if (request.reason === 'request_timeout' || request.reason === 'peer_closed') stream.destroy();
      else await reply(stream, { ok: false, reason: request.reason, message: request.message });
      return { result: 'refused', reason: request.reason, message: request.message };
    }
    const refused = async (reason: string, message: string): Promise<AttestationOutcome> => {
      await reply(stream, { ok: false, reason, message });
      return { result: 'refused', reason, message };
    };
    let vms: VmRecord[];
    try {
      vms = await this.options.vmsOnHypervisor();
    } catch (err) {
      return refused('vm_manager_unavailable', `the VM manager could not be asked which VM has CID ${peerCid}: ${(err as Error).message}`);
    }
    const target = attestationTarget(request.value, peerCid, this.options.hypervisorId, vms);
    if (!target.ok) return refused(target.reason, target.message);
    let issued: AttestedCertificate;
    try {
      issued = await this.options.forward({ csr: request.value.csr, vmId: target.vm.vmId, cid: peerCid });
    } catch (err) {
      const code = errorCode(err);
      return refused(code === 'PERMISSION_DENIED' || code === 'INVALID_ARGUMENT' || code === 'UNAUTHENTICATED' ? 'ca_refused' : 'ca_unavailable', `the CA: ${(err as Error).message}`);
    }
    await reply(stream, { ok: true, certificateChain: issued.chainPem, notAfterMs: issued.notAfter.getTime(), trustBundle: issued.bundlePem, spiffeId: issued.spiffeId });
    return { result: 'issued', vmId: target.vm.vmId, spiffeId: issued.spiffeId };
  }
}

type ReadResult = { ok: true; value: AttestationRequest } | { ok: false; reason: 'request_timeout' | 'peer_closed' | 'request_too_large' | 'malformed_request'; message: string };

/** One request frame, within the size bound and the deadline; bytes after it are ignored. */
function readRequest(stream: Duplex, timeoutMs: number): Promise<ReadResult> {
  return new Promise((resolve) => {
    let buffered: Buffer = Buffer.alloc(0);
    const settle = (r: ReadResult): void => {
      clearTimeout(deadline);
      stream.off('data', onData);
      stream.off('end', onEnd);
      stream.off('error', onEnd);
      stream.pause();
      resolve(r);
    };
    const deadline = setTimeout(() => settle({ ok: false, reason: 'request_timeout', message: `no complete request within ${timeoutMs} ms (${buffered.length} bytes received)` }), timeoutMs);
    const onEnd = (): void => settle({ ok: false, reason: 'peer_closed', message: `the guest closed after ${buffered.length} bytes of an incomplete request` });
    const onData = (chunk: Buffer): void => {
      buffered = buffered.length === 0 ? chunk : Buffer.concat([buffered, chunk]);
      const decoded = decodeAttestationRequest(buffered);
      if (decoded.kind === 'incomplete') return;
      if (decoded.kind === 'invalid') settle({ ok: false, reason: decoded.code === 'too_large' ? 'request_too_large' : 'malformed_request', message: decoded.reason });
      else settle({ ok: true, value: decoded.value });
    };
    stream.on('data', onData);
    stream.on('end', onEnd);
    stream.on('error', onEnd);
  });
}

/** Writes the answer and ends the stream (the guest reads to EOF); whatever the guest sends after its request is discarded until it closes. */
function reply(stream: Duplex, response: AttestationResponse): Promise<void> {
  return new Promise((resolve) => {
    stream.once('error', () => resolve());
    stream.resume();
    stream.end(encodeAttestationResponse(response), () => resolve());
  });
}
