// What the control plane keeps per xDS node does not grow with every node id
// ever seen: real ADS streams (gRPC on 127.0.0.1) open and close; a node's
// sync status and snapshot are forgotten the status retention after its last
// stream closed, an open stream keeps them; GetSyncStatus and `ctl status`
// page; /config_dump shows the first page only; a NACK's text is cut.

import test from 'ava';
import * as grpc from '@grpc/grpc-js';
import { createLogger } from '../../proxy/runtime/log.js';
import { MAX_NACK_TEXT_BYTES, MAX_STATUS_PAGE_SIZE } from '../../xds/control-plane/bounds.js';
import { MeshConfigApiClient } from '../../xds/control-plane/config-api.js';
import { ControlPlane } from '../../xds/control-plane/control-plane.js';
import { MeshStore } from '../../xds/control-plane/mesh-store.js';
import { createAdsClient, TYPE_URLS, type AggregatedDiscoveryServiceClient, type DiscoveryResponse__Output } from '../../xds/envoy/proto.js';
import { Registry } from '../../xds/vm-manager/registry.js';
import { waitFor } from '../helpers/apps.js';
import { runCli, startCli, type CliProcess } from '../helpers/cli.js';
import { freePort } from '../helpers/haproxy.js';
import { vm } from '../helpers/vm-manager.js';

type AdsCall = grpc.ClientDuplexStream<unknown, DiscoveryResponse__Output>;

/** Opens a SotW stream as `nodeId`, asks for CDS and waits for the answer. */
async function openNode(client: AggregatedDiscoveryServiceClient, nodeId: string): Promise<{ call: AdsCall; first: DiscoveryResponse__Output }> {
  const call = client.StreamAggregatedResources() as unknown as AdsCall;
  call.on('error', () => undefined);
  const first = new Promise<DiscoveryResponse__Output>((resolve, reject) => {
    call.once('data', resolve);
    call.once('status', (s: grpc.StatusObject) => reject(new Error(`stream of ${nodeId} ended before a response: ${s.details}`)));
  });
  call.write({ node: { id: nodeId }, type_url: TYPE_URLS.Cluster });
  return { call, first: await first };
}

/** Half-closes the stream (the server processes what was sent first, then ends it) and waits for its end. */
async function closeNode(call: AdsCall): Promise<void> {
  const ended = new Promise<void>((resolve) => call.once('status', () => resolve()));
  call.end();
  await ended;
}

/** Each node id: a stream opened, answered (and NACKed when `nack` says so), closed; `concurrency` at a time. */
async function shortLived(client: AggregatedDiscoveryServiceClient, ids: string[], concurrency: number, nack: (id: string) => string | undefined = () => undefined): Promise<void> {
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < ids.length) {
      const id = ids[next++]!;
      const { call, first } = await openNode(client, id);
      const error = nack(id);
      if (error !== undefined) call.write({ type_url: TYPE_URLS.Cluster, response_nonce: first.nonce, error_detail: { code: 3, message: error } });
      await closeNode(call);
    }
  };
  await Promise.all(Array.from({ length: concurrency }, worker));
}

test('4,000 short-lived ADS node ids leave no status and no snapshot after the retention; a node with a stream open keeps both', async (t) => {
  const registry = new Registry();
  registry.registerHypervisor({ hypervisorId: 'hv-1', vsockMode: 'direct', relayPort: 0 });
  const vmIds = ['keeper', ...Array.from({ length: 100 }, (_, i) => `vm-${i}`)];
  vmIds.forEach((vmId, i) => registry.registerVm(vm({ vmId, hypervisorId: 'hv-1', vsockCid: 3 + i, addresses: [`10.0.${Math.floor(i / 250)}.${(i % 250) + 1}`], sidecar: { tcpPort: 15006, vsockPort: 0 } })));
  const mesh = MeshStore.fromConfig({ services: [{ name: 'web', port: 8080 }] });
  const plane = new ControlPlane({ mesh, logger: createLogger({ level: 'silent' }), vms: { registry }, transport: { insecure: true }, statusRetentionMs: 500 });
  const address = `127.0.0.1:${await plane.start('127.0.0.1:0')}`;
  const client = createAdsClient(address, grpc.credentials.createInsecure());
  t.teardown(async () => {
    client.close();
    await plane.stop();
  });

  const keeper = await openNode(client, 'keeper');
  t.teardown(() => keeper.call.cancel());
  // 100 are registered VMs (each gets a snapshot of its own), 3,900 are ids no VM has.
  const ids = [...vmIds.slice(1), ...Array.from({ length: 3_900 }, (_, i) => `gone-${i}`)];
  await shortLived(client, ids, 50);

  const nodesWithStatus = (): string[] => [...new Set(plane.ads.syncStatus().map((s) => s.nodeId))];
  await waitFor(() => nodesWithStatus().length === 1, 'every short-lived node forgotten', 60_000);
  t.deepEqual(nodesWithStatus(), ['keeper'], 'the node with a stream open keeps its status');
  t.deepEqual(plane.cache.nodeIds(), ['keeper'], 'and its snapshot; the others\' snapshots are gone');
  t.deepEqual([plane.ads.nodes.connected, plane.ads.nodes.disconnected, plane.ads.nodes.forgotten], [1, 0, 4_000], 'every short-lived node was tracked, then forgotten');

  const api = new MeshConfigApiClient(address, { insecure: true });
  t.teardown(() => api.close());
  const page = await api.syncStatus({ page_size: MAX_STATUS_PAGE_SIZE });
  t.deepEqual([page.statuses.map((s) => s.node_id), page.next_page_token], [['keeper'], '']);
  t.deepEqual(Object.keys(page.current_versions).map((k) => k.split('|')[0]).filter((n, i, all) => all.indexOf(n) === i), ['', 'keeper'], 'current versions only for the page\'s nodes');
});

