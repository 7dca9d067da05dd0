import test from 'ava';
import { formatDuration, parseDuration } from '../../proxy/runtime/duration.js';
import { parseHostRelayConfig, parseSidecarConfig, parseSidecarConfigText } from '../../proxy/config/load.js';
import { ConfigError, formatPath } from '../../proxy/runtime/config-file.js';
import { parseSize } from '../../proxy/runtime/size.js';
import { sidecarProblems } from '../helpers/config-problems.js';

const minimal = { node: { id: 'vm-a' } };

const problems = sidecarProblems;

const outbound = (extra: Record<string, unknown> = {}) => ({ kind: 'outbound', name: 'out', port: 15001, cluster: 'c', ...extra });
const inbound = (extra: Record<string, unknown> = {}) => ({ kind: 'inbound', name: 'in', port: 15006, ports: [8080], ...extra });
const cluster = (extra: Record<string, unknown> = {}) => ({ name: 'c', endpoints: [{ address: '10.0.0.2', port: 8080 }], ...extra });

test('a minimal config gets the documented defaults', (t) => {
  const config = parseSidecarConfig(minimal);
  t.deepEqual(config, {
    node: { id: 'vm-a' },
    identity: null,
    vsock: { enabled: true, breakerWindowMs: 30_000, connectTimeoutMs: 1_000, policy: 'prefer-vsock' },
    vmManager: null,
    xds: null,
    controlTls: null,
    admin: { address: '127.0.0.1', port: 15000 },
    log: { level: 'info', accessLog: true },
    drainTimeoutMs: 30_000,
    overload: { maxConnections: null, minFreeFds: 64, maxMemoryBytes: null, checkIntervalMs: 1_000 },
    peerTls: { mode: 'disable' },
    listeners: [],
    clusters: [],
  });
});

test('listener and cluster defaults are filled in and durations become milliseconds', (t) => {
  const config = parseSidecarConfig({ ...minimal, listeners: [outbound(), inbound()], clusters: [cluster()] });
  t.deepEqual(config.listeners[0], { kind: 'outbound', name: 'out', addresses: ['127.0.0.1'], port: 15001, cluster: 'c', idleTimeoutMs: 3_600_000, maxConnections: null, warmPath: true });
  t.deepEqual(config.listeners[1], {
    kind: 'inbound',
    name: 'in',
    transport: 'tcp',
    addresses: ['0.0.0.0'],
    port: 15006,
    vsockCid: 0xffffffff,
    allowedPeerCids: [],
    peerAuthorization: 'allow-list',
    headerTimeoutMs: 5_000,
    maxHeaderBytes: 4096,
    idleTimeoutMs: 3_600_000,
    connectTimeoutMs: 5_000,
    ports: [{ port: 8080, target: { address: '127.0.0.1', port: 8080 } }],
    allowedPeerIds: [],
    maxConnections: null,
    warmPath: true,
  });
  t.deepEqual(config.clusters[0], { name: 'c', connectTimeoutMs: 5_000, endpoints: [{ address: '10.0.0.2', port: 8080 }] });
});

test('a forward_proxy listener: loopback, no pass-through and the head bounds by default; every field in domain form', (t) => {
  const config = parseSidecarConfig({ ...minimal, listeners: [{ kind: 'forward_proxy', name: 'egress', port: 15080 }] });
  t.deepEqual(config.listeners[0], {
    kind: 'forward_proxy',
    name: 'egress',
    addresses: ['127.0.0.1'],
    port: 15080,
    passThrough: false,
    headerTimeoutMs: 5_000,
    maxHeaderBytes: 4096,
    idleTimeoutMs: 3_600_000,
    maxConnections: null,
  });
  const given = parseSidecarConfig({
    ...minimal,
    listeners: [{ kind: 'forward_proxy', name: 'egress', addresses: ['0.0.0.0', '::'], port: 0, pass_through: true, header_timeout: '2s', max_header_bytes: 16384, idle_timeout: '1m', max_connections: 8 }],
  });
  t.like(given.listeners[0], { addresses: ['0.0.0.0', '::'], passThrough: true, headerTimeoutMs: 2_000, maxHeaderBytes: 16384, idleTimeoutMs: 60_000, maxConnections: 8 });
});

test('an inbound port may send the app a PROXY v2 header (proxy_protocol); off unless set, and only a boolean', (t) => {
  const config = parseSidecarConfig({ ...minimal, listeners: [inbound({ ports: [8080, { port: 9000, proxy_protocol: true }, { port: 9001, proxy_protocol: false }] })] });
  const listener = config.listeners[0]!;
  t.deepEqual(listener.kind === 'inbound' && listener.ports, [
    { port: 8080, target: { address: '127.0.0.1', port: 8080 } },
    { port: 9000, target: { address: '127.0.0.1', port: 9000 }, proxyProtocol: true },
    { port: 9001, target: { address: '127.0.0.1', port: 9001 } },
  ]);
  t.deepEqual(problems({ ...minimal, listeners: [inbound({ ports: [{ port: 9000, proxy_protocol: 'yes' }] })] }), ['listeners[0].ports[0]: must be a port number or {port, target: {address, port}, proxy_protocol: true|false}']);
});

test('vsock endpoints default to direct mode; host-relay defaults its relay to CID 2 port 15100', (t) => {
  const config = parseSidecarConfig({
    ...minimal,
    clusters: [
      cluster({
        endpoints: [
          { address: '10.0.0.2', port: 1, vsock: { cid: 5, port: 15007 } },
          { address: '10.0.0.3', port: 1, vsock: { mode: 'host-relay', cid: 6, port: 15007 } },
          { address: '10.0.0.4', port: 1, vsock: { mode: 'host-relay', cid: 7, port: 15007, relay: { cid: 2, port: 9999 } } },
        ],
      }),
    ],
  });
  t.deepEqual(
    config.clusters[0]!.endpoints.map((e) => e.vsock),
    [
      { mode: 'direct', cid: 5, port: 15007 },
      { mode: 'host-relay', cid: 6, port: 15007, relay: { cid: 2, port: 15100 } },
      { mode: 'host-relay', cid: 7, port: 15007, relay: { cid: 2, port: 9999 } },
    ],
  );
});

