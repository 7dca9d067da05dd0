// AF_VSOCK sockets for applications, on the native core: a Duplex that behaves
// like net.Socket (backpressure, half-close, destroy, setTimeout, ref/unref,
// 'connect'/'error'/'close'), and a server that emits them with the peer's
// kernel-given CID.
//
// Node's net cannot adopt an AF_VSOCK descriptor (uv_guess_handle does not
// know the family); the core's own sockets need no Node internals. The same
// Duplex carries the core's TCP sockets, plain or under peer TLS, where Node's
// http/http2 run on them (HTTP listeners: http/listener.ts, upstream-pool.ts).

import { EventEmitter } from 'node:events';
import { Duplex } from 'node:stream';
import { native } from './index.js';

export const VMADDR_CID_ANY = native.VMADDR_CID_ANY;
export const VMADDR_CID_LOCAL = native.VMADDR_CID_LOCAL;
export const VMADDR_CID_HOST = native.VMADDR_CID_HOST;

export interface VsockError extends Error {
  code: string;
  syscall: string;
  cid: number;
  port: number;
}

const HINTS: Record<string, string> = {
  ECONNREFUSED: 'nothing listens on that port',
  ETIMEDOUT: 'no answer within the connect timeout',
  ENODEV: 'no vsock transport in this kernel (load vsock_loopback, or vmw_vsock_virtio_transport in a guest)',
  EAFNOSUPPORT: 'this kernel has no AF_VSOCK support',
  EHOSTUNREACH: 'no route to that CID',
  EADDRINUSE: 'another socket holds that port',
};

/** vsock answers a connect to a port with no listener with a reset: reported as ECONNREFUSED, like TCP. */
export function vsockConnectCode(code: string): string {
  return code === 'ECONNRESET' ? 'ECONNREFUSED' : code;
}

/** An Error with .code naming cid:port. */
export function vsockError(code: string, syscall: string, cid: number, port: number): VsockError {
  const mapped = syscall === 'connect' ? vsockConnectCode(code) : code;
  const hint = HINTS[mapped];
  const err = new Error(`${syscall} ${mapped} vsock ${cid}:${port}${hint ? ` (${hint})` : ''}`) as VsockError;
  err.code = mapped;
  err.syscall = syscall;
  err.cid = cid;
  err.port = port;
  return err;
}

function codeOf(err: unknown): string {
  return (err as NodeJS.ErrnoException).code ?? 'EINVAL';
}

export interface VsockConnectOptions {
  cid: number;
  port: number;
  /** Default 10 s. */
  timeoutMs?: number;
}

export class VsockSocket extends Duplex {
  remoteCid: number;
  remotePort: number;
  connecting: boolean;
  bytesRead = 0;
  bytesWritten = 0;
  private fd = -1;
  private connectingFd = -1;
  private pendingWrite: ((err?: Error | null) => void) | undefined;
  private afterConnect: Array<() => void> = [];
  private wantRead = false;
  private keepsLoopAlive = true;
  private idleMs = 0;
  private idleTimer: NodeJS.Timeout | undefined;
  private cancelConnect: (() => void) | undefined;

  /** Use connectVsock() or a VsockServer; this wraps a connected socket of the core. */
  constructor(options: { fd?: number; remoteCid: number; remotePort: number }) {
    super({ allowHalfOpen: true, emitClose: true, autoDestroy: true });
    this.remoteCid = options.remoteCid;
    this.remotePort = options.remotePort;
    this.connecting = options.fd === undefined;
    if (options.fd !== undefined) this.attach(options.fd);
  }

  /** The descriptor (for the core's relay); -1 before connect and after close. */
  get descriptor(): number {
    return this.fd;
  }

  get pending(): boolean {
    return this.fd < 0;
  }

  startConnect(timeoutMs: number): void {
    const { remoteCid: cid, remotePort: port } = this;
    try {
      this.connectingFd = native.connect('vsock', cid, port, timeoutMs, (error, fd) => {
        this.connectingFd = -1;
        if (error !== null) {
          this.destroy(vsockError(error, 'connect', cid, port));
          return;
        }
        this.connected(fd);
      });
    } catch (err) {
      process.nextTick(() => this.destroy(vsockError(codeOf(err), 'connect', cid, port)));
    }
  }

