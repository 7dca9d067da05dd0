#!/usr/bin/env node
// Host side of the vsock benchmark (`npm run bench:vsock`): boots the QEMU
// guest of test/vm/guest.mjs once, runs the compiled benchmark
// (dist/test/bench/vsock-bench.js, from test/bench/vsock-bench.ts) inside it,
// streams its progress, prints its Markdown report and saves it to
// .bench/vsock-<timestamp>.md (the guest's own writes vanish with it).
// The host opens no AF_VSOCK socket: everything vsock runs in the guest.
//
// env: BENCH_ROUNDS, BENCH_SECONDS, BENCH_CHAINS (passed to the guest),
//      BENCH_GUEST_TIMEOUT (seconds; default 3x the expected length),
//      VSOCKMESH_GUEST_ACCEL=kvm|tcg (guest.mjs picks otherwise).

import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { GuestSetupError, chooseAccel, fmtMs, runInGuest } from '../vm/guest.mjs';

const ROOT = path.resolve(fileURLToPath(new URL('../..', import.meta.url)));
const BENCH = path.join(ROOT, 'dist/test/bench/vsock-bench.js');
// Same lines as REPORT_BEGIN / REPORT_END in vsock-bench.ts.
const BEGIN = '----- vsock-bench report begin -----';
const END = '----- vsock-bench report end -----';

function positiveEnv(name, fallback) {
  const raw = process.env[name];
  if (raw === undefined || raw === '') return fallback;
  const n = Number(raw);
  if (!Number.isInteger(n) || n < 1) throw new Error(`${name} must be a positive integer, got "${raw}"`);
  return n;
}

async function main() {
  if (!existsSync(BENCH)) {
    process.stderr.write(`${path.relative(ROOT, BENCH)} is missing: run npm run bench:vsock (it builds first)\n`);
    return 2;
  }
  const { accel, reason } = chooseAccel();
  const rounds = positiveEnv('BENCH_ROUNDS', 3);
  const seconds = positiveEnv('BENCH_SECONDS', accel === 'kvm' ? 5 : 3);
  // Expected length: setup, then per round each chain's 5 runs and 2 raw transfers, with per-run overheads (larger under emulation).
  // Setup: up to 10 vsockmesh processes, each taking a minute or more to start in an emulated guest on a loaded host.
  const slack = accel === 'kvm' ? 1 : 3;
  const selected = process.env.BENCH_CHAINS ? process.env.BENCH_CHAINS.split(',').map((c) => c.trim()) : null;
  const chains = selected ? selected.filter((c) => c !== 'raw').length : 8;
  const raw = !selected || selected.includes('raw') ? 2 : 0;
  const expectedS = 10 * 20 * slack + rounds * (chains * (5 * seconds + 1.5 * slack) + raw * (seconds + 1.5 * slack));
  // BENCH_GUEST_TIMEOUT (s): when other work starves the emulated guest, sidecars take minutes to start.
  const timeoutMs = positiveEnv('BENCH_GUEST_TIMEOUT', Math.max(600, Math.round(3 * expectedS))) * 1000;
  process.stderr.write(`[vsock-bench host] booting the guest (${accel}: ${reason}); ${rounds} rounds, ${seconds} s per run; about ${Math.round(expectedS / 60)} min expected, guest timeout ${Math.round(timeoutMs / 1000)} s\n`);

  const abort = new globalThis.AbortController();
  let signalled = false;
  for (const name of ['SIGINT', 'SIGTERM']) {
    process.once(name, () => {
      signalled = true;
      abort.abort();
    });
  }
  const result = await runInGuest([process.execPath, BENCH], {
    cwd: ROOT,
    env: { ...process.env, BENCH_ROUNDS: String(rounds), BENCH_SECONDS: String(seconds) },
    accel,
    mem: '2G',
    timeoutMs,
    signal: abort.signal,
    onStderr: (c) => process.stderr.write(c),
  });
  process.stderr.write(`[vsock-bench host] guest ${result.accel}: boot ${fmtMs(result.bootMs)}, total ${fmtMs(result.totalMs)}, outcome ${result.outcome}, exit code ${result.code}\n`);
  if (signalled) return 130;
  if (result.error) process.stderr.write(`${result.error}\n`);

  // The guest prints the report after each round: the last complete one stands (a guest stopped mid-run leaves its finished rounds).
  const begin = result.stdout.lastIndexOf(BEGIN);
  const end = result.stdout.indexOf(END, begin + 1);
  if (begin === -1 || end === -1) {
    process.stderr.write(`[vsock-bench host] no report from the guest${result.stdout.trim() ? `; its stdout:\n${result.stdout}` : ''}\n`);
    return result.code === 0 ? 1 : result.code;
  }
  const md = result.stdout.slice(begin + BEGIN.length, end).trim();
  const outDir = path.join(ROOT, '.bench');
  mkdirSync(outDir, { recursive: true });
  const file = path.join(outDir, `vsock-${new Date().toISOString().replace(/[:.]/g, '-')}.md`);
  writeFileSync(file, `${md}\n`);
  process.stdout.write(`\n${md}\n\nwritten to ${path.relative(ROOT, file)}\n`);
  return result.code;
}

try {
  process.exitCode = await main();
} catch (err) {
  process.stderr.write(`vsock-bench: ${err instanceof GuestSetupError ? err.message : (err.stack ?? err)}\n`);
  process.exitCode = 1;
}
