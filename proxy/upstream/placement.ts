// Where this sidecar's own VM runs, for the transport decision: the VM
// manager says it (the resolver's record of us, kept current by Watch), or
// the control plane does (the `local` metadata on our pushed outbound
// listeners). The outbound listeners ask this one provider; static endpoints
// do not need it.

import type { LocalPlacement } from './endpoint-facts.js';

export interface PlacementSource {
  /** Our placement, or null while nobody has told us. The same object until it changes (decisions are kept per placement). */
  current(): LocalPlacement | null;
}

/** The first source that knows: the VM manager's record of us, then the control plane's placement. */
export function ourPlacement(fromVmManager: () => LocalPlacement | null, fromControlPlane: () => LocalPlacement | null): PlacementSource {
  return { current: () => fromVmManager() ?? fromControlPlane() };
}
