// `vsockmesh ctl`: the operator's client for the VM manager. Every error is
// one line on stderr and a non-zero exit (1: the call failed, 2: bad usage).

import { readFile } from 'node:fs/promises';
import { hostname } from 'node:os';
import { isIP } from 'node:net';
import { Command, InvalidArgumentError, Option } from 'commander';
import { parse as parseYaml } from 'yaml';
import { factsFromResolution, wantedOf } from '../proxy/upstream/endpoint-facts.js';
import { describeSelection, selectTransport, type TransportPolicy } from '../proxy/upstream/select.js';
import { VsockmeshError } from '../proxy/runtime/errors.js';
import { CallError } from './call-error.js';
import type { VmManagerClient } from './vm-manager/client.js';
import { DEFAULT_STATUS_PAGE_SIZE, MAX_STATUS_PAGE_SIZE } from './control-plane/bounds.js';
import type { MeshConfigApiClient } from './control-plane/config-api.js';
import type { ControlTransport } from './security/transport.js';
import type { JoinTokensApiClient } from './identity/certify-client.js';
import type { JoinTokenInfo__Output } from './generated/vsockmesh/identity/v1/JoinTokenInfo.js';
import { parseDuration } from '../proxy/runtime/duration.js';
import type { SyncStatusResponse__Output } from './generated/vsockmesh/config/v1/SyncStatusResponse.js';
import type { parseVmDocument } from './vm-manager/inventory.js';
import { DEFAULT_VM_MANAGER_ADDRESS, type Destination, type HypervisorRecord, type VmEvent, type VmRecord, type VsockMode } from '../proxy/resolve/types.js';

interface Globals {
  vmManager: string;
  controlPlane: string;
  timeoutMs: number;
  output: 'text' | 'json';
  cert?: string;
  key?: string;
  ca?: string;
  insecure?: boolean;
}

/** Bad usage (exit 2), as opposed to a call that failed (exit 1). */
class UsageError extends VsockmeshError {
  constructor(message: string) {
    super('INVALID_ARGUMENT', message);
  }
}

/** `10.0.0.5`, `10.0.0.5:8080`, `[fd00::5]:8080`, `vm/web-1`, `service/web`. */
export function parseDestination(text: string): Destination {
  if (text.startsWith('vm/') && text.length > 3) return { kind: 'vm', vmId: text.slice(3) };
  if (text.startsWith('service/') && text.length > 8) return { kind: 'service', name: text.slice(8) };
  if (isIP(text)) return { kind: 'ip', ip: text };
  const m = /^\[([^\]]+)\]:(\d+)$/.exec(text) ?? /^([^:]+):(\d+)$/.exec(text);
  if (m && isIP(m[1]!) && Number(m[2]) >= 1 && Number(m[2]) <= 65535) return { kind: 'ip_port', ip: m[1]!, port: Number(m[2]) };
  throw new UsageError(`destination "${text}": expected IP, IP:PORT, [IPv6]:PORT, vm/ID or service/NAME`);
}

function vmLine(vm: VmRecord): string {
  const sidecar = vm.sidecar ? `sidecar tcp:${vm.sidecar.tcpPort} vsock:${vm.sidecar.vsockPort}` : 'no sidecar';
  const services = vm.services.map((s) => `${s.name}:${s.port}`).join(',') || '-';
  const lease = vm.leaseExpiresAt === null ? '' : ` lease until ${new Date(vm.leaseExpiresAt).toISOString()}`;
  return `${vm.vmId}\thypervisor=${vm.hypervisorId}\tcid=${vm.vsockCid}\t${vm.addresses.join(',')}\t${sidecar}\tservices=${services}\tgen=${vm.generation}${lease}`;
}

function hypervisorLine(h: HypervisorRecord): string {
  return `${h.hypervisorId}\tvsock=${h.vsockMode}${h.vsockMode === 'host-relay' ? `\trelay_port=${h.relayPort}` : ''}`;
}

function eventLine(e: VmEvent): string {
  if (e.type === 'hypervisor' || e.type === 'hypervisor-removed') return `${e.revision}\t${e.type}\t${hypervisorLine(e.hypervisor)}`;
  if (e.type === 'moved') return `${e.revision}\tmoved\t${e.vm.vmId}\t${e.previous.hypervisorId}/cid ${e.previous.vsockCid} -> ${e.vm.hypervisorId}/cid ${e.vm.vsockCid}`;
  return `${e.revision}\t${e.type}\t${vmLine(e.vm)}`;
}

