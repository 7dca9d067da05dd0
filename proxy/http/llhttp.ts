// The llhttp binding Node's own http server and client parse with
// (HTTPParser of node:_http_common): the parts of it the HTTP/1.1 server side
// (http1-server.ts) and client (http1-client.ts) use, typed once.

import { createRequire } from 'node:module';

export interface Parser {
  initialize(type: number, resource: object, maxHeaderSize: number, lenient: number): void;
  execute(data: Buffer): number | Error;
  finish(): undefined | Error;
  close(): void;
  [callback: number]: unknown;
}

interface ParserClass {
  new (): Parser;
  REQUEST: number;
  RESPONSE: number;
  kOnMessageBegin: number;
  kOnHeaders: number;
  kOnHeadersComplete: number;
  kOnBody: number;
  kOnMessageComplete: number;
}

const common = createRequire(import.meta.url)('_http_common') as { HTTPParser: ParserClass; methods: string[] };

export const HTTPParser = common.HTTPParser;
/** Method names by the number the parser gives a request's head. */
export const methods: readonly string[] = common.methods;
