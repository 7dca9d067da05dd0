#!/usr/bin/env -S node --max-semi-space-size=1 --initial-old-space-size=8 --no-turbofan --no-sparkplug
// The one vsockmesh binary; each role is a subcommand. Every role's module is
// loaded with a dynamic import when its subcommand runs: the control plane and
// the VM manager never load the data plane's native core, a sidecar never
// loads the control plane, and `--help` loads neither. The operator commands
// (ctl, iptables) are loaded unless a long-running role runs (SERVING_ROLES).
// --no-turbofan: start-up alone (module resolution, config parsing) made V8
// optimise ~20 functions, and the first optimisation pages in TurboFan and
// its zones (~6 MiB of an idle sidecar's RSS); TurboFan is turned on once the
// command has started (a serving role is ready): tiering.ts. --no-sparkplug: V8's
// baseline compiler compiled the start-up functions in batches (~1.5 MiB of
// an idle sidecar's RSS); hot paths still reach TurboFan.

import { Command, InvalidArgumentError, Option } from 'commander';
import { readFileSync } from 'node:fs';
import { loadHostRelayConfig, loadSidecarConfig } from '../config/load.js';
import { ConfigError } from '../runtime/config-file.js';
import type { ServerRole } from './run-proxy.js';
import type { IdentityFlags } from '../../xds/security/process-identity.js';
import type { StoreFlags } from '../../xds/store/store-flags.js';
import type { SidecarConfig } from '../config/types.js';
import { HEAP_PROFILE_NAMES, applyHeapProfile, heapProfileForListeners, type HeapProfile, type HeapProfileChoice } from './heap-profile.js';
import { endStartUp } from './tiering.js';
import { DEFAULT_TRUST_DOMAIN } from '../identity/spiffe.js';
import { formatDuration, parseDuration } from '../runtime/duration.js';

/** The subcommands that serve until stopped: their command line cannot reach ctl or iptables. */
const SERVING_ROLES: readonly string[] = ['sidecar', 'host-relay', 'vm-manager', 'control-plane'];

const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const;

function intOption(min: number, max: number) {
  return (value: string): number => {
    const n = Number(value);
    if (!Number.isInteger(n) || n < min || n > max) throw new InvalidArgumentError(`must be an integer ${min}..${max}`);
    return n;
  };
}

function version(): string {
  const pkg = JSON.parse(readFileSync(new URL('../../../package.json', import.meta.url), 'utf8')) as { version: string };
  return pkg.version;
}

interface ControlPlaneCliOptions extends IdentityFlags, StoreFlags {
  listen: string;
  heapProfile: HeapProfile;
  mesh?: string;
  meshStateFile?: string;
  vmManager?: string;
  inventory?: string;
  stateFile?: string;
  resolveTtlMs: number;
  debounceMs: number;
  statusRetentionMs?: number;
  adminPort: number;
  admin: boolean;
  logLevel: (typeof LOG_LEVELS)[number];
  leafLifetime?: number;
}

function durationOption(minMs: number, maxMs: number) {
  return (value: string): number => {
    const ms = parseDuration(value);
    if (ms === undefined || ms < minMs || ms > maxMs) throw new InvalidArgumentError(`must be a duration (ms, s, m, h) from ${formatDuration(minMs)} to ${formatDuration(maxMs)}`);
    return ms;
  };
}

/** The identity of a control API server (see README "Security"); exactly one source, plain text only with --insecure. */
function controlIdentityOptions(command: Command): Command {
  return command
    .option('--cert <file>', 'this process\'s certificate chain (PEM, leaf first), with --key and --ca; reloaded when it changes')
    .option('--key <file>', 'the private key of --cert (PEM)')
    .option('--ca <file>', 'the trust bundle (PEM roots) client certificates are verified against')
    .option('--ca-cert <file>', 'run the CA under this CA certificate (PEM, followed by its chain up to the root), with --ca-key: it issues this process cp/<name> (and, on the control plane, serves Certify)')
    .option('--ca-key <file>', 'the private key of --ca-cert (mode 0600)')
    .option('--ca-bundle <file>', 'roots added to the trust bundle (PEM): the other root during a root rotation')
    .option('--identity-dir <dir>', 'the embedded CA: a root generated here at first start (mode 0600) unless --ca-cert/--ca-key; the control plane keeps its join tokens here too')
    .option('--name <name>', 'the replica name in spiffe://<trust-domain>/cp/<name> when this process issues its own identity (default: the role, control-plane or vm-manager)')
    .option('--trust-domain <domain>', `the SPIFFE trust domain of the CA (default ${DEFAULT_TRUST_DOMAIN})`)
    .option('--insecure', 'serve the control APIs in plain text: no caller is authenticated (a warning at start, vsockmesh_insecure 1 on /stats)');
}

