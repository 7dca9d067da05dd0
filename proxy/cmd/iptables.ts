// `vsockmesh iptables apply|remove|print`: transparent capture's rules
// (proxy/capture/rules.ts) loaded into, or removed from, this network
// namespace's nat table. Exit 0: done; 1: a step failed (not root, a tool
// missing, iptables-restore refused); 2: bad usage, nothing changed.

import { Command, CommanderError, Option } from 'commander';
import { applyRules, natState, removeRules, type Family } from '../capture/rules.js';
import { CaptureUsageError, DEFAULT_CAPTURE_PORT, captureModel, ipv6Mode, type CaptureFlags, type Ipv6Mode } from '../capture/options.js';
import { CaptureError, familyTools, hasNetAdmin, loadRules, readNat, systemIds } from '../capture/iptables.js';

const collect = (value: string, previous: string[]) => [...previous, value];

function ipv6Option(): Option {
  return new Option('--ipv6 <mode>', 'IPv6 rules too: on, off, or auto (when ip6tables has a nat table here)').default('auto');
}

/** The families to act on and their tools; a family that cannot be used under --ipv6 auto is skipped with a note. */
function families(mode: Ipv6Mode, say: (line: string) => void): Array<{ family: Family; tools: { save: string; restore: string }; nat: string }> {
  if (!hasNetAdmin()) throw new CaptureError('changing the nat table needs CAP_NET_ADMIN: run as root (or with that capability)');
  const wanted: Family[] = mode === 'off' ? [4] : [4, 6];
  const usable = [];
  for (const family of wanted) {
    const tools = familyTools(family);
    const nat = typeof tools === 'string' ? { problem: tools } : readNat(tools);
    if (typeof tools !== 'string' && 'text' in nat) usable.push({ family, tools, nat: nat.text });
    else if (family === 6 && mode === 'auto') say(`IPv6: skipped (--ipv6 auto: ${'problem' in nat ? nat.problem : ''})`);
    else throw new CaptureError(`IPv${family}: cannot read the nat table: ${'problem' in nat ? nat.problem : ''}`);
  }
  return usable;
}

/** Runs an action; usage and step errors become one line on stderr and the exit code. */
function guarded(action: string, body: () => void): void {
  try {
    body();
  } catch (err) {
    if (!(err instanceof CaptureUsageError || err instanceof CaptureError)) throw err;
    process.stderr.write(`vsockmesh iptables ${action}: ${err.message}\n`);
    process.exitCode = err instanceof CaptureUsageError ? 2 : 1;
  }
}

interface ModelOptions extends Omit<CaptureFlags, 'ipv6'> {
  ipv6: string;
}

function modelOptions(command: Command): Command {
  return command
    .option('--port <port>', 'the capture listener\'s port (an outbound listener whose cluster says resolve: { original_destination: true })', DEFAULT_CAPTURE_PORT)
    .option('--uid <user>', 'never capture connections of this user, the sidecar\'s (name or id; repeatable; default vsockmesh unless --gid or --mark)', collect, [])
    .option('--gid <group>', 'never capture connections of this group (name or id; repeatable)', collect, [])
    .option('--mark <value[/mask]>', 'never capture connections with this fwmark (repeatable)', collect, [])
    .option('--exclude-cidr <cidr>', 'never capture connections to this network (IPv4 or IPv6; repeatable)', collect, [])
    .option('--exclude-port <port>', 'never capture connections to this destination port (repeatable)', collect, [])
    .option('--inbound-port <port>', 'capture inbound TCP too: redirect it to the sidecar\'s inbound listener on this port')
    .option('--inbound-exclude-port <port>', 'with --inbound-port: leave inbound connections to this port alone, e.g. 22 (repeatable)', collect, [])
    .addOption(ipv6Option());
}

export function iptablesCommand(): Command {
  const command = new Command('iptables')
    .description('transparent capture: nat rules that redirect this network namespace\'s TCP to the sidecar (see README "Transparent capture")')
    // Bad usage exits 2 like every role's; commander has printed the message already.
    .exitOverride((err: CommanderError) => process.exit(err.exitCode === 0 ? 0 : 2));

  modelOptions(command.command('apply'))
    .description('install (or replace) the capture rules; idempotent')
    .action((opts: ModelOptions) =>
      guarded('apply', () => {
        const model = captureModel(opts, systemIds);
        const say = (line: string) => process.stdout.write(`${line}\n`);
        for (const { family, tools, nat } of families(ipv6Mode(opts.ipv6), say)) {
          loadRules(tools, family, applyRules(model, family, natState(nat)));
          say(`IPv${family}: capture rules applied (outbound to port ${model.outboundPort}${model.inbound ? `, inbound to port ${model.inbound.port}` : ''})`);
        }
      }),
    );

  command
    .command('remove')
    .description('delete the capture rules; idempotent')
    .addOption(ipv6Option())
    .action((opts: { ipv6: string }) =>
      guarded('remove', () => {
        const say = (line: string) => process.stdout.write(`${line}\n`);
        for (const { family, tools, nat } of families(ipv6Mode(opts.ipv6), say)) {
          const text = removeRules(natState(nat));
          if (text !== '') loadRules(tools, family, text);
          say(`IPv${family}: ${text === '' ? 'no capture rules to remove' : 'capture rules removed'}`);
        }
      }),
    );

  modelOptions(command.command('print'))
    .description('print the iptables-restore text apply loads into an empty nat table (checks every flag; needs no privilege)')
    .action((opts: ModelOptions) =>
      guarded('print', () => {
        const model = captureModel(opts, systemIds);
        const empty = natState('');
        for (const family of ipv6Mode(opts.ipv6) === 'off' ? [4 as const] : ([4, 6] as const)) {
          process.stdout.write(`# IPv${family}: ${family === 4 ? 'iptables' : 'ip6tables'}-restore --noflush\n${applyRules(model, family, empty)}`);
        }
      }),
    );
  return command;
}
