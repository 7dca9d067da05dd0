// Which xDS nodes the control plane remembers (their sync status, their
// snapshot): every node with a stream open, and a node whose last stream
// closed for `retentionMs` after that, so `ctl status` still shows why a VM
// that just went away NACKed. Node ids come and go with VMs (and any client
// may make one up): without forgetting, what is kept per node grows forever.
// At most `maxDisconnected` disconnected nodes are kept; beyond that the one
// gone longest is forgotten first.

import { systemClock, type CancelTimer, type Clock } from '../../proxy/runtime/clock.js';

export interface NodeRetentionOptions {
  retentionMs: number;
  maxDisconnected: number;
  /** The node is forgotten: drop what is kept for it. */
  onForget: (nodeId: string) => void;
  clock?: Clock;
}

export class NodeRetention {
  /** Open streams per connected node. */
  private readonly open = new Map<string, number>();
  /** Disconnected nodes and when their last stream closed, oldest first (re-inserted on every close). */
  private readonly closedAt = new Map<string, number>();
  private readonly clock: Clock;
  private cancelTimer: CancelTimer | undefined;
  private stopped = false;
  /** Nodes forgotten so far. */
  forgotten = 0;

  constructor(private readonly options: NodeRetentionOptions) {
    this.clock = options.clock ?? systemClock;
  }

  /** A stream of `nodeId` opened. */
  opened(nodeId: string): void {
    this.open.set(nodeId, (this.open.get(nodeId) ?? 0) + 1);
    this.closedAt.delete(nodeId);
  }

  /** A stream of `nodeId` closed (one that opened()). */
  closed(nodeId: string): void {
    const left = (this.open.get(nodeId) ?? 1) - 1;
    if (left > 0) {
      this.open.set(nodeId, left);
      return;
    }
    this.open.delete(nodeId);
    this.closedAt.set(nodeId, this.clock.now());
    while (this.closedAt.size > this.options.maxDisconnected) this.forget(this.closedAt.keys().next().value!);
    this.arm();
  }

  get connected(): number {
    return this.open.size;
  }

  get disconnected(): number {
    return this.closedAt.size;
  }

  /** Every node remembered: connected ones, then disconnected ones. */
  nodeIds(): string[] {
    return [...this.open.keys(), ...this.closedAt.keys()];
  }

  /** Stops the timer; nothing is forgotten from now on. */
  stop(): void {
    this.stopped = true;
    this.cancelTimer?.();
    this.cancelTimer = undefined;
  }

  /** Forgets every node gone `retentionMs` or longer, then waits for the next one. */
  private sweep(): void {
    this.cancelTimer = undefined;
    const now = this.clock.now();
    for (const [nodeId, at] of this.closedAt) {
      if (now - at < this.options.retentionMs) break; // oldest first: the rest are younger
      this.forget(nodeId);
    }
    this.arm();
  }

  private forget(nodeId: string): void {
    this.closedAt.delete(nodeId);
    this.forgotten++;
    this.options.onForget(nodeId);
  }

  /** One timer, for the node gone longest. */
  private arm(): void {
    if (this.cancelTimer !== undefined || this.stopped) return;
    const oldest = this.closedAt.values().next();
    if (oldest.done === true) return;
    this.cancelTimer = this.clock.setTimer(() => this.sweep(), Math.max(0, oldest.value + this.options.retentionMs - this.clock.now()));
  }
}
