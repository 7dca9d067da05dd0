// Admin endpoint (HTTP, loopback by default): /ready, /stats, /config_dump, POST /drain.
// Requests a web page could make are refused (admin-guard.ts).

import http from 'node:http';
import type net from 'node:net';
import { ADMIN_HEADER, adminRequestRefusal } from './admin-guard.js';
import type { Logger } from './log.js';
import { httpDate } from './utc-time.js';

export interface AdminTarget {
  /** false while starting, draining, stopped or overloaded. */
  isReady(): boolean;
  /** One line: `serving`, `draining`, `overloaded: why`, ... */
  state(): string;
  renderStats(): Promise<string>;
  statsContentType: string;
  configDump(): unknown;
  /** Starts a drain (POST /drain); resolves when it has finished. */
  drain(): Promise<void>;
}

export class AdminServer {
  private server: http.Server | undefined;

  constructor(
    private readonly target: AdminTarget,
    private readonly logger: Logger,
  ) {}

  async start(address: string, port: number): Promise<net.AddressInfo> {
    const server = http.createServer((req, res) => {
      // The Date header Node would write, made without Date's toUTCString (utc-time.ts): an idle sidecar's probes are its only responses.
      res.sendDate = false;
      res.setHeader('date', httpDate(Date.now()));
      this.handle(req, res).catch((err: Error) => {
        this.logger.error({ err, path: req.url }, 'admin request failed');
        if (!res.headersSent) res.writeHead(500, { 'content-type': 'text/plain' });
        res.end(`internal error: ${err.message}\n`);
      });
    });
    server.keepAliveTimeout = 5_000;
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen({ host: address, port }, () => {
        server.off('error', reject);
        resolve();
      });
    }).catch((err: NodeJS.ErrnoException) => {
      throw new Error(`admin endpoint: cannot listen on ${address}:${port}: ${err.code ?? err.message}`);
    });
    this.server = server;
    return server.address() as net.AddressInfo;
  }

  address(): net.AddressInfo | undefined {
    return (this.server?.address() as net.AddressInfo | null) ?? undefined;
  }

  async stop(): Promise<void> {
    const server = this.server;
    if (!server) return;
    this.server = undefined;
    const closed = new Promise<void>((resolve) => server.close(() => resolve()));
    server.closeAllConnections();
    await closed;
  }

  private async handle(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const path = new URL(req.url ?? '/', 'http://admin').pathname;
    const refusal = adminRequestRefusal({
      method: req.method ?? '',
      host: req.headers.host,
      origin: req.headers.origin,
      contentType: req.headers['content-type'],
      adminHeader: header(req, ADMIN_HEADER),
      localAddress: req.socket.localAddress ?? '',
    });
    if (refusal) {
      this.logger.warn({ reason: refusal.reason, method: req.method, path, host: req.headers.host ?? null, origin: req.headers.origin ?? null }, `admin request refused: ${refusal.message}`);
      send(res, 403, 'text/plain', `forbidden: ${refusal.message}\n`);
      return;
    }
    const route = ROUTES[path];
    if (route === undefined) {
      send(res, 404, 'text/plain', `no such admin path: ${path}\navailable: ${Object.keys(ROUTES).join(' ')}\n`);
      return;
    }
    if (req.method !== route) {
      res.setHeader('allow', route);
      send(res, 405, 'text/plain', `${path} takes ${route}\n`);
      return;
    }
    switch (path) {
      case '/ready': {
        const ready = this.target.isReady();
        send(res, ready ? 200 : 503, 'text/plain', `${this.target.state()}\n`);
        return;
      }
      case '/stats':
        send(res, 200, this.target.statsContentType, await this.target.renderStats());
        return;
      case '/config_dump':
        send(res, 200, 'application/json', `${JSON.stringify(this.target.configDump(), null, 2)}\n`);
        return;
      case '/drain':
        this.logger.info({ reason: 'admin' }, 'drain requested through the admin endpoint');
        void this.target.drain();
        send(res, 202, 'text/plain', 'draining\n');
        return;
    }
  }
}

const ROUTES: Record<string, 'GET' | 'POST'> = {
  '/ready': 'GET',
  '/stats': 'GET',
  '/config_dump': 'GET',
  '/drain': 'POST',
};

function header(req: http.IncomingMessage, name: string): string | undefined {
  const value = req.headers[name];
  return Array.isArray(value) ? value.join(',') : value;
}

function send(res: http.ServerResponse, status: number, contentType: string, body: string): void {
  res.writeHead(status, { 'content-type': contentType, 'content-length': Buffer.byteLength(body) });
  res.end(body);
}