async function startPlane(t: import('ava').ExecutionContext, extra: string[] = []): Promise<{ proc: CliProcess; address: string; admin: string }> {
  const adminPort = await freePort();
  const proc = startCli(['control-plane', '--listen', '127.0.0.1:0', '--insecure', '--admin-port', String(adminPort), ...extra]);
  t.teardown(() => proc.kill('SIGKILL'));
  const line = await proc.waitForLine((l) => l.msg === 'control-plane serving', 'control-plane serving', 60_000);
  return { proc, address: `127.0.0.1:${String(line.port)}`, admin: `http://127.0.0.1:${adminPort}` };
}

test('ctl status and GetSyncStatus page through every node kept; --node filters; /config_dump shows the first page; a NACK\'s text is cut to 4 KiB', async (t) => {
  const plane = await startPlane(t);
  const client = createAdsClient(plane.address, grpc.credentials.createInsecure());
  t.teardown(() => client.close());
  const ids = Array.from({ length: 250 }, (_, i) => `n-${String(i).padStart(3, '0')}`);
  const longError = `clusters[0]: ${'x'.repeat(10_000)}`;
  await shortLived(client, ids, 25, (id) => (id === 'n-007' ? longError : undefined));

  const all = await runCli(['ctl', '--insecure', '--control-plane', plane.address, '--timeout-ms', '30000', '-o', 'json', 'status', '--page-size', '100']);
  t.is(all.code, 0, all.stderr);
  const statuses = (JSON.parse(all.stdout) as { statuses: Array<{ node_id: string; last_nack_error: string }> }).statuses;
  t.deepEqual(
    statuses.map((s) => s.node_id),
    ids,
    'every node once (CDS only), in node id order, across three pages',
  );
  t.is(statuses[7]!.last_nack_error, `${longError.slice(0, MAX_NACK_TEXT_BYTES)}... (truncated, ${longError.length} bytes)`);

  const one = await runCli(['ctl', '--insecure', '--control-plane', plane.address, '--timeout-ms', '30000', 'status', '--node', 'n-042']);
  t.is(one.code, 0, one.stderr);
  t.regex(one.stdout, /^n-042\tCluster\tsent=\w+\tacked=-\n$/);

  const api = new MeshConfigApiClient(plane.address, { insecure: true }, 30_000);
  t.teardown(() => api.close());
  const big = await api.syncStatus({ page_size: 1_000 });
  t.is(big.statuses.length, MAX_STATUS_PAGE_SIZE, 'a larger page_size is lowered to the most');
  t.not(big.next_page_token, '');
  const rest = await api.syncStatus({ page_size: 1_000, page_token: big.next_page_token });
  t.deepEqual([rest.statuses[0]!.node_id, rest.statuses.length, rest.next_page_token], ['n-200', 50, '']);
  const bad = await t.throwsAsync(api.syncStatus({ page_token: 'not-a-token' }));
  t.regex(bad.message, /^INVALID_ARGUMENT: page_token: /);

  const dump = (await (await fetch(`${plane.admin}/config_dump`)).json()) as { sync: { connected_nodes: number; disconnected_nodes: number; statuses: Array<{ nodeId: string }>; truncated?: string } };
  t.is(dump.sync.statuses.length, 100);
  t.deepEqual([dump.sync.connected_nodes, dump.sync.disconnected_nodes], [0, 250]);
  t.regex(dump.sync.truncated ?? '', /first 100 nodes/);
});

test('--status-retention-ms: the status of a node gone that long is forgotten, and counted', async (t) => {
  const plane = await startPlane(t, ['--status-retention-ms', '300']);
  const client = createAdsClient(plane.address, grpc.credentials.createInsecure());
  t.teardown(() => client.close());
  await shortLived(client, ['a', 'b', 'c'], 3);
  const api = new MeshConfigApiClient(plane.address, { insecure: true }, 30_000);
  t.teardown(() => api.close());
  await waitFor(async () => (await api.syncStatus()).statuses.length === 0, 'the statuses forgotten', 60_000);
  const stats = await (await fetch(`${plane.admin}/stats`)).text();
  t.regex(stats, /^vsockmesh_xds_nodes_forgotten_total 3$/m);
  t.regex(stats, /^vsockmesh_xds_nodes\{state="disconnected"\} 0$/m);
});
