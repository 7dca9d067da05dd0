// The inbound warm path under a real control plane (README, "The inbound warm
// path"): the inbound listener is pushed over xDS, a connection to a port is
// decided in JavaScript and the next one replayed by the core; then the
// control plane takes the port away (the VM no longer serves it), and the
// next connection to it follows the new config: refused, not replayed. The
// changed listener is a new one (its own warm listener id), so this holds by
// the listener's replacement; the generation bump in xds-applier.ts is not
// what it rests on (the test passes with it removed).

import test, { type ExecutionContext } from 'ava';
import { TLV, encodeProxyHeader, textTlv } from '../../proxy/proxy-protocol.js';
import type { InboundListener } from '../../proxy/listeners/inbound.js';
import type { Listener } from '../../proxy/listeners/listener.js';
import { createLogger } from '../../proxy/runtime/log.js';
import { ControlPlane } from '../../xds/control-plane/control-plane.js';
import { MeshStore } from '../../xds/control-plane/mesh-store.js';
import { Registry } from '../../xds/vm-manager/registry.js';
import { collect, connect, startEchoServer, waitFor, type TestServer } from '../helpers/apps.js';
import { freePort } from '../helpers/haproxy.js';
import { metricValue, startSidecar, type TestSidecar } from '../helpers/sidecars.js';
import { vm } from '../helpers/vm-manager.js';

const SLOW = 30_000;
const LISTENER = 'inbound|vm-c';

interface World {
  registry: Registry;
  c: TestSidecar;
  db: TestServer;
  cache: TestServer;
  inboundPort: number;
}

/** vm-c serves db and cache, everything from xDS (peer modes DISABLE: plain-text hops, the warm path's slice). */
async function world(t: ExecutionContext): Promise<World> {
  const db = await startEchoServer();
  const cache = await startEchoServer();
  const inboundPort = await freePort();
  const registry = new Registry();
  registry.registerHypervisor({ hypervisorId: 'hv-1', vsockMode: 'host-relay', relayPort: 15100 });
  registry.registerVm(vmC(inboundPort, db, cache));
  const mesh = MeshStore.fromConfig({
    services: [
      { name: 'db', port: db.port, outbound_port: await freePort() },
      { name: 'cache', port: cache.port, outbound_port: await freePort() },
    ],
    peer_authentication: [{ name: 'mesh', mode: 'DISABLE' }],
  });
  const plane = new ControlPlane({ mesh, logger: createLogger({ level: 'silent' }), vms: { registry }, transport: { insecure: true }, debounce: { quietMs: 10, maxMs: 100 } });
  const address = `127.0.0.1:${await plane.start('127.0.0.1:0')}`;
  const c = await startSidecar({ node: { id: 'vm-c' }, vsock: { enabled: false }, xds: { address }, insecure: true });
  t.teardown(async () => {
    await c.sidecar.stop();
    await plane.stop();
    await db.close();
    await cache.close();
  });
  await waitFor(() => (c.sidecar as unknown as { listeners: Listener[] }).listeners.some((l) => l.name === LISTENER), "vm-c's inbound listener from the control plane", SLOW);
  return { registry, c, db, cache, inboundPort };
}

function vmC(inboundPort: number, ...apps: TestServer[]): ReturnType<typeof vm> {
  const services = [
    { name: 'db', port: apps[0]!.port },
    { name: 'cache', port: apps[1]?.port ?? 0 },
  ].filter((s) => s.port !== 0);
  return vm({ vmId: 'vm-c', hypervisorId: 'hv-1', vsockCid: 5, addresses: ['127.0.0.1'], sidecar: { tcpPort: inboundPort, vsockPort: 0 }, services });
}

/** The inbound listener vm-c serves now (a changed one is a new listener). */
function inbound(w: World): InboundListener {
  const listeners = (w.c.sidecar as unknown as { listeners: Listener[] }).listeners;
  return listeners.find((l) => l.name === LISTENER && !(l as unknown as { draining: boolean }).draining) as InboundListener;
}

/** One hop from a peer sidecar to `dstPort`: what came back (the echo when relayed, nothing when refused). */
async function hop(w: World, dstPort: number, text: string): Promise<string> {
  const header = encodeProxyHeader({
    command: 'proxy',
    addresses: { family: 'inet', transport: 'stream', source: { address: '10.0.0.1', port: 40000 }, destination: { address: '127.0.0.1', port: dstPort } },
    tlvs: [textTlv(TLV.VSOCKMESH_SOURCE_VM, 'vm-a')],
  });
  const socket = await connect(w.inboundPort);
  const seen = collect(socket);
  socket.end(Buffer.concat([header, Buffer.from(text)]));
  return (await seen).data.toString();
}

test('a port the control plane takes away: replayed by the core before the change, refused (undeclared_port) right after it, while the port it keeps is still replayed', async (t) => {
  const w = await world(t);
  const before = inbound(w);
  t.is(await hop(w, w.cache.port, 'decide'), 'decide');
  t.is(await hop(w, w.cache.port, 'replay'), 'replay');
  await waitFor(() => before.warmFinishedCount === 1, 'the second connection to cache replayed by the core', SLOW);
  t.is(w.cache.accepted, 2);

  // vm-c no longer serves cache: the control plane pushes its inbound listener without that port.
  w.registry.registerVm(vmC(w.inboundPort, w.db));
  const ports = (): number[] => (w.c.sidecar.configDump() as { xds: { applied: { listeners: Array<{ name: string; ports?: number[] }> } } }).xds.applied.listeners.find((l) => l.name === LISTENER)?.ports ?? [];
  await waitFor(() => ports().join() === String(w.db.port), 'the inbound listener without the cache port', SLOW);

  t.is(await hop(w, w.cache.port, 'stale'), '', 'refused: the port is not declared any more');
  t.is(w.cache.accepted, 2, 'the app behind the removed port got nothing');
  t.is(await metricValue(w.c.sidecar, 'vsockmesh_connections_refused_total', { listener: LISTENER, reason: 'undeclared_port' }), 1);
  const after = inbound(w);
  // Why: a listener whose ports changed is opened anew (xds-applier.ts), under a warm listener id of its own;
  // the old one's decisions cannot match it, whatever the generation (this holds with the applier's bump removed too).
  t.not(after, before, 'the changed listener is a new one');
  t.is(await hop(w, w.db.port, 'decide'), 'decide');
  t.is(await hop(w, w.db.port, 'replay'), 'replay');
  await waitFor(() => after.warmFinishedCount === 1, 'the kept port replayed on the new config', SLOW);
});
