// Whether a server takes one more connection: its listener's max_connections,
// the process-wide overload.max_connections, then the overload state. Shared by
// every listener of a server; counts the connections they hold open.

export type AdmissionRefusalReason = 'listener_max_connections' | 'max_connections' | 'overload';

export interface AdmissionRefusal {
  reason: AdmissionRefusalReason;
  /** One line for the log. */
  message: string;
}

/** What admission asks the overload monitor. */
export interface OverloadGate {
  /** true: shed this connection (and count it as shed). */
  shedding(): boolean;
  /** Why, for the refusal line. */
  describe(): string;
  /**
   * Keeps `counters[index]` at the number of the core's open sockets from
   * which shedding() may say yes (0 while overloaded): the warm path hands a
   * connection to JavaScript from there on, and JavaScript decides.
   */
  follow(counters: Int32Array, index: number): void;
}

/**
 * What a server's admission shares with the native core's warm path (warm.c):
 * [JavaScript's open connections, the core's, overload.max_connections (-1:
 * none), the core's open sockets from which to hand over (shedding may start)].
 */
export const ADMISSION_JS_OPEN = 0;
export const ADMISSION_CORE_OPEN = 1;
const ADMISSION_MAX = 2;
const ADMISSION_SHED_AT = 3;

export class Admission {
  /** Shared with the core's warm path: its connections count here too, and it hands over what a limit or shedding may refuse. */
  readonly counters = new Int32Array(4);

  constructor(
    /** overload.max_connections; null: no process-wide limit. */
    private readonly maxConnections: number | null,
    private readonly overload: OverloadGate,
  ) {
    this.counters[ADMISSION_MAX] = maxConnections ?? -1;
    this.counters[ADMISSION_SHED_AT] = 0x7fffffff;
    overload.follow(this.counters, ADMISSION_SHED_AT);
  }

  /** Accepted connections open across the server's listeners, JavaScript's and the warm path's (header phase and pending queries included). */
  get open(): number {
    return this.counters[ADMISSION_JS_OPEN]! + this.counters[ADMISSION_CORE_OPEN]!;
  }

  opened(): void {
    this.counters[ADMISSION_JS_OPEN]++;
  }

  closed(): void {
    this.counters[ADMISSION_JS_OPEN]--;
  }

  /** Why a new connection to `listener` (holding `listenerOpen` of at most `listenerMax`) is refused; undefined: take it. */
  refusal(listener: string, listenerOpen: number, listenerMax: number | null): AdmissionRefusal | undefined {
    if (listenerMax !== null && listenerOpen >= listenerMax) {
      return { reason: 'listener_max_connections', message: `refused: listener "${listener}" has ${listenerOpen} connections open (max_connections ${listenerMax})` };
    }
    const open = this.open;
    if (this.maxConnections !== null && open >= this.maxConnections) {
      return { reason: 'max_connections', message: `refused: ${open} connections open in this process (overload.max_connections ${this.maxConnections})` };
    }
    if (this.overload.shedding()) return { reason: 'overload', message: `refused: overloaded (${this.overload.describe()})` };
    return undefined;
  }
}
