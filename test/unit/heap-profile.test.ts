import test from 'ava';
import { HEAP_PROFILES, heapProfileExecArgv } from '../../proxy/cmd/heap-profile.js';

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
