// What the demo prints: the topology, and for each step the VM manager's
// answer, the decision (the sidecar's own pure function, over the same
// facts), what carried the connection (from the sidecars' access logs) and
// whether the data arrived intact.

import { formatAddress } from '../../runtime/log.js';
import type { Destination, Resolution, VmRecord } from '../../resolve/types.js';
import { factsFromResolution, wantedOf } from '../../upstream/endpoint-facts.js';
import { describeSelection, selectTransport, type Selection } from '../../upstream/select.js';
import { CLIENT, HYPERVISORS, OUTSIDE_IP, VMS, type Scenario, type Step, type TrafficResult } from './scenario.js';

export interface AccessEntry {
  node: string;
  [key: string]: unknown;
}

type Say = (line?: string) => void;
const MiB = 1024 * 1024;

function addr(a: { address: string; port: number } | undefined): string {
  return a ? formatAddress(a.address, a.port) : '-';
}

/** What runs where, from the VM manager's records and the sidecars' bound addresses. */
export function reportTopology(say: Say, scenario: Scenario, vsockOn: boolean, offWhy: string): void {
  const { registry, vmManagerPort, sidecars, apps, outsideEcho, steps } = scenario;
  const client = sidecars.get(CLIENT)!;
  say('vsockmesh demo: the VM manager knows where every VM runs; a sidecar sends to a VM on its own hypervisor over vsock, to any other over TCP');
  if (vsockOn) say('  vsock: vsock_loopback is loaded here: hv-1\'s VMs talk over real vsock (loopback mode: every VM at CID 1, told apart by its sidecar\'s vsock port)');
  else say(`  vsock: ${offWhy}: same decisions, carried over TCP`);
  say(`  VM manager  grpc 127.0.0.1:${vmManagerPort} (in this process), mutual TLS`);
  say(`  identities (X509-SVIDs from a throw-away CA in ${scenario.identities.caDir}, removed at exit):`);
  for (const { who, spiffeId, notAfter } of scenario.identities.shown) say(`    ${who.padEnd(14)} ${spiffeId}  until ${notAfter.toISOString()}`);
  say('  peer hop: STRICT: sidecars reach each other over TCP with mutual TLS 1.3 (the same SVIDs); a plain-text peer is refused');
  for (const hv of HYPERVISORS) {
    say(`  ${hv.hypervisorId} (vsock ${hv.vsockMode}${hv.vsockMode === 'host-relay' ? `, relay port ${hv.relayPort}` : ''})`);
    for (const vm of VMS.filter((v) => v.hypervisorId === hv.hypervisorId)) {
      const record = registry.getVm(vm.id)!;
      const s = sidecars.get(vm.id)!;
      const appList = [`echo :${apps.get(vm.id)!.echo}`, ...(vm.web ? [`http :${apps.get(vm.id)!.http!}`] : [])].join(', ');
      const vsockText = vsockOn
        ? `vsock ${record.vsockCid}:${record.sidecar!.vsockPort}${vm.id === 'vm-b' ? ' (peer_authorization: registry)' : ''}`
        : `vsock port ${record.sidecar!.vsockPort} registered, not listened on (vsock off)`;
      const services = record.services.map((sv) => sv.name).join(', ');
      say(`    ${vm.id}  ${vm.ip}  CID ${record.vsockCid}  sidecar tcp ${addr(s.listenerAddress('inbound'))}, ${vsockText}; apps ${appList}; services ${services}`);
    }
  }
  say(`  not in the VM manager: ${OUTSIDE_IP}  echo :${outsideEcho} (no sidecar)`);
  say(`  ${CLIENT}'s outbound listeners (its apps connect here):`);
  for (const step of steps) say(`    ${step.name.padEnd(11)} ${addr(client.listenerAddress(step.name))} -> ${step.asks}`);
  say();
}

