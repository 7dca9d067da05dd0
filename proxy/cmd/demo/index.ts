// `vsockmesh demo`: the same-hypervisor decision, end to end on one machine.
//
// The scenario (scenario.ts): a VM manager, three VMs on two hypervisors,
// each with its apps (apps.ts) and a sidecar. vm-a's sidecar resolves its
// destinations through the VM manager and picks the transport per
// connection: vsock to a VM on its own hypervisor, TCP to a VM elsewhere,
// plain TCP to an address the VM manager does not know. The demo sends
// traffic through each path, checks it, and prints (report.ts) what was
// chosen and why, from the sidecars' access logs and the decision function.
//
// vsock is real when this machine has vsock_loopback (every socket at CID 1,
// so hv-1 is registered in `loopback` mode and its VMs are told apart by their
// sidecar's vsock port). That is found out by looking at /sys and /dev only:
// without it, or with `vsock: 'off'`, no AF_VSOCK socket is ever opened and the
// same decisions are carried over TCP.

import { Writable } from 'node:stream';
import { accessLine, reportCarried, reportDecision, reportTopology, reportTries, trafficOutcome, type AccessEntry } from './report.js';
import { CLIENT, detectVsockLoopback, sendTraffic, startScenario, type Scenario } from './scenario.js';

export interface DemoOptions {
  once: boolean;
  /** Bytes sent through each echo path. */
  echoBytes: number;
  /**
   * 'auto' (default): real vsock between vm-a and vm-b when this machine has
   * vsock_loopback (seen in /sys/module and /dev, without opening a socket).
   * 'off': vsock disabled in every sidecar; no AF_VSOCK socket is opened.
   */
  vsock?: 'auto' | 'off';
  /** Where the demo's human-readable lines go (default stdout). */
  out?: NodeJS.WritableStream;
  /** Without `once`: stop serving when this aborts (as on Ctrl-C). */
  signal?: AbortSignal;
}

export async function runDemo(options: DemoOptions): Promise<void> {
  const out = options.out ?? process.stdout;
  const say = (line = ''): void => void out.write(`${line}\n`);
  const detected = options.vsock === 'off' ? ({ usable: false, why: 'turned off for this run' } as const) : detectVsockLoopback();
  const vsockOn = detected.usable;
  const offWhy = detected.usable ? '' : options.vsock === 'off' ? 'vsock turned off for this run' : `vsock loopback not available here (${detected.why})`;
  const logs = accessLogs(say);

  // Everything started is stopped in reverse order: sidecars, then the VM manager, then the apps.
  const cleanups: Array<() => Promise<void>> = [];
  const stopAll = async (): Promise<void> => {
    for (const cleanup of cleanups.splice(0).reverse()) {
      try {
        await cleanup();
      } catch (err) {
        say(`  ! stopping: ${(err as Error).message}`);
      }
    }
  };

  let scenario: Scenario;
  try {
    scenario = await startScenario({ vsockOn, logSink: logs.sink, cleanups });
  } catch (err) {
    say(`demo: cannot start: ${(err as Error).message}`);
    await stopAll();
    process.exitCode = 1;
    return;
  }
  reportTopology(say, scenario, vsockOn, offWhy);
  const client = scenario.sidecars.get(CLIENT)!;

  // ---- traffic, one path at a time
  let failures = 0;
  for (const [i, step] of scenario.steps.entries()) {
    reportDecision(say, i + 1, step, scenario.registry.resolve(CLIENT, step.destination), vsockOn, offWhy);
    const result = trafficOutcome(await sendTraffic(step, client.listenerAddress(step.name), options.echoBytes));
    const outbound = await logs.waitFor((e) => e.node === CLIENT && e.direction === 'outbound' && e.listener === step.name);
    if (!outbound) {
      say(`    ${CLIENT} -> ?: no access line from ${CLIENT}'s sidecar ... ${result.text}`);
      failures++;
      continue;
    }
    reportCarried(say, step, outbound, result.text);
    if (!result.ok) failures++;
    say(`      ${accessLine(outbound)}`);
    const peerHop = String(outbound.upstream) !== String(outbound.dst);
    if (peerHop) {
      const inbound = await logs.waitFor((e) => e.direction === 'inbound' && e.src === outbound.src);
      if (inbound) say(`      ${accessLine(inbound)}`);
    }
  }
  say();

  if (failures > 0) {
    say(`demo: ${failures} check(s) failed`);
    await stopAll();
    process.exitCode = 1;
    return;
  }
  if (options.once) {
    say('demo: all traffic arrived intact');
    await stopAll();
    return;
  }

  // ---- serving until Ctrl-C
  say('serving until Ctrl-C; try:');
  reportTries(say, scenario);
  let shown = logs.entries.length;
  const timer = setInterval(() => {
    for (const e of logs.entries.slice(shown)) say(`      ${accessLine(e)}`);
    shown = logs.entries.length;
  }, 200);
  await new Promise<void>((resolve) => {
    const done = (): void => {
      process.off('SIGINT', done);
      process.off('SIGTERM', done);
      options.signal?.removeEventListener('abort', done);
      resolve();
    };
    process.on('SIGINT', done);
    process.on('SIGTERM', done);
    if (options.signal?.aborted) done();
    else options.signal?.addEventListener('abort', done);
  });
  clearInterval(timer);
  say('stopping: draining the sidecars, then the VM manager');
  await stopAll();
  say('stopped');
}

/** The processes' logs: access lines are what the demo reports; warnings are shown as they come. */
function accessLogs(say: (line?: string) => void): {
  sink: (node: string) => Writable;
  entries: AccessEntry[];
  waitFor: (match: (e: AccessEntry) => boolean, timeoutMs?: number) => Promise<AccessEntry | undefined>;
} {
  const entries: AccessEntry[] = [];
  const waiters = new Set<() => void>();
  const sink = (node: string): Writable => {
    let rest = '';
    return new Writable({
      write(chunk: Buffer, _enc, done) {
        const lines = (rest + chunk.toString('utf8')).split('\n');
        rest = lines.pop() ?? '';
        for (const line of lines) {
          if (!line) continue;
          let entry: Record<string, unknown>;
          try {
            entry = JSON.parse(line) as Record<string, unknown>;
          } catch {
            continue;
          }
          if (entry.log === 'access') {
            entries.push({ ...entry, node });
            for (const w of [...waiters]) w();
          } else if (entry.level === 'warn' || entry.level === 'error' || entry.level === 'fatal') {
            say(`  ! ${node}: ${String(entry.msg)}`);
          }
        }
        done();
      },
    });
  };
  const waitFor = async (match: (e: AccessEntry) => boolean, timeoutMs = 10_000): Promise<AccessEntry | undefined> => {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const found = entries.find(match);
      if (found || Date.now() >= deadline) return found;
      await new Promise<void>((resolve) => {
        const wake = (): void => {
          waiters.delete(wake);
          clearTimeout(timer);
          resolve();
        };
        const timer = setTimeout(wake, 100);
        waiters.add(wake);
      });
    }
  };
  return { sink, entries, waitFor };
}
