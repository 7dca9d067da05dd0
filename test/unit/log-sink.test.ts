import test from 'ava';
import fc from 'fast-check';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { openSync, closeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fdWriter } from '../../proxy/runtime/log-output.js';
import { LogSink, type LogSinkLimits, type OverflowNotice } from '../../proxy/runtime/log-sink.js';
import { FakeClock } from '../helpers/fake-clock.js';

/** A writer whose writes finish only when the test says so. */
class HeldWriter {
  readonly chunks: string[] = [];
  private pending: ((err: Error | null) => void) | undefined;

  write(chunk: string, done: (err: Error | null) => void): void {
    if (this.pending) throw new Error('a second write while one is in flight');
    this.chunks.push(chunk);
    this.pending = done;
  }

  get busy(): boolean {
    return this.pending !== undefined;
  }

  /** Finishes the write in flight. */
  complete(err: Error | null = null): void {
    const done = this.pending;
    if (!done) throw new Error('no write in flight');
    this.pending = undefined;
    done(err);
  }

  /** Completes writes until none is in flight. */
  drain(): void {
    while (this.pending) this.complete();
  }

  get output(): string {
    return this.chunks.join('');
  }
}

const notice = (event: OverflowNotice): string =>
  event.kind === 'started' ? 'NOTICE started\n' : `NOTICE ended access=${event.dropped.access} operational=${event.dropped.operational} ms=${event.durationMs}\n`;

const small: LogSinkLimits = { capacityBytes: 1_000, accessBytes: 500, resumeBytes: 200, batchBytes: 100, batchMs: 1_000, maxWriteBytes: 300 };

function setup(limits: Partial<LogSinkLimits> = small): { sink: LogSink; writer: HeldWriter; clock: FakeClock; errors: Error[] } {
  const writer = new HeldWriter();
  const clock = new FakeClock();
  const errors: Error[] = [];
  const sink = new LogSink({ writer, notice, clock, limits, onWriteError: (err) => errors.push(err) });
  return { sink, writer, clock, errors };
}

/** A line of exactly `bytes` bytes, newline included. */
function line(tag: string, bytes: number): string {
  return `${tag}${'.'.repeat(bytes - tag.length - 1)}\n`;
}

const lines = (output: string): string[] => output.split('\n').filter((l) => l !== '');

test('an operational line is written at once, whole', (t) => {
  const { sink, writer } = setup();
  sink.write('operational', 'started\n');
  t.deepEqual(writer.chunks, ['started\n']);
});

test('access lines wait for a batch: written once batchBytes gather, or batchMs after the first', (t) => {
  const { sink, writer, clock } = setup();
  sink.write('access', line('a1', 40));
  sink.write('access', line('a2', 40));
  t.deepEqual(writer.chunks, []);
  clock.advance(999);
  t.deepEqual(writer.chunks, []);
  clock.advance(1);
  t.deepEqual(writer.chunks, [line('a1', 40) + line('a2', 40)]);
  writer.complete();

  sink.write('access', line('b1', 60));
  t.is(writer.chunks.length, 1);
  sink.write('access', line('b2', 60));
  t.is(writer.chunks.length, 2, '100 bytes gathered: written without waiting');
  t.is(writer.chunks[1], line('b1', 60) + line('b2', 60));
  writer.complete();
  t.is(clock.pending, 0, 'no batch timer left when nothing waits');
});

test('an operational line takes the access lines waiting before it along, in order', (t) => {
  const { sink, writer, clock } = setup();
  sink.write('access', 'a1\n');
  sink.write('operational', 'o1\n');
  sink.write('access', 'a2\n');
  t.deepEqual(writer.chunks, ['a1\no1\n']);
  writer.complete();
  t.deepEqual(writer.chunks, ['a1\no1\n'], 'an access line that came later waits for its own batch');
  clock.advance(1_000);
  t.deepEqual(writer.chunks, ['a1\no1\n', 'a2\n']);
});

test('one write at a time: lines that come meanwhile go in the next write, cut at whole lines within maxWriteBytes', (t) => {
  const { sink, writer } = setup();
  sink.write('operational', line('o0', 50));
  for (let i = 1; i <= 8; i++) sink.write('operational', line(`o${i}`, 100));
  t.is(writer.chunks.length, 1);
  writer.complete();
  t.is(writer.chunks[1], [1, 2, 3].map((i) => line(`o${i}`, 100)).join(''));
  writer.drain();
  t.deepEqual(
    writer.chunks.map((c) => c.length),
    [50, 300, 300, 200],
  );
  t.deepEqual(
    lines(writer.output).map((l) => l.slice(0, 2)),
    ['o0', 'o1', 'o2', 'o3', 'o4', 'o5', 'o6', 'o7', 'o8'],
  );
});

