// The host agent's attestation listener (vsock, on the hypervisor): a guest
// connects to CID 2 at the attestation port, the kernel names its CID at
// accept, and the endpoint (identity/attestation-endpoint.ts) serves the one
// request of the connection.

import type { AttestationEndpoint } from '../identity/attestation-endpoint.js';
import { VsockSocket } from '../native/vsock.js';
import type { SocketHost } from '../native/index.js';
import { Listener, type ListenerContext } from './listener.js';

/** How long a guest has to close after its answer was sent. */
const LINGER_MS = 10_000;

export class AttestationListener extends Listener {
  constructor(
    options: { cid: number; port: number; maxConnections: number | null },
    context: ListenerContext,
    private readonly endpoint: AttestationEndpoint,
  ) {
    super('attestation', [{ family: 'vsock', host: options.cid }], options.port, context, options.maxConnections);
  }

  protected onConnection(fd: number, peerHost: SocketHost, peerPort: number): void {
    const socket = new VsockSocket({ fd, remoteCid: Number(peerHost), remotePort: peerPort });
    socket.on('error', () => {});
    const connection = { abort: () => socket.destroy() };
    this.track(connection);
    socket.once('close', () => this.untrack(connection));
    void this.endpoint.handle(socket, Number(peerHost)).then(() => {
      // The answer is sent; a guest that keeps its side open does not keep the connection.
      const linger = setTimeout(() => socket.destroy(), LINGER_MS);
      socket.once('close', () => clearTimeout(linger));
    });
  }
}
