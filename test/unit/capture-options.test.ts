import test from 'ava';
import { CaptureUsageError, captureModel, ipv6Mode, type CaptureFlags, type IdLookups } from '../../proxy/capture/options.js';

const flags = (over: Partial<CaptureFlags> = {}): CaptureFlags => ({
  port: '15001',
  uid: [],
  gid: [],
  mark: [],
  excludeCidr: [],
  excludePort: [],
  inboundExcludePort: [],
  ipv6: 'auto',
  ...over,
});
const ids: IdLookups = { uid: (n) => ({ vsockmesh: 999, app: 1000 })[n], gid: (n) => ({ vsockmesh: 998 })[n] };

/** The one-line message of the usage error the flags give. */
function problem(over: Partial<CaptureFlags>): string {
  const err = (() => {
    try {
      captureModel(flags(over), ids);
    } catch (e) {
      return e;
    }
    return undefined;
  })();
  if (!(err instanceof CaptureUsageError)) throw new Error(`expected a usage error for ${JSON.stringify(over)}`);
  return err.message;
}

test('defaults: port 15001, the vsockmesh user excluded, nothing else excluded, no inbound capture', (t) => {
  t.deepEqual(captureModel(flags(), ids), { outboundPort: 15001, excludeUids: [999], excludeGids: [], excludeMarks: [], excludeCidrs: [], excludePorts: [], inbound: null });
});

test('names resolve through the lookups, ids pass as they are, repeats collapse; --gid or --mark alone replaces the default user', (t) => {
  const model = captureModel(flags({ uid: ['vsockmesh', '0', '999'], gid: ['vsockmesh', '5'], mark: ['0x539', '0X10/0xFF', '7'] }), ids);
  t.deepEqual(model.excludeUids, [999, 0]);
  t.deepEqual(model.excludeGids, [998, 5]);
  t.deepEqual(model.excludeMarks, ['0x539', '0x10/0xff', '7']);
  t.deepEqual(captureModel(flags({ gid: ['vsockmesh'] }), ids).excludeUids, []);
  t.deepEqual(captureModel(flags({ mark: ['1'] }), ids).excludeUids, []);
});

test('CIDRs carry their family; ports and the inbound section are numbers', (t) => {
  const model = captureModel(flags({ excludeCidr: ['10.0.0.0/8', 'fd00::/8', '192.0.2.7/32', '::/0'], excludePort: ['22', '65535'], inboundPort: '15006', inboundExcludePort: ['22'] }), ids);
  t.deepEqual(model.excludeCidrs, [
    { family: 4, text: '10.0.0.0/8' },
    { family: 6, text: 'fd00::/8' },
    { family: 4, text: '192.0.2.7/32' },
    { family: 6, text: '::/0' },
  ]);
  t.deepEqual(model.excludePorts, [22, 65535]);
  t.deepEqual(model.inbound, { port: 15006, excludePorts: [22] });
});

test('each bad flag is one line naming it', (t) => {
  const cases: Array<[Partial<CaptureFlags>, string]> = [
    [{ port: '0' }, "--port: must be an integer 1..65535, not '0'"],
    [{ port: '65536' }, "--port: must be an integer 1..65535, not '65536'"],
    [{ port: '15001x' }, "--port: must be an integer 1..65535, not '15001x'"],
    [{ port: '' }, "--port: must be an integer 1..65535, not ''"],
    [{ excludePort: ['ssh'] }, "--exclude-port: must be an integer 1..65535, not 'ssh'"],
    [{ inboundPort: '-1' }, "--inbound-port: must be an integer 1..65535, not '-1'"],
    [{ inboundPort: '15006', inboundExcludePort: ['99999'] }, "--inbound-exclude-port: must be an integer 1..65535, not '99999'"],
    [{ inboundExcludePort: ['22'] }, '--inbound-exclude-port: only with --inbound-port (inbound capture is off without it)'],
    [{ uid: ['nobody-here'] }, "--uid: no such user 'nobody-here' (the sidecar's user; create it first)"],
    [{ uid: ['4294967295'] }, "--uid: must be a user name or an id 0..4294967294, not '4294967295'"],
    [{ uid: ['a b'] }, "--uid: must be a user name or an id 0..4294967294, not 'a b'"],
    [{ gid: ['nogroup-here'] }, "--gid: no such group 'nogroup-here' (the sidecar's group; create it first)"],
    [{ mark: ['0x'] }, "--mark: must be VALUE or VALUE/MASK (decimal or 0x hex, 32 bits), not '0x'"],
    [{ mark: ['0x100000000'] }, "--mark: must be VALUE or VALUE/MASK (decimal or 0x hex, 32 bits), not '0x100000000'"],
    [{ mark: ['1/'] }, "--mark: must be VALUE or VALUE/MASK (decimal or 0x hex, 32 bits), not '1/'"],
    [{ excludeCidr: ['10.0.0.1'] }, "--exclude-cidr: must be an address/prefix (10.0.0.0/8, fd00::/8), not '10.0.0.1'"],
    [{ excludeCidr: ['10.0.0/8'] }, "--exclude-cidr: must be an address/prefix (10.0.0.0/8, fd00::/8), not '10.0.0/8'"],
    [{ excludeCidr: ['10.0.0.0/33'] }, "--exclude-cidr: prefix of '10.0.0.0/33' is longer than 32"],
    [{ excludeCidr: ['fd00::/129'] }, "--exclude-cidr: prefix of 'fd00::/129' is longer than 128"],
    [{ ipv6: 'maybe' }, "--ipv6: must be auto, on or off, not 'maybe'"],
  ];
  for (const [over, message] of cases) t.is(problem(over), message, JSON.stringify(over));
});

test('without --uid, --gid or --mark the default user must exist: the rules would otherwise capture the sidecar itself', (t) => {
  t.throws(() => captureModel(flags(), { uid: () => undefined, gid: () => undefined }), {
    instanceOf: CaptureUsageError,
    message: "--uid: no such user 'vsockmesh' (the sidecar's user; create it first)",
  });
});

test('a bad port or network is reported before a user name is looked up', (t) => {
  let lookedUp = 0;
  const counting: IdLookups = { uid: () => (lookedUp++, undefined), gid: () => (lookedUp++, undefined) };
  for (const over of [{ port: '0' }, { excludePort: ['x'] }, { inboundPort: 'x' }, { excludeCidr: ['x'] }, { mark: ['x'] }]) {
    t.throws(() => captureModel(flags({ uid: ['someone'], gid: ['somegroup'], ...over }), counting), { instanceOf: CaptureUsageError, message: /^--(port|exclude-port|inbound-port|exclude-cidr|mark): / });
  }
  t.is(lookedUp, 0);
});

test('--ipv6 takes auto, on and off only', (t) => {
  for (const mode of ['auto', 'on', 'off'] as const) t.is(ipv6Mode(mode), mode);
  t.throws(() => ipv6Mode('yes'), { instanceOf: CaptureUsageError, message: "--ipv6: must be auto, on or off, not 'yes'" });
});