/** The step's question, the VM manager's answer and the decision vm-a's sidecar makes from it. */
export function reportDecision(say: Say, index: number, step: Step, answer: Resolution, vsockOn: boolean, offWhy: string): void {
  const selection = expectedSelection(step.destination, answer, vsockOn);
  say(`[${index}] ${step.name}: ${step.asks}`);
  say(`    VM manager: ${explainAnswer(step.destination, answer)}`);
  say(`    decision:   ${describeSelection(selection)}${explainSelection(selection, answer, offWhy)}`);
}

/** The outcome of a step's traffic: whether it passed, and how to say it. */
export function trafficOutcome(r: TrafficResult): { ok: boolean; text: string } {
  switch (r.kind) {
    case 'failed':
      return { ok: false, text: `FAILED: ${r.error}` };
    case 'echo': {
      const text = `sent ${r.sent} B, received ${r.received} B, sha256 ${r.match ? 'matches' : 'DIFFERS'}`;
      return r.match && r.received === r.sent ? { ok: true, text: `ok, ${size(r.sent)} echoed: ${text}` } : { ok: false, text: `FAILED: ${text}` };
    }
    case 'http': {
      const text = `HTTP ${r.status}: ${r.body.trim()}`;
      return r.status === 200 && r.body.startsWith(`hello from ${r.expectFrom}:`) ? { ok: true, text: `ok, ${text}` } : { ok: false, text: `FAILED (expected HTTP 200 from ${r.expectFrom}): ${text}` };
    }
  }
}

/** The step's connection as vm-a's access line tells it. */
export function reportCarried(say: Say, step: Step, outbound: AccessEntry, result: string): void {
  const to = destinationLabel(step.destination, outbound);
  const fallback = outbound.fallback ? ` after a failed vsock connect (fallback ${String(outbound.fallback)})` : '';
  say(`    ${CLIENT} -> ${to}: ${carried(outbound)} (${String(outbound.transport_reason)})${fallback} ... ${result}`);
}

/** Commands to try while the demo serves. */
export function reportTries(say: Say, scenario: Scenario): void {
  const client = scenario.sidecars.get(CLIENT)!;
  const tries: Array<[string, string]> = [
    [`curl http://${addr(client.listenerAddress('web'))}/hello`, 'service web: vm-b, same hypervisor'],
    [`curl http://${addr(client.listenerAddress('web-c'))}/hello`, 'vm-c: other hypervisor, TCP'],
    [`echo hello | socat - TCP:${addr(client.listenerAddress('echo-b'))}`, "vm-b's echo app"],
    [`curl http://${addr(client.adminAddress())}/stats`, "vm-a's metrics: vsockmesh_transport_decisions_total by reason"],
    [`npx vsockmesh ctl --vm-manager 127.0.0.1:${scenario.vmManagerPort} resolve vm/vm-c --from ${CLIENT}`, 'ask the VM manager'],
  ];
  const width = Math.max(...tries.map(([cmd]) => cmd.length));
  for (const [cmd, what] of tries) say(`  ${cmd.padEnd(width)}  # ${what}`);
}

/** The decision vm-a's sidecar makes from the VM manager's answer (the same pure function over the same facts). */
function expectedSelection(destination: Step['destination'], answer: Resolution, vsockOn: boolean): Selection {
  return selectTransport({ local: answer.caller ?? null, endpoint: factsFromResolution(answer, wantedOf(destination)), vsock: vsockOn ? 'available' : 'disabled', policy: 'prefer-vsock' });
}

