// How an upstream's HTTP/1.1 answer goes back to the client of an HTTP
// listener: byte for byte when nothing in it applies to the upstream hop
// only and the client's connection carries on as the upstream's does (the
// common case: no head re-serialized), else with its head written again
// (hop-by-hop headers dropped, this hop's Connection and framing) and its
// body framed for the client. Pure.

import { hopByHop, stripHopByHopLines } from './headers.js';

/** Whether an answer's head (its header lines as received) may go to the client as is: no hop-by-hop header but Transfer-Encoding. */
export function passesVerbatim(lines: readonly string[]): boolean {
  for (let i = 0; i < lines.length; i += 2) {
    const name = lines[i]!;
    // Most names are not hop-by-hop: the lower-casing only for those that may be.
    if (name.length < 7 || name.length > 19) continue;
    const lower = name.toLowerCase();
    if (lower !== 'transfer-encoding' && hopByHop(lower)) return false;
  }
  return true;
}

/** What the client's side of one answer is. */
export interface ClientFraming {
  /** The client spoke HTTP/1.1 (1.0 takes no chunked body). */
  http11: boolean;
  /** The client's connection carries on after this answer. */
  keepAlive: boolean;
  /** The request was HEAD, or the status has no body (1xx, 204, 304). */
  bodiless: boolean;
}

/** How the answer's body goes to the client: as received ('verbatim'), in chunks made here, as it comes (its length in its head), or until the connection ends. */
export type BodyFraming = 'verbatim' | 'chunked' | 'length' | 'close';

/**
 * The framing of an answer to the client: verbatim when its head may pass as
 * is and the client's connection goes on as an HTTP/1.1 keep-alive one; else
 * its body re-framed: chunks for a body of unknown length to an HTTP/1.1
 * client, or the connection's end for an HTTP/1.0 one.
 */
export function bodyFraming(lines: readonly string[], client: ClientFraming): BodyFraming {
  if (client.http11 && client.keepAlive && passesVerbatim(lines)) return 'verbatim';
  if (client.bodiless || hasHeader(lines, 'content-length')) return 'length';
  return client.http11 ? 'chunked' : 'close';
}

function hasHeader(lines: readonly string[], name: string): boolean {
  for (let i = 0; i < lines.length; i += 2) if (lines[i]!.length === name.length && lines[i]!.toLowerCase() === name) return true;
  return false;
}

/** An answer's head written again for the client: its end-to-end header lines, this hop's framing and Connection. */
export function answerHead(status: number, message: string, lines: string[], framing: Exclude<BodyFraming, 'verbatim'>, keepAlive: boolean): string {
  let text = `HTTP/1.1 ${status} ${message}\r\n`;
  const kept = stripHopByHopLines(lines);
  for (let i = 0; i < kept.length; i += 2) text += `${kept[i]!}: ${kept[i + 1]!}\r\n`;
  if (framing === 'chunked') text += 'Transfer-Encoding: chunked\r\n';
  text += keepAlive && framing !== 'close' ? 'Connection: keep-alive\r\n\r\n' : 'Connection: close\r\n\r\n';
  return text;
}

/** The head of an upstream's 101 for the client: its end-to-end header lines, the protocol it switched to, Connection: upgrade. */
export function switchingHead(message: string, lines: string[]): string {
  let text = `HTTP/1.1 101 ${message}\r\n`;
  const kept = stripHopByHopLines(lines);
  for (let i = 0; i < kept.length; i += 2) text += `${kept[i]!}: ${kept[i + 1]!}\r\n`;
  for (let i = 0; i < lines.length; i += 2) if (lines[i]!.toLowerCase() === 'upgrade') text += `Upgrade: ${lines[i + 1]!}\r\n`;
  return `${text}Connection: Upgrade\r\n\r\n`;
}

/** The upgrade a listener carries on as a tunnel: WebSocket (the route configuration has no upgrade setting); any other is taken as a plain request. */
export function tunnelsUpgrade(upgrade: string | string[] | undefined): boolean {
  return typeof upgrade === 'string' && upgrade.trim().toLowerCase() === 'websocket';
}
