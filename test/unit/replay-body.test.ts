import test from 'ava';
import { PassThrough, Writable } from 'node:stream';
import { ReplayBody } from '../../proxy/http/replay-body.js';
import { MAX_REPLAY_BODY_BYTES } from '../../proxy/http/retry.js';

/** A writable that keeps what it is sent and whether it was ended. */
function sink(): Writable & { text: () => string; ended: boolean } {
  const chunks: Buffer[] = [];
  const out = new Writable({
    write(chunk: Buffer, _enc, done) {
      chunks.push(chunk);
      done();
    },
  }) as Writable & { text: () => string; ended: boolean };
  out.ended = false;
  out.text = () => Buffer.concat(chunks).toString();
  out.once('finish', () => (out.ended = true));
  return out;
}

const tick = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

test('the body flows to the attempt as it comes; another attempt is sent it from the start, then the rest', async (t) => {
  const source = new PassThrough();
  const body = new ReplayBody(source, true);
  const first = sink();
  body.sendTo(first);
  source.write('ab');
  await tick();
  t.is(first.text(), 'ab', 'not held back until the end');
  const second = sink();
  body.sendTo(second);
  source.end('cd');
  await tick();
  t.is(second.text(), 'abcd');
  t.true(second.ended);
  t.is(first.text(), 'ab', 'the abandoned attempt gets nothing more');
  t.true(body.replayable);
});

test('an attempt after the body ended is sent it whole and ended', async (t) => {
  const source = new PassThrough();
  const body = new ReplayBody(source, true);
  body.sendTo(sink());
  source.end('whole');
  await tick();
  const again = sink();
  body.sendTo(again);
  await tick();
  t.is(again.text(), 'whole');
  t.true(again.ended);
});

test('a body past the bound, or one not kept, cannot be replayed (but still flows)', async (t) => {
  const source = new PassThrough();
  const body = new ReplayBody(source, true);
  const out = sink();
  body.sendTo(out);
  source.write(Buffer.alloc(MAX_REPLAY_BODY_BYTES, 'x'));
  await tick();
  t.true(body.replayable, 'exactly the bound is held');
  source.end('y');
  await tick();
  t.false(body.replayable);
  t.is(out.text().length, MAX_REPLAY_BODY_BYTES + 1);

  const unkept = new ReplayBody(new PassThrough(), false);
  t.false(unkept.replayable);
});

test('a body that ended with no byte lets the headers end the request; one with bytes does not', async (t) => {
  const empty = new PassThrough();
  const none = new ReplayBody(empty, true);
  none.sendTo(sink());
  t.false(none.endedEmpty, 'not over yet');
  empty.end();
  await tick();
  t.true(none.endedEmpty);
  const ended = sink();
  ended.end();
  t.notThrows(() => none.sendTo(ended), 'an attempt whose headers ended it is sent nothing more');

  const full = new PassThrough();
  const some = new ReplayBody(full, false);
  some.sendTo(sink());
  full.end('x');
  await tick();
  t.false(some.endedEmpty);
});
