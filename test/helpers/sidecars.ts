// Sidecars inside the test process, each with its own metrics and a log
// capture, on port 0.

import { parseSidecarConfig } from '../../proxy/config/load.js';
import { createLogger } from '../../proxy/runtime/log.js';
import type { ProxyServer } from '../../proxy/server.js';
import type { Sidecar } from '../../proxy/sidecar.js';
import { createSidecar } from '../../proxy/cmd/proxies.js';
import { metricSum } from './admin-http.js';
import { startEchoServer, type TestServer } from './apps.js';
import { LogCapture } from './log-capture.js';

export { LogCapture, type LogLine } from './log-capture.js';

export interface TestSidecar {
  sidecar: Sidecar;
  logs: LogCapture;
}

/** Starts a sidecar from config data (YAML-shaped, snake_case); admin on port 0 unless given. */
export async function startSidecar(config: Record<string, unknown>): Promise<TestSidecar> {
  const logs = new LogCapture();
  const parsed = parseSidecarConfig({ admin: { port: 0 }, drain_timeout: '5s', ...config });
  const sidecar = await createSidecar(parsed, { logger: createLogger({ level: 'debug', destination: logs }) });
  await sidecar.start();
  return { sidecar, logs };
}

export interface Mesh {
  app: TestServer;
  /** Server side: inbound listener "inbound" declaring the app's port. */
  b: TestSidecar;
  /** Client side: outbound listener "out" to cluster "app" whose endpoint is the app via b. */
  a: TestSidecar;
  /** Port the client dials (a's outbound listener). */
  port: number;
  stop(): Promise<void>;
}

/** client -> sidecar a (outbound) -> sidecar b (inbound) -> app. Default app: echo. */
export async function startMesh(
  options: {
    app?: TestServer;
    inbound?: Record<string, unknown>;
    outbound?: Record<string, unknown>;
    cluster?: Record<string, unknown>;
    /** peer_tls sections of a and b (test/helpers/peer-tls.ts). */
    peerTls?: { a?: Record<string, unknown>; b?: Record<string, unknown> };
  } = {},
): Promise<Mesh> {
  const app = options.app ?? (await startEchoServer());
  // What started is stopped when a later part fails to start: a test whose mesh never came up has no stop to call,
  // and a sidecar left running keeps the test process (and the whole run) from exiting.
  const started: Array<() => Promise<void>> = [() => app.close()];
  const undo = async (err: unknown): Promise<never> => {
    for (const stop of started.reverse()) await stop().catch(() => {});
    throw err;
  };
  const b = await startSidecar({
    node: { id: 'vm-b' },
    ...(options.peerTls?.b && { peer_tls: options.peerTls.b }),
    listeners: [{ kind: 'inbound', name: 'inbound', addresses: ['127.0.0.1'], port: 0, ports: [app.port], ...options.inbound }],
  }).catch(undo);
  started.push(() => b.sidecar.stop());
  const inbound = b.sidecar.listenerAddress('inbound');
  const a = await startSidecar({
    node: { id: 'vm-a' },
    ...(options.peerTls?.a && { peer_tls: options.peerTls.a }),
    listeners: [{ kind: 'outbound', name: 'out', port: 0, cluster: 'app', ...options.outbound }],
    clusters: [
      {
        name: 'app',
        authority: 'app.mesh',
        endpoints: [{ address: '127.0.0.1', port: app.port, vm_id: 'vm-b', peer: { address: inbound.address, port: inbound.port } }],
        ...options.cluster,
      },
    ],
  }).catch(undo);
  return {
    app,
    a,
    b,
    port: a.sidecar.listenerAddress('out').port,
    stop: async () => {
      await a.sidecar.stop();
      await b.sidecar.stop();
      await app.close();
    },
  };
}

/** Sums the samples of a metric from a sidecar's /stats text (0 when absent). */
export async function metricValue(sidecar: ProxyServer, name: string, labels: Record<string, string> = {}): Promise<number> {
  return metricSum(await sidecar.metrics.render(), name, labels);
}

/** The sum of a metric's samples whose labels include `labels`, from Prometheus text (0 when absent). */
export { metricSum as sampleValue } from './admin-http.js';
