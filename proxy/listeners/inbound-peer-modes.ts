// The peer mode of each port of one TCP inbound listener: the control
// plane's (peer_authentication, pushed in its filter chains) where it says
// one, else the sidecar file's peer_tls.mode. Changed in place by a push, so
// a new mode applies to the next connection without reopening the listener;
// open connections keep the mode they were admitted under.

import type { InboundPortConfig } from '../config/types.js';
import type { Logger } from '../runtime/log.js';
import { warmInvalidate } from '../native/warm.js';
import type { PeerTlsMode } from '../peer-tls/peer-policy.js';
import { listenerHandshake, portAdmission, type ListenerHandshake, type PortAdmission } from '../peer-tls/peer-modes.js';

export class InboundPeerModes {
  private modes = new Map<number, PeerTlsMode>();
  private handshakeNow: ListenerHandshake = { kind: 'plain' };
  /** Told after the modes changed (the listener's warm path follows the handshake). */
  changed: (() => void) | undefined;

  constructor(
    private readonly listener: string,
    private readonly ports: readonly InboundPortConfig[],
    private readonly fileMode: PeerTlsMode,
    private readonly hasIdentity: boolean,
    private readonly logger: Logger,
  ) {
    this.set(Object.fromEntries(ports.flatMap((p) => (p.peerMode === undefined ? [] : [[p.port, p.peerMode]]))));
  }

  /** The pushed modes by port (a port left out: the file's mode). */
  set(pushed: Readonly<Record<number, PeerTlsMode>> | undefined): void {
    const next = new Map(this.ports.map((p) => [p.port, pushed?.[p.port] ?? this.fileMode]));
    const changed = [...next].some(([port, mode]) => this.modes.get(port) !== mode);
    if (!changed) return;
    warmInvalidate();
    const first = this.modes.size === 0;
    this.modes = next;
    this.handshakeNow = listenerHandshake(next.values(), this.hasIdentity);
    this.changed?.();
    const modes = Object.fromEntries(next);
    if (!first) this.logger.info({ listener: this.listener, peer_modes: modes }, 'peer modes changed: they apply to new connections');
    const strictWithout = [...next].filter(([, mode]) => mode === 'strict' && !this.hasIdentity).map(([port]) => port);
    if (strictWithout.length > 0) {
      this.logger.warn(
        { listener: this.listener, reason: 'strict_without_identity', ports: strictWithout },
        `port(s) ${strictWithout.join(', ')} are STRICT but this sidecar has no peer identity (peer_tls key_file, chain_file, bundle_file): every peer to them is refused`,
      );
    }
  }

  /** What to do with a new connection before its port is known. */
  handshake(): ListenerHandshake {
    return this.handshakeNow;
  }

  /** Whether a peer (TLS or not) may reach `port`; undefined for a port the listener does not declare (refused later as undeclared_port). */
  admit(port: number, tls: boolean): PortAdmission | undefined {
    const mode = this.modes.get(port);
    return mode === undefined ? undefined : portAdmission(mode, port, tls, this.hasIdentity);
  }

  dump(): Record<number, PeerTlsMode> {
    return Object.fromEntries(this.modes);
  }
}
