import test from 'ava';
import fc from 'fast-check';
import { createLogger, type LogLevel } from '../../proxy/runtime/log.js';
import { AccessLines, accessMembers, membersAround, textMember } from '../../proxy/listeners/access-lines.js';
import { logAccess, type AccessLogFields, type ConnectionResult } from '../../proxy/listeners/proxied-connection.js';

/** A logger of ours writing into an array, one entry per write; `lines` counts what writeLines said each write holds. */
function capture(level: LogLevel = 'info', name?: string) {
  const writes: string[] = [];
  const counts: number[] = [];
  const destination = { write: (chunk: string) => void (writes.push(chunk), counts.push(1)), writeLines: (chunk: string, n: number) => void (writes.push(chunk), counts.push(n)) };
  return { logger: createLogger({ level, name, destination }), writes, counts };
}

const timeless = (text: string): string => text.replace(/"time":"[^"]*"/g, '"time":"-"');
const text = fc.string({ unit: 'binary', maxLength: 12 });
const connection = fc.record({
  src: text,
  dst: text,
  peer: text,
  sourceVm: fc.option(text, { nil: undefined }),
  authority: fc.option(text, { nil: undefined }),
  up: fc.nat(),
  down: fc.nat(),
  duration: fc.double({ min: 0, max: 1e7, noNaN: true }),
  outcome: fc.constantFrom('closed', 'reset', 'idle_timeout', 'aborted', 'upstream_error'),
  errorCode: fc.option(fc.constantFrom('ECONNRESET', 'ECONNREFUSED'), { nil: undefined }),
});

test('a batch of lines is what logAccess writes for each connection, byte for byte but the time, in one write', (t) => {
  fc.assert(
    fc.property(fc.option(fc.string(), { nil: undefined }), fc.array(connection, { minLength: 1, maxLength: 8 }), (name, connections) => {
      const head: Pick<AccessLogFields, 'listener' | 'direction' | 'cluster' | 'transport' | 'upstream'> = { listener: 'in', direction: 'inbound', cluster: 'inbound|8080', transport: 'tcp', upstream: '127.0.0.1:8080' };
      const tail = { peer_identity: 'unauthenticated', principal: 'unauthenticated' };
      const fast = capture('info', name);
      const slow = capture('info', name);
      const lines = new AccessLines(fast.logger);
      for (const c of connections) {
        const members = `${accessMembers({ log: 'access', ...head })}${textMember('src', c.src)}${textMember('dst', c.dst)}${textMember('peer', c.peer)}${textMember('source_vm', c.sourceVm)}${textMember('authority', c.authority)}${accessMembers(tail)}`;
        lines.add(members, c.up, c.down, c.duration, c.outcome, c.errorCode);
        const fields: AccessLogFields = { ...head, src: c.src, dst: c.dst, peer: c.peer, ...(c.sourceVm !== undefined && { source_vm: c.sourceVm }), ...(c.authority !== undefined && { authority: c.authority }), ...tail };
        const result: ConnectionResult = { outcome: c.outcome as ConnectionResult['outcome'], bytesToUpstream: c.up, bytesToDownstream: c.down, ...(c.errorCode !== undefined && { errorCode: c.errorCode }) };
        logAccess(slow.logger, fields, result, c.duration);
      }
      t.deepEqual(fast.writes, [], 'nothing written before the batch ends');
      lines.end();
      t.deepEqual(fast.counts, [connections.length]);
      t.is(timeless(fast.writes[0]!), timeless(slow.writes.join('')));
      lines.end();
      t.is(fast.writes.length, 1, 'an empty batch writes nothing');
    }),
  );
});

test('no info: no line; a logger made elsewhere (a child): each line through pino, the same fields', (t) => {
  const quiet = capture('warn');
  const lines = new AccessLines(quiet.logger);
  lines.add(accessMembers({ log: 'access', listener: 'in' }), 1, 2, 3.4, 'closed', undefined);
  lines.end();
  t.deepEqual(quiet.writes, []);
  const { logger, writes } = capture();
  const child = new AccessLines(logger.child({ role: 'sidecar' }));
  child.add(accessMembers({ log: 'access', listener: 'in' }), 1, 2, 3.4, 'reset', 'ECONNRESET');
  t.is(writes.length, 1);
  const line = JSON.parse(writes[0]!) as Record<string, unknown>;
  t.like(line, { role: 'sidecar', log: 'access', listener: 'in', bytes_to_upstream: 1, bytes_to_downstream: 2, duration_ms: 3, outcome: 'reset', error_code: 'ECONNRESET', msg: 'connection closed' });
});

test('membersAround: an outbound line made of the members around src is what logAccess writes', (t) => {
  fc.assert(
    fc.property(text, fc.array(connection, { minLength: 1, maxLength: 4 }), fc.option(text, { nil: undefined }), (listener, connections, dstVm) => {
      const fields = (src: string): AccessLogFields => ({ listener, direction: 'outbound', src, dst: '10.0.0.2:80', cluster: 'web', transport: 'tcp', upstream: '10.0.0.2:15001', transport_reason: 'peer_sidecar', ...(dstVm !== undefined && { dst_vm: dstVm }) });
      const [head, tail] = membersAround(fields(''), 'src');
      const fast = capture();
      const slow = capture();
      const lines = new AccessLines(fast.logger);
      for (const c of connections) {
        lines.add(`${head}${textMember('src', c.src)}${tail}`, c.up, c.down, c.duration, c.outcome, c.errorCode);
        const result: ConnectionResult = { outcome: c.outcome as ConnectionResult['outcome'], bytesToUpstream: c.up, bytesToDownstream: c.down, ...(c.errorCode !== undefined && { errorCode: c.errorCode }) };
        logAccess(slow.logger, fields(c.src), result, c.duration);
      }
      lines.end();
      t.is(timeless(fast.writes.join('')), timeless(slow.writes.join('')));
    }),
  );
  t.throws(() => membersAround({ listener: 'x' }, 'src'), { message: /no src member/ });
});