function explainAnswer(destination: Destination, answer: Resolution): string {
  if (!answer.found || !answer.vm) {
    return `no VM has ${destination.kind === 'ip_port' ? destination.ip : JSON.stringify(destination)}: unknown destination`;
  }
  const vm: VmRecord = answer.vm;
  const caller = answer.caller;
  const where = `${vm.vmId} is on ${vm.hypervisorId} (vsock ${answer.hypervisor?.vsockMode ?? '?'}, CID ${vm.vsockCid})`;
  const relation = caller === undefined ? `${CLIENT} is not registered` : answer.sameHypervisor ? `like ${caller.vmId}: same hypervisor` : `${caller.vmId} is on ${caller.hypervisorId}: other hypervisor`;
  const chosen = destination.kind === 'service' ? `service ${destination.name} -> ${vm.vmId} (the VM manager prefers a provider on the caller's hypervisor); ` : '';
  return `${chosen}${where}, ${relation}`;
}

function explainSelection(selection: Selection, answer: Resolution, offWhy: string): string {
  const vm = answer.vm?.vmId ?? '?';
  switch (selection.reason) {
    case 'vsock_disabled':
      return ` -- same hypervisor, so vsock would be chosen, but ${offWhy || 'vsock is off'}: TCP to ${vm}'s sidecar carries it`;
    case 'other_hypervisor':
      return ` -- vsock reaches only VMs on the same hypervisor: TCP to ${vm}'s sidecar`;
    case 'unknown_destination':
      return ' -- no VM, so no sidecar to hand it to: plain TCP straight to the app';
    default:
      return '';
  }
}

/** What carried the connection, from the outbound access line: `vsock CID:PORT`, `tcp ADDR:PORT` (the peer's sidecar) or `direct ADDR:PORT`. */
function carried(e: AccessEntry): string {
  const upstream = String(e.upstream);
  if (e.transport === 'vsock') return `vsock ${upstream.replace(/^vsock:/, '')}`;
  return `${upstream === String(e.dst) ? 'direct' : 'tcp'} ${upstream}`;
}

function destinationLabel(destination: Destination, e: AccessEntry): string {
  const vm = typeof e.dst_vm === 'string' ? e.dst_vm : undefined;
  if (destination.kind === 'service') return `${vm ?? '?'} (service ${destination.name})`;
  if (destination.kind === 'ip_port') return vm ? `${vm} (${formatAddress(destination.ip, destination.port)})` : formatAddress(destination.ip, destination.port);
  return vm ?? '?';
}

/** An access line, as a person reads it. */
export function accessLine(e: AccessEntry): string {
  const bytes = `${String(e.bytes_to_upstream)} B up, ${String(e.bytes_to_downstream)} B down`;
  if (e.direction === 'outbound') {
    const hop = String(e.upstream) === String(e.dst) ? '(direct: no sidecar at the destination)' : '(PROXY v2 header to the peer sidecar)';
    const vm = e.dst_vm === undefined ? '' : ` dst_vm=${String(e.dst_vm)}`;
    return `${e.node} outbound ${String(e.src)} -> ${e.node}:${String(e.listener)} -> ${String(e.upstream)}  transport=${String(e.transport)} transport_reason=${String(e.transport_reason)}${vm}  ${bytes}  outcome=${String(e.outcome)} ${hop}`;
  }
  const identity =
    String(e.listener) === 'inbound-vsock'
      ? `; the peer's kernel-given CID matched ${String(e.source_vm ?? '-')}'s in the VM manager (peer_authorization: registry)`
      : e.tls_version !== undefined
        ? `; mTLS ${String(e.tls_version)}${e.tls_resumed === true ? ' (resumed)' : ''}, peer ${String(e.peer_identity)} (STRICT)`
        : '';
  return (
    `${e.node} inbound  ${String(e.peer)} -> ${e.node}:${String(e.listener)} -> ${String(e.upstream)}  transport=${String(e.transport)}  ${bytes}  outcome=${String(e.outcome)}` +
    ` source_vm=${String(e.source_vm ?? '-')} authority=${String(e.authority ?? '-')}${identity}`
  );
}

function size(n: number): string {
  if (n >= MiB && n % MiB === 0) return `${n / MiB} MiB`;
  if (n >= 1024 && n % 1024 === 0) return `${n / 1024} KiB`;
  return `${n} B`;
}
