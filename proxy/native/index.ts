// The native core (proxy/native/*.c, built by node-gyp from binding.gyp):
// non-blocking TCP and AF_VSOCK sockets on Node's event loop, and an
// fd-to-fd relay that moves bytes without JavaScript per chunk.

import { loadBuiltAddon } from '../runtime/addon.js';

export type SocketFamily = 'inet' | 'inet6' | 'vsock';

/** Host: an IP address for inet/inet6, a context ID for vsock. */
export type SocketHost = string | number;

export type RelayOutcomeName = 'closed' | 'downstream_error' | 'upstream_error' | 'idle_timeout' | 'aborted';

export interface NativeCore {
  /** Listens; calls onConnection for each accepted socket. Returns [listenerFd, boundPort]. */
  listen(family: SocketFamily, host: SocketHost, port: number, backlog: number, onConnection: (fd: number, peerHost: SocketHost, peerPort: number) => void): [number, number];
  /** Starts a non-blocking connect; the callback runs once unless close(fd) comes first. Throws for errors known at once. */
  connect(family: SocketFamily, host: SocketHost, port: number, timeoutMs: number, callback: (error: string | null, fd: number) => void): number;
  /** Delivers reads of at most maxBytes until readStop; (null, null) is EOF. The callback may return the next read's maximum. */
  readStart(fd: number, maxBytes: number, callback: (error: string | null, chunk: Buffer | null) => number | void): void;
  readStop(fd: number): void;
  close(fd: number): void;
  /** Closes with RST (SO_LINGER 0) on TCP. */
  reset(fd: number): void;
  /** Relays between two idle sockets of the core; the buffers are written first. Returns the relay id. */
  relay(
    downstreamFd: number,
    upstreamFd: number,
    toUpstream: Buffer | null,
    toDownstream: Buffer | null,
    idleTimeoutMs: number,
    onDone: (outcome: number, bytesToUpstream: number, bytesToDownstream: number, error: string | null) => void,
  ): number;
  relayBytes(relayId: number): [number, number] | undefined;
  relayAbort(relayId: number): void;
  /** Cuts both sides of a relay now with RST; onDone reports "aborted" before this returns. */
  relayReset(relayId: number): void;
  /** Sockets the core holds open (leak checks). */
  openCount(): number;
  /** Accepts that failed for lack of a resource since the process started, by errno name (EMFILE, ENFILE, ENOBUFS, ENOMEM). */
  acceptFailures(): Record<string, number>;
  /** Bytes relays have read but not yet written (bounded: one read per blocked direction). */
  pendingBytes(): number;
  /** Whether the socket keeps the event loop alive. */
  ref(fd: number, on: boolean): void;
  /** Hands an idle socket to a Duplex: reads go to onRead while duplexRead(fd, true); (null, null) is EOF. */
  duplexOpen(fd: number, onRead: (error: string | null, chunk: Buffer | null) => void, onWritten: (error: string | null) => void): void;
  duplexRead(fd: number, on: boolean): void;
  /** true: all written now; false: onWritten follows. One write at a time. */
  duplexWrite(fd: number, chunk: Buffer): boolean;
  duplexShutdown(fd: number): void;
  /** This VM's context ID, read from /dev/vsock each call. */
  localCid(): number;
  /** Original destination of an iptables-REDIRECTed TCP connection. */
  originalDst(fd: number, family: 'inet' | 'inet6'): [string, number];
  /** A TLS 1.3 identity from PEM: private key, certificate chain (leaf first), trust bundle. Throws ERR_VSOCKMESH_TLS naming the part that is wrong. */
  tlsContext(keyPem: string, chainPem: string, bundlePem: string): number;
  /** No new handshake uses the context; connections made with it keep it until they close. Its kept sessions go. */
  tlsContextFree(id: number): void;
  /** [contexts, sessions kept by clients, tickets clients were sent ever, sessions cached by servers] (leak and cost checks). */
  tlsCounts(): [number, number, number, number];
  /** How often the core returned freed memory to the system (malloc_trim once quiet after closes and handshakes). */
  trimCount(): number;
  /** V8's memory-reducing GCs, then malloc_trim: what start-up or a config change left behind goes back to the system (blocks for the GCs: for quiet moments). */
  settleMemory(): void;
  /** How often settleMemory ran. */
  settleCount(): number;
  /**
   * A TLS 1.3 handshake on an idle socket (client certificates required by
   * servers). Success: (null, the peer certificate's one URI SAN, resumed,
   * version, serial); the socket is idle with TLS attached and nothing read
   * past the handshake. Failure: (reason, detail); the caller closes the
   * socket. A server whose peer does not start TLS gets ("plain_text", ...),
   * nothing read, the socket plain. sessionKey (client): the peer a session is
   * resumed from and kept for. plainPreamble (client): sent in the clear
   * before the handshake (a PROXY v2 header for HAProxy).
   */
  tlsStart(
    fd: number,
    contextId: number,
    server: boolean,
    sessionKey: string | null,
    plainPreamble: Buffer | null,
    timeoutMs: number,
    callback: (reason: string | null, identityOrDetail: string, resumed: boolean, version: string, serial: string) => void,
  ): void;
  /**
   * The core's PROXY v2 parser (proxy-header.c), for tests beside decodeProxyHeader:
   * ['incomplete', needed], ['invalid', code], or ['header', length, proxy (0|1),
   * family (0 unspec, 1 inet, 2 inet6, 3 unix), transport (0 unspec, 1 stream, 2 dgram),
   * then type, value offset, value length for each TLV in order].
   */
  proxyHeaderDecode(header: Buffer, maxLength: number, streamOnly: boolean): (string | number)[];
  /** The warm path's decision cache (warm.c; used through warm.ts). */
  warmGeneration(): number;
  warmBump(): number;
  warmInstall(
    listener: number,
    destPort: number,
    label: number,
    generation: number,
    family: SocketFamily,
    host: SocketHost,
    port: number,
    proxyProtocol: boolean,
    connectTimeoutMs: number,
    idleTimeoutMs: number,
  ): number;
  warmLookup(listener: number, destPort: number): [number, number] | undefined;
  warmForget(listener: number): void;
  /**
   * The listening socket's accepts go through the warm path; counters (the listener's): [JS's open, the core's open, max (-1 none), on (1/0)];
   * admission (the server's, Admission.counters): [JS's open, the core's open, overload.max_connections (-1 none), the core's open sockets from which to hand over];
   * onConnection gets what the core handed over.
   */
  warmListen(listenerFd: number, listener: number, maxHeaderBytes: number, headerTimeoutMs: number, counters: Int32Array, admission: Int32Array, onConnection: (fd: number, peerHost: SocketHost, peerPort: number, preread: Buffer, elapsedMs: number) => void): void;
  /** Where finished warm connections are reported (once per loop turn, onRecords(count)); see warm-records.ts. */
  warmRecords(fields: Float64Array, bytes: Uint8Array, onRecords: (count: number) => void): void;
  /** The listener's relaying warm connections, six values each: [relayId, destPort, label, header, peerHost, peerPort, ...]. */
  warmList(listener: number): (number | string | Buffer)[];
  /** How many of the listener's warm connections are relaying, and the bytes they moved so far (both ways): the settle's look, without warmList's copies. */
  warmMoved(listener: number): [number, number];
  /** Closes the listener's warm connections not relaying yet (a stop, a drain's deadline): reading their header (no record), or connecting (recorded as `connect_aborted`); the pending records are read before it returns. */
  warmClose(listener: number): void;
  /**
   * The outbound hop's entry, keyed by the listener: endpoints five values each, in the order the next connections take them
   * [family, host, port, PROXY v2 header for an IPv4 source | null, for an IPv6 source | null, ...] (the source's bytes are filled in per connection;
   * both null: no header). The entry id, or 0 when dropped (its generation is not the current one).
   */
  warmInstallOutbound(listener: number, generation: number, connectTimeoutMs: number, idleTimeoutMs: number, endpoints: (SocketFamily | SocketHost | number | Buffer | null)[]): number;
  /** [entryId, next endpoint's index, endpoints] of the listener's live outbound entry, or undefined. */
  warmLookupOutbound(listener: number): [number, number, number] | undefined;
  /**
   * An outbound listener's accepts go through the warm path (counters and admission as warmListen's); onConnection gets what the core hands over:
   * a miss (announced as usual), or a connect to the entry's endpoint that failed (its entry id, the endpoint's index, the error's name; elapsedMs since accept).
   */
  warmListenOutbound(
    listenerFd: number,
    listener: number,
    counters: Int32Array,
    admission: Int32Array,
    onConnection: (fd: number, peerHost: SocketHost, peerPort: number, preread: Buffer, elapsedMs: number, entryId?: number, endpoint?: number, connectError?: string) => void,
  ): void;
  WARM_RECORD_FIELDS: number;
  WARM_RECORDS_MAX: number;
  WARM_RECORD_BYTES: number;
  /** Replaces this process's program (execv: same pid, stdio kept, the core's and Node's fds closed); returns only by throwing. */
  exec(path: string, args: string[]): never;
  RELAY_OUTCOMES: RelayOutcomeName[];
  VMADDR_CID_ANY: number;
  VMADDR_CID_LOCAL: number;
  VMADDR_CID_HOST: number;
}

export const native: NativeCore = loadBuiltAddon<NativeCore>('vsockmesh_native.node', 'vsockmesh native core');

/** The address family of an IP string. */
export function ipFamily(address: string): 'inet' | 'inet6' {
  return address.includes(':') ? 'inet6' : 'inet';
}
