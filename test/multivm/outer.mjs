// Host side of the multi-VM suite: what the outer QEMU guest (the hypervisor)
// is booted with. It is the guest of test/vm/guest.mjs with 2 vCPUs and 3 GiB,
// the inner guests' boot files (built here, on the host, and cached), and a
// host directory shared read-write for every guest's logs, kept on failure.
// This machine never opens AF_VSOCK or /dev/vhost-vsock: only the outer guest does.

import { mkdtempSync, readFileSync, readdirSync, rmSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { cacheRoot } from '../vm/guest.mjs';
import { prepareInnerImage } from './inner-image.mjs';

export const MULTIVM_AVA = ['node', 'node_modules/ava/entrypoints/cli.mjs', '--config', 'test/multivm/ava.config.mjs', '--tap'];

/** Two vCPUs for two inner guests booting side by side; memory for three of 256 MiB, their code caches and the Node processes. */
const OUTER = { smp: 2, mem: '3G' };

function tail(path, lines) {
  return readFileSync(path, 'latin1').replace(/\r/g, '').split('\n').slice(-lines).join('\n');
}

/** Prints where the logs are and the end of each, so a CI log shows them too. */
function showLogs(dir) {
  const files = readdirSync(dir).filter((f) => statSync(join(dir, f)).isFile());
  process.stdout.write(`\n# multi-VM suite logs kept in ${dir} (${files.join(', ') || 'none written'})\n`);
  for (const f of files) process.stdout.write(`# ---- ${f} (last 30 lines)\n${tail(join(dir, f), 30).replace(/^/gm, '#   ')}\n`);
}

/**
 * Options for runInGuest: the outer guest with the inner image and a log
 * directory; `finish(ok)` removes the logs after a green run and shows them otherwise.
 * @param {{ timeoutMs?: number }} [extra]
 */
export function prepareOuterGuest(extra = {}) {
  const image = prepareInnerImage();
  const logs = mkdtempSync(join(cacheRoot(), 'multivm-logs-'));
  const timeoutS = Number(process.env.VSOCKMESH_MULTIVM_TIMEOUT ?? 1800);
  return {
    logs,
    options: {
      ...OUTER,
      timeoutMs: extra.timeoutMs ?? timeoutS * 1000,
      shares: [logs],
      env: {
        ...process.env,
        VSOCKMESH_MULTIVM: '1',
        VSOCKMESH_MULTIVM_KERNEL: image.kernel,
        VSOCKMESH_MULTIVM_INITRD: image.initrd,
        VSOCKMESH_MULTIVM_LOGS: logs,
      },
    },
    finish(ok) {
      if (ok) rmSync(logs, { recursive: true, force: true });
      else showLogs(logs);
    },
  };
}