function print(globals: Globals, json: unknown, text: string): void {
  process.stdout.write(globals.output === 'json' ? `${JSON.stringify(json)}\n` : `${text}\n`);
}

/** Runs `fn` with a client from `open`, turning every failure into one line and an exit code. */
async function withApi<C extends { close(): void }>(what: { name: string; address: string }, open: () => Promise<C>, fn: (client: C) => Promise<void>): Promise<void> {
  let client: C | undefined;
  try {
    client = await open();
    await fn(client);
  } catch (err) {
    if (err instanceof UsageError) {
      process.stderr.write(`vsockmesh ctl: ${err.message}\n`);
      process.exitCode = 2;
    } else if (err instanceof CallError) {
      // The server's own UNAVAILABLE ("not applied: cannot write state file: ...") is its answer, not an outage.
      const unreachable = !err.answered && (err.code === 'UNAVAILABLE' || err.code === 'DEADLINE_EXCEEDED');
      process.stderr.write(`vsockmesh ctl: ${unreachable ? `cannot reach the ${what.name} at ${what.address}: ` : ''}${err.code}: ${err.details}\n`);
      process.exitCode = 1;
    } else {
      process.stderr.write(`vsockmesh ctl: ${(err as Error).message.split('\n').join('; ')}\n`);
      process.exitCode = 1;
    }
  } finally {
    client?.close();
  }
}

/** The caller's identity files (flags or VSOCKMESH_CERT/KEY/CA), or plain text with --insecure; never plain text by default. */
async function transportOf(globals: Globals): Promise<ControlTransport> {
  const files = [globals.cert, globals.key, globals.ca];
  if (globals.insecure) {
    if (files.some((f) => f !== undefined)) throw new UsageError('--insecure cannot be combined with --cert/--key/--ca (or VSOCKMESH_CERT/KEY/CA)');
    return { insecure: true };
  }
  if (files.some((f) => f === undefined)) throw new UsageError('the control APIs need an identity: --cert, --key and --ca (or VSOCKMESH_CERT, VSOCKMESH_KEY, VSOCKMESH_CA), or --insecure for a plain-text server');
  const { readCertificateFiles } = await import('../proxy/identity/certificate-files.js');
  const { staticSource } = await import('../proxy/identity/certificate-source.js');
  return { source: staticSource(await readCertificateFiles({ certPath: globals.cert!, keyPath: globals.key!, caPath: globals.ca! }, new Date())) };
}

/** A VM manager call. Loaded here: `vsockmesh sidecar` shares this module graph and should not load gRPC for ctl. */
function withClient(globals: Globals, fn: (client: VmManagerClient) => Promise<void>): Promise<void> {
  return withApi(
    { name: 'VM manager', address: globals.vmManager },
    async () => new (await import('./vm-manager/client.js')).VmManagerClient(globals.vmManager, { defaultTimeoutMs: globals.timeoutMs, transport: await transportOf(globals) }),
    fn,
  );
}

/** A config API call (the control plane). */
function withConfig(globals: Globals, fn: (client: MeshConfigApiClient) => Promise<void>): Promise<void> {
  return withApi(
    { name: 'control plane', address: globals.controlPlane },
    async () => new (await import('./control-plane/config-api.js')).MeshConfigApiClient(globals.controlPlane, await transportOf(globals), globals.timeoutMs),
    fn,
  );
}

/** A JoinTokens API call (the control plane, when it runs the CA). */
function withTokens(globals: Globals, fn: (client: JoinTokensApiClient) => Promise<void>): Promise<void> {
  return withApi(
    { name: 'control plane', address: globals.controlPlane },
    async () => new (await import('./identity/certify-client.js')).JoinTokensApiClient(globals.controlPlane, await transportOf(globals), globals.timeoutMs),
    fn,
  );
}

function tokenLine(t: JoinTokenInfo__Output): string {
  const expires = new Date(t.expires_at_ms);
  const state = t.used ? 'used' : expires.getTime() <= Date.now() ? 'expired' : 'unused';
  return `${t.id}	${t.kind}/${t.name}	expires=${expires.toISOString()}	${state}`;
}

