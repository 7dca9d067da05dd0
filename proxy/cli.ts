#!/usr/bin/env -S node --max-semi-space-size=1 --initial-old-space-size=8
// The one vsockmesh binary; each role is a subcommand.

import { Command, InvalidArgumentError, Option } from 'commander';
import { readFileSync } from 'node:fs';
import { ConfigError, loadHostRelayConfig, loadSidecarConfig } from './config/load.js';
import { runServer, type ServerRole } from './run-server.js';

const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const;

function intOption(min: number, max: number) {
  return (value: string): number => {
    const n = Number(value);
    if (!Number.isInteger(n) || n < min || n > max) throw new InvalidArgumentError(`must be an integer ${min}..${max}`);
    return n;
  };
}

function version(): string {
  const pkg = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string };
  return pkg.version;
}

/** Roles that later work fills in: they say so and exit 2 rather than pretend. */
function notBuiltYet(role: string, what: string) {
  return (): void => {
    process.stderr.write(`vsockmesh ${role}: not built yet (${what}).\n`);
    process.exitCode = 2;
  };
}

/** A long-running role: config file, overrides, signals (see run-server.ts). */
function serverCommand(program: Command, role: ServerRole, description: string, readmeSection: string): void {
  program
    .command(role)
    .description(description)
    .requiredOption('-c, --config <file>', `${role} config file (YAML or JSON); see README "${readmeSection}"`)
    .addOption(new Option('--log-level <level>', 'override log.level from the config').choices(LOG_LEVELS))
    .option('--admin-port <port>', 'override admin.port (0 picks a free port)', intOption(0, 65535))
    .option('--drain-timeout-ms <ms>', 'override drain_timeout: how long open connections may finish after SIGTERM or POST /drain', intOption(0, 86_400_000))
    .action(async (opts: { config: string; logLevel?: (typeof LOG_LEVELS)[number]; adminPort?: number; drainTimeoutMs?: number }) => {
      await runServer(role, {
        configPath: opts.config,
        ...(opts.logLevel !== undefined && { logLevel: opts.logLevel }),
        ...(opts.adminPort !== undefined && { adminPort: opts.adminPort }),
        ...(opts.drainTimeoutMs !== undefined && { drainTimeoutMs: opts.drainTimeoutMs }),
      });
    });
}

export function buildCli(): Command {
  const program = new Command('vsockmesh')
    .description(
      'Service-mesh sidecar for virtual machines: app TCP connections go over vsock when the peer VM ' +
        'shares the hypervisor, over TCP otherwise. Each role below is a subcommand.',
    )
    .version(version())
    .showHelpAfterError('(run with --help for usage)');

  serverCommand(program, 'sidecar', 'run the sidecar: outbound listeners for local apps, inbound listeners (TCP, vsock) for peer sidecars, admin endpoint', 'Config reference');
  program
    .command('validate-config')
    .description('check a config file without starting anything; exit 0 if valid, 2 with every problem listed if not')
    .argument('<file>', 'config file (YAML or JSON)')
    .addOption(new Option('--role <role>', 'which role the file configures').choices(['sidecar', 'host-relay']).default('sidecar'))
    .action(async (file: string, opts: { role: 'sidecar' | 'host-relay' }) => {
      try {
        if (opts.role === 'host-relay') {
          const relay = await loadHostRelayConfig(file);
          process.stdout.write(`${file}: valid host-relay config (node ${relay.node.id}, vsock port ${relay.listen.port}, ${relay.policy.length} policy rules)\n`);
          return;
        }
        const config = await loadSidecarConfig(file);
        const outbound = config.listeners.filter((l) => l.kind === 'outbound').length;
        process.stdout.write(
          `${file}: valid (node ${config.node.id}, ${outbound} outbound and ${config.listeners.length - outbound} inbound listeners, ${config.clusters.length} clusters)\n`,
        );
      } catch (err) {
        if (!(err instanceof ConfigError)) throw err;
        process.stderr.write(`${err.message}\n`);
        process.exitCode = 2;
      }
    });

  program
    .command('demo')
    .description('embedded default: an echo app and an HTTP app behind two sidecars on loopback; sends traffic, prints the path each connection took, then keeps serving until Ctrl-C')
    .option('--once', 'exit after the demo traffic instead of serving until Ctrl-C')
    .option('--echo-bytes <n>', 'bytes to send through the echo path', intOption(1, 1 << 30), 1 << 20)
    .action(async (opts: { once?: boolean; echoBytes: number }) => {
      // Loaded on demand: a sidecar process should not carry the demo's apps.
      const { runDemo } = await import('./demo.js');
      await runDemo({ once: opts.once ?? false, echoBytes: opts.echoBytes });
    });

  program
    .command('vm-manager')
    .description('VM registry with the gRPC Resolve/Watch API (not built yet)')
    .action(notBuiltYet('vm-manager', 'the VM manager comes with the VM manager issue'));
  program
    .command('control-plane')
    .description('xDS ADS server for listeners, routes, clusters and endpoints (not built yet)')
    .action(notBuiltYet('control-plane', 'the xDS control plane comes with the xDS issue'));
  serverCommand(
    program,
    'host-relay',
    'run on the hypervisor: relay guest-to-guest vsock (a KVM guest reaches only its host, CID 2); checks each source CID against the policy',
    'Host relay',
  );
  program
    .command('ctl')
    .description('command-line client for the VM manager and control plane (not built yet)')
    .allowUnknownOption()
    .allowExcessArguments()
    .action(notBuiltYet('ctl', 'it needs the VM manager and control plane APIs'));

  return program;
}

await buildCli().parseAsync(process.argv);
