#!/usr/bin/env node
// Runs the ava suite with the TAP reporter, echoes its output, then the vsock
// suite inside a throw-away QEMU guest (test/vm/guest.mjs; AF_VSOCK is never
// opened on the host), and ends with the line CI reads:
// "N passed, N failed, N skipped", counted from ava's own TAP results of all
// (a crash or a non-zero exit with no failing test counts as one failure, so a
// broken run can never look green).
//
// Then the multi-VM suite (test/multivm/outer.mjs): an outer guest acting as
// the hypervisor (vhost-vsock) runs inner guests at CIDs 3, 4 and 5.
//
// The guest suites need qemu, a kernel and static busybox (the multi-VM suite
// also a C compiler). Without them a suite is counted as 1 skipped with a loud
// warning, or as 1 failed under CI=true (it must run in CI).
// VSOCKMESH_SKIP_GUEST=1 / VSOCKMESH_SKIP_MULTIVM=1 leave one out the same way.
//
// Extra arguments go to the host's ava (e.g. a file pattern).

import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { StringDecoder } from 'node:string_decoder';
import { fileURLToPath } from 'node:url';
import { MULTIVM_AVA, prepareOuterGuest } from './multivm/outer.mjs';
import { checkPrerequisites, chooseAccel, fmtMs, GuestSetupError, INSTALL_HINT, runInGuest } from './vm/guest.mjs';

const root = fileURLToPath(new URL('..', import.meta.url));
const avaBin = fileURLToPath(new URL('../node_modules/ava/entrypoints/cli.mjs', import.meta.url));
const GUEST_AVA = ['node', 'node_modules/ava/entrypoints/cli.mjs', '--config', 'test/vm/ava.config.mjs', '--tap'];
const isCi = ['true', '1'].includes(process.env.CI ?? '');

