import test from 'ava';
import { readFile } from 'node:fs/promises';
import { afterStartUpFlag } from '../../proxy/cmd/tiering.js';

const SHEBANG = ['--max-semi-space-size=1', '--initial-old-space-size=8', '--no-turbofan', '--no-sparkplug'];

test("a process started with the shebang's flags turns TurboFan on once started", (t) => {
  t.is(afterStartUpFlag(SHEBANG), '--turbofan');
  // The heap profile's re-exec appends its flags after the shebang's.
  t.is(afterStartUpFlag([...SHEBANG, '--max-semi-space-size=8']), '--turbofan');
  t.is(afterStartUpFlag(['--no-opt']), '--turbofan');
  t.is(afterStartUpFlag(['--no_turbofan']), '--turbofan');
});

test('TurboFan on already (plain node, or turned on later on the command line): nothing to change', (t) => {
  t.is(afterStartUpFlag([]), null);
  t.is(afterStartUpFlag(['--max-semi-space-size=1', '--cpu-prof']), null);
  t.is(afterStartUpFlag([...SHEBANG, '--turbofan']), null);
  t.is(afterStartUpFlag([...SHEBANG, '--opt']), null);
});

test('other flags that merely start with the name do not count', (t) => {
  t.is(afterStartUpFlag(['--no-turbofan-stats']), null);
  t.is(afterStartUpFlag(['--turbofan', '--no-turbo-inlining']), null);
});

test("the bin's shebang and the systemd units start with TurboFan off", async (t) => {
  const shebang = (await readFile(new URL('../../proxy/cmd/cli.ts', import.meta.url), 'utf8')).split('\n', 1)[0]!;
  t.is(afterStartUpFlag(shebang.split(/\s+/)), '--turbofan', shebang);
  for (const unit of ['vsockmesh-sidecar.service', 'vsockmesh-host-relay.service']) {
    const text = await readFile(new URL(`../../deploy/systemd/${unit}`, import.meta.url), 'utf8');
    const exec = text.split('\n').find((l) => l.startsWith('ExecStart='))!;
    t.is(afterStartUpFlag(exec.split(/\s+/)), '--turbofan', unit);
  }
});
