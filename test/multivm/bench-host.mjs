// Host side of `npm run bench:multivm`: boots the outer guest of the multi-VM
// suite, runs a compiled program inside it (the relay benchmark bench.ts, or
// with --node-start the start-up measurement node-start.ts), prints its
// Markdown report and saves it to .bench/multivm-<timestamp>.md.
// The host opens no AF_VSOCK socket.
//
// env: BENCH_ROUNDS (3), BENCH_MIB (2), BENCH_CONNECTS (10), BENCH_NODE_STEP_TIMEOUT (300 s), passed to the guest.

import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { GuestSetupError, fmtMs, runInGuest } from '../vm/guest.mjs';
import { prepareOuterGuest } from './outer.mjs';

const ROOT = path.resolve(fileURLToPath(new URL('../..', import.meta.url)));
// Same lines as REPORT_BEGIN / REPORT_END in report.ts.
const BEGIN = '----- multivm-bench report begin -----';
const END = '----- multivm-bench report end -----';

/** @param {'bench' | 'node-start'} program */
export async function runMultiVmBench(program) {
  const compiled = path.join(ROOT, `dist/test/multivm/${program}.js`);
  if (!existsSync(compiled)) {
    process.stderr.write(`${path.relative(ROOT, compiled)} is missing: run npm run bench:multivm (it builds first)\n`);
    return 2;
  }
  let outer;
  try {
    outer = prepareOuterGuest({ timeoutMs: 3 * 3600_000 });
  } catch (err) {
    if (!(err instanceof GuestSetupError)) throw err;
    process.stderr.write(`${err.message}\n`);
    return 2;
  }
  process.stderr.write('[multivm-bench host] booting the outer guest; the inner guests take minutes to boot under TCG inside TCG\n');
  const result = await runInGuest([process.execPath, compiled], { cwd: ROOT, ...outer.options, onStderr: (c) => process.stderr.write(c) });
  process.stderr.write(`[multivm-bench host] outer guest ${result.accel}: boot ${fmtMs(result.bootMs)}, total ${fmtMs(result.totalMs)}, outcome ${result.outcome}, exit code ${result.code}\n`);
  if (result.error) process.stderr.write(`${result.error}\n`);
  const begin = result.stdout.indexOf(BEGIN);
  const end = result.stdout.indexOf(END, begin + 1);
  outer.finish(begin !== -1 && end !== -1 && result.code === 0);
  if (begin === -1 || end === -1) {
    process.stderr.write(`[multivm-bench host] no report from the guest${result.stdout.trim() ? `; its stdout:\n${result.stdout}` : ''}\n`);
    return result.code === 0 ? 1 : result.code;
  }
  const md = result.stdout.slice(begin + BEGIN.length, end).trim();
  const outDir = path.join(ROOT, '.bench');
  mkdirSync(outDir, { recursive: true });
  const file = path.join(outDir, `multivm-${program}-${new Date().toISOString().replace(/[:.]/g, '-')}.md`);
  writeFileSync(file, `${md}\n`);
  process.stdout.write(`\n${md}\n\nwritten to ${path.relative(ROOT, file)}\n`);
  return result.code;
}