/** Counts ava's TAP lines: ok / not ok, with # SKIP and # TODO apart. */
function tapTally(prefix = '') {
  const counts = { passed: 0, failed: 0, skipped: 0, todo: 0 };
  const failures = [];
  return {
    counts,
    failures,
    line(line) {
      const m = /^(not ok|ok) \d+ (?:- )?(.*)$/.exec(line);
      if (!m) return;
      const [, status, rest] = m;
      if (/# SKIP\b/i.test(rest)) counts.skipped++;
      else if (/# TODO\b/i.test(rest)) counts.todo++;
      else if (status === 'ok') counts.passed++;
      else {
        counts.failed++;
        failures.push(`${prefix}${rest}`);
      }
    },
    /** The run was stopped: a failure of its own, whatever it printed. */
    stuck(reason) {
      counts.failed++;
      failures.push(`${prefix}${reason}`);
      process.stdout.write(`\n${reason}\n`);
    },
    /** A non-zero exit without a failing test is a failure of its own. */
    finish(code, label) {
      if (code !== 0 && counts.failed === 0) {
        counts.failed++;
        failures.push(`${prefix}${label} exited with code ${code} without a failing test (crash, timeout or no tests run)`);
      }
      return { ...counts, failures, code };
    },
  };
}

/**
 * How long ava may print nothing before the run gives up on it. Each test has
 * ava's own timeout (package.json), but ava waits without end for a test
 * process that finished its tests and never exits (a server a failed test left
 * running): without this, one leaked handle would hold the whole run until
 * CI's limit. VSOCKMESH_AVA_SILENCE_MS sets it (ms).
 */
const AVA_SILENCE_MS = Number(process.env.VSOCKMESH_AVA_SILENCE_MS ?? 10 * 60_000);

export async function runAva(args, { cwd = root, env = process.env, label = 'ava' } = {}) {
  const tally = tapTally();
  // Its own process group, so that a stuck run is stopped with its test processes.
  const child = spawn(process.execPath, [avaBin, '--tap', ...args], { cwd, env, stdio: ['ignore', 'pipe', 'inherit'], detached: true });
  let silent;
  const watch = () => {
    clearTimeout(silent);
    silent = setTimeout(() => {
      tally.stuck(`${label} printed nothing for ${Math.round(AVA_SILENCE_MS / 1000)} s (a test process that never exits?): stopped`);
      try {
        process.kill(-child.pid, 'SIGKILL');
      } catch {
        child.kill('SIGKILL');
      }
    }, AVA_SILENCE_MS);
  };
  watch();
  const lines = createInterface({ input: child.stdout });
  for await (const line of lines) {
    watch();
    process.stdout.write(`${line}\n`);
    tally.line(line);
  }
  const code = await new Promise((resolve) => child.on('close', (c, signal) => resolve(c ?? (signal ? 128 : 1))));
  clearTimeout(silent);
  return tally.finish(code, label);
}

/** Splits streamed chunks into lines (a chunk may end inside a UTF-8 character); flush() hands over a last line without a newline. */
function lineSplitter(onLine) {
  const decoder = new StringDecoder('utf8');
  let rest = '';
  return {
    write(chunk) {
      const parts = (rest + decoder.write(chunk)).split('\n');
      rest = parts.pop() ?? '';
      parts.forEach(onLine);
    },
    flush() {
      rest += decoder.end();
      if (rest !== '') onLine(rest);
      rest = '';
    },
  };
}

/** A suite that did not run: 1 skipped, or 1 failed under CI=true (it must run in CI). */
const notRun = (prefix, message) => ({ passed: 0, failed: isCi ? 1 : 0, skipped: isCi ? 0 : 1, todo: 0, failures: isCi ? [`${prefix}${message}`] : [], code: null });

function loudWarning(lines) {
  const bar = '!'.repeat(78);
  process.stdout.write(`\n${bar}\n${lines.map((l) => `!! ${l}`).join('\n')}\n${bar}\n`);
}

/**
 * An ava suite run inside one QEMU guest (compiled tests in `distDir`), its TAP
 * counted like the host's. `prepare` (optional) returns extra runInGuest options
 * and a `finish(ok)` called after the run.
 */
export async function runSuiteInGuest({ name, prefix, skipEnv, distDir, argv, options, prepare, cwd = root }) {
  const counted = isCi ? 'Counted as 1 FAILED (CI=true: this suite must run in CI).' : 'Counted as 1 skipped, never as passed.';
  if (process.env[skipEnv] === '1') {
    loudWarning([`The ${name} did NOT run: ${skipEnv}=1.`, counted]);
    return notRun(prefix, `the ${name} did not run: ${skipEnv}=1`);
  }
  const pre = checkPrerequisites();
  if (!pre.ok) {
    loudWarning([
      `The ${name} did NOT run: it runs inside a QEMU guest, and this machine lacks:`,
      ...pre.problems.map((p) => `  - ${p}`),
      'Install what it needs (Debian 12, as root) with:',
      `  ${INSTALL_HINT}${pre.missing.filter((p) => !INSTALL_HINT.includes(p)).map((p) => ` ${p}`).join('')}`,
      counted,
    ]);
    return notRun(prefix, `the ${name} did not run: ${pre.problems.join('; ')} (${INSTALL_HINT})`);
  }
  const tally = tapTally(prefix);
  const fail = (message) => {
    tally.failures.push(`${prefix}${message}`);
    tally.counts.failed++;
    return tally.finish(1, name);
  };
  if (!existsSync(new URL(`../${distDir}`, import.meta.url))) return fail(`${distDir} is missing: run "npm run build" first (the guest runs compiled tests)`);
  let accel;
  let prepared;
  try {
    accel = chooseAccel();
    prepared = prepare ? await prepare() : { options: {}, finish: () => {} };
  } catch (err) {
    if (!(err instanceof GuestSetupError)) throw err;
    process.stdout.write(`${err.message}\n`);
    return fail(`the guest could not be prepared: ${err.message.split('\n')[0]}`);
  }
  const how = accel.accel === 'kvm' ? 'KVM' : 'TCG (software emulation, slow)';
  process.stdout.write(`\n# ${name}: inside a QEMU guest under ${how}; ${accel.reason}\n`);

  const out = lineSplitter((line) => {
    process.stdout.write(`${line}\n`);
    tally.line(line);
  });
  let r;
  try {
    r = await runInGuest(argv, { cwd, accel: accel.accel, ...options, ...prepared.options, onStdout: (c) => out.write(c), onStderr: (c) => process.stderr.write(c) });
  } catch (err) {
    out.flush();
    prepared.finish(false);
    if (!(err instanceof GuestSetupError)) throw err;
    process.stdout.write(`${err.message}\n`);
    return fail(`the guest could not be prepared: ${err.message.split('\n')[0]}`);
  }
  out.flush();
  if (r.outcome !== 'exited') {
    process.stdout.write(`\n${r.error}\n`);
    tally.failures.push(`${prefix}${r.error.split('\n')[0]}`);
    tally.counts.failed++;
  }
  const under = r.accel === 'kvm' ? 'KVM' : 'TCG';
  const what = r.outcome === 'exited' ? 'ran inside a QEMU guest' : `did NOT complete (${r.outcome}) in a QEMU guest`;
  process.stdout.write(`# ${name} ${what} under ${under}: boot ${fmtMs(r.bootMs)}, ${fmtMs(r.totalMs)} in all\n`);
  const result = tally.finish(r.code, `ava in the guest (${name})`);
  prepared.finish(result.failed === 0);
  return result;
}

/** The multi-VM suite (test/multivm): an outer QEMU guest as the hypervisor, with inner guests at their own CIDs. */
export function runMultiVmSuite() {
  return runSuiteInGuest({ name: 'multi-VM suite', prefix: '[multivm] ', skipEnv: 'VSOCKMESH_SKIP_MULTIVM', distDir: 'dist/test/multivm', argv: MULTIVM_AVA, options: {}, prepare: prepareOuterGuest });
}

/** The vsock suite (test/vm, compiled into dist/test/vm) inside one QEMU guest with vsock_loopback. */
export function runGuestSuite() {
  const timeoutS = Number(process.env.VSOCKMESH_GUEST_TIMEOUT ?? 900);
  return runSuiteInGuest({ name: 'vsock suite', prefix: '[guest] ', skipEnv: 'VSOCKMESH_SKIP_GUEST', distDir: 'dist/test/vm', argv: GUEST_AVA, options: { timeoutMs: timeoutS * 1000 } });
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const host = await runAva(process.argv.slice(2));
  const guest = await runGuestSuite();
  const multivm = await runMultiVmSuite();
  const total = {};
  for (const k of ['passed', 'failed', 'skipped', 'todo']) total[k] = host[k] + guest[k] + multivm[k];
  const failures = [...host.failures, ...guest.failures, ...multivm.failures];
  if (failures.length > 0) {
    process.stdout.write(`\nfailed:\n${failures.map((f) => `  - ${f}`).join('\n')}\n`);
  }
  if (total.todo > 0) process.stdout.write(`(${total.todo} todo, not counted as passed)\n`);
  const part = (r) => `${r.passed} passed, ${r.failed} failed, ${r.skipped} skipped`;
  process.stdout.write(`\nhost suite: ${part(host)}; vsock suite (QEMU guest): ${part(guest)}; multi-VM suite (nested QEMU): ${part(multivm)}\n`);
  process.stdout.write(`${part(total)}\n`);
  process.exitCode = total.failed > 0 ? 1 : 0;
}
