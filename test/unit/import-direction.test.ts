// The direction of imports is a lint error when broken (eslint.config.js):
// proxy/ never imports xds/ outside its composition root proxy/cmd/, and
// proxy/runtime/ imports nothing of the project outside itself. Checked on
// deliberate violations and on the whole tree.

import test from 'ava';
import { ESLint } from 'eslint';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('../..', import.meta.url));
const eslint = new ESLint({ cwd: root });
const DIRECTION_RULES = new Set(['no-restricted-imports', 'no-restricted-syntax']);

async function directionErrors(code: string, filePath: string): Promise<string[]> {
  const [result] = await eslint.lintText(code, { filePath: `${root}/${filePath}` });
  return result!.messages.filter((m) => m.ruleId !== null && DIRECTION_RULES.has(m.ruleId)).map((m) => `${m.ruleId}: ${m.message}`);
}

const violations: Array<[string, string, string]> = [
  ['a data-plane file importing xds/', 'proxy/upstream/violation.ts', "import { VmManagerClient } from '../../xds/vm-manager/client.js';\nexport const c = VmManagerClient;\n"],
  ['a type-only import of xds/', 'proxy/listeners/violation.ts', "import type { Snapshot } from '../../xds/control-plane/types.js';\nexport type S = Snapshot;\n"],
  ['a dynamic import of xds/', 'proxy/sidecar-violation.ts', "export const load = () => import('../xds/client/ads-client.js');\n"],
  ['a re-export of xds/', 'proxy/resolve/violation.ts', "export { VmManagerClient } from '../../xds/vm-manager/client.js';\n"],
  ['the runtime importing the data plane', 'proxy/runtime/violation.ts', "import { native } from '../native/index.js';\nexport const n = native;\n"],
  ['the runtime importing a config type', 'proxy/runtime/violation.ts', "import type { SidecarConfig } from '../config/types.js';\nexport type C = SidecarConfig;\n"],
];

for (const [what, file, code] of violations) {
  test(`lint refuses ${what}`, async (t) => {
    const errors = await directionErrors(code, file);
    t.is(errors.length, 1, errors.join('\n'));
  });
}

test('the composition root (proxy/cmd) and xds/ may import both sides', async (t) => {
  t.deepEqual(await directionErrors("import { VmManagerClient } from '../../xds/vm-manager/client.js';\nexport const c = VmManagerClient;\n", 'proxy/cmd/fixture.ts'), []);
  t.deepEqual(await directionErrors("import { Sidecar } from '../../proxy/sidecar.js';\nexport const s = Sidecar;\n", 'xds/client/fixture.ts'), []);
  t.deepEqual(await directionErrors("import { Backoff } from './backoff.js';\nexport const b = Backoff;\n", 'proxy/runtime/fixture.ts'), []);
});

test('the tree keeps the direction: no file of proxy/ or xds/ breaks it', async (t) => {
  const results = await eslint.lintFiles(['proxy/**/*.ts', 'xds/**/*.ts']);
  const broken = results.flatMap((r) => r.messages.filter((m) => m.ruleId !== null && DIRECTION_RULES.has(m.ruleId)).map((m) => `${r.filePath}: ${m.message}`));
  t.true(results.length > 80, `${results.length} files linted`);
  t.deepEqual(broken, []);
});
