// An HTTP/1.1 upgrade through an HTTP listener: a WebSocket handshake that
// the app accepts (101) becomes a tunnel through the same upstream
// connection, bytes both ways and each side's end passed on; one it refuses
// is answered as a plain request; another kind of upgrade goes on as a plain
// request. The app is Node's http server with its 'upgrade' event; the client
// writes the WebSocket frames itself, so what is asserted is what was sent.

import test from 'ava';
import { createHash } from 'node:crypto';
import http from 'node:http';
import net, { type AddressInfo } from 'node:net';
import { RawClient } from '../helpers/raw-client.js';
import { startSidecar } from '../helpers/sidecars.js';

const WS_GUID = '258EAFA5-E914-47DA-95CA-C5AB0DC85B11';
const accept = (key: string): string => createHash('sha1').update(key + WS_GUID).digest('base64');

/** A client's masked text frame (payload under 126 bytes). */
function clientFrame(text: string, opcode = 0x1): Buffer {
  const payload = Buffer.from(text);
  const mask = Buffer.from([1, 2, 3, 4]);
  const masked = Buffer.from(payload.map((b, i) => b ^ mask[i % 4]!));
  return Buffer.concat([Buffer.from([0x80 | opcode, 0x80 | payload.length]), mask, masked]);
}

/** Whole frames (unmasked or masked, payloads under 126 bytes) in `data`: their opcodes and texts, and the bytes left. */
function frames(data: Buffer): { frames: Array<{ opcode: number; text: string }>; rest: Buffer } {
  const out: Array<{ opcode: number; text: string }> = [];
  let at = 0;
  while (data.length - at >= 2) {
    const masked = (data[at + 1]! & 0x80) !== 0;
    const length = data[at + 1]! & 0x7f;
    const start = at + 2 + (masked ? 4 : 0);
    if (data.length < start + length) break;
    const payload = Buffer.from(data.subarray(start, start + length));
    if (masked) for (let i = 0; i < length; i++) payload[i]! ^= data[at + 2 + (i % 4)]!;
    out.push({ opcode: data[at]! & 0x0f, text: payload.toString() });
    at = start + length;
  }
  return { frames: out, rest: data.subarray(at) };
}

