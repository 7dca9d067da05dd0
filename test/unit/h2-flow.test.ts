// HTTP/2 flow control, pure (RFC 9113 5.2, 6.9): data goes within the
// peer's connection and stream windows and frame size, the rest waits per
// stream in order (END_STREAM and `after` steps behind the data before them),
// WINDOW_UPDATE and SETTINGS_INITIAL_WINDOW_SIZE release it, overflows and
// zero increments are refused; on receive, DATA past our windows is refused
// and credit comes back in batches of half a window.

import test from 'ava';
import { DEFAULT_WINDOW, H2StreamError, MAX_WINDOW, ReceiveWindows, SendWindows, type SendPiece } from '../../proxy/http/h2/flow.js';
import { FLOW_CONTROL_ERROR, H2ConnectionError, PROTOCOL_ERROR } from '../../proxy/http/h2/frames.js';

const sizes = (pieces: SendPiece[]): Array<[number, number, boolean]> => pieces.filter((p) => !p.then).map((p) => [p.streamId, p.data.length, p.end]);
const total = (pieces: SendPiece[]): number => pieces.reduce((n, p) => n + p.data.length, 0);

test('data within both windows goes at once, split at the peer frame size', (t) => {
  const w = new SendWindows();
  w.open(1);
  t.deepEqual(sizes(w.send(1, Buffer.alloc(40000), true)), [
    [1, 16384, false],
    [1, 16384, false],
    [1, 7232, true],
  ]);
  t.is(w.connectionWindow, DEFAULT_WINDOW - 40000);
  t.is(w.window(1), DEFAULT_WINDOW - 40000);
  w.open(3);
  w.setMaxFrame(65535);
  t.deepEqual(sizes(w.send(3, Buffer.alloc(20000), false)), [[3, 20000, false]]);
});

test('past the stream window the rest waits, END_STREAM with it, until a stream WINDOW_UPDATE', (t) => {
  const w = new SendWindows();
  w.open(1);
  const first = w.send(1, Buffer.alloc(70000), true);
  t.is(total(first), DEFAULT_WINDOW);
  t.false(first.some((p) => p.end));
  t.is(w.queued(1), 70000 - DEFAULT_WINDOW);
  t.deepEqual(sizes(w.send(1, Buffer.alloc(0), false)), []);
  // The connection window is spent too: a stream update alone releases nothing.
  t.deepEqual(w.update(1, 10000), []);
  t.deepEqual(sizes(w.update(0, 100000)), [[1, 70000 - DEFAULT_WINDOW, true]]);
  t.is(w.queued(1), 0);
  t.is(w.window(1), 10000 - (70000 - DEFAULT_WINDOW));
});

test('a connection WINDOW_UPDATE serves the waiting streams in the order they began waiting', (t) => {
  const w = new SendWindows();
  w.setInitial(1 << 20);
  for (const id of [1, 3, 5]) w.open(id);
  t.is(total(w.send(1, Buffer.alloc(DEFAULT_WINDOW), false)), DEFAULT_WINDOW);
  t.deepEqual(w.send(5, Buffer.alloc(100), true), []);
  t.deepEqual(w.send(3, Buffer.alloc(100), true), []);
  t.deepEqual(sizes(w.update(0, 150)), [
    [5, 100, true],
    [3, 50, false],
  ]);
  t.deepEqual(sizes(w.update(0, 50)), [[3, 50, true]]);
});

test('an empty DATA with END_STREAM needs no window but waits behind queued data', (t) => {
  const w = new SendWindows();
  w.open(1);
  w.open(3);
  w.send(1, Buffer.alloc(DEFAULT_WINDOW), false);
  t.deepEqual(sizes(w.send(3, Buffer.alloc(0), true)), [[3, 0, true]]);
  w.open(5);
  w.update(5, 10);
  t.deepEqual(w.send(5, Buffer.alloc(1), false), []);
  t.deepEqual(w.send(5, Buffer.alloc(0), true), []);
  t.deepEqual(sizes(w.update(0, 1)), [
    [5, 1, false],
    [5, 0, true],
  ]);
});

test('`after` steps run in the stream order: at once when nothing waits or the stream is unknown, else behind the data', (t) => {
  const w = new SendWindows();
  const ran: string[] = [];
  const run = (pieces: SendPiece[]): void => {
    for (const p of pieces) if (p.then) p.then();
      else ran.push(`data ${p.data.length}`);
  };
  w.open(1);
  run(w.after(1, () => ran.push('headers')));
  run(w.after(9, () => ran.push('unknown')));
  run(w.send(1, Buffer.alloc(DEFAULT_WINDOW + 5), false));
  run(w.after(1, () => ran.push('trailers')));
  t.deepEqual(ran, ['headers', 'unknown', `data 16384`, 'data 16384', 'data 16384', 'data 16383']);
  run(w.update(0, 5));
  run(w.update(1, 5));
  t.deepEqual(ran.slice(6), ['data 5', 'trailers']);
});

test('SETTINGS_INITIAL_WINDOW_SIZE moves every open stream window by the difference, even below zero', (t) => {
  const w = new SendWindows();
  w.open(1);
  w.send(1, Buffer.alloc(60000), false);
  w.update(0, 1 << 20);
  t.deepEqual(w.setInitial(1000), []);
  t.is(w.window(1), 1000 - 60000);
  t.deepEqual(w.send(1, Buffer.alloc(10), false), []);
  t.deepEqual(sizes(w.setInitial(60000 + 1000 - 1000 + 10)), [[1, 10, false]]);
  w.open(3);
  t.is(w.window(3), 60010);
  t.throws(() => w.setInitial(MAX_WINDOW + 1), { instanceOf: H2ConnectionError });
});

