// The warm path's finished connections (warm.c), read once per event-loop
// turn from one reused batch: numbers in a Float64Array, each record's PROXY
// header and peer host in a byte area. Each goes to the sink of the listener
// that registered its id, through one reused view (no object or copy per
// record); each sink that had records is then told the batch ended, to
// write its access lines and bump its counters once.

import { getSystemErrorName } from 'node:util';
import { native, type RelayOutcomeName } from '../native/index.js';

/** A finished warm connection, read in place: valid only during WarmRecordSink.record (the view is reused). */
export class WarmRecord {
  entryId = 0;
  label = 0;
  bytesToUpstream = 0;
  bytesToDownstream = 0;
  /** From accept (the slow path's duration starts at the header). */
  durationMs = 0;
  /** `connect_failed`: the upstream could not be reached (errorCode() says why); `connect_aborted`: a stop or a drain's deadline closed it while its upstream was connecting. */
  outcome: RelayOutcomeName | 'connect_failed' | 'connect_aborted' = 'closed';
  peerPort = 0;
  /** The batch's byte area: the header at headerOffset (headerLength bytes), then the peer host. */
  bytes: Buffer = Buffer.alloc(0);
  headerOffset = 0;
  headerLength = 0;
  /** @internal */ hostLength = 0;
  /** @internal */ errno = 0;

  /** The connection's PROXY v2 header, as read: a view into the batch (copy it to keep it). */
  header(): Buffer {
    return this.bytes.subarray(this.headerOffset, this.headerOffset + this.headerLength);
  }

  peerHost(): string {
    const from = this.headerOffset + this.headerLength;
    return this.bytes.toString('latin1', from, from + this.hostLength);
  }

  /** The system error's name (ECONNREFUSED, ...), if the relay or the connect failed with one. */
  errorCode(): string | undefined {
    return this.errno === 0 ? undefined : getSystemErrorName(-this.errno);
  }
}

/** A warm listener's records. */
export interface WarmRecordSink {
  /** One finished connection (`record` is reused: read it now). */
  record(record: WarmRecord): void;
  /** The batch's last record for this sink was given. */
  end(): void;
}

const OUTCOME_CONNECT_FAILED = 100;
const OUTCOME_CONNECT_ABORTED = 101;
let fields: Float64Array | undefined;
let bytes: Buffer | undefined;
const sinks = new Map<number, WarmRecordSink>();
const view = new WarmRecord();
const ended = new Set<WarmRecordSink>();
let nextId = 1;

function read(count: number): void {
  const n = native.WARM_RECORD_FIELDS;
  const f = fields!;
  view.bytes = bytes!;
  for (let i = 0, at = 0; i < count; i++, at += n) {
    const sink = sinks.get(f[at]!);
    if (sink === undefined) continue; // the listener stopped meanwhile
    view.entryId = f[at + 1]!;
    view.label = f[at + 2]!;
    view.bytesToUpstream = f[at + 3]!;
    view.bytesToDownstream = f[at + 4]!;
    view.durationMs = f[at + 5]!;
    const outcome = f[at + 6]!;
    view.outcome = outcome === OUTCOME_CONNECT_FAILED ? 'connect_failed' : outcome === OUTCOME_CONNECT_ABORTED ? 'connect_aborted' : native.RELAY_OUTCOMES[outcome]!;
    view.errno = f[at + 7]!;
    view.peerPort = f[at + 8]!;
    view.headerOffset = f[at + 9]!;
    view.headerLength = f[at + 10]!;
    view.hostLength = f[at + 11]!;
    sink.record(view);
    ended.add(sink);
  }
  for (const sink of ended) sink.end();
  ended.clear();
}

/** A warm listener's id, its records going to `sink` until the returned function is called. */
export function warmRecords(sink: WarmRecordSink): { id: number; stop: () => void } {
  if (fields === undefined) {
    fields = new Float64Array(native.WARM_RECORDS_MAX * native.WARM_RECORD_FIELDS);
    bytes = Buffer.alloc(native.WARM_RECORD_BYTES);
    native.warmRecords(fields, bytes, read);
  }
  const id = nextId++;
  sinks.set(id, sink);
  return { id, stop: () => sinks.delete(id) };
}
