// Deploy artifacts (systemd units, container args) name CLI roles and flags:
// each is checked against the compiled CLI's own `--help`.

import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { CLI } from './cli.js';

const run = promisify(execFile);

/** The problems of `args` (a role, then its arguments) against `vsockmesh <role> --help`: an unknown role or flag. */
export async function cliUsageProblems(args: readonly string[]): Promise<string[]> {
  const [role, ...rest] = args;
  const help = await run(process.execPath, [CLI, role!, '--help']).then(
    (r) => r.stdout,
    () => '',
  );
  if (!new RegExp(`^Usage: vsockmesh ${role} `, 'm').test(help)) return [`no role ${role}`];
  return rest
    .filter((a) => a.startsWith('-'))
    .map((a) => a.split('=')[0]!)
    .filter((flag) => !new RegExp(`(^|[ ,])${flag}[ ,]`, 'm').test(help))
    .map((flag) => `${role} has no ${flag}`);
}
