// Sidecars (and a host relay) inside the guest process, talking over real
// vsock (vsock_loopback: every sidecar is at CID 1, told apart by port).

import { parseHostRelayConfig } from '../../proxy/config/load.js';
import { HostRelay } from '../../proxy/host-relay.js';
import { createLogger } from '../../proxy/runtime/log.js';
import { startEchoServer, type TestServer } from '../helpers/apps.js';
import { LogCapture, startSidecar, type TestSidecar } from '../helpers/sidecars.js';

export interface VsockMesh {
  app: TestServer;
  /** Server side: inbound "in-tcp" (TCP) and "in-vsock" (vsock, allowing `allowedPeerCids`). */
  b: TestSidecar;
  /** Client side: outbound "out" to the app, vsock first, TCP peer as fallback unless `tcpFallback: false`. */
  a: TestSidecar;
  port: number;
  vsockPort: number;
  stop(): Promise<void>;
}

export interface VsockMeshOptions {
  app?: TestServer;
  vsockEnabled?: boolean;
  allowedPeerCids?: number[];
  /** Overrides the endpoint's vsock address (default: b's vsock inbound, direct). */
  endpointVsock?: Record<string, unknown>;
  tcpFallback?: boolean;
  breakerWindow?: string;
  /** vsock connect deadline of sidecar A (default 1s; emulated CPUs under load need more). */
  vsockConnectTimeout?: string;
}

export interface ServerSide {
  app: TestServer;
  b: TestSidecar;
  tcp: { address: string; port: number };
  vsockPort: number;
}

/** The app and sidecar B: inbound "in-tcp" and "in-vsock" (any vsock port). */
export async function startServerSide(options: Pick<VsockMeshOptions, 'app' | 'allowedPeerCids'> = {}): Promise<ServerSide> {
  const app = options.app ?? (await startEchoServer());
  const b = await startSidecar({
    node: { id: 'vm-b' },
    listeners: [
      { kind: 'inbound', name: 'in-tcp', addresses: ['127.0.0.1'], port: 0, ports: [app.port] },
      { kind: 'inbound', name: 'in-vsock', transport: 'vsock', port: 0, allowed_peer_cids: options.allowedPeerCids ?? [1], ports: [app.port] },
    ],
  });
  return { app, b, tcp: b.sidecar.listenerAddress('in-tcp'), vsockPort: b.sidecar.listenerAddress('in-vsock').port };
}

/** Sidecar A: outbound "out" to the app behind `server`. */
export async function startClientSide(server: ServerSide, options: Omit<VsockMeshOptions, 'app' | 'allowedPeerCids'> = {}): Promise<TestSidecar> {
  return startSidecar({
    node: { id: 'vm-a' },
    vsock: { enabled: options.vsockEnabled ?? true, breaker_window: options.breakerWindow ?? '30s', connect_timeout: options.vsockConnectTimeout ?? '1s' },
    listeners: [{ kind: 'outbound', name: 'out', port: 0, cluster: 'app' }],
    clusters: [
      {
        name: 'app',
        authority: 'app.mesh',
        endpoints: [
          {
            address: '127.0.0.1',
            port: server.app.port,
            vm_id: 'vm-b',
            ...(options.tcpFallback !== false && { peer: server.tcp }),
            vsock: options.endpointVsock ?? { cid: 1, port: server.vsockPort },
          },
        ],
      },
    ],
  });
}

export async function startVsockMesh(options: VsockMeshOptions = {}): Promise<VsockMesh> {
  const server = await startServerSide(options);
  const a = await startClientSide(server, options);
  return {
    app: server.app,
    a,
    b: server.b,
    port: a.sidecar.listenerAddress('out').port,
    vsockPort: server.vsockPort,
    stop: async () => {
      await a.sidecar.stop();
      await server.b.sidecar.stop();
      await server.app.close();
    },
  };
}

export interface TestRelay {
  relay: HostRelay;
  logs: LogCapture;
  port: number;
}

/** A host relay on vsock (any port); `policy` in the YAML shape. */
export async function startRelay(policy: unknown[]): Promise<TestRelay> {
  const logs = new LogCapture();
  const relay = new HostRelay(parseHostRelayConfig({ node: { id: 'hv-1' }, admin: { port: 0 }, listen: { port: 0 }, header_timeout: '5s', policy }), {
    logger: createLogger({ level: 'debug', destination: logs }),
  });
  await relay.start();
  return { relay, logs, port: relay.listenerAddress('relay').port };
}