/** etcd as the store (`what`: what lives there): the same flags, TLS default and parsing (xds/store/store-flags.ts) for every role. */
function storeOptions(command: Command, what: string): Command {
  return command
    .option('--store <url>', `keep ${what} in etcd instead (etcd://host:2379[,host:2379], ?cert=&key=&ca= or the flags below); replicas on one etcd share it; see README "Store"`)
    .option('--store-cert <file>', 'client certificate (PEM) for etcd')
    .option('--store-key <file>', 'the private key of --store-cert (PEM)')
    .option('--store-ca <file>', 'the CA (PEM) etcd\'s server certificate is verified against')
    .option('--store-insecure', 'speak to etcd in plain text (no TLS): only where the network is trusted');
}

function storeFlags(o: StoreFlags): StoreFlags {
  const { store, storeCert, storeKey, storeCa, storeInsecure } = o;
  return Object.fromEntries(Object.entries({ store, storeCert, storeKey, storeCa, storeInsecure }).filter(([, v]) => v !== undefined));
}

function controlIdentityFlags(o: IdentityFlags): IdentityFlags {
  const { insecure, cert, key, ca, caCert, caKey, caBundle, identityDir, name, trustDomain, leafLifetimeMs } = o;
  return Object.fromEntries(Object.entries({ insecure, cert, key, ca, caCert, caKey, caBundle, identityDir, name, trustDomain, leafLifetimeMs }).filter(([, v]) => v !== undefined));
}

/** --heap-profile: the young generation for the role's work (proxy/cmd/heap-profile.ts). */
function heapProfileOption(profile: HeapProfileChoice, choices: readonly HeapProfileChoice[] = HEAP_PROFILE_NAMES): Option {
  return new Option('--heap-profile <profile>', `young generation for the work: idle (the node flags it was started with: 1 MiB from the shebang, the smallest RSS), http (re-executes with 8 MiB: less GC per HTTP request, more RSS) or server (16 MiB, for the control plane and the VM manager)${choices.includes('auto') ? "; auto: http when the config file declares HTTP listeners, idle otherwise" : ''}; see README "Running a sidecar"`)
    .choices(choices)
    .default(profile);
}

/**
 * A sidecar's `auto`: the profile its config file's listeners call for, and
 * the config read for it (handed to the role, which does not read it again);
 * a file that does not load gets `idle` here and its error from the role's start.
 */
async function sidecarHeapProfile(choice: HeapProfileChoice, configPath: string): Promise<{ profile: HeapProfile; config?: SidecarConfig }> {
  if (choice !== 'auto') return { profile: choice };
  const { loadSidecarConfig } = await import('../config/load.js');
  const config = await loadSidecarConfig(configPath).catch(() => undefined);
  return config === undefined ? { profile: 'idle' } : { profile: heapProfileForListeners(config.listeners), config };
}

/** A long-running role of the data plane: config file, overrides, signals (see run-proxy.ts). */
function serverCommand(program: Command, role: ServerRole, description: string, readmeSection: string): void {
  program
    .command(role)
    .description(description)
    .requiredOption('-c, --config <file>', `${role} config file (YAML or JSON); see README "${readmeSection}"`)
    .addOption(new Option('--log-level <level>', 'override log.level from the config').choices(LOG_LEVELS))
    .option('--admin-port <port>', 'override admin.port (0 picks a free port)', intOption(0, 65535))
    .option('--drain-timeout-ms <ms>', 'override drain_timeout: how long open connections may finish after SIGTERM or POST /drain', intOption(0, 86_400_000))
    .addOption(role === 'sidecar' ? heapProfileOption('auto', [...HEAP_PROFILE_NAMES, 'auto']) : heapProfileOption('idle'))
    .action(async (opts: { config: string; logLevel?: (typeof LOG_LEVELS)[number]; adminPort?: number; drainTimeoutMs?: number; heapProfile: HeapProfileChoice }) => {
      const { profile, config } = await sidecarHeapProfile(opts.heapProfile, opts.config);
      await applyHeapProfile(profile);
      const { runServer } = await import('./run-proxy.js');
      await runServer(role, {
        configPath: opts.config,
        ...(config !== undefined && { sidecarConfig: config }),
        ...(opts.logLevel !== undefined && { logLevel: opts.logLevel }),
        ...(opts.adminPort !== undefined && { adminPort: opts.adminPort }),
        ...(opts.drainTimeoutMs !== undefined && { drainTimeoutMs: opts.drainTimeoutMs }),
      });
    });
}

