// Config files as every role reads them (sidecar and host-relay configs, the
// mesh config, the VM inventory): YAML (or JSON) text to data, and problems
// reported as one ConfigError listing each with its path.

import { readFile } from 'node:fs/promises';
import { LineCounter, parseDocument } from 'yaml';
import type { z } from 'zod/v3';
import { VsockmeshError } from './errors.js';

export class ConfigError extends VsockmeshError {
  constructor(
    readonly source: string,
    readonly problems: string[],
  ) {
    super('INVALID_ARGUMENT', `${source}: ${problems.length} problem${problems.length === 1 ? '' : 's'}:\n${problems.map((p) => `  ${p}`).join('\n')}`);
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

export function formatIssue(issue: z.ZodIssue): string {
  const at = formatPath(issue.path);
  switch (issue.code) {
    case 'unrecognized_keys':
      return `${at}: unknown field${issue.keys.length > 1 ? 's' : ''} ${issue.keys.map((k) => `"${k}"`).join(', ')}`;
    case 'invalid_type':
      if (issue.received === 'undefined') return `${at}: required`;
      // zod's default text; our own messages are kept as written.
      if (issue.message.startsWith('Expected ')) return `${at}: must be ${issue.expected} (got ${issue.received})`;
      return `${at}: ${issue.message}`;
    case 'invalid_union_discriminator':
      return `${at}: must be ${issue.options.map((o) => JSON.stringify(o)).join(' or ')}`;
    case 'invalid_enum_value':
      return `${at}: must be one of ${issue.options.map((o) => JSON.stringify(o)).join(', ')} (got ${JSON.stringify(issue.received)})`;
    default:
      return `${at}: ${issue.message}`;
  }
}

/** YAML text -> data, or every syntax problem with its line. */
export function parseYamlText(text: string, source: string): unknown {
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
  return doc.toJS();
}

/** A config file's text; a file that cannot be read is a ConfigError naming it. */
export async function readConfigFile(path: string): Promise<string> {
  try {
    return await readFile(path, 'utf8');
  } catch (err) {
    throw new ConfigError(path, [`cannot read the file: ${(err as Error).message}`]);
  }
}
