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
}

export class Admission {
  private openConnections = 0;

  constructor(
    /** overload.max_connections; null: no process-wide limit. */
    private readonly maxConnections: number | null,
    private readonly overload: OverloadGate,
  ) {}

  /** Accepted connections open across the server's listeners (header phase and pending queries included). */
  get open(): number {
    return this.openConnections;
  }

  opened(): void {
    this.openConnections++;
  }

  closed(): void {
    this.openConnections--;
  }

  /** Why a new connection to `listener` (holding `listenerOpen` of at most `listenerMax`) is refused; undefined: take it. */
  refusal(listener: string, listenerOpen: number, listenerMax: number | null): AdmissionRefusal | undefined {
    if (listenerMax !== null && listenerOpen >= listenerMax) {
      return { reason: 'listener_max_connections', message: `refused: listener "${listener}" has ${listenerOpen} connections open (max_connections ${listenerMax})` };
    }
    if (this.maxConnections !== null && this.openConnections >= this.maxConnections) {
      return { reason: 'max_connections', message: `refused: ${this.openConnections} connections open in this process (overload.max_connections ${this.maxConnections})` };
    }
    if (this.overload.shedding()) return { reason: 'overload', message: `refused: overloaded (${this.overload.describe()})` };
    return undefined;
  }
}
