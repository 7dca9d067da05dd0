// The warm path's decision cache in the core (warm.c): JavaScript installs
// the decisions it made, keyed by exactly what they read (inbound: listener,
// destination port, peer label; outbound: the listener), and the core replays them. One generation per
// process: every change a decision may read (config, policy, peer mode,
// registry, certificate) calls warmInvalidate() where it lands, before it takes
// effect; entries of older generations are dead, installs carrying one dropped.

import { native, type SocketFamily } from './index.js';

/** The peer label of a plain-TCP decision: its port's peer mode's outcome (none under DISABLE or without peer TLS). */
export const WARM_LABELS = ['none', 'unauthenticated'] as const;
export type WarmLabel = (typeof WARM_LABELS)[number];

export interface WarmEntry {
  target: { family: SocketFamily; host: string; port: number };
  /** The app gets a PROXY v2 header made from the parsed addresses. */
  proxyProtocol: boolean;
  connectTimeoutMs: number;
  idleTimeoutMs: number;
}

/** Every decision installed so far is dead; installs carrying an older generation are dropped. Call before the change takes effect. */
export function warmInvalidate(): void {
  native.warmBump();
}

/** The generation a decision is made under: read before deciding, passed to warmInstall after. */
export function warmGeneration(): number {
  return native.warmGeneration();
}

/** Installs a decision; the entry id, or 0 when dropped (a change came between the decision and now). */
export function warmInstall(listener: number, destPort: number, label: WarmLabel, generation: number, entry: WarmEntry): number {
  const { target } = entry;
  return native.warmInstall(listener, destPort, WARM_LABELS.indexOf(label), generation, target.family, target.host, target.port, entry.proxyProtocol, entry.connectTimeoutMs, entry.idleTimeoutMs);
}

/** The key's live entry: its id and label; undefined when none was installed in this generation. */
export function warmLookup(listener: number, destPort: number): { id: number; label: WarmLabel } | undefined {
  const found = native.warmLookup(listener, destPort);
  return found && { id: found[0], label: WARM_LABELS[found[1]]! };
}

/** One endpoint of an outbound entry: where it is and the PROXY v2 header the slow path writes, per source family (the source's bytes are the core's to fill in). */
export interface WarmOutboundEndpoint {
  target: { family: SocketFamily; host: string; port: number };
  /** null: no header (straight to the app); else the header for an IPv4 source (only when the destination is IPv4) and for an IPv6 one. */
  header: { inet: Buffer | null; inet6: Buffer } | null;
}

export interface WarmOutboundEntry {
  /** In the order the next connections take them (round robin from the first). */
  endpoints: WarmOutboundEndpoint[];
  connectTimeoutMs: number;
  idleTimeoutMs: number;
}

/** Installs an outbound listener's decision (keyed by the listener); the entry id, or 0 when dropped (a change came between the decision and now). */
export function warmInstallOutbound(listener: number, generation: number, entry: WarmOutboundEntry): number {
  const flat: (SocketFamily | string | number | Buffer | null)[] = [];
  for (const { target, header } of entry.endpoints) flat.push(target.family, target.host, target.port, header?.inet ?? null, header?.inet6 ?? null);
  return native.warmInstallOutbound(listener, generation, entry.connectTimeoutMs, entry.idleTimeoutMs, flat);
}

/** The listener's live outbound entry: its id, the endpoint the next connection takes and how many; undefined when none in this generation. */
export function warmLookupOutbound(listener: number): { id: number; next: number; endpoints: number } | undefined {
  const found = native.warmLookupOutbound(listener);
  return found && { id: found[0], next: found[1], endpoints: found[2] };
}