export async function buildCli(argv: readonly string[]): Promise<Command> {
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
          process.stdout.write(`${file}: valid host-relay config (node ${relay.node.id}, vsock port ${relay.listen.port}, ${relay.policy ? `${relay.policy.length} policy rules` : `policy from the VM manager at ${relay.vmManager?.addresses.join(', ')}`})\n`);
          return;
        }
        const config = await loadSidecarConfig(file);
        const count = (kind: string): number => config.listeners.filter((l) => l.kind === kind).length;
        const forwardProxies = count('forward_proxy');
        process.stdout.write(
          `${file}: valid (node ${config.node.id}, ${count('outbound')} outbound and ${count('inbound')} inbound listeners, ${forwardProxies > 0 ? `${forwardProxies} forward proxies, ` : ''}${config.clusters.length} clusters` +
            `${config.xds ? `; more from the control plane at ${config.xds.addresses.join(', ')}` : ''})\n`,
        );
      } catch (err) {
        if (!(err instanceof ConfigError)) throw err;
        process.stderr.write(`${err.message}\n`);
        process.exitCode = 2;
      }
    });

  program
    .command('demo')
    .description(
      'embedded default: a VM manager with three VMs (vm-a and vm-b on hv-1, vm-c on hv-2), their apps and sidecars on loopback; ' +
        'sends traffic from vm-a and prints, per connection, the transport chosen and why; then serves until Ctrl-C',
    )
    .option('--once', 'exit after the demo traffic instead of serving until Ctrl-C')
    .option('--echo-bytes <n>', 'bytes to send through each echo path', intOption(1, 1 << 30), 1 << 20)
    .option('--no-vsock', 'never use vsock, even where vsock_loopback is loaded (same decisions, carried over TCP)')
    .action(async (opts: { once?: boolean; echoBytes: number; vsock: boolean }) => {
      // Loaded on demand: a sidecar process should not carry the demo's apps.
      const { runDemo } = await import('./demo/index.js');
      await runDemo({ once: opts.once ?? false, echoBytes: opts.echoBytes, vsock: opts.vsock ? 'auto' : 'off' });
    });

  storeOptions(controlIdentityOptions(program
    .command('vm-manager')), 'the registry')
    .description('the VM manager: registry of VMs (hypervisor, vsock CID, addresses) with the gRPC API sidecars resolve destinations with')
    .option('--listen <host:port>', 'gRPC address', '127.0.0.1:15200')
    .option('--inventory <file>', 'inventory YAML (hypervisors and VMs) loaded at start when there is no state file; see README "VM manager"')
    .option('--state-file <file>', 'keep the registry here (a snapshot, with its change log in <file>.log.N beside it): every change is on disk (fdatasync) before it is applied and answered, and a restart starts from it')
    .option('--resolve-ttl-ms <ms>', 'how long sidecars may cache a Resolve answer', intOption(100, 86_400_000), 30_000)
    .option('--admin-port <port>', 'admin endpoint on 127.0.0.1 (/ready, /stats, /config_dump); 0 picks a free port', intOption(0, 65535), 15400)
    .option('--no-admin', 'no admin endpoint')
    .addOption(new Option('--log-level <level>', 'log level').choices(LOG_LEVELS).default('info'))
    .addOption(heapProfileOption('server'))
    .action(async (opts: IdentityFlags & StoreFlags & { listen: string; inventory?: string; stateFile?: string; resolveTtlMs: number; adminPort: number; admin: boolean; logLevel: (typeof LOG_LEVELS)[number]; heapProfile: HeapProfile }) => {
      await applyHeapProfile(opts.heapProfile);
      const { runVmManager } = await import('../../xds/vm-manager/run.js');
      await runVmManager({
        listen: opts.listen,
        ...(opts.inventory !== undefined && { inventoryPath: opts.inventory }),
        ...(opts.stateFile !== undefined && { statePath: opts.stateFile }),
        store: storeFlags(opts),
        resolveTtlMs: opts.resolveTtlMs,
        adminPort: opts.admin ? opts.adminPort : null,
        logLevel: opts.logLevel,
        controlIdentity: controlIdentityFlags(opts),
      });
    });
  storeOptions(controlIdentityOptions(program
    .command('control-plane')), 'the mesh')
    .description('xDS control plane (ADS, state of the world and delta) with the config API; serves the VM manager API on the same port unless --vm-manager names one')
    .option('--listen <host:port>', 'gRPC address (ADS, config API, VM manager API)', '127.0.0.1:15200')
    .option('--mesh <file>', 'mesh config YAML (services, routes) loaded at start when there is no mesh state file; see README "Control plane"')
    .option('--mesh-state-file <file>', 'persist config API changes here; a restart starts from it')
    .option('--vm-manager <host:port>', 'follow this VM manager (Watch) instead of serving one in this process')
    .option('--inventory <file>', 'in-process VM manager: inventory YAML loaded at start when there is no state file')
    .option('--state-file <file>', 'in-process VM manager: keep the registry here (a snapshot, with its change log in <file>.log.N beside it)')
    .option('--resolve-ttl-ms <ms>', 'in-process VM manager: how long sidecars may cache a Resolve answer', intOption(100, 86_400_000), 30_000)
    .option('--debounce-ms <ms>', 'changes are applied this long after the last one of a burst (at most 10x this after the first)', intOption(0, 60_000), 100)
    .option('--status-retention-ms <ms>', "how long a node's xDS sync status (and snapshot) is kept after its last stream closed (default 10 minutes)", intOption(0, 604_800_000))
    .option('--admin-port <port>', 'admin endpoint on 127.0.0.1 (/ready, /stats, /config_dump); 0 picks a free port', intOption(0, 65535), 15401)
    .option('--no-admin', 'no admin endpoint')
    .addOption(new Option('--log-level <level>', 'log level').choices(LOG_LEVELS).default('info'))
    .option('--leaf-lifetime <duration>', 'lifetime of the certificates the CA issues: Certify\'s and this process\'s own (default 24h)', durationOption(1_000, 30 * 24 * 3_600_000))
    .addOption(heapProfileOption('server'))
    .action(async (opts: ControlPlaneCliOptions) => {
      await applyHeapProfile(opts.heapProfile);
      const { runControlPlane } = await import('../../xds/control-plane/run.js');
      await runControlPlane({
        listen: opts.listen,
        ...(opts.mesh !== undefined && { meshPath: opts.mesh }),
        ...(opts.meshStateFile !== undefined && { meshStatePath: opts.meshStateFile }),
        store: storeFlags(opts),
        ...(opts.vmManager !== undefined && { vmManager: opts.vmManager }),
        ...(opts.inventory !== undefined && { inventoryPath: opts.inventory }),
        ...(opts.stateFile !== undefined && { statePath: opts.stateFile }),
        resolveTtlMs: opts.resolveTtlMs,
        debounceMs: opts.debounceMs,
        ...(opts.statusRetentionMs !== undefined && { statusRetentionMs: opts.statusRetentionMs }),
        adminPort: opts.admin ? opts.adminPort : null,
        logLevel: opts.logLevel,
        controlIdentity: controlIdentityFlags({ ...opts, ...(opts.leafLifetime !== undefined && { leafLifetimeMs: opts.leafLifetime }) }),
      });
    });
  serverCommand(
    program,
    'host-relay',
    'run on the hypervisor: relay guest-to-guest vsock (a KVM guest reaches only its host, CID 2); checks each source CID against the policy',
    'Host relay',
  );
  if (!SERVING_ROLES.includes(argv[2] ?? '')) {
    const [{ ctlCommand }, { iptablesCommand }] = await Promise.all([import('../../xds/ctl.js'), import('./iptables.js')]);
    program.addCommand(ctlCommand());
    program.addCommand(iptablesCommand());
  }

  return program;
}

await (await buildCli(process.argv)).parseAsync(process.argv);
endStartUp();
