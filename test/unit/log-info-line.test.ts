import test from 'ava';
import fc from 'fast-check';
import { createLogger, logInfoLine, type LogLevel } from '../../proxy/runtime/log.js';

/** A logger of ours writing into an array, one entry per line. */
function capture(options: { level?: LogLevel; name?: string } = {}): { logger: ReturnType<typeof createLogger>; lines: string[] } {
  const lines: string[] = [];
  const logger = createLogger({ level: options.level ?? 'info', name: options.name, destination: { write: (line: string) => void lines.push(line) } });
  return { logger, lines };
}

/** The line without its time (the one field two calls cannot share). */
function timeless(line: string): string {
  return line.replace(/"time":"[^"]*"/, '"time":"-"');
}

const fieldValue = fc.oneof(fc.string({ unit: 'binary' }), fc.integer(), fc.boolean(), fc.constant(undefined));

test('logInfoLine writes the line pino writes for the same fields, byte for byte but the time', (t) => {
  fc.assert(
    fc.property(fc.dictionary(fc.string().filter((k) => !['level', 'time', 'msg', 'name', '__proto__'].includes(k)), fieldValue), fc.option(fc.string(), { nil: undefined }), fc.string(), (fields, name, msg) => {
      const fast = capture({ name });
      const slow = capture({ name });
      logInfoLine(fast.logger, fields, msg);
      slow.logger.info(fields, msg);
      t.is(fast.lines.length, 1);
      t.is(timeless(fast.lines[0]!), timeless(slow.lines[0]!));
    }),
  );
});

test('logInfoLine writes an ISO time and one newline-terminated JSON line', (t) => {
  const { logger, lines } = capture();
  logInfoLine(logger, { log: 'access', status: 200 }, 'request');
  const line = JSON.parse(lines[0]!) as Record<string, unknown>;
  t.true(lines[0]!.endsWith('}\n'));
  t.is(new Date(String(line.time)).toISOString(), String(line.time));
  t.deepEqual({ ...line, time: '-' }, { level: 'info', time: '-', log: 'access', status: 200, msg: 'request' });
});

test('logInfoLine writes nothing above the logger level', (t) => {
  const { logger, lines } = capture({ level: 'warn' });
  logInfoLine(logger, { log: 'access' }, 'request');
  t.deepEqual(lines, []);
});

test('logInfoLine logs through pino for a logger it did not make (a child)', (t) => {
  const { logger, lines } = capture();
  logInfoLine(logger.child({ role: 'sidecar' }), { log: 'access' }, 'request');
  const line = JSON.parse(lines[0]!) as Record<string, unknown>;
  t.is(line.role, 'sidecar');
  t.is(line.log, 'access');
});
