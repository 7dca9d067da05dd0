// Reading a config file: YAML (or JSON) text -> validated SidecarConfig, or
// every problem with its path.

import { readFile } from 'node:fs/promises';
import { LineCounter, parseDocument } from 'yaml';
import type { z } from 'zod';
import { sidecarConfigSchema } from './schema.js';
import type { SidecarConfig } from './types.js';

export class ConfigError extends Error {
  readonly code = 'EVSOCKMESH_CONFIG';
  constructor(
    readonly source: string,
    readonly problems: string[],
  ) {
    super(`${source}: ${problems.length} problem${problems.length === 1 ? '' : 's'}:\n${problems.map((p) => `  ${p}`).join('\n')}`);
    this.name = 'ConfigError';
  }
}

/** `listeners[1].port` from zod's ['listeners', 1, 'port']. */
export function formatPath(path: readonly PropertyKey[]): string {
  let out = '';
  for (const key of path) {
    if (typeof key === 'number') out += `[${key}]`;
    else out += out === '' ? String(key) : `.${String(key)}`;
  }
  return out === '' ? '(top level)' : out;
}

export function formatIssues(issues: readonly z.core.$ZodIssue[]): string[] {
  return issues.map((issue) => {
    if (issue.code === 'unrecognized_keys') {
      const keys = issue.keys.map((k) => `"${k}"`).join(', ');
      return `${formatPath(issue.path)}: unknown field${issue.keys.length > 1 ? 's' : ''} ${keys}`;
    }
    if (issue.code === 'invalid_type' && issue.message.startsWith('Invalid input: expected')) {
      return `${formatPath(issue.path)}: required, or of the wrong type (${issue.message.slice('Invalid input: '.length)})`;
    }
    return `${formatPath(issue.path)}: ${issue.message}`;
  });
}

/** Validates already-parsed data (from YAML, JSON or code). */
export function parseSidecarConfig(data: unknown, source = 'config'): SidecarConfig {
  const result = sidecarConfigSchema.safeParse(data ?? {});
  if (!result.success) throw new ConfigError(source, formatIssues(result.error.issues));
  return result.data;
}

export function parseSidecarConfigText(text: string, source = 'config'): SidecarConfig {
  const lineCounter = new LineCounter();
  const doc = parseDocument(text, { prettyErrors: false, lineCounter });
  if (doc.errors.length > 0) {
    throw new ConfigError(
      source,
      doc.errors.map((e) => {
        const pos = lineCounter.linePos(e.pos[0]);
        return `line ${pos.line}, column ${pos.col}: ${e.message.split('\n')[0]}`;
      }),
    );
  }
  return parseSidecarConfig(doc.toJS(), source);
}

export async function loadSidecarConfig(path: string): Promise<SidecarConfig> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    throw new ConfigError(path, [`cannot read the file: ${(err as Error).message}`]);
  }
  return parseSidecarConfigText(text, path);
}
