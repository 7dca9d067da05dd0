import test from 'ava';
import * as grpc from '@grpc/grpc-js';
import {
  adsServiceDefinition,
  createAdsClient,
  envoyPackageDefinition,
  envoyProto,
  packAny,
  RESOURCE_TYPE_URLS,
  TYPE_URLS,
  unpackAny,
  type Cluster,
  type ClusterLoadAssignment,
  type DiscoveryRequest__Output,
  type DiscoveryResponse,
  type Listener,
  type RouteConfiguration,
} from '../../xds/envoy/proto.js';
import type { Struct } from '../../xds/generated/envoy/google/protobuf/Struct.js';

const cluster: Cluster = {
  name: 'payments',
  type: 'EDS',
  connect_timeout: { seconds: 1, nanos: 500_000_000 },
  lb_policy: 'ROUND_ROBIN',
  eds_cluster_config: { service_name: 'payments', eds_config: { ads: {}, resource_api_version: 'V3' } },
};

const vmFacts: Struct = {
  fields: {
    vm_id: { stringValue: 'vm-payments-1' },
    hypervisor_id: { stringValue: 'hv-7' },
    vsock_cid: { numberValue: 42 },
    vsock_port: { numberValue: 15010 },
    tcp_port: { numberValue: 8080 },
  },
};

const assignment: ClusterLoadAssignment = {
  cluster_name: 'payments',
  endpoints: [
    {
      locality: { region: 'eu', zone: 'eu-1a' },
      lb_endpoints: [
        {
          endpoint: { address: { socket_address: { address: '10.0.3.7', port_value: 8080 } } },
          health_status: 'HEALTHY',
          load_balancing_weight: { value: 3 },
          metadata: { filter_metadata: { vsockmesh: vmFacts } },
        },
      ],
    },
  ],
};

const listener: Listener = {
  name: 'payments-outbound',
  address: { socket_address: { address: '127.0.0.1', port_value: 15001 } },
  filter_chains: [
    {
      filters: [
        {
          name: 'envoy.filters.network.tcp_proxy',
          typed_config: packAny(TYPE_URLS.TcpProxy, { stat_prefix: 'payments', cluster: 'payments' }),
        },
      ],
    },
  ],
};

const routeConfiguration: RouteConfiguration = {
  name: 'http-routes',
  virtual_hosts: [
    {
      name: 'payments',
      domains: ['payments', 'payments.mesh:8080'],
      routes: [{ name: 'all', match: { prefix: '/api/' }, route: { cluster: 'payments', timeout: { seconds: 15 } } }],
    },
  ],
};

test('the package definition has the ADS service and every root type', (t) => {
  const definition = envoyPackageDefinition();
  for (const url of Object.values(TYPE_URLS)) t.truthy(definition[url.slice(url.lastIndexOf('/') + 1)], url);
  const service = adsServiceDefinition();
  t.is(service.StreamAggregatedResources.path, '/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources');
  t.is(service.DeltaAggregatedResources.path, '/envoy.service.discovery.v3.AggregatedDiscoveryService/DeltaAggregatedResources');
  t.true(service.StreamAggregatedResources.requestStream && service.StreamAggregatedResources.responseStream);
  t.true(service.DeltaAggregatedResources.requestStream && service.DeltaAggregatedResources.responseStream);
  t.is(typeof envoyProto().envoy.config.cluster.v3.Cluster.serialize, 'function');
  t.deepEqual(RESOURCE_TYPE_URLS, [TYPE_URLS.Cluster, TYPE_URLS.ClusterLoadAssignment, TYPE_URLS.Listener, TYPE_URLS.RouteConfiguration]);
});

test('a Cluster (EDS over ADS) round-trips through Any', (t) => {
  const any = packAny(TYPE_URLS.Cluster, cluster);
  t.is(any.type_url, 'type.googleapis.com/envoy.config.cluster.v3.Cluster');
  t.true(Buffer.isBuffer(any.value) && any.value.length > 0);
  const decoded = unpackAny(any, TYPE_URLS.Cluster);
  t.is(decoded.name, 'payments');
  t.is(decoded.type, 'EDS');
  t.is(decoded.cluster_discovery_type, 'type');
  t.is(decoded.lb_policy, 'ROUND_ROBIN');
  t.deepEqual(decoded.connect_timeout, { seconds: 1, nanos: 500_000_000 });
  t.is(decoded.eds_cluster_config?.service_name, 'payments');
  t.is(decoded.eds_cluster_config?.eds_config?.config_source_specifier, 'ads');
  t.deepEqual(decoded.eds_cluster_config?.eds_config?.ads, {});
  t.is(decoded.eds_cluster_config?.eds_config?.resource_api_version, 'V3');
});

