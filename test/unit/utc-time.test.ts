import test from 'ava';
import fc from 'fast-check';
import { httpDate, isoTime } from '../../proxy/runtime/utc-time.js';

/** Year 0 to 9999 in ms since the epoch, the years both write themselves. */
const MIN = new Date(0).setUTCFullYear(0);
const MAX = Date.UTC(9999, 11, 31, 23, 59, 59, 999);
/** Times the fields' padding and the calendar could get wrong: the epoch, leap days, month and year ends, single-digit milliseconds. */
const EDGES = [0, 1, 9, 10, 99, 100, 999, -1, Date.UTC(2000, 1, 29, 23, 59, 59, 5), Date.UTC(1900, 1, 28, 12), Date.UTC(2024, 11, 31, 23, 59, 59, 999), Date.UTC(2026, 11, 7, 20, 44, 9, 123), new Date(0).setUTCFullYear(1), MIN, MAX];

test('isoTime is Date.toISOString', (t) => {
  for (const ms of EDGES) t.is(isoTime(ms), new Date(ms).toISOString());
  fc.assert(fc.property(fc.integer({ min: MIN, max: MAX }), (ms) => isoTime(ms) === new Date(ms).toISOString()));
});

test('httpDate is Date.toUTCString (IMF-fixdate)', (t) => {
  for (const ms of EDGES) t.is(httpDate(ms), new Date(ms).toUTCString());
  fc.assert(fc.property(fc.integer({ min: MIN, max: MAX }), (ms) => httpDate(ms) === new Date(ms).toUTCString()));
});

test('outside the years 0-9999 both are Date\'s text (its signed six-digit years)', (t) => {
  for (const ms of [MIN - 1, MAX + 1, 8.64e15, -8.64e15]) {
    t.is(isoTime(ms), new Date(ms).toISOString());
    t.is(httpDate(ms), new Date(ms).toUTCString());
  }
  t.is(isoTime(MAX + 1), '+010000-01-01T00:00:00.000Z');
});