test('a vsock inbound listener binds any CID by default and keeps its allow-list', (t) => {
  const config = parseSidecarConfig({ ...minimal, listeners: [inbound({ transport: 'vsock', port: 15007, allowed_peer_cids: [3, 4] }), inbound({ name: 'in2', transport: 'vsock', cid: 1, port: 15008, allowed_peer_cids: [1] })] });
  t.like(config.listeners[0], { transport: 'vsock', port: 15007, vsockCid: 0xffffffff, allowedPeerCids: [3, 4] });
  t.like(config.listeners[1], { vsockCid: 1 });
});

test('a resolved cluster and the VM manager section parse into domain form with defaults', (t) => {
  const config = parseSidecarConfig({
    ...minimal,
    insecure: true, vm_manager: { address: '127.0.0.1:15400' },
    clusters: [
      { name: 'web', resolve: { service: 'web' } },
      { name: 'b', resolve: { vm: 'vm-b', port: 8080 } },
      { name: 'ip', resolve: { address: '10.0.0.2', port: 80 } },
    ],
  });
  t.deepEqual(config.vmManager, { addresses: ['127.0.0.1:15400'], queryTimeoutMs: 500, negativeTtlMs: 5000, migrationGraceMs: 5000, policy: 'prefer-vsock' });
  // One policy for every cluster (vsock.policy); vm_manager.policy, older, still decides resolved clusters when given.
  const policies = (data: Record<string, unknown>): [string, string | undefined] => {
    const c = parseSidecarConfig({ ...minimal, ...data });
    return [c.vsock.policy, c.vmManager?.policy];
  };
  t.deepEqual(policies({ vsock: { policy: 'tcp-only' }, insecure: true, vm_manager: { address: '127.0.0.1:15400' } }), ['tcp-only', 'tcp-only']);
  t.deepEqual(policies({ insecure: true, vm_manager: { address: '127.0.0.1:15400', policy: 'vsock-only' } }), ['prefer-vsock', 'vsock-only']);
  t.deepEqual(policies({ vsock: { policy: 'vsock-only' }, insecure: true, vm_manager: { address: '127.0.0.1:15400', policy: 'tcp-only' } }), ['vsock-only', 'tcp-only']);
  t.deepEqual(policies({ vsock: { policy: 'tcp-only' } }), ['tcp-only', undefined]);
  t.deepEqual(
    config.clusters.map((c) => c.resolve),
    [
      { kind: 'service', name: 'web' },
      { kind: 'vm', vmId: 'vm-b', port: 8080 },
      { kind: 'ip_port', ip: '10.0.0.2', port: 80 },
    ],
  );
  t.deepEqual(config.clusters[0]!.endpoints, []);
});

test('admin: null disables the admin endpoint', (t) => {
  t.is(parseSidecarConfig({ ...minimal, admin: null }).admin, null);
});

test('endpoint fields map to domain names', (t) => {
  const config = parseSidecarConfig({
    ...minimal,
    clusters: [cluster({ authority: 'web.mesh', endpoints: [{ address: '::1', port: 1, vm_id: 'vm-b', peer: { address: '10.0.0.2', port: 15006 } }] })],
  });
  t.deepEqual(config.clusters[0]!.endpoints[0], { address: '::1', port: 1, vmId: 'vm-b', peer: { address: '10.0.0.2', port: 15006 } });
  t.is(config.clusters[0]!.authority, 'web.mesh');
});

test('connection limits and the overload section parse into domain form', (t) => {
  const config = parseSidecarConfig({
    ...minimal,
    overload: { max_connections: 5000, min_free_fds: 128, max_memory: '1.5GiB', check_interval: '250ms' },
    listeners: [outbound({ max_connections: 100 }), inbound({ max_connections: 1 })],
    clusters: [cluster()],
  });
  t.deepEqual(config.overload, { maxConnections: 5000, minFreeFds: 128, maxMemoryBytes: 1.5 * 1024 ** 3, checkIntervalMs: 250 });
  t.deepEqual(
    config.listeners.map((l) => l.maxConnections),
    [100, 1],
  );
  t.deepEqual(parseSidecarConfig({ ...minimal, overload: { min_free_fds: 0 } }).overload.minFreeFds, 0);
  const relay = parseHostRelayConfig({ node: { id: 'hv-1' }, listen: { max_connections: 300 }, overload: { max_memory: '256MiB' }, policy: [{ source_cid: 3, destinations: [{ cid: 4 }] }] });
  t.is(relay.listen.maxConnections, 300);
  t.deepEqual(relay.overload, { maxConnections: null, minFreeFds: 64, maxMemoryBytes: 256 * 1024 ** 2, checkIntervalMs: 1_000 });
});

test('parseSize reads binary units and refuses anything else', (t) => {
  t.is(parseSize('512MiB'), 512 * 1024 ** 2);
  t.is(parseSize('4096B'), 4096);
  t.is(parseSize('64KiB'), 65_536);
  t.is(parseSize('2GiB'), 2 * 1024 ** 3);
  t.is(parseSize('1TiB'), 1024 ** 4);
  t.is(parseSize(' 1.5GiB '), 1.5 * 1024 ** 3);
  for (const bad of ['', '512', 'MiB', '512MB', '512mib', '-1MiB', '1 MiB', '1e3MiB']) t.is(parseSize(bad), undefined, bad);
});

