// The host relay asks the VM manager whether a guest (by its kernel-given CID)
// may reach a destination CID and port. Answers are reused briefly; one query
// per (source, destination, port) at a time; no answer means no connection.

import type { RelayDecision } from '../config/relay.js';
import type { VmManagerApi } from './types.js';

export interface RelayAuthorizerOptions {
  api: VmManagerApi;
  hypervisorId: string;
  queryTimeoutMs: number;
  cacheTtlMs: number;
  now?: () => number;
}

export class RelayAuthorizer {
  private readonly cache = new Map<string, { decision: RelayDecision; expiresAt: number }>();
  private readonly inflight = new Map<string, Promise<RelayDecision>>();
  private readonly now: () => number;
  queries = 0;

  constructor(private readonly options: RelayAuthorizerOptions) {
    this.now = options.now ?? Date.now;
  }

  /** A fresh cached decision, synchronously, or undefined. */
  cached(sourceCid: number, destination: { cid: number; port: number }): RelayDecision | undefined {
    const entry = this.cache.get(key(sourceCid, destination));
    return entry && entry.expiresAt > this.now() ? entry.decision : undefined;
  }

  authorize(sourceCid: number, destination: { cid: number; port: number }): Promise<RelayDecision> {
    const fresh = this.cached(sourceCid, destination);
    if (fresh) return Promise.resolve(fresh);
    const k = key(sourceCid, destination);
    const pending = this.inflight.get(k);
    if (pending) return pending;
    const query = this.query(sourceCid, destination)
      .then((decision) => {
        // An unreachable VM manager is not an answer: ask again next time.
        if (!(decision.allowed === false && decision.reason === 'vm_manager_unavailable')) this.cache.set(k, { decision, expiresAt: this.now() + this.options.cacheTtlMs });
        return decision;
      })
      .finally(() => this.inflight.delete(k));
    this.inflight.set(k, query);
    return query;
  }

  private async query(sourceCid: number, destination: { cid: number; port: number }): Promise<RelayDecision> {
    this.queries++;
    try {
      const a = await this.options.api.authorizeRelay({ hypervisorId: this.options.hypervisorId, sourceCid, destination }, { timeoutMs: this.options.queryTimeoutMs });
      if (a.allowed) return { allowed: true };
      return { allowed: false, reason: 'destination_not_allowed', detail: `VM manager: ${a.reason}` };
    } catch (err) {
      return { allowed: false, reason: 'vm_manager_unavailable', detail: `cannot ask the VM manager (${(err as Error).message}); refusing` };
    }
  }
}

function key(sourceCid: number, destination: { cid: number; port: number }): string {
  return `${sourceCid}>${destination.cid}:${destination.port}`;
}
