// The host relay asks the VM manager whether a guest (by its kernel-given CID)
// may reach a destination CID and port. Answers are reused for a while, one
// query per (source, destination, port) at a time, and dropped once expired
// (runtime/ttl-cache.ts), so guests probing many ports do not grow the relay;
// no answer means no connection.

import type { RelayDecision } from '../config/relay.js';
import { TtlCache } from '../runtime/ttl-cache.js';
import type { VmManagerApi } from './types.js';

export interface RelayAuthorizerOptions {
  api: VmManagerApi;
  hypervisorId: string;
  queryTimeoutMs: number;
  cacheTtlMs: number;
  now?: () => number;
}

export class RelayAuthorizer {
  private readonly cache: TtlCache<RelayDecision>;
  queries = 0;

  constructor(private readonly options: RelayAuthorizerOptions) {
    this.cache = new TtlCache<RelayDecision>(options.now ? { now: options.now } : {});
  }

  /** Decisions held, fresh or expired but not yet dropped. */
  get size(): number {
    return this.cache.size;
  }

  /** A fresh cached decision, synchronously, or undefined. */
  cached(sourceCid: number, destination: { cid: number; port: number }): RelayDecision | undefined {
    return this.cache.get(key(sourceCid, destination));
  }

  authorize(sourceCid: number, destination: { cid: number; port: number }): Promise<RelayDecision> {
    const fresh = this.cached(sourceCid, destination);
    if (fresh) return Promise.resolve(fresh);
    const k = key(sourceCid, destination);
    return this.cache.once(k, async () => {
      const decision = await this.query(sourceCid, destination);
      // An unreachable VM manager is not an answer: ask again next time.
      if (!(decision.allowed === false && decision.reason === 'vm_manager_unavailable')) this.cache.set(k, decision, this.options.cacheTtlMs);
      return decision;
    });
  }

  private async query(sourceCid: number, destination: { cid: number; port: number }): Promise<RelayDecision> {
    this.queries++;
    try {
      const a = await this.options.api.authorizeRelay({ hypervisorId: this.options.hypervisorId, sourceCid, destination }, { timeoutMs: this.options.queryTimeoutMs });
      if (a.allowed) return { allowed: true, sourceVmId: a.source.vmId };
      return { allowed: false, reason: 'destination_not_allowed', detail: `VM manager: ${a.reason}` };
    } catch (err) {
      return { allowed: false, reason: 'vm_manager_unavailable', detail: `cannot ask the VM manager (${(err as Error).message}); refusing` };
    }
  }
}

function key(sourceCid: number, destination: { cid: number; port: number }): string {
  return `${sourceCid}>${destination.cid}:${destination.port}`;
}