// Each row: a config, and the path and words its problem must be reported with.
const invalid: Array<[string, unknown, string]> = [
  ['node missing', {}, 'node: required'],
  ['node id empty', { node: { id: '' } }, 'node.id: must be 1-128 characters'],
  ['listener port too large', { ...minimal, listeners: [inbound({ port: 70000 })] }, 'listeners[0].port: must be an integer 0..65535'],
  ['listener port negative', { ...minimal, listeners: [inbound({ port: -1 })] }, 'listeners[0].port: must be an integer 0..65535'],
  ['listener port fractional', { ...minimal, listeners: [inbound({ port: 1.5 })] }, 'listeners[0].port: must be an integer 0..65535'],
  ['listener port a string', { ...minimal, listeners: [inbound({ port: '80' })] }, 'listeners[0].port: must be a port number'],
  ['unknown listener kind', { ...minimal, listeners: [{ kind: 'sideways', name: 'x', port: 1 }] }, 'listeners[0].kind: must be "outbound" or "inbound" or "forward_proxy"'],
  ['forward_proxy pass_through a string', { ...minimal, listeners: [{ kind: 'forward_proxy', name: 'f', port: 1, pass_through: 'yes' }] }, 'listeners[0].pass_through: must be true or false'],
  ['forward_proxy head bound too small', { ...minimal, listeners: [{ kind: 'forward_proxy', name: 'f', port: 1, max_header_bytes: 100 }] }, 'listeners[0].max_header_bytes: must be 256..65536'],
  ['forward_proxy with a cluster', { ...minimal, listeners: [{ kind: 'forward_proxy', name: 'f', port: 1, cluster: 'c' }] }, 'listeners[0]: unknown field "cluster"'],
  ['forward_proxy on a bound port', { ...minimal, listeners: [{ kind: 'forward_proxy', name: 'f', port: 15001 }, outbound({ port: 15001 })], clusters: [cluster()] }, 'listeners[1].port: 127.0.0.1:15001 is also bound by listeners[0]'],
  ['outbound on a non-loopback address', { ...minimal, listeners: [outbound({ addresses: ['0.0.0.0'] })], clusters: [cluster()] }, 'listeners[0].addresses[0]: must be a loopback address'],
  ['address not an IP', { ...minimal, listeners: [inbound({ addresses: ['localhost'] })] }, 'listeners[0].addresses[0]: must be an IPv4 or IPv6 address'],
  ['bad duration unit', { ...minimal, listeners: [inbound({ header_timeout: '5 seconds' })] }, 'listeners[0].header_timeout: "5 seconds" is not a duration'],
  ['zero duration', { ...minimal, listeners: [inbound({ idle_timeout: '0s' })] }, 'listeners[0].idle_timeout: must be at least 1ms'],
  ['duration a number', { ...minimal, listeners: [inbound({ connect_timeout: 5 })] }, 'listeners[0].connect_timeout: must be a duration string'],
  ['max header below the IPv4 minimum', { ...minimal, listeners: [inbound({ max_header_bytes: 10 })] }, 'listeners[0].max_header_bytes: must be 28..65551'],
  ['max header above the protocol maximum', { ...minimal, listeners: [inbound({ max_header_bytes: 70000 })] }, 'listeners[0].max_header_bytes: must be 28..65551'],
  ['inbound without ports', { ...minimal, listeners: [inbound({ ports: [] })] }, 'listeners[0].ports: must declare at least one local port'],
  ['inbound port zero', { ...minimal, listeners: [inbound({ ports: [0] })] }, 'listeners[0].ports[0]: must be a port number or {port, target'],
  ['inbound duplicate port', { ...minimal, listeners: [inbound({ ports: [80, 80] })] }, 'listeners[0].ports[1]: duplicate port 80'],
  ['unknown cluster', { ...minimal, listeners: [outbound({ cluster: 'nope' })], clusters: [cluster()] }, 'listeners[0].cluster: unknown cluster "nope"'],
  ['listener max_connections zero', { ...minimal, listeners: [inbound({ max_connections: 0 })] }, 'listeners[0].max_connections: must be an integer 1..16777216 (leave it out for no limit)'],
  ['listener max_connections a string', { ...minimal, listeners: [outbound({ max_connections: '10' })], clusters: [cluster()] }, 'listeners[0].max_connections: must be a number of connections'],
  ['overload max_connections fractional', { ...minimal, overload: { max_connections: 1.5 } }, 'overload.max_connections: must be an integer 1..16777216'],
  ['overload min_free_fds negative', { ...minimal, overload: { min_free_fds: -1 } }, 'overload.min_free_fds: must be an integer 0..1048576'],
  ['overload max_memory without a unit', { ...minimal, overload: { max_memory: '512' } }, 'overload.max_memory: "512" is not a size of at least 1MiB'],
  ['overload max_memory too small', { ...minimal, overload: { max_memory: '4KiB' } }, 'overload.max_memory: "4KiB" is not a size of at least 1MiB'],
  ['overload max_memory a number', { ...minimal, overload: { max_memory: 1024 } }, 'overload.max_memory: must be a size string'],
  ['overload check_interval too short', { ...minimal, overload: { check_interval: '1ms' } }, 'overload.check_interval: must be at least 10ms'],
  ['overload unknown field', { ...minimal, overload: { maxconn: 10 } }, 'overload: unknown field "maxconn"'],
  ['duplicate listener name', { ...minimal, listeners: [inbound(), inbound({ port: 15007 })] }, 'listeners[1].name: duplicate listener name "in"'],
  ['same address and port twice', { ...minimal, listeners: [inbound({ addresses: ['127.0.0.1'] }), inbound({ name: 'in2', addresses: ['127.0.0.1'] })] }, 'listeners[1].port: 127.0.0.1:15006 is also bound by listeners[0]'],
  ['duplicate cluster', { ...minimal, clusters: [cluster(), cluster()] }, 'clusters[1].name: duplicate cluster name "c"'],
  ['cluster without endpoints', { ...minimal, clusters: [cluster({ endpoints: [] })] }, 'clusters[0].endpoints: must list at least one endpoint'],
  ['endpoint port zero', { ...minimal, clusters: [cluster({ endpoints: [{ address: '10.0.0.2', port: 0 }] })] }, 'clusters[0].endpoints[0].port: must be an integer 1..65535'],
  ['peer address not an IP', { ...minimal, clusters: [cluster({ endpoints: [{ address: '10.0.0.2', port: 1, peer: { address: 'b.local', port: 2 } }] })] }, 'clusters[0].endpoints[0].peer.address: must be an IPv4 or IPv6 address'],
  ['unknown top-level field', { ...minimal, listners: [] }, '(top level): unknown field "listners"'],
  ['unknown nested field', { ...minimal, clusters: [cluster({ timeout: '1s' })] }, 'clusters[0]: unknown field "timeout"'],
  ['bad log level', { ...minimal, log: { level: 'loud' } }, 'log.level:'],
  ['vsock listener without allowed peers', { ...minimal, listeners: [inbound({ transport: 'vsock' })] }, 'listeners[0].allowed_peer_cids: a vsock inbound listener must list the peer CIDs'],
  ['vsock listener with IP addresses', { ...minimal, listeners: [inbound({ transport: 'vsock', allowed_peer_cids: [3], addresses: ['0.0.0.0'] })] }, 'listeners[0].addresses: vsock listeners bind a CID'],
  ['vsock listener while vsock is disabled', { ...minimal, vsock: { enabled: false }, listeners: [inbound({ transport: 'vsock', allowed_peer_cids: [3] })] }, 'listeners[0].transport: vsock is disabled'],
  ['allowed peers on a TCP listener', { ...minimal, listeners: [inbound({ allowed_peer_cids: [3] })] }, 'listeners[0].allowed_peer_cids: only for transport: vsock'],
  ['CID zero', { ...minimal, listeners: [inbound({ transport: 'vsock', allowed_peer_cids: [0] })] }, 'listeners[0].allowed_peer_cids[0]: must be a context ID 1..4294967294'],
  ['TCP port above 65535 on an inbound listener', { ...minimal, listeners: [inbound({ port: 70000 })] }, 'listeners[0].port: must be an integer 0..65535'],
  ['endpoint vsock mode unknown', { ...minimal, clusters: [cluster({ endpoints: [{ address: '10.0.0.2', port: 1, vsock: { mode: 'magic', cid: 5, port: 1 } }] })] }, 'clusters[0].endpoints[0].vsock.mode: must be "direct" or "host-relay"'],
  ['endpoint vsock CID out of range', { ...minimal, clusters: [cluster({ endpoints: [{ address: '10.0.0.2', port: 1, vsock: { cid: 0xffffffff, port: 1 } }] })] }, 'clusters[0].endpoints[0].vsock.cid: must be a context ID'],
  ['bad breaker window', { ...minimal, vsock: { breaker_window: 'soon' } }, 'vsock.breaker_window: "soon" is not a duration'],
  ['cluster with neither endpoints nor resolve', { ...minimal, clusters: [{ name: 'c' }] }, 'clusters[0].endpoints: must list at least one endpoint (or resolve'],
  ['cluster with both endpoints and resolve', { ...minimal, insecure: true, vm_manager: { address: '127.0.0.1:15400' }, clusters: [cluster({ resolve: { service: 'web' } })] }, 'clusters[0].resolve: a cluster has either static endpoints or resolve'],
  ['resolve without a VM manager', { ...minimal, clusters: [{ name: 'c', resolve: { service: 'web' } }] }, 'clusters[0].resolve: resolving needs a vm_manager section'],
  ['resolve target of the wrong shape', { ...minimal, insecure: true, vm_manager: { address: '127.0.0.1:15400' }, clusters: [{ name: 'c', resolve: { host: 'x' } }] }, 'clusters[0].resolve: must be {address, port}, {vm, port}, {service} or {original_destination: true}'],
  ['registry authorization without a VM manager', { ...minimal, listeners: [inbound({ transport: 'vsock', peer_authorization: 'registry' })] }, 'listeners[0].peer_authorization: registry needs a vm_manager section'],
  ['VM manager address without a port', { ...minimal, insecure: true, vm_manager: { address: 'localhost' } }, 'vm_manager.address: must be host:port'],
  ['unknown transport policy', { ...minimal, insecure: true, vm_manager: { address: '127.0.0.1:15400', policy: 'fast' } }, 'vm_manager.policy:'],
  ['unknown transport policy of the sidecar', { ...minimal, vsock: { policy: 'fast' } }, 'vsock.policy:'],
];

