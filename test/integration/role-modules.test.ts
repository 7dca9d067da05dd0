// The control plane and the VM manager are not the data plane: their processes
// never load the native core (vsockmesh_native.node). Read from the running
// process's memory map; a sidecar process, which does load it, shows that the
// check sees it.

import test, { type ExecutionContext } from 'ava';
import { readFile } from 'node:fs/promises';
import { startCli, writeConfig, type CliProcess } from '../helpers/cli.js';

const ADDON = 'vsockmesh_native.node';

async function mapsOf(proc: CliProcess): Promise<string> {
  return readFile(`/proc/${proc.child.pid}/maps`, 'utf8');
}

async function running(t: ExecutionContext, args: string[], serving: string): Promise<CliProcess> {
  const proc = startCli(args);
  t.teardown(() => proc.kill('SIGKILL'));
  await proc.waitForLine((l) => l.msg === serving, serving, 30_000);
  return proc;
}

test('vsockmesh control-plane serves without loading the native core', async (t) => {
  const proc = await running(t, ['control-plane', '--listen', '127.0.0.1:0', '--no-admin', '--insecure'], 'control-plane ready');
  t.false((await mapsOf(proc)).includes(ADDON));
});

test('vsockmesh vm-manager serves without loading the native core', async (t) => {
  const proc = await running(t, ['vm-manager', '--listen', '127.0.0.1:0', '--no-admin', '--insecure'], 'vm-manager ready');
  t.false((await mapsOf(proc)).includes(ADDON));
});

test('a sidecar process does load it (the check above can see the addon)', async (t) => {
  const config = await writeConfig({ node: { id: 'vm-a' }, admin: null, listeners: [{ kind: 'outbound', name: 'out', port: 0, cluster: 'c' }], clusters: [{ name: 'c', endpoints: [{ address: '127.0.0.1', port: 9 }] }] });
  t.teardown(config.cleanup);
  const proc = await running(t, ['sidecar', '-c', config.path], 'sidecar ready');
  t.true((await mapsOf(proc)).includes(ADDON));
});
