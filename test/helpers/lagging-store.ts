// A store whose watches fall behind on demand: a replica whose watch has not
// brought back yet what the store already holds (the events are held while
// `held`, then delivered in order on release()).

import type { Store, StoreEvent, StoreWatchHandlers } from '../../xds/store/store.js';
import { wrapStore } from './store-wrapper.js';

export function laggingWatches(store: Store, options: { held?: boolean } = {}): { store: Store; hold(): void; release(): void } {
  let held = options.held ?? true;
  const queued: Array<() => void> = [];
  // Only watch() differs: a commit through the wrapper is the store's own.
  const lagging = wrapStore(store, {
    watch: (prefix: string, afterRevision: number, handlers: StoreWatchHandlers) =>
      store.watch(prefix, afterRevision, {
        ...handlers,
        onEvents: (events: StoreEvent[]) => {
          if (held) queued.push(() => handlers.onEvents(events));
          else handlers.onEvents(events);
        },
      }),
  });
  return {
    store: lagging,
    hold() {
      held = true;
    },
    release() {
      held = false;
      for (const deliver of queued.splice(0)) deliver();
    },
  };
}
