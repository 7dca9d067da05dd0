// How long Node and a sidecar take to start in an inner guest (TCG inside
// TCG), run INSIDE the outer guest by `npm run bench:multivm -- --node-start`:
// the figure that decides whether the multi-VM suite's inner guests run real
// sidecars or vmagent (README, "vsock"). One inner guest with the outer guest's
// / shared read-only over 9p runs, in a chroot, `node -e 0` and then the
// sidecar until its `sidecar ready` line, after reading Node's binary once so
// that those two steps measure the CPU rather than nested 9p. Not a test.

import { stringify } from 'yaml';
import { assertInOuterGuest, InnerVm, innerImage, loadVhostVsock, logDir } from './hypervisor.js';
import innerGuest from './inner-guest.json' with { type: 'json' };
import { progress, writeReport } from './report.js';

assertInOuterGuest();

const R = innerGuest.rootShare.mountPoint;
/** Per step; a step that takes longer is reported as not finished. */
const STEP_TIMEOUT_S = Number(process.env.BENCH_NODE_STEP_TIMEOUT ?? 300);

/** A sidecar as an inner VM would run one: a vsock inbound behind the relay and an outbound via the relay. */
const SIDECAR_CONFIG = {
  node: { id: 'vm-node' },
  admin: { address: '127.0.0.1', port: 15001 },
  listeners: [
    { kind: 'inbound', name: 'in-vsock', transport: 'vsock', port: 15006, allowed_peer_cids: [2], ports: [{ port: 8080, target: { address: '127.0.0.1', port: 8080 } }] },
    { kind: 'outbound', name: 'out', port: 15010, cluster: 'vm-b' },
  ],
  clusters: [{ name: 'vm-b', endpoints: [{ address: '10.0.0.4', port: 8080, vm_id: 'vm-b', vsock: { mode: 'host-relay', cid: 4, port: 15006 } }] }],
};

/** The outer guest's / read-only at R over 9p, with the guest's own /proc, /sys, /dev, /tmp and /run in it. */
const MOUNT_OUTER_ROOT = String.raw`
while read -r m; do grep -qx "$m" /lib/mod/order || insmod "/lib/mod-9p/$m" || exit 1; done < /lib/mod-9p/order
mkdir -p ${R} && mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000,cache=loose,ro ${innerGuest.rootShare.tag} ${R}
mount -t proc proc ${R}/proc && mount -t sysfs sysfs ${R}/sys && mount -t devtmpfs devtmpfs ${R}/dev
mount -t tmpfs -o mode=1777 tmp ${R}/tmp && mount -t tmpfs -o mode=0755 run ${R}/run
`;

/**
 * Prints "<step> seconds=S" (guest clock) per step, or "<step> unfinished=S" at
 * the step's deadline: reading Node's binary over nested 9p (I/O only, so the
 * next steps measure the CPU), `node -e 0`, and the sidecar to its ready line.
 */
const SCRIPT = String.raw`
up() { cut -d' ' -f1 /proc/uptime; }
elapsed() { awk -v a="$1" -v b="$(up)" 'BEGIN { printf "%.1f", b - a }'; }
s=$(up)
timeout ${STEP_TIMEOUT_S} cat ${R}/usr/bin/node > /dev/null && echo "read-node seconds=$(elapsed $s)" || echo "read-node unfinished=$(elapsed $s)"
s=$(up)
timeout ${STEP_TIMEOUT_S} chroot ${R} /usr/bin/node -e 0 && echo "node-e-0 seconds=$(elapsed $s)" || echo "node-e-0 unfinished=$(elapsed $s)"
s=$(up)
chroot ${R} /bin/sh -c 'cd "$0" && exec /usr/bin/node dist/proxy/cmd/cli.js sidecar -c /run/node-start.yaml' "$REPO" > /tmp/sidecar.log 2>&1 &
pid=$!
result=unfinished
while kill -0 $pid 2>/dev/null && [ "$(elapsed $s | cut -d. -f1)" -lt ${STEP_TIMEOUT_S} ]; do
  if grep -q 'sidecar ready' /tmp/sidecar.log; then result=seconds; break; fi
  sleep 1
done
echo "sidecar-ready $result=$(elapsed $s)"
kill $pid 2>/dev/null; wait $pid
[ $result = seconds ] || tail -5 /tmp/sidecar.log
`;

async function main(): Promise<void> {
  await loadVhostVsock();
  const vm = new InnerVm({ name: 'vm-node', cid: 6, mem: '1G', shareRoot: true }, innerImage(), logDir());
  try {
    const ready = await vm.waitReady(20 * 60_000);
    progress('node-start', `${vm.name}: ${ready.line}`);
    await vm.check(MOUNT_OUTER_ROOT);
    await vm.check(`cat > ${R}/run/node-start.yaml`, { input: stringify(SIDECAR_CONFIG) });
    const out = await vm.check(`REPO=${process.cwd()}\n${SCRIPT}`, { timeoutMs: (3 * STEP_TIMEOUT_S + 120) * 1000 });
    progress('node-start', out.trim());
    const steps: Record<string, string> = {
      'read-node': 'reading the `node` binary (99 MB) over nested 9p: I/O only, it is then in the page cache',
      'node-e-0': '`node -e 0`',
      'sidecar-ready': 'the sidecar to its `sidecar ready` line (our JS and node_modules read over nested 9p)',
    };
    const rows = out
      .split('\n')
      .map((l) => /^(read-node|node-e-0|sidecar-ready) (seconds|unfinished)=([\d.]+)$/.exec(l))
      .filter((m) => m !== null)
      .map(([, step, kind, seconds]) => `| ${steps[step!]} | ${kind === 'seconds' ? `${seconds} s` : `not done after ${seconds} s`} |`);
    writeReport(
      [
        `Start-up in an inner guest (microvm, 1 vCPU, 1 GiB, TCG inside TCG), guest kernel clock; the guest was ready ${(ready.readyMs / 1000).toFixed(0)} s after its qemu started.`,
        '',
        '| step | time |',
        '|---|---:|',
        ...rows,
      ].join('\n'),
    );
  } finally {
    await vm.kill();
  }
}

await main();
