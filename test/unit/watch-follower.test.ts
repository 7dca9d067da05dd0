import test from 'ava';
import { WatchFollower } from '../../proxy/resolve/watch-follower.js';
import type { VmEvent, WatchHandlers } from '../../proxy/resolve/types.js';
import { VsockmeshError } from '../../proxy/runtime/errors.js';
import { silentLogger } from '../../proxy/runtime/log.js';

/** A VM manager's watch as the follower sees it: each call is one stream the test drives. */
function fakeApi() {
  const streams: Array<{ from: number; epoch: string; handlers: WatchHandlers; cancelled: boolean }> = [];
  return {
    streams,
    watch(from: number, handlers: WatchHandlers, epoch = '') {
      const s = { from, epoch, handlers, cancelled: false };
      streams.push(s);
      return { cancel: () => (s.cancelled = true) };
    },
  };
}

const added = (revision: number): VmEvent => ({
  type: 'added',
  revision,
  vm: { vmId: `vm-${revision}`, hypervisorId: 'hv-1', vsockCid: 3, addresses: ['10.0.0.1'], sidecar: null, services: [], labels: {}, generation: 1, leaseExpiresAt: null },
});

const outOfRange = new VsockmeshError('OUT_OF_RANGE', 'revision 2 is no longer kept');
const unavailable = new VsockmeshError('UNAVAILABLE', 'connection refused');

function follower(api: ReturnType<typeof fakeApi>) {
  const events: number[] = [];
  let resets = 0;
  const f = new WatchFollower({
    api,
    onEvent: (e) => events.push(e.revision),
    onReset: () => resets++,
    logger: silentLogger(),
    name: 'test',
    backoff: { initialMs: 5, maxMs: 20 },
  });
  return { f, events, resets: () => resets };
}

const tick = (ms: number) => new Promise((r) => setTimeout(r, ms));

test('resumes from the last revision seen, within the epoch the stream named', async (t) => {
  const api = fakeApi();
  const { f, events } = follower(api);
  f.start();
  t.deepEqual([api.streams[0]!.from, api.streams[0]!.epoch], [0, '']);
  api.streams[0]!.handlers.onOpen!('epoch-1');
  api.streams[0]!.handlers.onEvent(added(1));
  api.streams[0]!.handlers.onEvent(added(2));
  api.streams[0]!.handlers.onError(unavailable);
  await tick(40);
  t.is(api.streams.length, 2);
  t.deepEqual([api.streams[1]!.from, api.streams[1]!.epoch], [2, 'epoch-1']);
  t.deepEqual(events, [1, 2]);
  t.is(f.revision, 2);
  f.stop();
});

test('OUT_OF_RANGE starts over from revision 0 at once and resets what was learned', async (t) => {
  const api = fakeApi();
  const { f, resets } = follower(api);
  f.start();
  api.streams[0]!.handlers.onOpen!('e');
  api.streams[0]!.handlers.onEvent(added(7));
  api.streams[0]!.handlers.onError(outOfRange);
  await tick(1);
  t.is(api.streams.length, 2);
  t.is(api.streams[1]!.from, 0);
  t.is(resets(), 1);
  f.stop();
});

test('a stream that opens in another epoch (the VM manager restarted without its state) resets', (t) => {
  const api = fakeApi();
  const { f, resets } = follower(api);
  f.start();
  api.streams[0]!.handlers.onOpen!('first');
  t.is(resets(), 0, 'the first epoch seen is not a reset');
  api.streams[0]!.handlers.onOpen!('second');
  t.is(resets(), 1);
  t.is(f.epoch, 'second');
  t.is(f.revision, 0);
  f.stop();
});

test('reconnects back off and an opened stream resets the backoff', async (t) => {
  const api = fakeApi();
  const { f } = follower(api);
  f.start();
  api.streams[0]!.handlers.onError(unavailable);
  await tick(60);
  t.is(api.streams.length, 2);
  api.streams[1]!.handlers.onOpen!('e');
  api.streams[1]!.handlers.onError(unavailable);
  await tick(60);
  t.is(api.streams.length, 3);
  f.stop();
});

test('stop cancels the stream and no reconnect follows', async (t) => {
  const api = fakeApi();
  const { f } = follower(api);
  f.start();
  f.stop();
  t.true(api.streams[0]!.cancelled);
  api.streams[0]!.handlers.onError(unavailable);
  await tick(40);
  t.is(api.streams.length, 1);
});
