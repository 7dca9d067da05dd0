// A sidecar's first certificate from the host agent that runs its VM: the CSR
// and the VM id go over vsock to CID 2 (the host), where the host agent
// attests the VM by the CID the kernel stamps on the connection and forwards
// the CSR to the CA (README "Security: bootstrap"). One connection, one
// request, the answer read to EOF within a bound and a deadline. A refusal
// that asking again cannot change is a PERMISSION_DENIED error (the start
// fails with the reason); a host agent that cannot reach the VM manager or
// the CA, or cannot be reached, is retried by the renewing source.

import type { Duplex } from 'node:stream';
import { VsockmeshError } from '../runtime/errors.js';
import { connectVsock, VMADDR_CID_HOST } from '../native/vsock.js';
import { decodeAttestationResponse, encodeAttestationRequest, MAX_ATTESTATION_RESPONSE_BYTES } from './attestation-wire.js';
import type { CertifyAnswer } from './renewing-source.js';

/** Refusals that may pass: the host agent or what it depends on was unavailable. */
const TRANSIENT = new Set(['vm_manager_unavailable', 'ca_unavailable', 'request_timeout']);

export interface AttestationClientOptions {
  vmId: string;
  /** The host agent's attestation port on CID 2. */
  port: number;
  timeoutMs?: number;
  /** The connection to the host agent (default: vsock to CID 2 at `port`); tests pass a stream of their own. */
  connect?: () => Duplex;
}

export function attestationClient(options: AttestationClientOptions): (csrPem: string) => Promise<CertifyAnswer> {
  const timeoutMs = options.timeoutMs ?? 30_000;
  const connect = options.connect ?? (() => connectVsock({ cid: VMADDR_CID_HOST, port: options.port, timeoutMs }));
  return (csrPem) =>
    new Promise<CertifyAnswer>((resolve, reject) => {
      const stream = connect();
      let buffered: Buffer = Buffer.alloc(0);
      let settled = false;
      const settle = (err: Error | null, answer?: CertifyAnswer): void => {
        if (settled) return;
        settled = true;
        clearTimeout(deadline);
        stream.destroy();
        if (err) reject(err);
        else resolve(answer!);
      };
      const where = `the host agent (vsock CID ${VMADDR_CID_HOST} port ${options.port})`;
      const deadline = setTimeout(() => settle(new Error(`no answer from ${where} within ${timeoutMs} ms`)), timeoutMs);
      stream.on('error', (err) => settle(new Error(`${where}: ${err.message}`, { cause: err })));
      stream.on('data', (chunk: Buffer) => {
        buffered = Buffer.concat([buffered, chunk]);
        if (buffered.length > MAX_ATTESTATION_RESPONSE_BYTES) settle(new Error(`${where} answered more than ${MAX_ATTESTATION_RESPONSE_BYTES} bytes`));
      });
      stream.on('end', () => {
        const decoded = decodeAttestationResponse(buffered);
        if (decoded.kind !== 'done') {
          settle(new Error(`${where} closed without a complete answer (${decoded.kind === 'invalid' ? decoded.reason : `${buffered.length} bytes`})`));
          return;
        }
        const r = decoded.value;
        if (!r.ok) {
          settle(new VsockmeshError(TRANSIENT.has(r.reason) ? 'UNAVAILABLE' : 'PERMISSION_DENIED', `${where} refused the attestation: ${r.message} (${r.reason})`));
          return;
        }
        settle(null, { chainPem: r.certificateChain, bundlePem: r.trustBundle, notAfter: new Date(r.notAfterMs) });
      });
      stream.end(encodeAttestationRequest({ csr: csrPem, vmId: options.vmId }));
    });
}
