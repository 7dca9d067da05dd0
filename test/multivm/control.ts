// The control channel to an inner guest: one shell command per vsock
// connection to vmagent's control port (protocol in vmagent.c). Host -> guest
// vsock, the direction a hypervisor always has.

import { connectVsock } from '../../proxy/native/vsock.js';

export interface CommandResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Incremental decoder of the agent's answer: frames of u8 kind (1 stdout, 2 stderr, 3 exit), u32 length, payload. */
export class FrameDecoder {
  private pending = Buffer.alloc(0);
  exitCode: number | undefined;
  constructor(private readonly onOutput: (kind: 'stdout' | 'stderr', data: Buffer) => void) {}

  push(chunk: Buffer): void {
    this.pending = Buffer.concat([this.pending, chunk]);
    while (this.pending.length >= 5) {
      const kind = this.pending[0]!;
      const length = this.pending.readUInt32BE(1);
      if (this.pending.length < 5 + length) return;
      const payload = this.pending.subarray(5, 5 + length);
      this.pending = this.pending.subarray(5 + length);
      if (kind === 1) this.onOutput('stdout', payload);
      else if (kind === 2) this.onOutput('stderr', payload);
      else if (kind === 3 && length === 4) this.exitCode = payload.readUInt32BE(0);
      else throw new Error(`control channel: unknown frame kind ${kind} (length ${length})`);
    }
  }
}

export function encodeScript(script: string): Buffer {
  const body = Buffer.from(script);
  const head = Buffer.alloc(4);
  head.writeUInt32BE(body.length);
  return Buffer.concat([head, body]);
}

/** A command running in an inner guest; its stdin stays open until end(). */
export class InnerCommand {
  private out = '';
  private err = '';
  readonly done: Promise<CommandResult>;
  private readonly socket;

  constructor(cid: number, port: number, script: string, connectTimeoutMs: number) {
    this.socket = connectVsock({ cid, port, timeoutMs: connectTimeoutMs });
    const decoder = new FrameDecoder((kind, data) => {
      if (kind === 'stdout') this.out += data.toString('latin1');
      else this.err += data.toString('latin1');
    });
    this.done = new Promise((resolve, reject) => {
      this.socket.on('data', (chunk: Buffer) => {
        try {
          decoder.push(chunk);
        } catch (err) {
          this.socket.destroy();
          reject(err as Error);
        }
      });
      this.socket.on('error', (err: Error) => reject(new Error(`control channel to CID ${cid}: ${err.message}`)));
      this.socket.on('close', () => {
        if (decoder.exitCode === undefined) reject(new Error(`control channel to CID ${cid} closed before the exit status (stdout: ${this.out.slice(-500)}, stderr: ${this.err.slice(-500)})`));
        else resolve({ code: decoder.exitCode, stdout: this.out, stderr: this.err });
      });
      this.socket.on('end', () => this.socket.end());
    });
    this.done.catch(() => {});
    this.socket.write(encodeScript(script));
  }

  write(data: Buffer | string): void {
    this.socket.write(data);
  }

  /** Ends the command's stdin. */
  end(data?: Buffer | string): void {
    if (data !== undefined) this.socket.end(data);
    else this.socket.end();
  }

  kill(): void {
    this.socket.destroy();
  }
}