test('window overflows and zero increments are refused: connection errors on stream 0, stream errors otherwise', (t) => {
  const w = new SendWindows();
  w.open(1);
  const conn = t.throws(() => w.update(0, MAX_WINDOW), { instanceOf: H2ConnectionError });
  t.is(conn.code, FLOW_CONTROL_ERROR);
  const stream = t.throws(() => w.update(1, MAX_WINDOW), { instanceOf: H2StreamError });
  t.is(stream.code, FLOW_CONTROL_ERROR);
  t.is(stream.streamId, 1);
  t.is(t.throws(() => w.update(0, 0), { instanceOf: H2ConnectionError }).code, PROTOCOL_ERROR);
  t.is(t.throws(() => w.update(1, 0), { instanceOf: H2StreamError }).code, PROTOCOL_ERROR);
  t.deepEqual(w.update(7, 10), [], 'an update for a stream gone is ignored');
  w.setInitial(MAX_WINDOW);
  t.throws(() => w.setInitial(MAX_WINDOW + 1), { instanceOf: H2ConnectionError });
});

test('closing a stream drops its queue and says how much, for the credit to go back', (t) => {
  const w = new SendWindows();
  w.open(1);
  w.open(3);
  w.send(1, Buffer.alloc(DEFAULT_WINDOW + 300), true);
  w.send(3, Buffer.alloc(200), true);
  t.is(w.close(1), 300);
  t.is(w.close(3), 200);
  t.is(w.close(5), 0);
  t.false(w.has(1));
  t.deepEqual(w.update(0, 1000), []);
  t.deepEqual(w.send(1, Buffer.alloc(1), true), []);
});

test('random sends and updates: every octet goes once, in order, never past a window', (t) => {
  let seed = 7;
  const rand = (n: number): number => {
    seed = (seed * 1103515245 + 12345) & 0x7fffffff;
    return seed % n;
  };
  for (let round = 0; round < 50; round++) {
    const w = new SendWindows();
    const ids = [1, 3, 5];
    const sentIn = new Map<number, number>();
    const sentOut = new Map<number, number>();
    let connWindow = DEFAULT_WINDOW;
    const streamWindow = new Map<number, number>();
    for (const id of ids) {
      w.open(id);
      streamWindow.set(id, DEFAULT_WINDOW);
    }
    const take = (pieces: SendPiece[]): void => {
      for (const p of pieces) {
        connWindow -= p.data.length;
        streamWindow.set(p.streamId, streamWindow.get(p.streamId)! - p.data.length);
        t.true(connWindow >= 0 && streamWindow.get(p.streamId)! >= 0);
        t.true(p.data.length <= 16384);
        // Octets carry their stream offset mod 251: order is kept.
        const at = sentOut.get(p.streamId) ?? 0;
        let inOrder = true;
        for (let i = 0; i < p.data.length; i++) if (p.data[i] !== (at + i) % 251) inOrder = false;
        t.true(inOrder);
        sentOut.set(p.streamId, (sentOut.get(p.streamId) ?? 0) + p.data.length);
      }
    };
    for (let step = 0; step < 40; step++) {
      const id = ids[rand(3)]!;
      const what = rand(3);
      if (what === 0) {
        const n = rand(50000);
        const from = sentIn.get(id) ?? 0;
        const data = Buffer.alloc(n);
        for (let i = 0; i < n; i++) data[i] = (from + i) % 251;
        sentIn.set(id, from + n);
        take(w.send(id, data, false));
      } else if (what === 1) {
        const inc = 1 + rand(40000);
        connWindow += inc;
        take(w.update(0, inc));
      } else {
        const inc = 1 + rand(40000);
        streamWindow.set(id, streamWindow.get(id)! + inc);
        take(w.update(id, inc));
      }
    }
    connWindow += 1 << 24;
    take(w.update(0, 1 << 24));
    for (const id of ids) {
      streamWindow.set(id, streamWindow.get(id)! + (1 << 24));
      take(w.update(id, 1 << 24));
      t.is(sentOut.get(id) ?? 0, sentIn.get(id) ?? 0);
      t.is(w.queued(id), 0);
    }
  }
});

test('receive: DATA past the connection window is a connection error, past a stream window a stream error', (t) => {
  const r = new ReceiveWindows(100000, 1000);
  r.open(1);
  r.received(1, 1000);
  const e = t.throws(() => r.received(1, 1), { instanceOf: H2StreamError });
  t.is(e.code, FLOW_CONTROL_ERROR);
  r.open(3);
  r.received(3, 500);
  t.is(t.throws(() => r.received(5, 100000), { instanceOf: H2ConnectionError }).code, FLOW_CONTROL_ERROR);
});

test('receive: credit goes back once half a window is consumed, stream and connection apart, and restores the window', (t) => {
  const r = new ReceiveWindows(3000, 1000);
  r.open(1);
  r.received(1, 1000);
  t.deepEqual(r.consumed(1, 499), [0, 0]);
  t.deepEqual(r.consumed(1, 1), [0, 500]);
  r.received(1, 500);
  t.throws(() => r.received(1, 1), { instanceOf: H2StreamError });
  t.deepEqual(r.consumed(1, 500), [0, 500]);
  r.received(1, 500);
  t.deepEqual(r.consumed(1, 500), [1500, 500]);
  t.deepEqual(r.consumed(1, 0), [0, 0]);
  // A stream gone: only the connection's credit comes back.
  r.close(1);
  r.received(1, 2000);
  t.deepEqual(r.consumed(1, 2000), [2000, 0]);
});