  /**
   * A pending socket whose connect someone else runs (upstream/dial.ts, over
   * any transport of the core): `cancel` stops it if the socket is destroyed
   * first; connected(fd) or destroy(error) ends it.
   */
  connectingBy(cancel: () => void): void {
    this.cancelConnect = cancel;
  }

  /** `preamble`: written before anything written while connecting (a PROXY v2 header). */
  connected(fd: number, preamble: Buffer | null = null): void {
    this.cancelConnect = undefined;
    this.connecting = false;
    this.attach(fd);
    this.emit('connect');
    this.emit('ready');
    const waiting = this.afterConnect.splice(0);
    const resume = (): void => {
      for (const run of waiting) run();
    };
    if (preamble === null) resume();
    else this._write(preamble, 'binary', (err) => (err ? this.destroy(err) : resume()));
  }

  private attach(fd: number): void {
    this.fd = fd;
    native.duplexOpen(
      fd,
      (error, chunk) => this.onRead(error, chunk),
      (error) => this.onWritten(error),
    );
    if (!this.keepsLoopAlive) native.ref(fd, false);
    if (this.wantRead) native.duplexRead(fd, true);
    this.touch();
  }

  private onRead(error: string | null, chunk: Buffer | null): void {
    if (error !== null) {
      this.destroy(vsockError(error, 'read', this.remoteCid, this.remotePort));
      return;
    }
    if (chunk === null) {
      this.push(null);
      return;
    }
    this.bytesRead += chunk.length;
    this.touch();
    if (!this.push(chunk) && this.fd >= 0) native.duplexRead(this.fd, false);
  }

  private onWritten(error: string | null): void {
    const done = this.pendingWrite;
    this.pendingWrite = undefined;
    this.touch();
    done?.(error === null ? null : vsockError(error, 'write', this.remoteCid, this.remotePort));
  }

  override _read(): void {
    this.wantRead = true;
    if (this.fd >= 0) native.duplexRead(this.fd, true);
  }

  override _write(chunk: Buffer, _encoding: BufferEncoding, callback: (err?: Error | null) => void): void {
    if (this.fd < 0) {
      this.afterConnect.push(() => this._write(chunk, _encoding, callback));
      return;
    }
    let done: boolean;
    try {
      done = native.duplexWrite(this.fd, chunk);
    } catch (err) {
      callback(vsockError(codeOf(err), 'write', this.remoteCid, this.remotePort));
      return;
    }
    this.bytesWritten += chunk.length;
    this.touch();
    if (done) callback();
    else this.pendingWrite = callback;
  }

  /**
   * What queued while a write was in flight or the stream was corked, as one
   * write: Node's http and http2 write a message's head, body and frames in
   * pieces, and each write of the core is a syscall (on loopback, most of a
   * request's cost in the sidecar).
   */
  override _writev(chunks: Array<{ chunk: Buffer }>, callback: (err?: Error | null) => void): void {
    this._write(chunks.length === 1 ? chunks[0]!.chunk : Buffer.concat(chunks.map((c) => c.chunk)), 'binary', callback);
  }

  override _final(callback: (err?: Error | null) => void): void {
    if (this.fd < 0) {
      this.afterConnect.push(() => this._final(callback));
      return;
    }
    try {
      native.duplexShutdown(this.fd);
      callback();
    } catch (err) {
      callback(vsockError(codeOf(err), 'shutdown', this.remoteCid, this.remotePort));
    }
  }

  override _destroy(error: Error | null, callback: (err: Error | null) => void): void {
    clearTimeout(this.idleTimer);
    this.idleTimer = undefined;
    if (this.connectingFd >= 0) native.close(this.connectingFd);
    this.connectingFd = -1;
    this.cancelConnect?.();
    this.cancelConnect = undefined;
    if (this.fd >= 0) native.close(this.fd);
    this.fd = -1;
    this.afterConnect = [];
    callback(error);
  }

  /** Like net.Socket#setTimeout: 'timeout' after ms without reads or writes (0 turns it off). */
  setTimeout(ms: number, callback?: () => void): this {
    this.idleMs = ms;
    if (callback) this.once('timeout', callback);
    clearTimeout(this.idleTimer);
    this.idleTimer = undefined;
    if (ms > 0) this.touch();
    return this;
  }

