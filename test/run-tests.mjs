#!/usr/bin/env node
// Runs the ava suite with the TAP reporter, echoes its output, and ends with
// the line CI reads: "N passed, N failed, N skipped", counted from ava's own
// TAP results (a crash or a non-zero exit with no failing test counts as one
// failure, so a broken run can never look green).
//
// Extra arguments go to ava (e.g. a file pattern).

import { spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('..', import.meta.url));
const avaBin = fileURLToPath(new URL('../node_modules/ava/entrypoints/cli.mjs', import.meta.url));

export async function runAva(args, { cwd = root, env = process.env, label = 'ava' } = {}) {
  const counts = { passed: 0, failed: 0, skipped: 0, todo: 0 };
  const failures = [];
  const child = spawn(process.execPath, [avaBin, '--tap', ...args], { cwd, env, stdio: ['ignore', 'pipe', 'inherit'] });
  const lines = createInterface({ input: child.stdout });
  for await (const line of lines) {
    process.stdout.write(`${line}\n`);
    const m = /^(not ok|ok) \d+ (?:- )?(.*)$/.exec(line);
    if (!m) continue;
    const [, status, rest] = m;
    if (/# SKIP\b/i.test(rest)) counts.skipped++;
    else if (/# TODO\b/i.test(rest)) counts.todo++;
    else if (status === 'ok') counts.passed++;
    else {
      counts.failed++;
      failures.push(rest);
    }
  }
  const code = await new Promise((resolve) => child.on('close', (c, signal) => resolve(c ?? (signal ? 128 : 1))));
  if (code !== 0 && counts.failed === 0) {
    counts.failed++;
    failures.push(`${label} exited with code ${code} without a failing test (crash, timeout or no tests run)`);
  }
  return { ...counts, failures, code };
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const result = await runAva(process.argv.slice(2));
  if (result.failures.length > 0) {
    process.stdout.write(`\nfailed:\n${result.failures.map((f) => `  - ${f}`).join('\n')}\n`);
  }
  if (result.todo > 0) process.stdout.write(`(${result.todo} todo, not counted as passed)\n`);
  process.stdout.write(`\n${result.passed} passed, ${result.failed} failed, ${result.skipped} skipped\n`);
  process.exitCode = result.failed > 0 ? 1 : 0;
}