function intArg(min: number, max: number) {
  return (value: string): number => {
    const n = Number(value);
    if (!Number.isInteger(n) || n < min || n > max) throw new InvalidArgumentError(`must be an integer ${min}..${max}`);
    return n;
  };
}

/** --expect-revision of every put and delete of the mesh config. */
function expectRevision(): Option {
  return new Option('--expect-revision <revision>', 'compare-and-swap: apply only if it is still at this revision (from list), else ABORTED').argParser(intArg(1, Number.MAX_SAFE_INTEGER));
}

export function ctlCommand(): Command {
  const ctl = new Command('ctl')
    .description('command-line client for the VM manager and the control plane: VMs, how a destination would be reached, services, routes, policies, peer modes, xDS sync status')
    .addOption(new Option('--vm-manager <host:port>', 'VM manager gRPC address').env('VSOCKMESH_VM_MANAGER').default(DEFAULT_VM_MANAGER_ADDRESS))
    .addOption(new Option('--control-plane <host:port>', 'control plane gRPC address (config API)').env('VSOCKMESH_CONTROL_PLANE').default(DEFAULT_VM_MANAGER_ADDRESS))
    .option('--timeout-ms <ms>', 'deadline of each call', intArg(1, 600_000), 5_000)
    .addOption(new Option('--cert <file>', 'your certificate chain (PEM, leaf first): an operator/<name> SVID').env('VSOCKMESH_CERT'))
    .addOption(new Option('--key <file>', 'the private key of --cert (PEM)').env('VSOCKMESH_KEY'))
    .addOption(new Option('--ca <file>', 'the trust bundle (PEM roots) the server is verified against').env('VSOCKMESH_CA'))
    .option('--insecure', 'talk plain text to a server started with --insecure')
    .addOption(new Option('-o, --output <format>', 'output format').choices(['text', 'json']).default('text'));
  const globals = (): Globals => ctl.opts<Globals>();

  ctl
    .command('whoami')
    .description('the identity (SPIFFE ID) and role the control plane sees for your certificate')
    .action(() =>
      withConfig(globals(), async (c) => {
        const me = await c.whoAmI();
        print(globals(), me, me.insecure ? `nobody: the control plane at ${globals().controlPlane} runs with --insecure (plain text, no identities)` : `${me.spiffe_id}\trole=${me.role}`);
      }),
    );

  const vms = ctl.command('vms').description('VMs in the registry');
  vms
    .command('list')
    .description('every VM, with its hypervisor, CID, addresses and sidecar ports')
    .action(() =>
      withClient(globals(), async (c) => {
        const r = await c.listVms();
        print(globals(), r, r.vms.length === 0 ? `no VMs (revision ${r.revision})` : r.vms.map(vmLine).join('\n'));
      }),
    );
  vms
    .command('get')
    .argument('<id>')
    .description('one VM')
    .action((id: string) =>
      withClient(globals(), async (c) => {
        const vm = await c.getVm(id);
        if (!vm) throw new CallError('NOT_FOUND', `VM "${id}" is not registered`);
        print(globals(), vm, vmLine(vm));
      }),
    );
  vms
    .command('register')
    .requiredOption('-f, --file <vm.yaml>', 'one VM in the inventory format (id, hypervisor, cid, addresses, sidecar, services, labels, lease_ttl)')
    .description('register a VM, or update it (same id)')
    .action((opts: { file: string }) =>
      withClient(globals(), async (c) => {
        let text: string;
        try {
          text = await readFile(opts.file, 'utf8');
        } catch (err) {
          throw new UsageError(`cannot read ${opts.file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
        }
        let doc: ReturnType<typeof parseVmDocument>;
        try {
          // Loaded here: every `vsockmesh` start reads this module, only `ctl vms register` needs the inventory schema.
          doc = (await import('./vm-manager/inventory.js')).parseVmDocument(text, opts.file);
        } catch (err) {
          throw new UsageError((err as Error).message.split('\n').join('; '));
        }
        const vm = await c.registerVm(doc.vm, doc.leaseTtlMs);
        print(globals(), vm, `registered ${vmLine(vm)}`);
      }),
    );
  vms
    .command('deregister')
    .argument('<id>')
    .description('remove a VM')
    .action((id: string) =>
      withClient(globals(), async (c) => {
        await c.deregisterVm(id);
        print(globals(), { deregistered: id }, `deregistered ${id}`);
      }),
    );
  vms
    .command('move')
    .argument('<id>')
    .requiredOption('--hypervisor <id>', 'the hypervisor the VM now runs on')
    .option('--cid <n>', 'its vsock CID there (default: unchanged)', intArg(1, 0xfffffffe))
    .description('record a migration: sidecars send new connections by the new placement and drain vsock connections to the old one')
    .action((id: string, opts: { hypervisor: string; cid?: number }) =>
      withClient(globals(), async (c) => {
        const vm = await c.moveVm(id, opts.hypervisor, opts.cid);
        print(globals(), vm, `moved ${vmLine(vm)}`);
      }),
    );

  const hvs = ctl.command('hypervisors').description('hypervisors and their vsock mode');
  hvs
    .command('list')
    .action(() =>
      withClient(globals(), async (c) => {
        const r = await c.listVms();
        print(globals(), r.hypervisors, r.hypervisors.length === 0 ? 'no hypervisors' : r.hypervisors.map(hypervisorLine).join('\n'));
      }),
    );
  hvs
    .command('register')
    .argument('<id>')
    .addOption(new Option('--vsock-mode <mode>', 'how guests on it reach each other over vsock').choices(['host-relay', 'direct', 'loopback']).makeOptionMandatory())
    .option('--relay-port <port>', 'host-relay: the relay vsock port on CID 2', intArg(1, 0xfffffffe), 15100)
    .action((id: string, opts: { vsockMode: VsockMode; relayPort: number }) =>
      withClient(globals(), async (c) => {
        const h = await c.registerHypervisor({ hypervisorId: id, vsockMode: opts.vsockMode, relayPort: opts.vsockMode === 'host-relay' ? opts.relayPort : 0 });
        print(globals(), h, `registered ${hypervisorLine(h)}`);
      }),
    );

  ctl
    .command('resolve')
    .argument('<destination>', 'IP, IP:PORT, [IPv6]:PORT, vm/ID or service/NAME')
    .option('--from <vm>', 'the asking VM (a sidecar asks as its node id)', hostname())
    .addOption(new Option('--policy <policy>', 'transport policy to decide with').choices(['prefer-vsock', 'tcp-only', 'vsock-only']).default('prefer-vsock'))
    .description('ask the VM manager about a destination and print the transport a sidecar would choose, and why')
    .action((text: string, opts: { from: string; policy: TransportPolicy }) =>
      withClient(globals(), async (c) => {
        const destination = parseDestination(text);
        const r = await c.resolve(opts.from, destination);
        const vm = r.found ? (r.vm ?? null) : null;
        // As the sidecar of --from decides: its placement is the answer's caller, vsock healthy.
        const selection = selectTransport({ local: r.caller ?? null, endpoint: factsFromResolution(r, wantedOf(destination)), vsock: 'available', policy: opts.policy });
        const lines = [
          `destination: ${text} -> ${vm ? `VM ${vm.vmId} on ${vm.hypervisorId} (cid ${vm.vsockCid})` : 'not in the registry'}`,
          `caller: ${r.caller ? `VM ${r.caller.vmId} on ${r.caller.hypervisorId}` : `${opts.from} (not in the registry)`}`,
          `decision: ${describeSelection(selection)}`,
          `cache: ${r.ttlMs} ms at revision ${r.revision}`,
        ];
        print(globals(), { resolution: r, selection }, lines.join('\n'));
      }),
    );

  ctl
    .command('watch')
    .option('--from-revision <n>', '0: the whole registry first, then changes', intArg(0, Number.MAX_SAFE_INTEGER), 0)
    .description('print registry events as they happen (Ctrl-C to stop)')
    .action((opts: { fromRevision: number }) =>
      withClient(globals(), (c) => {
        return new Promise<void>((resolve, reject) => {
          const w = c.watch(opts.fromRevision, {
            onEvent: (e) => print(globals(), e, eventLine(e)),
            onError: reject,
          });
          process.once('SIGINT', () => {
            w.cancel();
            resolve();
          });
        });
      }),
    );
  const services = ctl.command('services').description('services of the mesh (the control plane pushes a cluster, endpoints and listeners for each)');
  services
    .command('list')
    .action(() =>
      withConfig(globals(), async (c) => {
        const list = await c.listServices();
        print(globals(), list, list.length === 0 ? 'no services' : list.map((s) => `${s.name}\tport=${s.port}\toutbound_port=${s.outbound_port}\t${s.protocol}\tconnect_timeout=${s.connect_timeout_ms}ms\tlb_policy=${s.lb_policy}\trevision=${s.mod_revision}`).join('\n'));
      }),
    );
  services
    .command('put')
    .argument('<name>')
    .requiredOption('--port <port>', 'the service port (VMs serve it on the port their registry record lists)', intArg(1, 65535))
    .option('--outbound-port <port>', 'where local apps connect on 127.0.0.1 (default: --port)', intArg(1, 65535))
    .addOption(new Option('--protocol <protocol>', 'tcp or http').choices(['tcp', 'http']).default('tcp'))
    .option('--connect-timeout-ms <ms>', 'upstream connect timeout', intArg(1, 3_600_000), 5_000)
    .addOption(new Option('--lb-policy <policy>', 'how HTTP requests pick an endpoint').choices(['round_robin', 'least_request']).default('round_robin'))
    .addOption(expectRevision())
    .description('add or replace a service')
    .action((name: string, opts: { port: number; outboundPort?: number; protocol: string; connectTimeoutMs: number; lbPolicy: string; expectRevision?: number }) =>
      withConfig(globals(), async (c) => {
        const s = await c.putService({ name, port: opts.port, outbound_port: opts.outboundPort ?? opts.port, protocol: opts.protocol, connect_timeout_ms: opts.connectTimeoutMs, lb_policy: opts.lbPolicy, mod_revision: opts.expectRevision ?? 0 });
        print(globals(), s, `service ${s.name} port=${s.port} outbound_port=${s.outbound_port} ${s.protocol} lb_policy=${s.lb_policy} revision=${s.mod_revision}`);
      }),
    );
  services
    .command('delete')
    .argument('<name>')
    .addOption(expectRevision())
    .action((name: string, opts: { expectRevision?: number }) =>
      withConfig(globals(), async (c) => {
        await c.deleteService(name, opts.expectRevision);
        print(globals(), { deleted: name }, `deleted service ${name}`);
      }),
    );
  const peerAuth = ctl.command('peer-auth').description('peer modes (STRICT, PERMISSIVE, DISABLE) of the TCP peer hop, mesh-wide or per service and port; pushed to sidecars, no restart');
  peerAuth
    .command('list')
    .action(() =>
      withConfig(globals(), async (c) => {
        const list = await c.listPeerAuthentications();
        const line = (p: (typeof list)[number]): string => `${p.name}\t${p.mode}\tservice=${p.service || '*'}\tport=${p.port || '*'}\trevision=${p.mod_revision}`;
        print(globals(), list, list.length === 0 ? 'no peer authentication: every port is STRICT' : list.map(line).join('\n'));
      }),
    );
  peerAuth
    .command('put')
    .argument('<name>')
    .addOption(new Option('--mode <mode>', 'STRICT: TLS peers only; PERMISSIVE: plain text too (unauthenticated); DISABLE: plain text only').choices(['STRICT', 'PERMISSIVE', 'DISABLE']).makeOptionMandatory())
    .option('--service <name>', 'the ports VMs serve this service on (default: any service)')
    .option('--port <port>', "a VM's inbound destination port (default: any port)", intArg(1, 65535))
    .addOption(expectRevision())
    .description('add or replace a peer mode; without --service and --port it is the mesh-wide default')
    .action((name: string, opts: { mode: string; service?: string; port?: number; expectRevision?: number }) =>
      withConfig(globals(), async (c) => {
        const p = await c.putPeerAuthentication({ name, mode: opts.mode, service: opts.service ?? '', port: opts.port ?? 0, mod_revision: opts.expectRevision ?? 0 });
        print(globals(), p, `peer authentication ${p.name}: ${p.mode} for service=${p.service || '*'} port=${p.port || '*'} revision=${p.mod_revision}`);
      }),
    );
  peerAuth
    .command('delete')
    .argument('<name>')
    .addOption(expectRevision())
    .action((name: string, opts: { expectRevision?: number }) =>
      withConfig(globals(), async (c) => {
        await c.deletePeerAuthentication(name, opts.expectRevision);
        print(globals(), { deleted: name }, `deleted peer authentication ${name}`);
      }),
    );
  const routes = ctl.command('routes').description('HTTP routes of the mesh');
  routes
    .command('list')
    .action(() =>
      withConfig(globals(), async (c) => {
        const list = await c.listRoutes();
        const line = (r: (typeof list)[number]): string =>
          `${r.name}\t${r.domains.join(',')}\t${r.rules.map((rule) => `${rule.prefix}->${rule.services.map((s) => `${s.service}:${s.weight}`).join('+')}`).join(' ')}\trevision=${r.mod_revision}`;
        print(globals(), list, list.length === 0 ? 'no routes' : list.map(line).join('\n'));
      }),
    );
  routes
    .command('put')
    .requiredOption('-f, --file <route.yaml>', 'one route in the mesh config format (name, domains, routes: [{prefix, clusters: [{service, weight}]}])')
    .addOption(expectRevision())
    .description('add or replace a route')
    .action((opts: { file: string; expectRevision?: number }) =>
      withConfig(globals(), async (c) => {
        let raw: Record<string, unknown>;
        try {
          raw = parseYaml(await readFile(opts.file, 'utf8')) as Record<string, unknown>;
        } catch (err) {
          throw new UsageError(`cannot read ${opts.file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
        }
        if (typeof raw !== 'object' || raw === null || typeof raw.name !== 'string') throw new UsageError(`${opts.file}: a route needs a name`);
        const { routeFromRaw } = await import('./control-plane/config-api.js');
        const r = await c.putRoute({ ...routeFromRaw(raw as { name: string }), mod_revision: opts.expectRevision ?? 0 });
        print(globals(), r, `route ${r.name} (${r.rules.length} rules) revision=${r.mod_revision}`);
      }),
    );
  routes
    .command('delete')
    .argument('<name>')
    .addOption(expectRevision())
    .action((name: string, opts: { expectRevision?: number }) =>
      withConfig(globals(), async (c) => {
        await c.deleteRoute(name, opts.expectRevision);
        print(globals(), { deleted: name }, `deleted route ${name}`);
      }),
    );
  const policies = ctl.command('policies').description('authorization policies: which peers (SPIFFE IDs) may reach a service (README "Security: Policies")');
  const policyLine = (p: { name: string; service: string; ports: number[]; action: string; principals: string[]; shadow: boolean; mod_revision: number | string }): string =>
    `${p.name}\t${p.action}${p.shadow ? ' (shadow)' : ''}\tservice=${p.service}${p.ports.length > 0 ? `\tports=${p.ports.join(',')}` : ''}\t${p.principals.join(',')}\trevision=${p.mod_revision}`;
  policies
    .command('list')
    .action(() =>
      withConfig(globals(), async (c) => {
        const list = await c.listPolicies();
        print(globals(), list, list.length === 0 ? 'no policies' : list.map(policyLine).join('\n'));
      }),
    );
  const repeated = (value: string, previous: string[] = []): string[] => [...previous, value];
  const port = intArg(1, 65535);
  policies
    .command('put')
    .argument('<name>')
    .requiredOption('--service <name>', 'the service whose VMs the policy selects')
    .requiredOption('--action <action>', 'ALLOW or DENY')
    .requiredOption('--principal <id>', 'a SPIFFE ID, a prefix (spiffe://td/vm/web-* or prefix:spiffe://...), "*" or unauthenticated; repeat for more', repeated)
    .option('--port <port>', 'a destination port of those VMs (default: the port each serves the service on); repeat for more', (v: string, prev: number[] = []) => [...prev, port(v)])
    .option('--shadow', 'dry run: log and count what it would deny, enforce nothing', false)
    .addOption(expectRevision())
    .description('add or replace a policy')
    .action((name: string, opts: { service: string; action: string; principal: string[]; port?: number[]; shadow: boolean; expectRevision?: number }) =>
      withConfig(globals(), async (c) => {
        const p = await c.putPolicy({ name, service: opts.service, action: opts.action, principals: opts.principal, ports: opts.port ?? [], shadow: opts.shadow, mod_revision: opts.expectRevision ?? 0 });
        print(globals(), p, `policy ${policyLine(p)}`);
      }),
    );
  policies
    .command('delete')
    .argument('<name>')
    .addOption(expectRevision())
    .action((name: string, opts: { expectRevision?: number }) =>
      withConfig(globals(), async (c) => {
        await c.deletePolicy(name, opts.expectRevision);
        print(globals(), { deleted: name }, `deleted policy ${name}`);
      }),
    );
  const tokens = ctl.command('tokens').description('one-time join tokens: how a VM without a host agent (or a host agent) gets its first certificate');
  tokens
    .command('create')
    .option('--vm <id>', 'the VM the token lets join (its sidecar gets spiffe://<trust-domain>/vm/<id>)')
    .option('--hypervisor <id>', "the hypervisor whose host agent the token lets join (spiffe://<trust-domain>/hv/<id>)")
    .option('--ttl <duration>', 'how long the token is valid (10s to 168h)', '10m')
    .description('make a token and print it, once, on stdout (the control plane keeps only its hash)')
    .action((opts: { vm?: string; hypervisor?: string; ttl: string }) =>
      withTokens(globals(), async (c) => {
        if ((opts.vm === undefined) === (opts.hypervisor === undefined)) throw new UsageError('tokens create: exactly one of --vm <id> or --hypervisor <id>');
        const ttlMs = parseDuration(opts.ttl);
        if (ttlMs === undefined) throw new UsageError(`--ttl: "${opts.ttl}" is not a duration (e.g. 10m, 1h)`);
        const created = await c.create({ ...(opts.vm !== undefined ? { vm_id: opts.vm } : { hypervisor_id: opts.hypervisor! }), ttl_ms: ttlMs });
        const expires = new Date(created.expires_at_ms).toISOString();
        print(globals(), { token: created.token, id: created.id, expires_at: expires }, created.token);
        // The token alone on stdout (scripts capture it); what it is for on stderr.
        if (globals().output === 'text') process.stderr.write(`join token ${created.id} for ${opts.vm !== undefined ? `vm ${opts.vm}` : `hypervisor ${opts.hypervisor}`}, single use, expires ${expires}\n`);
      }),
    );
  tokens
    .command('list')
    .description('every token kept: id, subject, expiry, whether used (never the secret)')
    .action(() =>
      withTokens(globals(), async (c) => {
        const list = await c.list();
        print(globals(), list, list.length === 0 ? 'no join tokens' : list.map(tokenLine).join('\n'));
      }),
    );
  tokens
    .command('revoke')
    .argument('<id>', 'the token id (the part after vjt1.)')
    .description('remove a token: a later use is refused')
    .action((id: string) =>
      withTokens(globals(), async (c) => {
        await c.revoke(id);
        print(globals(), { revoked: id }, `revoked join token ${id}`);
      }),
    );
  ctl
    .command('status')
    .option('--node <id>', 'one node only')
    .option('--page-size <n>', 'nodes asked for per call (all pages are printed)', intArg(1, MAX_STATUS_PAGE_SIZE), DEFAULT_STATUS_PAGE_SIZE)
    .description('xDS sync status: per node and type, the version sent, the last ACK and the last NACK with its error (nodes with a stream open, and those gone within the status retention)')
    .action((opts: { node?: string; pageSize: number }) =>
      withConfig(globals(), async (c) => {
        const statuses: SyncStatusResponse__Output['statuses'] = [];
        const currentVersions: Record<string, string> = {};
        let token = '';
        do {
          const page = await c.syncStatus({ node_id: opts.node ?? '', page_size: opts.pageSize, page_token: token });
          statuses.push(...page.statuses);
          Object.assign(currentVersions, page.current_versions);
          token = page.next_page_token;
        } while (token !== '');
        const short = (t: string): string => t.slice(t.lastIndexOf('.') + 1);
        const lines = statuses.map(
          (s) =>
            `${s.node_id}\t${short(s.type_url)}\tsent=${s.last_sent_version || '-'}\tacked=${s.last_ack_version || '-'}` +
            (s.last_nack_version ? `\tNACK ${s.last_nack_version}: ${s.last_nack_error}` : ''),
        );
        print(globals(), { statuses, current_versions: currentVersions }, lines.length === 0 ? 'no nodes connected within the status retention' : lines.join('\n'));
      }),
    );
  return ctl;
}
