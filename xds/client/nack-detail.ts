// The error_detail of a NACK: why the response was not accepted as a whole
// and every refused resource with its reason, bounded so that a response with
// thousands of bad resources still gives a short message (the sidecar's
// /config_dump lists every refusal in full).

/** The longest error_detail message sent (characters). */
export const MAX_NACK_DETAIL = 4_096;
/** The longest part one refusal may take of it. */
export const MAX_REFUSAL_DETAIL = 1_024;

/** `error` names the resource (`listener "x": ...`); `name` is null when it could not be read. */
export interface RefusalDetail {
  name: string | null;
  error: string;
}

function clip(text: string, max: number): string {
  return text.length <= max ? text : `${text.slice(0, max - 1)}…`;
}

/** Room kept for the count and names of the refusals that do not fit. */
const TAIL_RESERVE = 200;

/**
 * `problem` (a reason about the response as a whole) then each refusal, in
 * order, "; "-separated, each at most MAX_REFUSAL_DETAIL characters; the
 * refusals that do not fit in `max` are counted at the end, with as many of
 * their names as fit. Pure.
 */
export function nackDetail(refused: readonly RefusalDetail[], problem?: string, max = MAX_NACK_DETAIL): string {
  const parts = [...(problem === undefined ? [] : [problem]), ...refused.map((r) => r.error)].map((p) => clip(p, MAX_REFUSAL_DETAIL));
  const offset = parts.length - refused.length;
  let out = '';
  for (let i = 0; i < parts.length; i++) {
    const next = out === '' ? parts[i]! : `${out}; ${parts[i]}`;
    if (next.length + (i < parts.length - 1 ? TAIL_RESERVE : 0) > max) {
      const rest = refused.slice(Math.max(0, i - offset));
      const names = rest.map((r) => (r.name === null ? '(unnamed)' : JSON.stringify(r.name))).join(', ');
      return clip(out === '' ? `${rest.length} refused: ${names}` : `${out}; and ${rest.length} more refused: ${names}`, max);
    }
    out = next;
  }
  return out;
}
