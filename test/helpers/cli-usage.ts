// Deploy artifacts (systemd units, container args) name CLI roles and flags:
// each is checked against the compiled CLI's own `--help`.

import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { CLI } from './cli.js';

const run = promisify(execFile);

/** The problems of `args` (a role, maybe a subcommand, then its arguments) against the CLI's own `--help`: an unknown role or flag. */
export async function cliUsageProblems(args: readonly string[]): Promise<string[]> {
  const [role, ...rest] = args;
  const helpOf = (command: string[]) =>
    run(process.execPath, [CLI, ...command, '--help']).then(
      (r) => r.stdout,
      () => '',
    );
  let help = await helpOf([role!]);
  if (!new RegExp(`^Usage: vsockmesh ${role} `, 'm').test(help)) return [`no role ${role}`];
  // A role with subcommands (`iptables apply`): the flags are the subcommand's.
  const sub = rest[0];
  if (sub !== undefined && /^Commands:/m.test(help) && new RegExp(`^  ${sub} `, 'm').test(help)) {
    help = await helpOf([role!, sub]);
    rest.shift();
  }
  return rest
    .filter((a) => a.startsWith('-'))
    .map((a) => a.split('=')[0]!)
    .filter((flag) => !new RegExp(`(^|[ ,])${flag}[ ,]`, 'm').test(help))
    .map((flag) => `${role} has no ${flag}`);
}