/** The app: WebSocket upgrades on /ws accepted and each text frame echoed as "echo: …" (a close frame answered and the connection ended); /refuse answers 426; plain requests are answered with what they saw. */
async function startApp(): Promise<{ port: number; upgrades: http.IncomingHttpHeaders[]; requests: http.IncomingHttpHeaders[]; close(): Promise<void> }> {
  const upgrades: http.IncomingHttpHeaders[] = [];
  const requests: http.IncomingHttpHeaders[] = [];
  const server = http.createServer((req, res) => {
    requests.push(req.headers);
    res.end(`plain ${req.url}`);
  });
  server.on('upgrade', (req: http.IncomingMessage, socket: net.Socket, head: Buffer) => {
    upgrades.push(req.headers);
    if (req.url === '/refuse') {
      socket.end('HTTP/1.1 426 Upgrade Required\r\ncontent-length: 7\r\nconnection: close\r\n\r\nrefused');
      return;
    }
    socket.write(`HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ${accept(String(req.headers['sec-websocket-key']))}\r\n\r\n`);
    let buffered = head;
    const onData = (chunk: Buffer): void => {
      const parsed = frames(Buffer.concat([buffered, chunk]));
      buffered = parsed.rest;
      for (const frame of parsed.frames) {
        if (frame.opcode === 0x8) {
          socket.end(Buffer.from([0x88, 0]));
          return;
        }
        const reply = Buffer.from(`echo: ${frame.text}`);
        socket.write(Buffer.concat([Buffer.from([0x81, reply.length]), reply]));
      }
    };
    socket.on('data', onData);
    socket.on('error', () => undefined);
    onData(Buffer.alloc(0));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    port: (server.address() as AddressInfo).port,
    upgrades,
    requests,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

/** A raw client, and what it received split into a head and WebSocket frames. */
class Client extends RawClient {
  /** The head received (up to its blank line) and the frames after it. */
  split(): { head: string; frames: Array<{ opcode: number; text: string }> } {
    const end = this.data.indexOf('\r\n\r\n');
    return { head: this.data.subarray(0, end).toString('latin1'), frames: frames(this.data.subarray(end + 4)).frames };
  }
}

async function setup(): Promise<{ app: Awaited<ReturnType<typeof startApp>>; port: number; stop(): Promise<void> }> {
  const app = await startApp();
  const sidecar = await startSidecar({
    node: { id: 'vm-a' },
    listeners: [{ kind: 'outbound', name: 'http', port: 0, protocol: 'http', route_config: { virtual_hosts: [{ name: 'web', domains: ['*'], routes: [{ match: { prefix: '/' }, cluster: 'app' }] }] } }],
    clusters: [{ name: 'app', endpoints: [{ address: '127.0.0.1', port: app.port }] }],
  });
  return {
    app,
    port: sidecar.sidecar.listenerAddress('http').port,
    stop: async () => {
      await sidecar.sidecar.stop();
      await app.close();
    },
  };
}

const KEY = 'dGhlIHNhbXBsZSBub25jZQ==';
const handshake = (path: string, upgrade = 'websocket'): string =>
  `GET ${path} HTTP/1.1\r\nHost: web.mesh\r\nConnection: Upgrade\r\nUpgrade: ${upgrade}\r\nSec-WebSocket-Key: ${KEY}\r\nSec-WebSocket-Version: 13\r\n\r\n`;

test("a WebSocket handshake the app accepts becomes a tunnel: the 101 with the app's accept key, frames both ways (one sent with the request's head), and the app's close passed on", async (t) => {
  const s = await setup();
  const client = new Client(s.port);
  try {
    // A frame in the same write as the head: the bytes after it in the read are the tunnel's.
    client.socket.write(Buffer.concat([Buffer.from(handshake('/ws'), 'latin1'), clientFrame('first')]));
    await client.until((_, __, d) => frames(d.subarray(d.indexOf('\r\n\r\n') + 4)).frames.length >= 1 && d.includes('\r\n\r\n'));
    client.socket.write(clientFrame('second'));
    await client.until((_, __, d) => frames(d.subarray(d.indexOf('\r\n\r\n') + 4)).frames.length >= 2);
    const { head, frames: got } = client.split();
    t.regex(head, /^HTTP\/1\.1 101 Switching Protocols\r\n/);
    t.regex(head, /\r\nUpgrade: websocket(\r\n|$)/i);
    t.regex(head, /\r\nConnection: Upgrade(\r\n|$)/i);
    t.true(head.includes(`\r\nsec-websocket-accept: ${accept(KEY)}`) || head.includes(`\r\nSec-WebSocket-Accept: ${accept(KEY)}`), head);
    t.deepEqual(got, [
      { opcode: 1, text: 'echo: first' },
      { opcode: 1, text: 'echo: second' },
    ]);
    const seen = s.app.upgrades[0]!;
    t.is(seen.upgrade, 'websocket');
    t.is(seen['sec-websocket-key'], KEY);
    t.is(seen['x-forwarded-for'], '127.0.0.1');
    // The client's close frame: the app answers it and ends its side; the tunnel ends the client's.
    client.socket.write(clientFrame('', 0x8));
    await client.until((_, ended) => ended);
    t.deepEqual(client.split().frames.at(-1), { opcode: 8, text: '' });
  } finally {
    client.socket.destroy();
    await s.stop();
  }
});

test('a WebSocket handshake the app refuses gets its answer as a plain one and the connection is closed after it (a frame sent early with the head dropped)', async (t) => {
  const s = await setup();
  const client = new Client(s.port);
  try {
    client.socket.write(Buffer.concat([Buffer.from(handshake('/refuse'), 'latin1'), clientFrame('early')]));
    const text = await client.until((_, ended) => ended);
    t.regex(text, /^HTTP\/1\.1 426 Upgrade Required\r\n/);
    t.true(text.endsWith('\r\n\r\nrefused'));
    t.is(s.app.upgrades.length, 1);
  } finally {
    client.socket.destroy();
    await s.stop();
  }
});

test('an upgrade to another protocol (h2c) goes on as a plain request without Upgrade, and its connection is closed after the answer', async (t) => {
  const s = await setup();
  const client = new Client(s.port);
  try {
    client.socket.write(handshake('/plain', 'h2c'));
    const text = await client.until((_, ended) => ended);
    t.regex(text, /^HTTP\/1\.1 200 OK\r\n/);
    t.true(text.endsWith('plain /plain'));
    t.is(s.app.upgrades.length, 0);
    t.is(s.app.requests[0]!.upgrade, undefined);
  } finally {
    client.socket.destroy();
    await s.stop();
  }
});
