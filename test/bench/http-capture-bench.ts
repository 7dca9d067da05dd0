// The capture rows of the HTTP benchmark (http-bench.ts, BENCH_CAPTURE): what
// transparent capture costs against an explicit listener, on the same sidecars
// in the same rounds. Two "VMs" as the capture tests make them
// (test/helpers/netns.ts): network namespaces A and B joined by a veth pair.
// In B: an HAProxy answering 200 itself on 127.0.0.1:APP_PORT and sidecar B's
// inbound listener (L4). In A: the VM manager (vm-b is at B_IP) and sidecar A,
// run as uid 65534 (the user the capture rules leave alone), with four
// outbound listeners, all to B's app through sidecar B (PROXY v2 over TCP):
//
//   explicit L4    127.0.0.1:15011, cluster `app` (B's app behind sidecar B)
//   capture L4     127.0.0.1:15001, cluster `original` (resolve: original_destination)
//   explicit HTTP  127.0.0.1:15012, protocol: http, cluster `app`
//   capture HTTP   127.0.0.1:15002, cluster `original`, http_inspector: HTTP/1.1 takes the L7 path
//
// wrk runs in A as root: to an explicit listener it dials 127.0.0.1 (never
// captured); to a capture chain it dials B_IP:APP_PORT with
// `vsockmesh iptables apply --uid 65534 --port <capture port>` in force (nat
// REDIRECT; the sidecar reads SO_ORIGINAL_DST), removed after the run.
// Loads per chain: HTTP/1.1 keep-alive (wrk -t2 -c64) and one request per
// connection (wrk -t2 -c32, `Connection: close`: new connections/s, where a
// per-connection cost shows). The namespaces, the rules and every process go
// at exit, Ctrl-C included. Needs root, ip, iptables, curl, setpriv and HAProxy.

import { chownSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { stringify as toYaml } from 'yaml';
import { haproxyBinary, haproxyConfig, httpOkListen } from '../helpers/haproxy.js';
import {
  APP_PORT,
  B_IP,
  NOBODY,
  asNobody,
  iptablesIn,
  missingNetnsTools,
  readyIn,
  statsIn,
  startVmManagerProcessIn,
  twoVmInventory,
  twoVms,
  type Vm,
} from '../helpers/netns.js';
import {
  CLI,
  RoundSamples,
  cliNodeFlags,
  cpuSeconds,
  fmt,
  hopsCpuSeconds,
  log,
  metricSum,
  onCleanup,
  sleep,
  startDaemon,
  waitUntil,
  wrk,
  type Hop,
  type LoadPace,
} from './bench-common.js';

export const CAPTURE_CHAINS = ['explicit-l4', 'capture-l4', 'explicit-http', 'capture-http', 'explicit-l4-rules'] as const;
export type CaptureChain = (typeof CAPTURE_CHAINS)[number];
const LABEL: Record<CaptureChain, string> = {
  'explicit-l4': 'explicit L4',
  'capture-l4': 'capture L4',
  'explicit-http': 'explicit HTTP',
  'capture-http': 'capture HTTP (inspector → L7)',
  'explicit-l4-rules': 'explicit L4, rules in force',
};
/** Each chain measured against another (the ratio in its cells). */
const PEER: Partial<Record<CaptureChain, CaptureChain>> = { 'capture-l4': 'explicit-l4', 'capture-http': 'explicit-http', 'explicit-l4-rules': 'explicit-l4' };
/** Sidecar A's listener port per chain (in A; the capture ports are where the rules redirect to). */
const LISTENER_PORT: Record<CaptureChain, number> = { 'explicit-l4': 15011, 'capture-l4': 15001, 'explicit-http': 15012, 'capture-http': 15002, 'explicit-l4-rules': 15011 };
/**
 * The capture listener whose rules are in force while a chain runs: a capture
 * chain's own, and for `explicit-l4-rules` capture L4's (wrk still dials the
 * explicit listener, on loopback, which the rules leave alone): what the rules
 * alone cost the namespace's other connections (the sidecar's own among them).
 */
const RULES_FOR: Partial<Record<CaptureChain, CaptureChain>> = { 'capture-l4': 'capture-l4', 'capture-http': 'capture-http', 'explicit-l4-rules': 'capture-l4' };
const PEER_PORT = 15006;
const ADMIN_PORT = 15000;

const LOADS = ['keepalive', 'close'] as const;
type Load = (typeof LOADS)[number];
type Metric = `${Load}_${'rps' | 'p50' | 'p99' | 'cpu' | 'vmm' | 'queries' | 'load'}`;

/**
 * The capture chains BENCH_CAPTURE asks for (1: both pairs, l4 or http: one
 * pair, or a comma-separated list of chains; unset or 0: none), or why they
 * cannot run on this machine.
 */
export function captureChainsFromEnv(): { chains: CaptureChain[] } | { skipped: string } | undefined {
  const raw = process.env.BENCH_CAPTURE ?? '';
  if (raw === '' || raw === '0') return undefined;
  const pairs: Record<string, CaptureChain[]> = { '1': ['explicit-l4', 'capture-l4', 'explicit-http', 'capture-http'], l4: ['explicit-l4', 'capture-l4'], http: ['explicit-http', 'capture-http'] };
  const chains =
    pairs[raw] ??
    raw.split(',').map((c) => {
      if (!(CAPTURE_CHAINS as readonly string[]).includes(c)) throw new Error(`BENCH_CAPTURE must be 1, l4, http, 0 or a list of ${CAPTURE_CHAINS.join(', ')}; not "${raw}"`);
      return c as CaptureChain;
    });
  const missing = missingNetnsTools();
  if (missing !== undefined) return { skipped: `the capture rows need ${missing}; this benchmark runs as uid ${process.getuid?.()}` };
  try {
    haproxyBinary();
  } catch (err) {
    return { skipped: (err as Error).message };
  }
  return { chains };
}

/** Namespaces A and B with B's app, the VM manager and both sidecars; started, every part undone at cleanup. */
async function startMesh(dir: string, nodeFlags: string[]): Promise<{ a: Vm; hops: Hop[]; vmmPid: number }> {
  const slow = Math.max(1, os.loadavg()[0]! / os.cpus().length);
  const { a, b } = await twoVms({ teardown: onCleanup }, Math.round(60_000 * slow));

  const appConfig = path.join(dir, 'capture-app.cfg');
  writeFileSync(appConfig, haproxyConfig({ sections: [httpOkListen('app', { bindPort: APP_PORT, log: false })], nbthread: 1, log: false }));
  startDaemon(b.wrapper[0]!, [...b.wrapper.slice(1), haproxyBinary(), '-f', appConfig, '-db'], { stdout: 'ignore' });

  const vmm = await startVmManagerProcessIn({ teardown: onCleanup }, a, twoVmInventory(PEER_PORT));
  const common = { admin: { address: '127.0.0.1', port: ADMIN_PORT }, vsock: { enabled: false }, log: { level: 'info', access_log: true }, drain_timeout: '1s' };
  const configB = {
    node: { id: 'vm-b' },
    ...common,
    listeners: [{ kind: 'inbound', name: 'inbound', addresses: ['0.0.0.0'], port: PEER_PORT, ports: [APP_PORT] }],
  };
  const outbound = (chain: CaptureChain, rest: Record<string, unknown>) => ({ kind: 'outbound', name: chain, addresses: ['127.0.0.1'], port: LISTENER_PORT[chain], ...rest });
  const configA = {
    node: { id: 'vm-a' },
    ...common,
    vm_manager: { address: `127.0.0.1:${vmm.port}` },
    insecure: true,
    listeners: [
      outbound('explicit-l4', { cluster: 'app' }),
      outbound('capture-l4', { cluster: 'original' }),
      outbound('explicit-http', { cluster: 'app', protocol: 'http' }),
      // A generous inspection timeout: wrk's request line decides, not a loaded machine's clock.
      outbound('capture-http', { cluster: 'original', http_inspector: { timeout: '5s' } }),
    ],
    clusters: [
      { name: 'original', resolve: { original_destination: true } },
      { name: 'app', authority: 'app.bench', endpoints: [{ address: B_IP, port: APP_PORT, vm_id: 'vm-b', peer: { address: B_IP, port: PEER_PORT } }] },
    ],
  };
  // Sidecar A runs as uid 65534: its config is that user's, in a directory of its own (the benchmark's is root's alone).
  const dirA = mkdtempSync(path.join(os.tmpdir(), 'vsockmesh-capture-a-'));
  onCleanup(() => rmSync(dirA, { recursive: true, force: true }));
  const fileA = path.join(dirA, 'capture-a.yaml');
  writeFileSync(fileA, toYaml(configA), { mode: 0o600 });
  for (const p of [dirA, fileA]) chownSync(p, NOBODY, NOBODY);
  const fileB = path.join(dir, 'capture-b.yaml');
  writeFileSync(fileB, toYaml(configB));

  const pids: number[] = [];
  for (const [vm, wrapper, file] of [[b, b.wrapper, fileB], [a, asNobody(a), fileA]] as const) {
    // `ip netns exec` and setpriv exec what follows: the pid is the sidecar's.
    const daemon = startDaemon(wrapper[0]!, [...wrapper.slice(1), process.execPath, ...nodeFlags, CLI, 'sidecar', '-c', file], { stdout: 'ignore' });
    await waitUntil(
      async () => {
        if (daemon.child.exitCode !== null) throw new Error(`sidecar ${path.basename(file)} exited with ${daemon.child.exitCode}\n${daemon.stderr()}`);
        return readyIn(vm, ADMIN_PORT);
      },
      `sidecar ${path.basename(file)} /ready in ${vm.ns}`,
      30_000 * slow,
      200,
    );
    pids.push(daemon.pid);
  }
  const [pidB, pidA] = pids as [number, number];
  return { a, hops: [{ pids: [pidA], group: false }, { pids: [pidB], group: false }], vmmPid: vmm.pid };
}

/** The capture chains: started by `start`, measured round by round, reported as a Markdown table. */
export class CaptureRows {
  readonly samples = new RoundSamples<CaptureChain, Metric>();
  readonly notes: string[] = [];

  private constructor(
    readonly chains: CaptureChain[],
    private readonly a: Vm,
    private readonly hops: Hop[],
    private readonly vmmPid: number,
    private readonly wrkBin: string,
    private readonly pace: LoadPace,
    readonly nodeFlags: string[],
  ) {}

  static async start(chains: CaptureChain[], dir: string, wrkBin: string, pace: LoadPace): Promise<CaptureRows> {
    const nodeFlags = cliNodeFlags();
    log(`capture: namespaces, VM manager and sidecars for ${chains.join(', ')}`);
    const mesh = await startMesh(dir, nodeFlags);
    return new CaptureRows(chains, mesh.a, mesh.hops, mesh.vmmPid, wrkBin, pace, nodeFlags);
  }

  /**
   * One wrk run of `load` through `chain`, the chain's capture rules in force
   * for it alone; the CPU and the queries are read around wrk only (not while
   * `vsockmesh iptables` starts).
   */
  private async run(chain: CaptureChain, load: Load, pace: LoadPace) {
    const rules = RULES_FOR[chain];
    const captured = rules === chain;
    const target = { wrapper: this.a.wrapper, host: captured ? B_IP : '127.0.0.1' };
    const port = captured ? APP_PORT : LISTENER_PORT[chain];
    if (rules) await iptablesIn(this.a, ['apply', '--uid', String(NOBODY), '--port', String(LISTENER_PORT[rules])]);
    try {
      const queries0 = await this.vmManagerQueries();
      const cpu0 = hopsCpuSeconds(this.hops);
      const vmm0 = cpuSeconds(this.vmmPid);
      const started = Date.now();
      const w = load === 'keepalive' ? await wrk(this.wrkBin, port, 2, 64, pace, [], target) : await wrk(this.wrkBin, port, 2, 32, pace, ['-H', 'Connection: close'], target);
      const cpuUs = ((hopsCpuSeconds(this.hops) - cpu0) / w.requests) * 1e6;
      // Per second, not per request: the VM manager's idle work is its floor, whatever the chain.
      const vmmMsPerS = ((cpuSeconds(this.vmmPid) - vmm0) / ((Date.now() - started) / 1000)) * 1e3;
      const queries = (((await this.vmManagerQueries()) - queries0) / w.requests) * 1000;
      return { ...w, cpuUs, vmmMsPerS, queries };
    } finally {
      if (rules) await iptablesIn(this.a, ['remove']);
    }
  }

  /** A short run of each load through each chain first, not recorded: cold code (JIT) and the VM manager's first lookup. */
  async warmUp(): Promise<void> {
    for (const chain of this.chains) for (const load of LOADS) await this.run(chain, load, { seconds: 2, slow: this.pace.slow });
  }

  /** Sidecar A's queries to the VM manager so far (its resolver's, every outcome), read in A. */
  private async vmManagerQueries(): Promise<number> {
    return metricSum(await statsIn(this.a, ADMIN_PORT), 'vsockmesh_resolver_queries_total');
  }

  async runRound(round: number): Promise<void> {
    this.samples.round = round;
    const order = this.chains.map((_, i) => this.chains[(i + round) % this.chains.length]!);
    log(`capture round ${round + 1}: ${order.map((c) => LABEL[c]).join(' → ')}; load average ${os.loadavg()[0]!.toFixed(2)}`);
    for (const chain of order) {
      const line: string[] = [];
      for (const load of LOADS) {
        const w = await this.run(chain, load, this.pace);
        const { cpuUs, vmmMsPerS, queries } = w;
        const loadAvg = os.loadavg()[0]!;
        for (const [metric, value] of [['rps', w.rps], ['p50', w.p50us], ['p99', w.p99us], ['cpu', cpuUs], ['vmm', vmmMsPerS], ['queries', queries], ['load', loadAvg]] as const) {
          this.samples.record(chain, `${load}_${metric}`, value);
        }
        const failed = w.errors + w.non2xx;
        if (failed > 0) {
          const note = `${LABEL[chain]} round ${round + 1}, ${load}: ${failed} failed requests`;
          this.notes.push(note);
          log(note);
        }
        line.push(`${load} ${fmt(w.rps, 0)} req/s p50/p99 ${fmt(w.p50us / 1e3, 2)}/${fmt(w.p99us / 1e3, 2)} ms ${fmt(cpuUs, 0)} CPU-µs/req, VM manager ${fmt(vmmMsPerS, 1)} CPU-ms/s, ${fmt(queries, 1)} queries/1k, load ${loadAvg.toFixed(1)}`);
        await sleep(300);
      }
      log(`  ${LABEL[chain].padEnd(30)} ${line.join('; ')}`);
    }
  }

  /** The table: medians over rounds, each capture chain's paired ratio to its explicit listener. */
  table(): string {
    const rows: Array<{ label: string; metric: Metric; unit: string; digits: number }> = [
      { label: 'keep-alive requests/s (wrk -t2 -c64)', metric: 'keepalive_rps', unit: 'req/s', digits: 0 },
      { label: 'keep-alive latency p50', metric: 'keepalive_p50', unit: 'ms', digits: 2 },
      { label: 'keep-alive latency p99', metric: 'keepalive_p99', unit: 'ms', digits: 2 },
      { label: 'keep-alive sidecar CPU per request (A + B)', metric: 'keepalive_cpu', unit: 'CPU-µs', digits: 0 },
      { label: 'keep-alive load average (1 min) at the runs', metric: 'keepalive_load', unit: '', digits: 1 },
      { label: 'new connections/s (wrk -t2 -c32, Connection: close)', metric: 'close_rps', unit: 'conn/s', digits: 0 },
      { label: 'new connection latency p50', metric: 'close_p50', unit: 'ms', digits: 2 },
      { label: 'new connection latency p99', metric: 'close_p99', unit: 'ms', digits: 2 },
      { label: 'sidecar CPU per connection (A + B)', metric: 'close_cpu', unit: 'CPU-µs', digits: 0 },
      { label: 'VM manager CPU per second of the run', metric: 'close_vmm', unit: 'CPU-ms/s', digits: 1 },
      { label: "sidecar A's VM manager queries per 1,000 connections", metric: 'close_queries', unit: '', digits: 1 },
      { label: 'new connections load average (1 min) at the runs', metric: 'close_load', unit: '', digits: 1 },
    ];
    const head = `| load / metric | ${this.chains.map((c) => LABEL[c]).join(' | ')} |`;
    const sep = `|---|${this.chains.map(() => '---:').join('|')}|`;
    const lines = rows.map((row) => {
      const scale = row.unit === 'ms' ? 1e-3 : 1;
      const cells = this.chains.map((c) => {
        const v = this.samples.median(c, row.metric);
        const peer = PEER[c];
        const paired = peer && this.chains.includes(peer) && !row.metric.endsWith('_load') ? this.samples.pairedRatio(c, row.metric, peer, row.metric) : NaN;
        const ratio = Number.isFinite(paired) ? ` (${paired.toFixed(2)}×)` : '';
        return `${fmt(v * scale, row.digits)}${row.unit ? ` ${row.unit}` : ''}${ratio}`;
      });
      return `| ${row.label} | ${cells.join(' | ')} |`;
    });
    return [head, sep, ...lines].join('\n');
  }

  /** The report's section: what was measured, the table, how to read it. */
  markdown(rounds: number): string {
    return [
      '### Transparent capture against an explicit listener (BENCH_CAPTURE)',
      '',
      `Namespaces A and B joined by a veth pair; wrk in A, B's app an HAProxy answering 200 itself; the same sidecar A (uid ${NOBODY}, \`node ${this.nodeFlags.map((f) => `${f} `).join('')}cli.js sidecar\`) and sidecar B for every chain. ` +
        `Medians of ${rounds} round${rounds > 1 ? 's' : ''} (chain order rotated per round). Ratios in parentheses: the median over rounds of the capture chain's value over its explicit listener's in the same round.`,
      '',
      this.table(),
      '',
      '- explicit: wrk dials sidecar A\'s listener on 127.0.0.1 (L4: a plain outbound listener; HTTP: `protocol: http`), cluster `app` = B\'s app behind sidecar B.',
      `- capture: wrk dials ${B_IP}:${APP_PORT} with \`vsockmesh iptables apply --uid ${NOBODY} --port <capture port>\` in force (removed after each run): nat REDIRECT to the capture listener, whose cluster resolves the original destination (SO_ORIGINAL_DST, then the VM manager); capture HTTP adds \`http_inspector\`, so each connection is peeked at and its HTTP/1.1 requests take the L7 path (route \`original_destination\`).`,
      '- CPU per request: user + system seconds of sidecars A and B during the run over the requests done; the VM manager\'s own CPU is a separate row, per second of the run (its idle work is a floor every chain shows; /proc counts 10 ms ticks), next to the queries sidecar A sent it (its resolver caches an answer for the VM manager\'s TTL, 30 s by default). wrk, HAProxy and the kernel\'s NAT work in softirq are not counted.',
      ...this.notes.map((n) => `- ${n}`),
    ].join('\n');
  }
}
