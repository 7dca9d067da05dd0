// HTTP requests to an admin endpoint on loopback, as curl (or a browser) sends them.

import http from 'node:http';

export interface AdminResponse {
  status: number;
  body: string;
  contentType: string;
}

/** What a mutating admin call needs (curl -H 'x-vsockmesh-admin: 1'). */
export const ADMIN_POST = { 'x-vsockmesh-admin': '1' };

/** `headers` replace Node's defaults (Host is 127.0.0.1:port unless given). */
export function adminRequest(port: number, method: string, path: string, options: { headers?: Record<string, string>; body?: string } = {}): Promise<AdminResponse> {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port, method, path, agent: false, headers: options.headers ?? {} }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => (body += d));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body, contentType: String(res.headers['content-type']) }));
    });
    req.on('error', reject);
    req.end(options.body);
  });
}

/** Polls GET /ready until its status is `status`; rejects after `timeoutMs`. */
export async function waitForReady(port: number, status: number, timeoutMs = 10_000): Promise<AdminResponse> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const res = await adminRequest(port, 'GET', '/ready');
    if (res.status === status) return res;
    if (Date.now() > deadline) throw new Error(`/ready stayed ${res.status} ${JSON.stringify(res.body)}, expected ${status}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}
