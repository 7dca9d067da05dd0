// The warm path's finished connections (warm.c), read once per event-loop
// turn from one reused batch: numbers in a Float64Array, each record's PROXY
// header and peer host in a byte area. Each goes to the listener that
// registered its id, which writes the access line and counts it.

import { getSystemErrorName } from 'node:util';
import { native, type RelayOutcomeName } from '../native/index.js';

export interface WarmRecord {
  entryId: number;
  label: number;
  bytesToUpstream: number;
  bytesToDownstream: number;
  /** From accept (the slow path's duration starts at the header). */
  durationMs: number;
  /** `connect_failed`: the upstream could not be reached (errorCode says why). */
  outcome: RelayOutcomeName | 'connect_failed';
  errorCode?: string;
  peerHost: string;
  peerPort: number;
  /** The connection's PROXY v2 header, as read. */
  header: Buffer;
}

const OUTCOME_CONNECT_FAILED = 100;
let fields: Float64Array | undefined;
let bytes: Buffer | undefined;
const sinks = new Map<number, (record: WarmRecord) => void>();
let nextId = 1;

function read(count: number): void {
  const n = native.WARM_RECORD_FIELDS;
  for (let i = 0; i < count; i++) {
    const r = fields!.subarray(i * n, (i + 1) * n);
    const [listener, entryId, label, up, down, duration, outcome, errno, peerPort, offset, headerLength, hostLength] = r as unknown as number[];
    const sink = sinks.get(listener!);
    if (sink === undefined) continue; // the listener stopped meanwhile
    const record: WarmRecord = {
      entryId: entryId!,
      label: label!,
      bytesToUpstream: up!,
      bytesToDownstream: down!,
      durationMs: duration!,
      outcome: outcome === OUTCOME_CONNECT_FAILED ? 'connect_failed' : native.RELAY_OUTCOMES[outcome!]!,
      peerHost: bytes!.toString('latin1', offset! + headerLength!, offset! + headerLength! + hostLength!),
      peerPort: peerPort!,
      header: Buffer.from(bytes!.subarray(offset!, offset! + headerLength!)),
    };
    if (errno !== 0) record.errorCode = getSystemErrorName(-errno!);
    sink(record);
  }
}

/** A warm listener's id, its records going to `sink` until the returned function is called. */
export function warmRecords(sink: (record: WarmRecord) => void): { id: number; stop: () => void } {
  if (fields === undefined) {
    fields = new Float64Array(native.WARM_RECORDS_MAX * native.WARM_RECORD_FIELDS);
    bytes = Buffer.alloc(native.WARM_RECORD_BYTES);
    native.warmRecords(fields, bytes, read);
  }
  const id = nextId++;
  sinks.set(id, sink);
  return { id, stop: () => sinks.delete(id) };
}