for (const [what, data, expected] of invalid) {
  test(`config error is reported by path: ${what}`, (t) => {
    const found = problems(data);
    t.true(
      found.some((p) => p.startsWith(expected)),
      `expected a problem starting with ${JSON.stringify(expected)}, got ${JSON.stringify(found)}`,
    );
  });
}

test('every problem in one file is listed, not just the first', (t) => {
  const found = problems({
    node: { id: 'vm-a' },
    listeners: [inbound({ port: 70000, header_timeout: 'soon' }), outbound({ name: 'o', addresses: ['10.0.0.1'] })],
    clusters: [cluster({ endpoints: [] })],
  });
  t.deepEqual(
    found.map((p) => p.split(':')[0]).sort(),
    ['clusters[0].endpoints', 'listeners[0].header_timeout', 'listeners[0].port', 'listeners[1].addresses[0]'],
  );
});

test('cross-reference problems are listed together with field problems', (t) => {
  const found = problems({ node: { id: 'vm-a' }, listeners: [outbound({ cluster: 'nope', idle_timeout: 'x' })], clusters: [cluster({ endpoints: [] })] });
  t.deepEqual(found.map((p) => p.split(':')[0]).sort(), ['clusters[0].endpoints', 'listeners[0].cluster', 'listeners[0].idle_timeout']);
});

