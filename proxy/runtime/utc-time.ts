// Times as text in UTC, the way Date's toISOString (log lines' `time`) and
// toUTCString (an HTTP response's Date header) write them, made from the
// getUTC* fields instead. In Node 20 (V8 11.3) those two methods set up
// V8's date cache with ICU's time zone (as any local-time method does), which
// pages in ~0.4 MiB of ICU's data and code and allocates its zone objects:
// ~0.9 MiB of an idle process's RSS, for a process whose only dates are these
// (README "Idle RSS, tenth pass"). The getUTC* fields need no time zone.

const DAYS = ['Sun', 'Mon', 'Tue', 'Wed', 'Thu', 'Fri', 'Sat'] as const;
const MONTHS = ['Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec'] as const;

const pad2 = (n: number): string => (n < 10 ? `0${n}` : `${n}`);

/** Whether Date writes the year as four digits (years 0–9999); outside them both functions leave the text to Date. */
function fourDigitYear(year: number): boolean {
  return year >= 0 && year <= 9999;
}

/** `new Date(ms).toISOString()`: 2026-12-07T20:44:09.123Z. */
export function isoTime(ms: number): string {
  const d = new Date(ms);
  const year = d.getUTCFullYear();
  if (!fourDigitYear(year)) return d.toISOString();
  const milli = d.getUTCMilliseconds();
  return `${String(year).padStart(4, '0')}-${pad2(d.getUTCMonth() + 1)}-${pad2(d.getUTCDate())}T${pad2(d.getUTCHours())}:${pad2(d.getUTCMinutes())}:${pad2(d.getUTCSeconds())}.${milli < 10 ? '00' : milli < 100 ? '0' : ''}${milli}Z`;
}

/** `new Date(ms).toUTCString()`, HTTP's IMF-fixdate: Mon, 07 Dec 2026 20:44:09 GMT. */
export function httpDate(ms: number): string {
  const d = new Date(ms);
  const year = d.getUTCFullYear();
  if (!fourDigitYear(year)) return d.toUTCString();
  return `${DAYS[d.getUTCDay()]}, ${pad2(d.getUTCDate())} ${MONTHS[d.getUTCMonth()]} ${String(year).padStart(4, '0')} ${pad2(d.getUTCHours())}:${pad2(d.getUTCMinutes())}:${pad2(d.getUTCSeconds())} GMT`;
}
