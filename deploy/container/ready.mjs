// The container health check (Dockerfile HEALTHCHECK, Kubernetes exec probes):
// GET /ready on the admin endpoint named by VSOCKMESH_ADMIN (host:port, default
// 127.0.0.1:15000); exit 0 on 200 `serving`, 1 otherwise, the answer on stdout.
// An exec probe, not an HTTP one, because admin endpoints listen on loopback.
/* global fetch, AbortSignal */
const admin = process.env.VSOCKMESH_ADMIN || '127.0.0.1:15000';
try {
  const res = await fetch(`http://${admin}/ready`, { signal: AbortSignal.timeout(4000) });
  const body = (await res.text()).trim();
  console.log(`${admin}/ready: ${res.status} ${body}`);
  process.exitCode = res.status === 200 ? 0 : 1;
} catch (err) {
  console.log(`${admin}/ready: ${err instanceof Error ? (err.cause?.code ?? err.message) : String(err)}`);
  process.exitCode = 1;
}