test('a YAML syntax error is reported with its line', (t) => {
  const err = t.throws(() => parseSidecarConfigText('node:\n  id: [unclosed\n', 'bad.yaml'), { instanceOf: ConfigError });
  t.regex(err!.problems[0]!, /^line \d+, column \d+: /);
  t.true(err!.message.startsWith('bad.yaml: 1 problem'));
});

test('an empty file is reported as missing node', (t) => {
  const err = t.throws(() => parseSidecarConfigText('', 'empty.yaml'), { instanceOf: ConfigError });
  t.true(err!.problems[0]!.startsWith('node: required'));
});

test('YAML text with every section parses', (t) => {
  const config = parseSidecarConfigText(
    [
      'node: {id: vm-a}',
      'admin: {address: 127.0.0.1, port: 0}',
      'log: {level: warn, access_log: false}',
      'drain_timeout: 1.5m',
      'listeners:',
      '  - {kind: outbound, name: web, addresses: [127.0.0.1, "::1"], port: 0, cluster: web}',
      'clusters:',
      '  - {name: web, endpoints: [{address: 10.0.0.2, port: 80}]}',
    ].join('\n'),
  );
  t.is(config.drainTimeoutMs, 90_000);
  t.deepEqual(config.log, { level: 'warn', accessLog: false });
  t.deepEqual(config.listeners[0]!.addresses, ['127.0.0.1', '::1']);
});

test('formatPath writes indexes in brackets and keys with dots', (t) => {
  t.is(formatPath(['listeners', 1, 'port']), 'listeners[1].port');
  t.is(formatPath([]), '(top level)');
  t.is(formatPath(['a', 'b', 0, 1]), 'a.b[0][1]');
});

test('durations parse with every unit and reject everything else', (t) => {
  t.is(parseDuration('250ms'), 250);
  t.is(parseDuration('5s'), 5_000);
  t.is(parseDuration('1.5m'), 90_000);
  t.is(parseDuration('2h'), 7_200_000);
  t.is(parseDuration(' 3s '), 3_000);
  for (const bad of ['', '5', 's', '-1s', '1d', '1e3ms', '1 s', 'ms5']) t.is(parseDuration(bad), undefined, bad);
});

test('formatDuration picks the largest exact unit', (t) => {
  t.is(formatDuration(3_600_000), '1h');
  t.is(formatDuration(90_000), '90s');
  t.is(formatDuration(120_000), '2m');
  t.is(formatDuration(1_500), '1500ms');
  t.is(formatDuration(0), '0ms');
});

test('a host relay takes either a static policy or a vm_manager section, exactly one', (t) => {
  const relayProblems = (data: unknown): string[] => {
    try {
      parseHostRelayConfig(data);
    } catch (err) {
      if (err instanceof ConfigError) return err.problems;
      throw err;
    }
    return [];
  };
  const base = { node: { id: 'hv-1' } };
  const rule = [{ source_cid: 3, destinations: [{ cid: 4 }] }];
  t.deepEqual(relayProblems({ ...base, policy: rule }), []);
  t.deepEqual(relayProblems({ ...base, insecure: true, vm_manager: { address: '10.0.0.1:15200', hypervisor_id: 'hv-1' } }), []);
  t.deepEqual(relayProblems(base), ['policy: required (or a vm_manager section): the relay denies everything it is not told to allow']);
  t.deepEqual(relayProblems({ ...base, policy: rule, insecure: true, vm_manager: { address: '10.0.0.1:15200', hypervisor_id: 'hv-1' } }), ['vm_manager: give either a static policy or a vm_manager, not both']);
  t.deepEqual(relayProblems({ ...base, insecure: true, vm_manager: { address: 'nowhere', hypervisor_id: 'hv-1' } }), ['vm_manager.address: must be host:port']);
  const parsed = parseHostRelayConfig({ ...base, insecure: true, vm_manager: { address: '[fd00::1]:15200', hypervisor_id: 'hv-1', cache_ttl: '0s' } });
  t.deepEqual(parsed.vmManager, { addresses: ['[fd00::1]:15200'], hypervisorId: 'hv-1', queryTimeoutMs: 500, cacheTtlMs: 0, assertSource: true });
  const quiet = parseHostRelayConfig({ ...base, insecure: true, vm_manager: { address: '[fd00::1]:15200', hypervisor_id: 'hv-1', assert_source: false } });
  t.false(quiet.vmManager!.assertSource, 'the source assertion can be turned off while destination sidecars are upgraded');
  t.throws(() => parseHostRelayConfig({ ...base, insecure: true, vm_manager: { address: '[fd00::1]:15200', hypervisor_id: 'hv-1', assert_source: 'no' } }), { message: /vm_manager\.assert_source/ });
  t.is(parsed.policy, null);
});

test('a cluster can resolve the original destination (transparent mode); other shapes are refused with the list of forms', (t) => {
  const config = parseSidecarConfig({
    ...minimal,
    insecure: true, vm_manager: { address: '127.0.0.1:15200' },
    listeners: [outbound({ cluster: 'c' })],
    clusters: [{ name: 'c', resolve: { original_destination: true } }],
  });
  t.deepEqual(config.clusters[0]!.resolve, { kind: 'original_dst' });
  const bad = problems({ ...minimal, insecure: true, vm_manager: { address: '127.0.0.1:15200' }, listeners: [outbound({ cluster: 'c' })], clusters: [{ name: 'c', resolve: { original_destination: false } }] });
  t.deepEqual(bad, ['clusters[0].resolve: must be {address, port}, {vm, port}, {service} or {original_destination: true}']);
});

