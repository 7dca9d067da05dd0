#!/usr/bin/env node
// Runs the ava suite with the TAP reporter, echoes its output, then the vsock
// suite inside a throw-away QEMU guest (test/vm/guest.mjs; AF_VSOCK is never
// opened on the host), and ends with the line CI reads:
// "N passed, N failed, N skipped", counted from ava's own TAP results of both
// (a crash or a non-zero exit with no failing test counts as one failure, so a
// broken run can never look green).
//
// The vsock suite needs qemu, a kernel and static busybox. Without them it is
// counted as 1 skipped with a loud warning, or as 1 failed under CI=true (it
// must run in CI). VSOCKMESH_SKIP_GUEST=1 leaves it out the same way.
//
// Extra arguments go to the host's ava (e.g. a file pattern).

import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { StringDecoder } from 'node:string_decoder';
import { fileURLToPath } from 'node:url';
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

export async function runAva(args, { cwd = root, env = process.env, label = 'ava' } = {}) {
  const tally = tapTally();
  const child = spawn(process.execPath, [avaBin, '--tap', ...args], { cwd, env, stdio: ['ignore', 'pipe', 'inherit'] });
  const lines = createInterface({ input: child.stdout });
  for await (const line of lines) {
    process.stdout.write(`${line}\n`);
    tally.line(line);
  }
  const code = await new Promise((resolve) => child.on('close', (c, signal) => resolve(c ?? (signal ? 128 : 1))));
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

const notRun = (message) => ({ passed: 0, failed: isCi ? 1 : 0, skipped: isCi ? 0 : 1, todo: 0, failures: isCi ? [`[guest] ${message}`] : [], code: null });

function loudWarning(lines) {
  const bar = '!'.repeat(78);
  process.stdout.write(`\n${bar}\n${lines.map((l) => `!! ${l}`).join('\n')}\n${bar}\n`);
}

/** The vsock suite (test/vm, compiled into dist/test/vm) inside one QEMU guest, with its TAP counted like the host's. */
export async function runGuestSuite({ cwd = root } = {}) {
  const counted = isCi ? 'Counted as 1 FAILED (CI=true: this suite must run in CI).' : 'Counted as 1 skipped, never as passed.';
  if (process.env.VSOCKMESH_SKIP_GUEST === '1') {
    loudWarning(['The vsock suite did NOT run: VSOCKMESH_SKIP_GUEST=1.', counted]);
    return notRun('the vsock suite did not run: VSOCKMESH_SKIP_GUEST=1');
  }
  const pre = checkPrerequisites();
  if (!pre.ok) {
    loudWarning([
      'The vsock test suite did NOT run: it runs inside a QEMU guest, and this machine lacks:',
      ...pre.problems.map((p) => `  - ${p}`),
      'Install what it needs (Debian 12, as root) with:',
      `  ${INSTALL_HINT}${pre.missing.filter((p) => !INSTALL_HINT.includes(p)).map((p) => ` ${p}`).join('')}`,
      counted,
    ]);
    return notRun(`the vsock suite did not run: ${pre.problems.join('; ')} (${INSTALL_HINT})`);
  }
  const tally = tapTally('[guest] ');
  if (!existsSync(new URL('../dist/test/vm', import.meta.url))) {
    tally.failures.push('[guest] dist/test/vm is missing: run "npm run build" first (the guest runs compiled tests)');
    tally.counts.failed++;
    return tally.finish(1, 'guest');
  }
  let accel;
  try {
    accel = chooseAccel();
  } catch (err) {
    if (!(err instanceof GuestSetupError)) throw err;
    tally.failures.push(`[guest] ${err.message}`);
    tally.counts.failed++;
    return tally.finish(1, 'guest');
  }
  const how = accel.accel === 'kvm' ? 'KVM' : 'TCG (software emulation, slow)';
  process.stdout.write(`\n# vsock suite: inside a QEMU guest under ${how}; ${accel.reason}\n`);

  const out = lineSplitter((line) => {
    process.stdout.write(`${line}\n`);
    tally.line(line);
  });
  let r;
  try {
    const timeoutS = Number(process.env.VSOCKMESH_GUEST_TIMEOUT ?? 900);
    r = await runInGuest(GUEST_AVA, { cwd, accel: accel.accel, timeoutMs: timeoutS * 1000, onStdout: (c) => out.write(c), onStderr: (c) => process.stderr.write(c) });
  } catch (err) {
    out.flush();
    if (!(err instanceof GuestSetupError)) throw err;
    process.stdout.write(`${err.message}\n`);
    tally.failures.push(`[guest] the guest could not be prepared: ${err.message.split('\n')[0]}`);
    tally.counts.failed++;
    return tally.finish(1, 'guest');
  }
  out.flush();
  if (r.outcome !== 'exited') {
    process.stdout.write(`\n${r.error}\n`);
    tally.failures.push(`[guest] ${r.error.split('\n')[0]}`);
    tally.counts.failed++;
  }
  const under = r.accel === 'kvm' ? 'KVM' : 'TCG';
  const what = r.outcome === 'exited' ? 'ran inside a QEMU guest' : `did NOT complete (${r.outcome}) in a QEMU guest`;
  process.stdout.write(`# vsock suite ${what} under ${under}: boot ${fmtMs(r.bootMs)}, ${fmtMs(r.totalMs)} in all\n`);
  return tally.finish(r.code, 'ava in the guest');
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const host = await runAva(process.argv.slice(2));
  const guest = await runGuestSuite();
  const total = {};
  for (const k of ['passed', 'failed', 'skipped', 'todo']) total[k] = host[k] + guest[k];
  const failures = [...host.failures, ...guest.failures];
  if (failures.length > 0) {
    process.stdout.write(`\nfailed:\n${failures.map((f) => `  - ${f}`).join('\n')}\n`);
  }
  if (total.todo > 0) process.stdout.write(`(${total.todo} todo, not counted as passed)\n`);
  const part = (r) => `${r.passed} passed, ${r.failed} failed, ${r.skipped} skipped`;
  process.stdout.write(`\nhost suite: ${part(host)}; vsock suite (QEMU guest): ${part(guest)}\n`);
  process.stdout.write(`${part(total)}\n`);
  process.exitCode = total.failed > 0 ? 1 : 0;
}
