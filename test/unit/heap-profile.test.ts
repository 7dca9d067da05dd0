import test from 'ava';
import { HEAP_PROFILES, heapProfileExecArgv, heapProfileForListeners } from '../../proxy/cmd/heap-profile.js';
import { parseSidecarConfig } from '../../proxy/config/load.js';

const SHEBANG = ['--max-semi-space-size=1', '--initial-old-space-size=8', '--no-turbofan'];

test('idle keeps the node flags the process runs with', (t) => {
  t.is(heapProfileExecArgv('idle', SHEBANG), null);
  t.is(heapProfileExecArgv('idle', []), null);
  t.is(heapProfileExecArgv('idle', ['--max-semi-space-size=16']), null);
});

test("http appends its semi-space after the shebang's, keeping every other flag in order", (t) => {
  t.deepEqual(heapProfileExecArgv('http', SHEBANG), [...SHEBANG, ...HEAP_PROFILES.http]);
  t.deepEqual(heapProfileExecArgv('http', ['--cpu-prof', '--max-semi-space-size=1']), ['--cpu-prof', '--max-semi-space-size=1', '--max-semi-space-size=8']);
});

test('http changes nothing once its flag is the last of its name (after the re-exec: no loop)', (t) => {
  const after = heapProfileExecArgv('http', SHEBANG)!;
  t.is(heapProfileExecArgv('http', after), null);
  t.is(heapProfileExecArgv('http', ['--max-semi-space-size=8']), null);
});

test('http re-executes when a later flag overrides its size', (t) => {
  t.deepEqual(heapProfileExecArgv('http', ['--max-semi-space-size=8', '--max-semi-space-size=2']), ['--max-semi-space-size=8', '--max-semi-space-size=2', '--max-semi-space-size=8']);
});

test("server (the control plane's and the VM manager's default) appends V8's 16 MiB after the shebang's 1 MiB (and no --expose-gc: the settle goes through the trim addon)", (t) => {
  const after = heapProfileExecArgv('server', SHEBANG)!;
  t.deepEqual(after, [...SHEBANG, '--max-semi-space-size=16']);
  t.is(heapProfileExecArgv('server', after), null);
});

const listenersOf = (listeners: unknown[]) =>
  parseSidecarConfig({
    node: { id: 'vm-a' },
    vm_manager: { address: '127.0.0.1:15200' },
    insecure: true,
    listeners,
    clusters: [{ name: 'c', endpoints: [{ address: '10.0.0.2', port: 8080 }] }, { name: 'original', resolve: { original_destination: true } }],
  }).listeners;
const l4 = { kind: 'outbound', name: 'out', port: 15001, cluster: 'c' };
const inbound = { kind: 'inbound', name: 'in', port: 15006, ports: [8080] };

test("auto (a sidecar's default): idle for L4 listeners only, or none", (t) => {
  t.is(heapProfileForListeners([]), 'idle');
  t.is(heapProfileForListeners(listenersOf([l4, inbound])), 'idle');
  t.is(heapProfileForListeners(listenersOf([{ kind: 'outbound', name: 'capture', port: 15002, cluster: 'original' }])), 'idle');
});

test('auto: http once any listener parses HTTP requests (protocol: http, an HTTP inspector, the forward proxy)', (t) => {
  t.is(heapProfileForListeners(listenersOf([l4, inbound, { kind: 'outbound', name: 'web', port: 15003, cluster: 'c', protocol: 'http' }])), 'http');
  t.is(heapProfileForListeners(listenersOf([inbound, { kind: 'outbound', name: 'capture', port: 15002, cluster: 'original', http_inspector: {} }])), 'http');
  t.is(heapProfileForListeners(listenersOf([inbound, { kind: 'forward_proxy', name: 'egress', port: 15080 }])), 'http');
});
