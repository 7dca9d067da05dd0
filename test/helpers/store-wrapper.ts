// A store with some of its methods replaced (a test's way to make it lag, end
// watches, fail lists). Every other call goes to `store` itself, bound to it: its
// state stays its own (a commit through the wrapper is the store's), unlike a
// wrapper made with Object.create(store), on which such a commit would land.

import type { Store } from '../../xds/store/store.js';

export function wrapStore(store: Store, overrides: Partial<Store>): Store {
  return new Proxy(store, {
    get: (target, name, receiver) => {
      if (Object.hasOwn(overrides, name)) return overrides[name as keyof Store];
      const value = Reflect.get(target, name, receiver) as unknown;
      return typeof value === 'function' ? (value as (...args: unknown[]) => unknown).bind(target) : value;
    },
  });
}
