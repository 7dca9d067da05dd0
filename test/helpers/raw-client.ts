// A raw TCP client for tests of what a listener sends byte for byte: what it
// has received so far (as bytes and as latin1 text), and a wait for more.

import net from 'node:net';

export class RawClient {
  readonly socket: net.Socket;
  data = Buffer.alloc(0);
  ended = false;
  private waiters: Array<() => void> = [];

  constructor(port: number) {
    this.socket = net.connect(port, '127.0.0.1');
    this.socket.on('data', (c: Buffer) => {
      this.data = Buffer.concat([this.data, c]);
      this.wake();
    });
    this.socket.on('end', () => {
      this.ended = true;
      this.wake();
    });
    this.socket.on('error', () => undefined);
  }

  /** What was received, as latin1 text. */
  get text(): string {
    return this.data.toString('latin1');
  }

  /** Forgets what was received so far (the next wait looks at what comes after). */
  forget(): void {
    this.data = Buffer.alloc(0);
  }

  private wake(): void {
    for (const w of this.waiters.splice(0)) w();
  }

  /** Resolves once what was received satisfies `done` (with its text); throws if the connection ends first. */
  async until(done: (text: string, ended: boolean, data: Buffer) => boolean): Promise<string> {
    while (!done(this.text, this.ended, this.data)) {
      if (this.ended) throw new Error(`connection ended with: ${JSON.stringify(this.text)}`);
      await new Promise<void>((resolve) => this.waiters.push(resolve));
    }
    return this.text;
  }
}