test('an xds section names the control plane; node.cluster defaults to the node id', (t) => {
  t.deepEqual(parseSidecarConfig({ ...minimal, insecure: true, xds: { address: '10.0.0.2:15200' } }).xds, { addresses: ['10.0.0.2:15200'], cluster: 'vm-a' });
  t.deepEqual(parseSidecarConfig({ ...minimal, insecure: true, xds: { address: '10.0.0.2:15200', cluster: 'web' } }).xds, { addresses: ['10.0.0.2:15200'], cluster: 'web' });
  t.deepEqual(problems({ ...minimal, insecure: true, xds: { address: 'control-plane' } }), ['xds.address: must be host:port']);
  t.deepEqual(problems({ ...minimal, insecure: true, xds: { address: '10.0.0.2:15200', nodes: 1 } }), ['xds: unknown field "nodes"']);
});

test('an xds section may list several control-plane replicas (addresses), in the order they are tried; address or addresses, not both, none twice', (t) => {
  const replicas = ['10.0.0.2:15200', '10.0.0.3:15200', 'cp.mesh:15200'];
  t.deepEqual(parseSidecarConfig({ ...minimal, insecure: true, xds: { addresses: replicas } }).xds, { addresses: replicas, cluster: 'vm-a' });
  t.deepEqual(problems({ ...minimal, insecure: true, xds: { address: '10.0.0.2:15200', addresses: replicas } }), ['xds.addresses: give address or addresses, not both']);
  t.deepEqual(problems({ ...minimal, insecure: true, xds: {} }), ['xds.address: required (or addresses: [host:port, ...] for several replicas)']);
  t.deepEqual(problems({ ...minimal, insecure: true, xds: { addresses: [] } }), ['xds.addresses: must list at least one host:port']);
  t.deepEqual(problems({ ...minimal, insecure: true, xds: { addresses: ['10.0.0.2:15200', '10.0.0.2:15200'] } }), ['xds.addresses: "10.0.0.2:15200" is listed twice']);
  t.deepEqual(problems({ ...minimal, insecure: true, xds: { addresses: ['10.0.0.2:15200', 'cp'] } }), ['xds.addresses[1]: must be host:port']);
  t.deepEqual(problems({ ...minimal, insecure: true, xds: { addresses: Array.from({ length: 17 }, (_, i) => `10.0.0.${i}:15200`) } }), ['xds.addresses: must list at most 16 host:port']);
  t.deepEqual(problems({ ...minimal, insecure: true, xds: { addresses: '10.0.0.2:15200' } }), ['xds.addresses: must be a list of host:port']);
});

test('a vm_manager section may list several VM manager replicas (addresses), as xds does; so may a host relay\'s', (t) => {
  const replicas = ['10.0.0.2:15400', 'vmm.mesh:15400'];
  t.deepEqual(parseSidecarConfig({ ...minimal, insecure: true, vm_manager: { addresses: replicas } }).vmManager?.addresses, replicas);
  t.deepEqual(problems({ ...minimal, insecure: true, vm_manager: { address: '10.0.0.2:15400', addresses: replicas } }), ['vm_manager.addresses: give address or addresses, not both']);
  t.deepEqual(problems({ ...minimal, insecure: true, vm_manager: {} }), ['vm_manager.address: required (or addresses: [host:port, ...] for several replicas)']);
  t.deepEqual(problems({ ...minimal, insecure: true, vm_manager: { addresses: ['10.0.0.2:15400', '10.0.0.2:15400'] } }), ['vm_manager.addresses: "10.0.0.2:15400" is listed twice']);
  t.deepEqual(problems({ ...minimal, insecure: true, vm_manager: { addresses: ['vmm'] } }), ['vm_manager.addresses[0]: must be host:port']);
  const relay = { node: { id: 'hv-1' }, insecure: true };
  t.deepEqual(parseHostRelayConfig({ ...relay, vm_manager: { addresses: replicas, hypervisor_id: 'hv-1' } }).vmManager?.addresses, replicas);
  t.throws(() => parseHostRelayConfig({ ...relay, vm_manager: { address: '10.0.0.2:15400', addresses: replicas, hypervisor_id: 'hv-1' } }), { message: /vm_manager\.addresses: give address or addresses, not both/ });
});

test('control-plane clients take their identity from exactly one of tls, identity or insecure: true; never none, never two', (t) => {
  const tlsFiles = { cert: '/etc/vsockmesh/cert.pem', key: '/etc/vsockmesh/key.pem', ca: '/etc/vsockmesh/ca.pem' };
  const identity = { control_plane: '10.0.0.2:15200', join_token_file: '/etc/vsockmesh/join-token', trust_bundle_file: '/etc/vsockmesh/bundle.pem' };
  for (const clients of [{ xds: { address: '10.0.0.2:15200' } }, { vm_manager: { address: '10.0.0.2:15200' } }]) {
    t.deepEqual(problems({ ...minimal, ...clients }), [
      'tls: required by the control-plane clients (vm_manager, xds): tls: {cert, key, ca} files, or an identity section (a certificate from the control plane through a join token); or insecure: true for a control plane started with --insecure',
    ]);
    t.deepEqual(problems({ ...minimal, ...clients, tls: tlsFiles, insecure: true }), ['insecure: give one of a tls section, an identity section or insecure: true, not tls and insecure']);
    t.deepEqual(problems({ ...minimal, ...clients, tls: tlsFiles, identity }), ['identity: give one of a tls section, an identity section or insecure: true, not tls and identity']);
    t.deepEqual(problems({ ...minimal, ...clients, identity, insecure: true }), ['insecure: give one of a tls section, an identity section or insecure: true, not identity and insecure']);
    t.deepEqual(parseSidecarConfig({ ...minimal, ...clients, tls: tlsFiles }).controlTls, { certPath: tlsFiles.cert, keyPath: tlsFiles.key, caPath: tlsFiles.ca });
    t.like(parseSidecarConfig({ ...minimal, ...clients, identity }), { controlTls: null, identity: { controlPlane: identity.control_plane } });
    t.like(parseSidecarConfig({ ...minimal, ...clients, insecure: true }), { controlTls: null, identity: null });
  }
  t.deepEqual(problems({ ...minimal, tls: { cert: 'c.pem', key: 'k.pem' } }), ['tls.ca: required']);
  const relay = { node: { id: 'hv-1' }, vm_manager: { address: '10.0.0.1:15200', hypervisor_id: 'hv-1' } };
  t.throws(() => parseHostRelayConfig(relay), { message: /tls: required by the control-plane clients/ });
  t.throws(() => parseHostRelayConfig({ ...relay, tls: tlsFiles, identity }), { message: /identity: give one of a tls section, an identity section or insecure: true/ });
  t.deepEqual(parseHostRelayConfig({ ...relay, tls: tlsFiles }).controlTls, { certPath: tlsFiles.cert, keyPath: tlsFiles.key, caPath: tlsFiles.ca });
  t.like(parseHostRelayConfig({ ...relay, identity }), { controlTls: null, identity: { trustBundleFile: identity.trust_bundle_file } });
});