test('a ClusterLoadAssignment keeps the vsockmesh endpoint metadata', (t) => {
  const decoded = unpackAny(packAny(TYPE_URLS.ClusterLoadAssignment, assignment), TYPE_URLS.ClusterLoadAssignment);
  t.is(decoded.cluster_name, 'payments');
  t.is(decoded.endpoints.length, 1);
  t.deepEqual(decoded.endpoints[0]!.locality, { region: 'eu', zone: 'eu-1a', sub_zone: '' });
  const lb = decoded.endpoints[0]!.lb_endpoints[0]!;
  t.is(lb.host_identifier, 'endpoint');
  t.is(lb.health_status, 'HEALTHY');
  t.is(lb.load_balancing_weight?.value, 3);
  const socket = lb.endpoint?.address?.socket_address;
  t.is(socket?.address, '10.0.3.7');
  t.is(socket?.port_value, 8080);
  t.is(socket?.port_specifier, 'port_value');
  t.is(socket?.protocol, 'TCP');
  const facts = lb.metadata?.filter_metadata['vsockmesh']?.fields;
  t.truthy(facts);
  t.deepEqual(facts!['vm_id'], { stringValue: 'vm-payments-1', kind: 'stringValue' });
  t.deepEqual(facts!['hypervisor_id'], { stringValue: 'hv-7', kind: 'stringValue' });
  t.deepEqual(facts!['vsock_cid'], { numberValue: 42, kind: 'numberValue' });
  t.deepEqual(facts!['vsock_port'], { numberValue: 15010, kind: 'numberValue' });
  t.deepEqual(facts!['tcp_port'], { numberValue: 8080, kind: 'numberValue' });
});

test('a Listener with a TCP proxy filter round-trips, and its typed_config unpacks', (t) => {
  const decoded = unpackAny(packAny(TYPE_URLS.Listener, listener), TYPE_URLS.Listener);
  t.is(decoded.name, 'payments-outbound');
  t.is(decoded.address?.socket_address?.port_value, 15001);
  const filter = decoded.filter_chains[0]!.filters[0]!;
  t.is(filter.name, 'envoy.filters.network.tcp_proxy');
  t.is(filter.config_type, 'typed_config');
  t.is(filter.typed_config?.type_url, TYPE_URLS.TcpProxy);
  const tcp = unpackAny(filter.typed_config!, TYPE_URLS.TcpProxy);
  t.is(tcp.stat_prefix, 'payments');
  t.is(tcp.cluster, 'payments');
  t.is(tcp.cluster_specifier, 'cluster');
});

test('a RouteConfiguration with a virtual host and a route to a cluster round-trips', (t) => {
  const decoded = unpackAny(packAny(TYPE_URLS.RouteConfiguration, routeConfiguration), TYPE_URLS.RouteConfiguration);
  t.is(decoded.name, 'http-routes');
  const host = decoded.virtual_hosts[0]!;
  t.is(host.name, 'payments');
  t.deepEqual(host.domains, ['payments', 'payments.mesh:8080']);
  const route = host.routes[0]!;
  t.is(route.name, 'all');
  t.is(route.match?.path_specifier, 'prefix');
  t.is(route.match?.prefix, '/api/');
  t.is(route.action, 'route');
  t.is(route.route?.cluster_specifier, 'cluster');
  t.is(route.route?.cluster, 'payments');
  t.deepEqual(route.route?.timeout, { seconds: 15, nanos: 0 });
});

test('HTTP connection manager and router typed configs round-trip', (t) => {
  const hcm = packAny(TYPE_URLS.HttpConnectionManager, {
    stat_prefix: 'ingress_http',
    codec_type: 'AUTO',
    rds: { route_config_name: 'http-routes', config_source: { ads: {}, resource_api_version: 'V3' } },
    http_filters: [{ name: 'envoy.filters.http.router', typed_config: packAny(TYPE_URLS.Router, {}) }],
  });
  const decoded = unpackAny(hcm, TYPE_URLS.HttpConnectionManager);
  t.is(decoded.stat_prefix, 'ingress_http');
  t.is(decoded.route_specifier, 'rds');
  t.is(decoded.rds?.route_config_name, 'http-routes');
  t.is(decoded.http_filters[0]!.name, 'envoy.filters.http.router');
  const router = unpackAny(decoded.http_filters[0]!.typed_config!, TYPE_URLS.Router);
  t.is(router.suppress_envoy_headers, false);
});

test('unpackAny rejects a type mismatch, an unknown type and bad bytes; the untyped form decodes by type_url', (t) => {
  const any = packAny(TYPE_URLS.Cluster, cluster);
  t.throws(() => unpackAny(any, TYPE_URLS.Listener), { message: /expected type\.googleapis\.com\/envoy\.config\.listener\.v3\.Listener/ });
  t.throws(() => unpackAny({ type_url: 'type.googleapis.com/no.such.Type', value: Buffer.alloc(0) }), { message: /unknown message type/ });
  t.throws(() => unpackAny({ type_url: TYPE_URLS.Cluster, value: Buffer.from([0x0a, 0xff]) }), { message: /cannot decode/ });
  t.is(unpackAny<{ name: string }>(any).name, 'payments');
});

