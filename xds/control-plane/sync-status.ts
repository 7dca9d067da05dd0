// Per node and type: what the control plane sent and what the node said
// (last version sent, last ACK, last NACK with its error). Shown by the config
// API's GetSyncStatus and `vsockmesh ctl status`, paged by node id.

import { RESOURCE_TYPE_URLS, type ResourceTypeUrl } from '../envoy/proto.js';
import type { SyncStatus } from './types.js';

export class SyncStatuses {
  private readonly byNode = new Map<string, Map<ResourceTypeUrl, SyncStatus>>();

  /** The (mutable) status of `nodeId` for `typeUrl`; listed from its first use on. */
  of(nodeId: string, typeUrl: ResourceTypeUrl): SyncStatus {
    let byType = this.byNode.get(nodeId);
    if (byType === undefined) {
      byType = new Map();
      this.byNode.set(nodeId, byType);
    }
    let s = byType.get(typeUrl);
    if (s === undefined) {
      s = { nodeId, typeUrl, lastSentVersion: null, lastSentAt: null, lastAckVersion: null, lastAckAt: null, lastNack: null };
      byType.set(typeUrl, s);
    }
    return s;
  }

  forget(nodeId: string): void {
    this.byNode.delete(nodeId);
  }

  /**
   * One page: the nodes after `after` in node id order (or just `nodeId`), at
   * most `limit` of them, each with a copy of its statuses by type in push
   * order; `next` is the last node of the page when more may follow.
   */
  page(page: { limit: number; after?: string; nodeId?: string }): { statuses: SyncStatus[]; nodeIds: string[]; next: string | undefined } {
    let ids: string[];
    if (page.nodeId !== undefined) ids = this.byNode.has(page.nodeId) ? [page.nodeId] : [];
    else {
      const after = page.after;
      ids = [...this.byNode.keys()].filter((id) => after === undefined || id > after).sort();
    }
    const nodeIds = ids.slice(0, page.limit);
    const statuses: SyncStatus[] = [];
    for (const nodeId of nodeIds) {
      const byType = this.byNode.get(nodeId)!;
      for (const typeUrl of RESOURCE_TYPE_URLS) {
        const s = byType.get(typeUrl);
        if (s !== undefined) statuses.push({ ...s, lastNack: s.lastNack && { ...s.lastNack } });
      }
    }
    return { statuses, nodeIds, next: ids.length > nodeIds.length ? nodeIds[nodeIds.length - 1] : undefined };
  }
}