test('a line longer than maxWriteBytes is written alone, whole', (t) => {
  const { sink, writer } = setup();
  sink.write('operational', line('long', 400));
  t.deepEqual(writer.chunks, [line('long', 400)]);
});

test('while the writer is stalled, access lines are dropped once accessBytes is buffered, operational lines only when the buffer is full', (t) => {
  const { sink, writer } = setup();
  sink.write('operational', line('o', 100)); // in flight: the writer never finishes it
  for (let i = 0; i < 10; i++) sink.write('access', line('a', 100));
  t.deepEqual(sink.dropped, { access: 6, operational: 0 }, 'access lines fill only up to 500 bytes');
  for (let i = 0; i < 10; i++) sink.write('operational', line('o', 100));
  t.deepEqual(sink.dropped, { access: 6, operational: 6 }, 'operational lines fill the rest, up to 1,000 bytes (the overflow warning takes 15)');
  t.true(sink.bufferedBytes <= small.capacityBytes + notice({ kind: 'started', capacityBytes: 0, accessBytes: 0 }).length);
  sink.write('access', 'a\n');
  t.deepEqual(sink.dropped, { access: 7, operational: 6 });
  t.is(writer.chunks.length, 1);
});

test('several lines in one write (writeLines) are taken, counted and dropped as that many writes of each would be', (t) => {
  const { sink, writer } = setup();
  const stream = sink.stream('access');
  sink.write('operational', line('o', 100)); // in flight: the writer never finishes it
  stream.writeLines(line('a', 100) + line('b', 100), 2);
  t.deepEqual(sink.dropped, { access: 0, operational: 0 });
  stream.writeLines(line('c', 100) + line('d', 100) + line('e', 100), 3);
  t.deepEqual(sink.dropped, { access: 1, operational: 0 }, 'the batch did not fit whole: c and d fitted (500 of 500 bytes), e did not');
  let flushed = false;
  sink.flush(() => (flushed = true));
  writer.drain();
  t.is(writer.output.replace(/NOTICE[^\n]*\n/g, ''), line('o', 100) + line('a', 100) + line('b', 100) + line('c', 100) + line('d', 100));
  t.true(flushed, 'every line accepted counted as written (the flush waits for lines, not writes)');
});

test('an overflow episode gives one warning when it starts and one summary with the counts when the buffer is back under resumeBytes', (t) => {
  const { sink, writer, clock } = setup();
  sink.write('operational', line('o', 100));
  for (let i = 0; i < 10; i++) sink.write('operational', line('o', 100));
  sink.write('access', line('a', 100));
  clock.advance(250);
  sink.write('access', line('a', 100));
  t.deepEqual(sink.dropped, { access: 2, operational: 1 });
  writer.drain();
  const out = lines(writer.output);
  t.deepEqual(
    out.filter((l) => l.startsWith('NOTICE')),
    ['NOTICE started', 'NOTICE ended access=2 operational=1 ms=250'],
  );
  t.is(out.indexOf('NOTICE started'), 10, 'the warning follows the lines accepted before the first drop');
  t.is(out.length, 12);

  sink.write('operational', line('o', 100));
  for (let i = 0; i < 10; i++) sink.write('operational', line('o', 100));
  writer.drain();
  t.is(lines(writer.output).filter((l) => l === 'NOTICE started').length, 2, 'a later episode warns again');
  t.deepEqual(sink.dropped, { access: 2, operational: 2 }, 'the counters only grow');
});

test('the episode does not end while the buffer stays above resumeBytes', (t) => {
  const { sink, writer } = setup();
  sink.write('operational', line('o', 100));
  for (let i = 0; i < 10; i++) sink.write('operational', line('o', 100));
  writer.complete(); // 100 bytes out, 900 still buffered
  t.false(lines(writer.output).some((l) => l.startsWith('NOTICE ended')));
  writer.complete(); // 300 more out
  writer.complete();
  t.false(lines(writer.output).some((l) => l.startsWith('NOTICE ended')));
  writer.drain();
  t.is(lines(writer.output).filter((l) => l.startsWith('NOTICE ended')).length, 1);
});