  private touch(): void {
    if (this.idleMs <= 0 || this.destroyed) return;
    if (this.idleTimer) this.idleTimer.refresh();
    else {
      this.idleTimer = setTimeout(() => {
        this.idleTimer = undefined;
        this.emit('timeout');
      }, this.idleMs);
      if (!this.keepsLoopAlive) this.idleTimer.unref();
    }
  }

  /** vsock has no keepalive probes: accepted for net.Socket compatibility, does nothing. */
  setKeepAlive(): this {
    return this;
  }

  /** vsock has no Nagle algorithm: accepted for net.Socket compatibility, does nothing. */
  setNoDelay(): this {
    return this;
  }

  ref(): this {
    this.keepsLoopAlive = true;
    if (this.fd >= 0) native.ref(this.fd, true);
    this.idleTimer?.ref();
    return this;
  }

  unref(): this {
    this.keepsLoopAlive = false;
    if (this.fd >= 0) native.ref(this.fd, false);
    this.idleTimer?.unref();
    return this;
  }

  /** vsock has no RST: the same as destroy(). */
  resetAndDestroy(): this {
    return this.destroy();
  }
}

/** Connects to cid:port; 'connect' follows, or 'error' with ECONNREFUSED/ETIMEDOUT/ENODEV/... */
export function connectVsock(options: VsockConnectOptions, onConnect?: () => void): VsockSocket {
  const socket = new VsockSocket({ remoteCid: options.cid, remotePort: options.port });
  if (onConnect) socket.once('connect', onConnect);
  socket.startConnect(options.timeoutMs ?? 10_000);
  return socket;
}

export interface VsockServerOptions {
  port: number;
  /** Default VMADDR_CID_ANY. */
  cid?: number;
  backlog?: number;
}

/** Listens at once (errors are thrown with a code); emits 'connection' with VsockSockets. */
export class VsockServer extends EventEmitter {
  private fd: number;
  readonly port: number;
  readonly cid: number;
  private readonly connections = new Set<VsockSocket>();
  private closing = false;

  constructor(options: VsockServerOptions) {
    super();
    this.cid = options.cid ?? VMADDR_CID_ANY;
    try {
      [this.fd, this.port] = native.listen('vsock', this.cid, options.port, options.backlog ?? 511, (fd, peer, peerPort) => {
        const socket = new VsockSocket({ fd, remoteCid: Number(peer), remotePort: peerPort });
        this.connections.add(socket);
        socket.once('close', () => {
          this.connections.delete(socket);
          this.maybeClosed();
        });
        this.emit('connection', socket);
      });
    } catch (err) {
      throw vsockError(codeOf(err), 'listen', this.cid, options.port);
    }
    process.nextTick(() => this.emit('listening'));
  }

  address(): { cid: number; port: number } {
    return { cid: this.cid, port: this.port };
  }

  get listening(): boolean {
    return this.fd >= 0;
  }

  /** Open connections accepted by this server. */
  get connectionCount(): number {
    return this.connections.size;
  }

  /** Stops accepting; 'close' once every accepted connection has closed (like net.Server). */
  close(callback?: (err?: Error) => void): this {
    if (callback) this.once('close', callback);
    if (this.fd >= 0) native.close(this.fd);
    this.fd = -1;
    this.closing = true;
    this.maybeClosed();
    return this;
  }

  private maybeClosed(): void {
    if (this.closing && this.connections.size === 0) {
      this.closing = false;
      process.nextTick(() => this.emit('close'));
    }
  }

  ref(): this {
    if (this.fd >= 0) native.ref(this.fd, true);
    return this;
  }

  unref(): this {
    if (this.fd >= 0) native.ref(this.fd, false);
    return this;
  }
}

export function createVsockServer(options: VsockServerOptions, onConnection?: (socket: VsockSocket) => void): VsockServer {
  const server = new VsockServer(options);
  if (onConnection) server.on('connection', onConnection);
  return server;
}

/** This VM's context ID, read from /dev/vsock each call (a migrated VM may get a new one). */
export function localCid(): number {
  return native.localCid();
}
