// A store whose watches can be ended on demand, as etcd ends one (UNAVAILABLE:
// the store is gone), and whose next list() calls fail while it is still out
// of reach: what a follower must come back from by itself.

import type { Store, StoreWatch, StoreWatchHandlers } from '../../xds/store/store.js';
import { StoreUnavailableError } from '../../xds/store/store.js';
import { wrapStore } from './store-wrapper.js';

export function endingWatches(store: Store): { store: Store; endWatches(failingLists: number): void; lists(): number } {
  const open = new Set<{ watch: StoreWatch; handlers: StoreWatchHandlers }>();
  let failing = 0;
  let lists = 0;
  const overrides: Partial<Store> = {};
  const ending = wrapStore(store, overrides);
  overrides.watch = (prefix: string, afterRevision: number, handlers: StoreWatchHandlers) => {
    const entry = { watch: store.watch(prefix, afterRevision, handlers), handlers };
    open.add(entry);
    return {
      cancel() {
        open.delete(entry);
        entry.watch.cancel();
      },
    };
  };
  overrides.list = async (prefix: string, atRevision?: number) => {
    lists++;
    if (failing > 0) {
      failing--;
      throw new StoreUnavailableError('etcd unavailable: connection refused (test)');
    }
    return store.list(prefix, atRevision);
  };
  return {
    store: ending,
    /** Ends every open watch with UNAVAILABLE; the next `failingLists` lists fail too. */
    endWatches(failingLists: number) {
      failing = failingLists;
      for (const entry of [...open]) {
        open.delete(entry);
        entry.watch.cancel();
        entry.handlers.onError(new StoreUnavailableError('etcd watch cancelled: connection lost (test)'));
      }
    },
    lists: () => lists,
  };
}
