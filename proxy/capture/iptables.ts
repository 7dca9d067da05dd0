// The edge of transparent capture: reads the nat table with iptables-save and
// loads the restore text of rules.ts with iptables-restore --noflush (one
// atomic commit per family), after checking the tools exist and that this
// process may change the rules. Names of users and groups are resolved here.

import { spawnSync } from 'node:child_process';
import { accessSync, constants, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { VsockmeshError } from '../runtime/errors.js';
import type { Family } from './rules.js';
import type { IdLookups } from './options.js';

const TOOLS: Record<Family, { save: string; restore: string }> = {
  4: { save: 'iptables-save', restore: 'iptables-restore' },
  6: { save: 'ip6tables-save', restore: 'ip6tables-restore' },
};

/** CAP_NET_ADMIN's bit in /proc/<pid>/status CapEff (linux/capability.h). */
const CAP_NET_ADMIN = 12n;

/** The tool's path: PATH first, then the sbin directories a non-login shell's PATH may lack. */
export function findTool(name: string): string | undefined {
  const dirs = [...(process.env.PATH ?? '').split(':').filter((d) => d !== ''), '/usr/sbin', '/sbin'];
  for (const dir of dirs) {
    try {
      accessSync(join(dir, name), constants.X_OK);
      return join(dir, name);
    } catch {
      // not here; the next directory
    }
  }
  return undefined;
}

/** Whether this process holds CAP_NET_ADMIN (root normally does). */
export function hasNetAdmin(): boolean {
  const capEff = /^CapEff:\s*([0-9a-f]+)$/m.exec(readFileSync('/proc/self/status', 'utf8'))?.[1];
  return capEff !== undefined && ((BigInt(`0x${capEff}`) >> CAP_NET_ADMIN) & 1n) === 1n;
}

/** A step that could not run: exit 1. */
export class CaptureError extends VsockmeshError {
  constructor(message: string) {
    super('FAILED_PRECONDITION', message);
  }
}

function run(tool: string, args: string[], input?: string): { ok: boolean; stdout: string; problem: string } {
  const result = spawnSync(tool, args, { input, encoding: 'utf8', timeout: 60_000 });
  const problem = result.error ? result.error.message : (result.stderr.trim().split('\n')[0] ?? '') || `exit ${String(result.status ?? result.signal)}`;
  return { ok: result.error === undefined && result.status === 0, stdout: result.stdout ?? '', problem };
}

/** The iptables tools of one family, checked to exist. */
export function familyTools(family: Family): { save: string; restore: string } | string {
  const save = findTool(TOOLS[family].save);
  const restore = findTool(TOOLS[family].restore);
  if (save === undefined || restore === undefined) return `${TOOLS[family].restore} and ${TOOLS[family].save} not found (apt-get install iptables)`;
  return { save, restore };
}

/** The current nat table (iptables-save text), or why it cannot be read (no nat table for IPv6 on this kernel, ...). */
export function readNat(tools: { save: string }): { text: string } | { problem: string } {
  const saved = run(tools.save, ['-t', 'nat']);
  return saved.ok ? { text: saved.stdout } : { problem: saved.problem };
}

export function loadRules(tools: { restore: string }, family: Family, text: string): void {
  const loaded = run(tools.restore, ['--noflush', '--wait'], text);
  if (!loaded.ok) throw new CaptureError(`${TOOLS[family].restore} refused the rules: ${loaded.problem}`);
}

/** User and group names from the system's databases (NSS, through getent). */
export const systemIds: IdLookups = {
  uid: (name) => getentId('passwd', name),
  gid: (name) => getentId('group', name),
};

function getentId(database: 'passwd' | 'group', name: string): number | undefined {
  const result = spawnSync('getent', [database, name], { encoding: 'utf8' });
  const field = result.status === 0 ? result.stdout.split('\n')[0]?.split(':')[2] : undefined;
  return field !== undefined && /^\d+$/.test(field) ? Number(field) : undefined;
}