test('the identity section: defaults, domain form, and its problems by path', (t) => {
  const identity = { control_plane: '127.0.0.1:15200', join_token_file: '/etc/vsockmesh/join-token', trust_bundle_file: '/etc/vsockmesh/bundle.pem' };
  t.deepEqual(parseSidecarConfig({ ...minimal, identity }).identity, {
    controlPlane: '127.0.0.1:15200',
    joinTokenFile: '/etc/vsockmesh/join-token',
    attest: null,
    trustDomain: 'vsockmesh.local',
    trustBundleFile: '/etc/vsockmesh/bundle.pem',
    stateDir: null,
  });
  t.like(parseSidecarConfig({ ...minimal, identity: { ...identity, trust_domain: 'example.org' } }).identity, { trustDomain: 'example.org' });
  t.like(parseSidecarConfig({ ...minimal, identity: { ...identity, state_dir: '/var/lib/vsockmesh/identity' } }).identity, { stateDir: '/var/lib/vsockmesh/identity' });
  t.deepEqual(problems({ ...minimal, identity: { ...identity, insecure: true } }), ['identity: unknown field "insecure"'], 'plain text is said once, at the top level');
  t.deepEqual(problems({ ...minimal, identity: { control_plane: 'cp', join_token_file: '' } }), [
    'identity.control_plane: must be host:port',
    'identity.join_token_file: must be a file path',
    'identity.trust_bundle_file: required',
  ]);
  t.deepEqual(problems({ ...minimal, identity: { ...identity, trust_domain: 'Example.org', extra: 1 } }), [
    'identity.trust_domain: the trust domain "Example.org" may hold only lowercase letters, digits, ".", "-" and "_" (bad_trust_domain_char)',
    'identity: unknown field "extra"',
  ]);
});

test('the identity section: the first certificate by join token or by attestation (attest: {port}), exactly one', (t) => {
  const identity = { control_plane: '127.0.0.1:15200', trust_bundle_file: '/etc/vsockmesh/bundle.pem' };
  t.like(parseSidecarConfig({ ...minimal, identity: { ...identity, attest: { port: 15101 } } }).identity, { joinTokenFile: null, attest: { port: 15101 } });
  t.deepEqual(problems({ ...minimal, identity }), ['identity.join_token_file: required, or attest: {port} (the first certificate through the host agent over vsock)']);
  t.deepEqual(problems({ ...minimal, identity: { ...identity, join_token_file: '/t', attest: { port: 15101 } } }), ['identity.attest: give join_token_file or attest for the first certificate, not both']);
  t.deepEqual(problems({ ...minimal, identity: { ...identity, attest: { port: 0 } } }).map((p) => p.split(':')[0]), ['identity.attest.port']);
  t.deepEqual(problems({ ...minimal, identity: { ...identity, attest: { port: 15101, cid: 2 } } }), ['identity.attest: unknown field "cid"']);
});

