// Reading the registry back at start-up: the snapshot, then every log segment
// it is followed by, each change checked against the registry's rules as it
// is replayed (state-log.ts describes the files). A line cut short at the end
// of the last segment (power lost in the middle of an append, which was then
// never acknowledged) is dropped with a warning; anything else that does not
// read is an error naming the file and line. The single-JSON state file of
// earlier versions is read too (and replaced by a snapshot at start).

import { createReadStream, existsSync } from 'node:fs';
import { VsockmeshError } from '../../proxy/runtime/errors.js';
import { show } from './bounds.js';
import { Registry, ValidationError, within, type PersistedState, type RegistryOptions } from './registry.js';
import { SNAPSHOT_FORMAT, SNAPSHOT_VERSION, listSegments, type SnapshotHeader } from './state-log.js';
import type { HypervisorRecord, VmRecord } from '../../proxy/resolve/types.js';

/** A state file that cannot be read; the message names the file and line. */
export class StateFileError extends VsockmeshError {
  constructor(
    readonly file: string,
    readonly line: number | null,
    detail: string,
  ) {
    super('DATA_LOSS', `state file ${file}: ${line === null ? '' : `line ${line}: `}${detail}`);
  }
}

export interface LoadedState {
  registry: Registry;
  /** What start-up should say (a dropped torn line, a migrated file), each with its snake_case reason. */
  notices: Array<{ reason: 'torn_tail' | 'migrated_state_file' | 'stale_log_ignored'; message: string }>;
}

interface Line {
  number: number;
  text: string;
  /** Ended by a newline: written whole. */
  terminated: boolean;
}

/** A file's lines, one at a time (no line is held longer than it takes to read it). */
async function* readLines(path: string): AsyncGenerator<Line> {
  let pending: Buffer[] = [];
  let number = 0;
  for await (const chunk of createReadStream(path) as AsyncIterable<Buffer>) {
    let start = 0;
    for (let end = chunk.indexOf(10); end !== -1; end = chunk.indexOf(10, start)) {
      pending.push(chunk.subarray(start, end));
      yield { number: ++number, text: Buffer.concat(pending).toString('utf8'), terminated: true };
      pending = [];
      start = end + 1;
    }
    if (start < chunk.length) pending.push(chunk.subarray(start));
  }
  if (pending.length > 0) yield { number: number + 1, text: Buffer.concat(pending).toString('utf8'), terminated: false };
}

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

function parse(file: string, line: Line): Record<string, unknown> {
  let value: unknown;
  try {
    value = JSON.parse(line.text);
  } catch (err) {
    throw new StateFileError(file, line.number, `not JSON (${(err as Error).message})`);
  }
  if (!isObject(value)) throw new StateFileError(file, line.number, 'not a JSON object');
  return value;
}

/** Runs `fn` on one line's record; a rule it breaks becomes an error naming the file, line and field. */
function atLine(file: string, line: number, fn: () => void): void {
  try {
    fn();
  } catch (err) {
    if (err instanceof ValidationError) throw new StateFileError(file, line, err.message);
    throw err;
  }
}

/**
 * The registry stored at `path` (snapshot and log), or undefined when there
 * is none yet. Throws StateFileError when the files do not read.
 */
export async function loadState(path: string, options: RegistryOptions = {}): Promise<LoadedState | undefined> {
  const segments = await listSegments(path);
  if (!existsSync(path)) {
    if (segments.length > 0) throw new StateFileError(path, null, `missing, but its log ${segments[0]!.path} is there (restore the snapshot, or remove the log to start empty)`);
    return undefined;
  }
  const notices: LoadedState['notices'] = [];
  const lines = readLines(path);
  const first = await lines.next();
  if (first.done) throw new StateFileError(path, null, 'empty (a snapshot starts with a header line)');
  const head = parse(path, first.value);

  if (head.version === 1 && head.format === undefined) {
    // An earlier version's state file: the whole registry in one JSON object.
    if (!(await lines.next()).done) throw new StateFileError(path, 2, 'a version 1 state file is one line');
    let registry: Registry;
    try {
      registry = Registry.fromState(head as unknown as PersistedState, options);
    } catch (err) {
      if (err instanceof ValidationError) throw new StateFileError(path, null, err.message);
      throw err;
    }
    notices.push({ reason: 'migrated_state_file', message: `state file ${path} is version 1 (one JSON object); it is rewritten as a snapshot with a log beside it` });
    if (segments.length > 0) notices.push({ reason: 'stale_log_ignored', message: `log segments beside a version 1 state file belong to no snapshot and are ignored: ${segments.map((s) => s.path).join(', ')}` });
    return { registry, notices };
  }

  const header = head as unknown as SnapshotHeader;
  if (header.format !== SNAPSHOT_FORMAT || header.version !== SNAPSHOT_VERSION) {
    throw new StateFileError(path, 1, `not a registry snapshot (format ${show(header.format)}, version ${show(header.version)}; this version reads "${SNAPSHOT_FORMAT}" ${SNAPSHOT_VERSION} and the version 1 state file)`);
  }
  for (const key of ['hypervisors', 'vms', 'log_segment'] as const) {
    if (!Number.isSafeInteger(header[key]) || header[key] < 0) throw new StateFileError(path, 1, `${key}: must be an integer >= 0 (got ${show(header[key])})`);
  }
  let registry: Registry;
  try {
    registry = Registry.restore(header, options);
  } catch (err) {
    if (err instanceof ValidationError) throw new StateFileError(path, 1, err.message);
    throw err;
  }
  let count = 0;
  const expected = header.hypervisors + header.vms;
  for await (const line of lines) {
    if (!line.terminated) throw new StateFileError(path, line.number, 'incomplete line (a snapshot is written whole, then renamed into place)');
    if (++count > expected) throw new StateFileError(path, line.number, `more records than the ${header.hypervisors} hypervisors and ${header.vms} VMs the header announces`);
    const record = parse(path, line);
    if (count <= header.hypervisors) atLine(path, line.number, () => within('hypervisor', () => registry.restoreHypervisor(record.hypervisor as HypervisorRecord)));
    else atLine(path, line.number, () => within('vm', () => registry.restoreVm(record.vm as VmRecord)));
  }
  if (count < expected) throw new StateFileError(path, null, `${count} records, but the header announces ${header.hypervisors} hypervisors and ${header.vms} VMs`);

  const following = segments.filter((s) => s.n >= header.log_segment);
  following.forEach((segment, i) => {
    // Segments are made one after the other, from the one the snapshot names: a gap is a lost file.
    if (segment.n !== header.log_segment + i) throw new StateFileError(path, 1, `log segment ${header.log_segment + i} is missing (the snapshot is followed by ${following.map((s) => s.path).join(', ')})`);
  });
  for (const [i, segment] of following.entries()) {
    const last = i === following.length - 1;
    for await (const line of readLines(segment.path)) {
      if (!line.terminated) {
        if (!last) throw new StateFileError(segment.path, line.number, 'incomplete line in a log segment that is not the last');
        notices.push({ reason: 'torn_tail', message: `${segment.path}: line ${line.number} is incomplete (${line.text.length} bytes; power lost while it was written, so it was never acknowledged): dropped` });
        break;
      }
      const change = parse(segment.path, line);
      atLine(segment.path, line.number, () => registry.replay(change));
    }
  }
  return { registry, notices };
}
