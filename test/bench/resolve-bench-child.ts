// Child processes of the resolve benchmark (resolve-bench.ts), each its own
// process so the bench process and the sidecars do not share its CPU time:
//
//   echo '{"hosts": ["127.0.1.1", ...]}'
//       The app: an echo server on one port bound on every given loopback
//       address (the first picks a free port, the others reuse it). Prints
//       {"port": N} once listening; runs until killed.
//
//   load '{"ports": [...], "concurrency": 32, "warmupMs": 1000, "minWarmupConns": 1000,
//          "durationMs": 3000, "payloadBytes": 16}'
//       The load generator: `concurrency` loops, each opening a new connection
//       to 127.0.0.1:<next port, round robin over all loops>, writing the
//       payload, reading the whole echo, ending its side and waiting for the
//       close; then the next. Warm-up until both warmupMs and minWarmupConns
//       are reached, then counts the connections completed in durationMs,
//       then stops starting new ones and waits for those in flight. Prints
//       one JSON result line.

import net from 'node:net';

interface LoadOptions {
  ports: number[];
  concurrency: number;
  warmupMs: number;
  minWarmupConns: number;
  durationMs: number;
  payloadBytes: number;
}

async function echo(options: { hosts: string[] }): Promise<void> {
  let port = 0;
  for (const host of options.hosts) {
    const server = net.createServer((s) => {
      s.setNoDelay(true);
      s.on('error', () => {});
      s.pipe(s);
    });
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen({ host, port, backlog: 4096 }, () => resolve());
    });
    port = (server.address() as net.AddressInfo).port;
  }
  process.stdout.write(`${JSON.stringify({ port })}\n`);
}

async function load(o: LoadOptions): Promise<void> {
  const payload = Buffer.alloc(o.payloadBytes, 0x61);
  let next = 0;
  let phase: 'warmup' | 'measure' | 'stopping' = 'warmup';
  let warmupDone = 0;
  let measured = 0;
  let measuredErrors = 0;
  let totalDone = 0;
  let totalErrors = 0;
  const firstErrors: string[] = [];
  const latenciesUs: number[] = [];
  const started = performance.now();
  const cpu0 = process.cpuUsage();

  const one = (): Promise<void> =>
    new Promise((resolve) => {
      const port = o.ports[next++ % o.ports.length]!;
      const t0 = performance.now();
      const inWindow = phase === 'measure';
      let got = 0;
      let ok = false;
      let error = '';
      const s = net.connect({ host: '127.0.0.1', port });
      s.setNoDelay(true);
      s.setTimeout(5_000, () => s.destroy(new Error('no echo within 5 s')));
      s.on('connect', () => s.write(payload));
      s.on('data', (chunk: Buffer) => {
        got += chunk.length;
        if (got >= payload.length && !ok) {
          ok = got === payload.length;
          if (!ok) error = `echo of ${got} bytes for ${payload.length}`;
          s.end();
        }
      });
      s.on('error', (err: NodeJS.ErrnoException) => (error ||= err.code ?? err.message));
      s.on('close', () => {
        if (!ok && error === '') error = `closed after ${got} of ${payload.length} bytes`;
        totalDone++;
        if (!ok) {
          totalErrors++;
          if (firstErrors.length < 5) firstErrors.push(`:${port} ${error}`);
        }
        if (phase === 'warmup') warmupDone++;
        // Counted in the window if it completed in it (whenever it started).
        if (phase === 'measure') {
          if (ok) measured++;
          else measuredErrors++;
          if (ok && inWindow) latenciesUs.push((performance.now() - t0) * 1000);
        }
        resolve();
      });
    });

  const loop = async (): Promise<void> => {
    while (phase !== 'stopping') await one();
  };
  const loops = Array.from({ length: o.concurrency }, loop);

  // Warm-up: at least warmupMs and minWarmupConns (a full rotation over the ports), at most 20 s.
  while (performance.now() - started < o.warmupMs || (warmupDone < o.minWarmupConns && performance.now() - started < 20_000)) {
    await new Promise((r) => setTimeout(r, 10));
  }
  phase = 'measure';
  const windowStart = performance.now();
  await new Promise((r) => setTimeout(r, o.durationMs));
  const seconds = (performance.now() - windowStart) / 1000;
  phase = 'stopping';
  const counted = measured;
  const countedErrors = measuredErrors;
  await Promise.all(loops);
  const cpu = process.cpuUsage(cpu0);
  latenciesUs.sort((a, b) => a - b);
  const pick = (p: number): number => (latenciesUs.length ? latenciesUs[Math.min(latenciesUs.length - 1, Math.ceil((p / 100) * latenciesUs.length) - 1)]! : NaN);
  process.stdout.write(
    `${JSON.stringify({
      connPerSec: counted / seconds,
      completed: counted,
      errors: countedErrors,
      seconds,
      warmupConns: warmupDone,
      totalConns: totalDone,
      totalErrors,
      firstErrors,
      p50us: pick(50),
      p99us: pick(99),
      cpuSeconds: (cpu.user + cpu.system) / 1e6,
      wallSeconds: (performance.now() - started) / 1000,
    })}\n`,
  );
}

const [role, json] = process.argv.slice(2);
if (role === 'echo') await echo(JSON.parse(json ?? '{}') as { hosts: string[] });
else if (role === 'load') await load(JSON.parse(json ?? '{}') as LoadOptions);
else {
  process.stderr.write('usage: resolve-bench-child.ts echo|load JSON\n');
  process.exitCode = 2;
}