test('a DiscoveryResponse carrying all four types goes through the ADS method serializers', (t) => {
  const resources = [
    packAny(TYPE_URLS.Cluster, cluster),
    packAny(TYPE_URLS.ClusterLoadAssignment, assignment),
    packAny(TYPE_URLS.Listener, listener),
    packAny(TYPE_URLS.RouteConfiguration, routeConfiguration),
  ];
  const method = adsServiceDefinition().StreamAggregatedResources;
  const response: DiscoveryResponse = {
    version_info: '7',
    resources,
    type_url: TYPE_URLS.Cluster,
    nonce: 'n-7',
    control_plane: { identifier: 'vsockmesh-control-plane' },
  };
  const decoded = method.responseDeserialize(method.responseSerialize(response));
  t.is(decoded.version_info, '7');
  t.is(decoded.nonce, 'n-7');
  t.is(decoded.type_url, TYPE_URLS.Cluster);
  t.is(decoded.control_plane?.identifier, 'vsockmesh-control-plane');
  t.deepEqual(
    decoded.resources.map((r) => r.type_url),
    resources.map((r) => r.type_url),
  );
  t.is(unpackAny(decoded.resources[0]!, TYPE_URLS.Cluster).type, 'EDS');
  t.is(unpackAny(decoded.resources[1]!, TYPE_URLS.ClusterLoadAssignment).endpoints[0]!.lb_endpoints[0]!.metadata?.filter_metadata['vsockmesh']?.fields['vm_id']?.stringValue, 'vm-payments-1');
  t.is(unpackAny(decoded.resources[2]!, TYPE_URLS.Listener).name, 'payments-outbound');
  t.is(unpackAny(decoded.resources[3]!, TYPE_URLS.RouteConfiguration).virtual_hosts[0]!.routes[0]!.route?.cluster, 'payments');

  const request = method.requestDeserialize(
    method.requestSerialize({
      version_info: '6',
      node: { id: 'vm-a', cluster: 'payments' },
      resource_names: ['payments'],
      type_url: TYPE_URLS.Cluster,
      response_nonce: 'n-6',
      error_detail: { code: 3, message: 'clusters[0].name: empty' },
    }),
  );
  t.is(request.node?.id, 'vm-a');
  t.deepEqual(request.resource_names, ['payments']);
  t.is(request.error_detail?.code, 3);
  t.is(request.error_detail?.message, 'clusters[0].name: empty');
});

test('a DeltaDiscoveryResponse carries Resource wrappers through the delta serializers', (t) => {
  const method = adsServiceDefinition().DeltaAggregatedResources;
  const decoded = method.responseDeserialize(
    method.responseSerialize({
      system_version_info: 'v9',
      type_url: TYPE_URLS.ClusterLoadAssignment,
      resources: [{ name: 'payments', version: 'h1', resource: packAny(TYPE_URLS.ClusterLoadAssignment, assignment) }],
      removed_resources: ['orders'],
      nonce: 'd-1',
    }),
  );
  t.deepEqual(decoded.removed_resources, ['orders']);
  t.is(decoded.resources[0]!.version, 'h1');
  t.is(unpackAny(decoded.resources[0]!.resource!, TYPE_URLS.ClusterLoadAssignment).cluster_name, 'payments');
});

test('an ADS stream works end to end over grpc-js with the service definition and client', async (t) => {
  const server = new grpc.Server();
  server.addService(adsServiceDefinition(), {
    StreamAggregatedResources: (call: grpc.ServerDuplexStream<DiscoveryRequest__Output, DiscoveryResponse>) => {
      call.on('data', (req: DiscoveryRequest__Output) => {
        call.write({ version_info: '1', type_url: req.type_url, nonce: 'n-1', resources: [packAny(TYPE_URLS.Cluster, cluster)] });
        call.end();
      });
    },
    DeltaAggregatedResources: (call: grpc.ServerDuplexStream<unknown, unknown>) => call.end(),
  });
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (err, p) => (err ? reject(err) : resolve(p))),
  );
  const client = createAdsClient(`127.0.0.1:${port}`, grpc.credentials.createInsecure());
  try {
    const call = client.StreamAggregatedResources();
    const received = new Promise<string>((resolve, reject) => {
      call.on('data', (res) => resolve(unpackAny(res.resources[0]!, TYPE_URLS.Cluster).name));
      call.on('error', reject);
    });
    call.write({ node: { id: 'vm-a' }, type_url: TYPE_URLS.Cluster });
    t.is(await received, 'payments');
    call.end();
  } finally {
    client.close();
    server.forceShutdown();
  }
});