test('flush calls back once every line accepted before it is written, and writes the access lines waiting for a batch', async (t) => {
  const { sink, writer } = setup();
  sink.write('access', 'a1\n');
  let flushed = false;
  sink.stream('access').flush(() => (flushed = true));
  t.deepEqual(writer.chunks, ['a1\n'], 'the flush did not wait for the batch');
  sink.write('operational', 'o1\n');
  await Promise.resolve();
  t.false(flushed);
  writer.complete();
  t.true(flushed, 'called back when a1 was out, not waiting for o1');
  writer.complete();

  const again = await new Promise<boolean>((resolve) => sink.flush(() => resolve(true)));
  t.true(again, 'nothing waiting: called back anyway');
});

test('a failed write drops its lines, counted per log, without an overflow warning; the next lines are still tried', (t) => {
  const { sink, writer, errors } = setup();
  sink.write('access', 'a1\n');
  sink.write('operational', 'o1\n');
  const epipe = Object.assign(new Error('write EPIPE'), { code: 'EPIPE' });
  writer.complete(epipe);
  t.deepEqual(sink.dropped, { access: 1, operational: 1 });
  t.deepEqual(errors, [epipe]);
  sink.write('operational', 'o2\n');
  t.is(writer.chunks.at(-1), 'o2\n');
  writer.complete();
  t.false(writer.output.includes('NOTICE'));
});

test('whatever the traffic and the writer do, the buffer stays bounded, lines come out whole and in order, and every line is written or counted', (t) => {
  type Op = { op: 'access' | 'operational'; bytes: number } | { op: 'complete' | 'fail' | 'flush' } | { op: 'tick'; ms: number };
  const op = fc.oneof(
    fc.record({ op: fc.constantFrom('access' as const, 'operational' as const), bytes: fc.integer({ min: 8, max: 350 }) }),
    fc.record({ op: fc.constantFrom('complete' as const, 'fail' as const, 'flush' as const) }),
    fc.record({ op: fc.constant('tick' as const), ms: fc.integer({ min: 1, max: 1_500 }) }),
  );
  // Only an episode's warning can be buffered beyond the capacity (it is enqueued when a line did not fit).
  const bound = small.capacityBytes + notice({ kind: 'started', capacityBytes: 0, accessBytes: 0 }).length;
  const run = (ops: Op[]): boolean => {
    const { sink, writer, clock } = setup();
    const offered = { access: 0, operational: 0 };
    const accepted: string[] = [];
    const failed = new Set<string>();
    let seq = 0;
    for (const o of ops) {
      if (o.op === 'access' || o.op === 'operational') {
        offered[o.op]++;
        const l = line(`${o.op[0]}${seq++}:`, o.bytes);
        const before = sink.dropped[o.op];
        sink.write(o.op, l);
        if (sink.dropped[o.op] === before) accepted.push(l.slice(0, -1));
      } else if (o.op === 'complete' || o.op === 'fail') {
        if (!writer.busy) continue;
        if (o.op === 'fail') for (const l of lines(writer.chunks.pop()!)) failed.add(l);
        writer.complete(o.op === 'fail' ? new Error('EIO') : null);
      } else if (o.op === 'tick') clock.advance(o.ms);
      else sink.flush();
      if (sink.bufferedBytes > bound) return false;
    }
    sink.flush();
    writer.drain();
    const written = lines(writer.output).filter((l) => !l.startsWith('NOTICE'));
    const count = (tag: string): number => written.filter((l) => l.startsWith(tag)).length;
    return (
      written.join('|') === accepted.filter((l) => !failed.has(l)).join('|') &&
      count('a') + sink.dropped.access === offered.access &&
      count('o') + sink.dropped.operational === offered.operational
    );
  };
  t.notThrows(() => fc.assert(fc.property(fc.array(op, { maxLength: 200 }), run)));
});

test('the file-descriptor writer writes every chunk whole, in order', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'vsockmesh-log-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const path = join(dir, 'out.log');
  const fd = openSync(path, 'w');
  const writer = fdWriter(fd);
  const chunks = ['one\n', `${'x'.repeat(200_000)}\n`, 'three\n'];
  for (const chunk of chunks) await new Promise<void>((resolve, reject) => writer.write(chunk, (err) => (err ? reject(err) : resolve())));
  closeSync(fd);
  t.is(await readFile(path, 'utf8'), chunks.join(''));
});
