// The frame-level forwarder's pooled upstream h2c connections by endpoint.

import type { UpstreamSocket } from '../upstream-pool.js';
import type { UpstreamAttempt } from '../../upstream/dial.js';
import { UpstreamH2 } from './upstream.js';

/** The pooled upstream connections by endpoint key: more than one when an upstream's SETTINGS_MAX_CONCURRENT_STREAMS is reached. */
export class UpstreamH2Pool {
  private readonly open = new Map<string, UpstreamH2[]>();

  /** `followAge`: calls `aged` at a connection's max_connection_age (UpstreamPools.followAge); it then goes away. */
  constructor(private readonly followAge: (socket: UpstreamSocket, aged: () => void) => void = () => {}) {}

  /** Each endpoint's last SETTINGS_MAX_CONCURRENT_STREAMS, for its next connection (100, RFC 9113's floor for the advice, until known). */
  private readonly maxConcurrent = new Map<string, number>();
  get(key: string, attempts: () => UpstreamAttempt[]): UpstreamH2 {
    const list = this.open.get(key) ?? [];
    const had = list.find((up) => up.hasRoom);
    if (had !== undefined) return had;
    const up: UpstreamH2 = new UpstreamH2(
      attempts(),
      () => {
        const now = this.open.get(key);
        if (now === undefined) return;
        const left = now.filter((u) => u !== up);
        if (left.length === 0) this.open.delete(key);
        else this.open.set(key, left);
      },
      this.maxConcurrent.get(key) ?? 100,
      (n) => this.maxConcurrent.set(key, n),
    );
    this.followAge(up.socket, () => up.goAway());
    list.push(up);
    this.open.set(key, list);
    return up;
  }
  destroy(): void {
    for (const list of this.open.values()) for (const up of list) up.destroy();
    this.open.clear();
  }
}
