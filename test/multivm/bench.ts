// The relay benchmark of the multi-VM topology (not a test), run INSIDE the
// outer guest by `npm run bench:multivm`: vm-a (CID 3) -> relay -> vm-b
// (CID 4) over real vhost-vsock, through `vsockmesh host-relay` (asking the VM
// manager) and through socat as the relay, in alternating rounds. Under TCG
// inside TCG the absolute figures measure the emulator: compare ratios only.

import { spawn } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { assertInOuterGuest, loadVhostVsock, logDir, type InnerVm } from './hypervisor.js';
import { progress, writeReport } from './report.js';
import { Daemon, GUESTS, RELAY_PORT, SIDECAR_PORT, agentResult, pattern, sinkAnswer, bootGuest, captureSidecarPreamble, startRelay, startServers, startControlPlane, type GuestPlan } from './topology.js';

assertInOuterGuest();

const SOCAT_PORT = 15200;
const MiB = 1024 * 1024;

function intEnv(name: string, fallback: number): number {
  const n = Number(process.env[name] ?? fallback);
  if (!Number.isInteger(n) || n < 1) throw new Error(`${name} must be a positive integer`);
  return n;
}

const ROUNDS = intEnv('BENCH_ROUNDS', 3);
const MIB = intEnv('BENCH_MIB', 2);
const CONNECTS = intEnv('BENCH_CONNECTS', 10);

const log = (msg: string): void => progress('multivm-bench', msg);

const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
};

interface Relay {
  name: string;
  port: number;
  /** What vm-a sends first: the sidecar's relay and PROXY v2 headers for ours, the PROXY v2 header alone for socat (it reads no relay header). */
  preamble: string;
}

/** MB/s of one transfer through `relay`, checked: the sink got the PROXY v2 header and the pattern intact. */
async function throughput(a: InnerVm, relay: Relay, seed: number, proxyHeader: Buffer): Promise<number> {
  const r = await a.run(`vmagent connect 2 ${relay.port} --send ${relay.preamble} --pattern ${MIB * MiB} ${seed}`, { timeoutMs: 30 * 60_000 });
  const result = agentResult(r.stderr);
  if (result.result !== 'ok' || r.stdout !== sinkAnswer(proxyHeader, pattern(MIB * MiB, seed))) throw new Error(`${relay.name}: throughput run failed: ${r.stdout} ${r.stderr}`);
  return (MIB * MiB) / 1e6 / (Number(result.ms) / 1000);
}

async function connectRate(a: InnerVm, relay: Relay): Promise<number> {
  const r = await a.run(`vmagent bench-connect 2 ${relay.port} ${CONNECTS} --send ${relay.preamble}`, { timeoutMs: 30 * 60_000 });
  const result = agentResult(r.stderr);
  if (result.result !== 'ok') throw new Error(`${relay.name}: connect run failed: ${r.stderr}`);
  return CONNECTS / (Number(result.ms) / 1000);
}

async function main(): Promise<void> {
  const started = Date.now();
  await loadVhostVsock();
  const sink: GuestPlan = { ...GUESTS.b, servers: [{ port: SIDECAR_PORT, mode: 'sink' }] };
  const a = bootGuest(GUESTS.a);
  const b = bootGuest(sink);
  const socat = spawn('socat', ['-t', '60', `VSOCK-LISTEN:${SOCAT_PORT},fork,reuseaddr`, `VSOCK-CONNECT:${sink.cid}:${SIDECAR_PORT}`], { stdio: ['ignore', 'ignore', 'pipe'] });
  try {
    await startControlPlane([GUESTS.a, sink]);
    // Without source assertions: the figures compare byte moving with socat's, which asserts nothing.
    const relay = await startRelay({ assertSource: false });
    const captured = await captureSidecarPreamble(GUESTS.a.vmId, sink);
    for (const vm of [a, b]) log(`${vm.name}: ${(await vm.waitReady(20 * 60_000)).line}`);
    await startServers(b, sink);
    await a.check('cat > /run/ours.bin', { input: Buffer.concat([captured.relayHeader, captured.proxyHeader]) });
    await a.check('cat > /run/socat.bin', { input: captured.proxyHeader });
    log(`topology up after ${((Date.now() - started) / 1000).toFixed(0)} s`);

    const relays: Relay[] = [
      { name: 'vsockmesh host-relay', port: RELAY_PORT, preamble: '/run/ours.bin' },
      { name: 'socat', port: SOCAT_PORT, preamble: '/run/socat.bin' },
    ];
    const results = new Map(relays.map((r) => [r.name, { mbps: [] as number[], cps: [] as number[] }]));
    for (let round = 0; round < ROUNDS; round++) {
      const order = round % 2 === 0 ? relays : [...relays].reverse();
      for (const relay of order) {
        const mbps = await throughput(a, relay, round + 1, captured.proxyHeader);
        const cps = await connectRate(a, relay);
        results.get(relay.name)!.mbps.push(mbps);
        results.get(relay.name)!.cps.push(cps);
        log(`round ${round + 1} ${relay.name}: ${mbps.toFixed(2)} MB/s, ${cps.toFixed(2)} connections/s`);
      }
    }
    const ours = results.get(relays[0]!.name)!;
    const theirs = results.get(relays[1]!.name)!;
    const row = (what: string, o: number[], s: number[], digits: number) =>
      `| ${what} | ${median(o).toFixed(digits)} | ${median(s).toFixed(digits)} | ${(median(o) / median(s)).toFixed(2)}x |`;
    const relayLines = relay.access().length;
    const report = [
      `vm-a (CID 3) -> relay in the outer guest -> vm-b (CID 4), real vhost-vsock, TCG inside TCG; ${ROUNDS} alternating rounds, medians.`,
      '',
      '| workload | vsockmesh host-relay | socat relay | ratio |',
      '|---|---:|---:|---:|',
      row(`throughput, ${MIB} MiB one way to a sink (MB/s)`, ours.mbps, theirs.mbps, 2),
      row(`new connections/s (${CONNECTS} in a row, 1 byte each way)`, ours.cps, theirs.cps, 2),
      '',
      `- vsockmesh host-relay: \`vsockmesh host-relay\` (CLI) asking the VM manager (AuthorizeRelay, cache_ttl 2s); vm-a sends the relay header and the PROXY v2 header a real sidecar sends (captured from one), then the bytes. ${relayLines} access lines.`,
      `- socat: \`socat -t 60 VSOCK-LISTEN:${SOCAT_PORT},fork,reuseaddr VSOCK-CONNECT:${sink.cid}:${SIDECAR_PORT}\` (one process per connection, no policy); vm-a sends the PROXY v2 header, then the bytes.`,
      '- Endpoints: vmagent (static C) in both inner guests; vm-b counts what it receives and answers with the count and its sha256 (checked). Times are vm-a\'s clock from connect to the answer.',
      `- Raw figures: ${relays.map((r) => `${r.name} ${results.get(r.name)!.mbps.map((x) => x.toFixed(2)).join('/')} MB/s, ${results.get(r.name)!.cps.map((x) => x.toFixed(2)).join('/')} conn/s`).join('; ')}.`,
    ].join('\n');
    writeReport(report);
  } finally {
    socat.kill();
    for (const vm of [a, b]) {
      await vm.kill();
      writeFileSync(join(logDir(), `${vm.name}.qemu.log`), vm.qemuLog());
    }
    for (const d of Daemon.started) await d.stop();
  }
}

await main();