test('the host relay\'s attestation section: defaults, and what it needs by path', (t) => {
  const tokenIdentity = { control_plane: '10.0.0.2:15200', join_token_file: '/t', trust_bundle_file: '/b' };
  const tlsFiles = { cert: '/c.pem', key: '/k.pem', ca: '/ca.pem' };
  const relay = { node: { id: 'hv-1' }, vm_manager: { address: '10.0.0.1:15200', hypervisor_id: 'hv-1' }, identity: tokenIdentity };
  t.deepEqual(parseHostRelayConfig({ ...relay, attestation: {} }).attestation, { port: 15101, controlPlane: '10.0.0.2:15200', requestTimeoutMs: 10_000, maxConnections: null });
  t.like(parseHostRelayConfig({ ...relay, identity: undefined, tls: tlsFiles, attestation: { port: 9000, control_plane: '10.0.0.3:15200' } }).attestation, { port: 9000, controlPlane: '10.0.0.3:15200' });
  t.throws(() => parseHostRelayConfig({ ...relay, identity: undefined, tls: tlsFiles, attestation: {} }), { message: /attestation\.control_plane: required without an identity section/ });
  t.throws(() => parseHostRelayConfig({ ...relay, identity: undefined, insecure: true, attestation: { control_plane: '10.0.0.3:15200' } }), { message: /attestation: needs the host agent's own identity/ });
  t.throws(() => parseHostRelayConfig({ node: { id: 'hv-1' }, policy: [{ source_cid: 3, destinations: [{ cid: 4 }] }], tls: tlsFiles, attestation: { control_plane: '10.0.0.3:15200' } }), { message: /attestation: needs a vm_manager section/ });
  t.throws(() => parseHostRelayConfig({ ...relay, identity: { ...tokenIdentity, join_token_file: undefined, attest: { port: 15101 } } }), { message: /identity\.attest: a host agent enrols with a join token/ });
  t.is(parseHostRelayConfig(relay).attestation, null);
});

const pemFiles = { key_file: '/etc/vsockmesh/key.pem', chain_file: '/etc/vsockmesh/chain.pem', bundle_file: '/etc/vsockmesh/bundle.pem' };

test('peer_tls strict with its files gets the documented defaults', (t) => {
  const config = parseSidecarConfig({ ...minimal, peer_tls: { mode: 'strict', ...pemFiles } });
  t.deepEqual(config.peerTls, {
    mode: 'strict',
    files: { key: pemFiles.key_file, chain: pemFiles.chain_file, bundle: pemFiles.bundle_file },
    trustDomain: 'vsockmesh.local',
    handshakeTimeoutMs: 5_000,
    reloadIntervalMs: 10_000,
    originate: true,
    proxyHeader: 'inside_tls',
    overVsock: false,
    maxConnectionAge: null,
  });
});

test('peer_tls over_vsock: off by default; on, with the identity files, under any mode', (t) => {
  const over = (section: Record<string, unknown>): unknown => (parseSidecarConfig({ ...minimal, peer_tls: section }).peerTls as { overVsock?: unknown }).overVsock;
  t.is(over({ mode: 'strict', ...pemFiles }), false);
  t.is(over({ mode: 'strict', ...pemFiles, over_vsock: true }), true);
  t.is(over({ mode: 'disable', ...pemFiles, over_vsock: true }), true, 'TCP modes and the vsock hop are separate choices');
});

test('peer_tls over_vsock without identity files, or not a boolean, is refused by path', (t) => {
  t.deepEqual(problems({ ...minimal, peer_tls: { over_vsock: true } }), ['peer_tls.over_vsock: needs the peer identity files (key_file, chain_file, bundle_file)']);
  t.deepEqual(problems({ ...minimal, peer_tls: { mode: 'strict', ...pemFiles, over_vsock: 'yes' } }), ['peer_tls.over_vsock: must be true or false']);
});

test('peer_tls max_connection_age: off by default; given, with its grace (default 30s, 0 allowed)', (t) => {
  const aged = (extra: Record<string, unknown>): unknown => (parseSidecarConfig({ ...minimal, peer_tls: { mode: 'strict', ...pemFiles, ...extra } }).peerTls as { maxConnectionAge: unknown }).maxConnectionAge;
  t.deepEqual(aged({ max_connection_age: '30m' }), { maxAgeMs: 1_800_000, graceMs: 30_000 });
  t.deepEqual(aged({ max_connection_age: '1h', max_connection_age_grace: '0s' }), { maxAgeMs: 3_600_000, graceMs: 0 });
  t.is(aged({ max_connection_age_grace: '5s' }), null);
});

test('peer_tls max_connection_age below 1s, or not a duration, is refused by path', (t) => {
  t.deepEqual(problems({ ...minimal, peer_tls: { mode: 'strict', ...pemFiles, max_connection_age: '500ms' } }), ['peer_tls.max_connection_age: must be at least 1000ms']);
  t.deepEqual(problems({ ...minimal, peer_tls: { mode: 'strict', ...pemFiles, max_connection_age_grace: 'soon' } }), ['peer_tls.max_connection_age_grace: "soon" is not a duration such as "250ms", "5s", "1m" or "1h"']);
});

test('peer_tls permissive or strict needs all three PEM files, each named by its path', (t) => {
  t.deepEqual(problems({ ...minimal, peer_tls: { mode: 'permissive', key_file: '/k.pem' } }), ['peer_tls.chain_file: required when mode is permissive', 'peer_tls.bundle_file: required when mode is permissive']);
});

test('peer_tls refuses an unknown mode, a bad trust domain and a bad proxy_header placement', (t) => {
  const found = problems({ ...minimal, peer_tls: { mode: 'on', trust_domain: 'Not A Domain', proxy_header: 'after_tls', ...pemFiles } });
  t.true(found.some((p) => p.startsWith('peer_tls.mode:')));
  t.true(found.some((p) => p.startsWith('peer_tls.trust_domain:')));
  t.true(found.some((p) => p.startsWith('peer_tls.proxy_header:')));
});

test('allowed_peer_ids must be SPIFFE IDs, on a TCP inbound listener, with peer_tls on', (t) => {
  t.deepEqual(problems({ ...minimal, listeners: [inbound({ allowed_peer_ids: ['spiffe://vsockmesh.local/vm/vm-b'] })] }), [
    'listeners[0].allowed_peer_ids: needs peer_tls mode permissive or strict (a plain-text peer proves no identity)',
  ]);
  const found = problems({ ...minimal, peer_tls: { mode: 'strict', ...pemFiles }, listeners: [inbound({ allowed_peer_ids: ['vm-b'] })] });
  t.true(found.some((p) => p.startsWith('listeners[0].allowed_peer_ids[0]: must be a SPIFFE ID')));
  const vsock = problems({ ...minimal, peer_tls: { mode: 'strict', ...pemFiles }, listeners: [inbound({ transport: 'vsock', allowed_peer_cids: [3], allowed_peer_ids: ['spiffe://vsockmesh.local/vm/vm-b'] })] });
  t.true(vsock.some((p) => p.startsWith('listeners[0].allowed_peer_ids: only for transport: tcp')));
  const ok = parseSidecarConfig({ ...minimal, peer_tls: { mode: 'strict', ...pemFiles }, listeners: [inbound({ allowed_peer_ids: ['spiffe://vsockmesh.local/vm/vm-b'] })] });
  t.deepEqual((ok.listeners[0] as { allowedPeerIds: string[] }).allowedPeerIds, ['spiffe://vsockmesh.local/vm/vm-b']);
});
