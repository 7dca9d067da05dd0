// Transparent capture: the nat rules, as iptables-restore text, that REDIRECT
// a VM's outbound TCP to the sidecar's capture listener (and, optionally, its
// inbound TCP to the inbound listener). The one place the rules are written:
// `vsockmesh iptables apply|remove|print` and deploy/iptables/capture.sh both
// come here. Pure: the current nat table (iptables-save text) goes in, the
// restore text that turns it into the wanted one comes out, so applying twice
// changes nothing and removing leaves the table as it was before.

export type Family = 4 | 6;

export const OUTPUT_CHAIN = 'VSOCKMESH_OUTPUT';
export const INBOUND_CHAIN = 'VSOCKMESH_INBOUND';
const OUR_CHAINS = [OUTPUT_CHAIN, INBOUND_CHAIN] as const;

export interface Cidr {
  family: Family;
  /** As given: `10.0.0.0/8`, `fd00::/8`. */
  text: string;
}

/** What is captured and what is not (validated: see capture-options.ts). */
export interface CaptureModel {
  /** The capture listener's port (an outbound listener whose cluster resolves the original destination). */
  outboundPort: number;
  /** Connections of these owners are the sidecar's own and never captured (numeric ids; marks as `value` or `value/mask`). */
  excludeUids: number[];
  excludeGids: number[];
  excludeMarks: string[];
  excludeCidrs: Cidr[];
  /** Destination ports never captured outbound. */
  excludePorts: number[];
  /** Inbound capture: every inbound TCP connection to the inbound listener's port, except excludePorts (destination ports). */
  inbound: { port: number; excludePorts: number[] } | null;
}

const LOOPBACK: Record<Family, string> = { 4: '127.0.0.0/8', 6: '::1/128' };

/** The chain bodies (without `-A CHAIN`) and the jumps into them, for one family. */
function wanted(model: CaptureModel, family: Family): { chains: Map<string, string[]>; jumps: string[] } {
  const out: string[] = [
    ...model.excludeUids.map((uid) => `-m owner --uid-owner ${uid} -j RETURN`),
    ...model.excludeGids.map((gid) => `-m owner --gid-owner ${gid} -j RETURN`),
    ...model.excludeMarks.map((mark) => `-m mark --mark ${mark} -j RETURN`),
    `-d ${LOOPBACK[family]} -j RETURN`,
    ...model.excludeCidrs.filter((c) => c.family === family).map((c) => `-d ${c.text} -j RETURN`),
    ...model.excludePorts.map((port) => `-p tcp -m tcp --dport ${port} -j RETURN`),
    `-p tcp -j REDIRECT --to-ports ${model.outboundPort}`,
  ];
  const chains = new Map([[OUTPUT_CHAIN, out]]);
  const jumps = [`-A OUTPUT -p tcp -j ${OUTPUT_CHAIN}`];
  if (model.inbound) {
    chains.set(INBOUND_CHAIN, [
      ...model.inbound.excludePorts.map((port) => `-p tcp -m tcp --dport ${port} -j RETURN`),
      `-p tcp -j REDIRECT --to-ports ${model.inbound.port}`,
    ]);
    jumps.push(`-A PREROUTING -p tcp -j ${INBOUND_CHAIN}`);
  }
  return { chains, jumps };
}

/** What of ours the nat table holds now: our chains, and every rule that jumps to one (as iptables-save prints it). */
export interface NatState {
  chains: Set<string>;
  jumps: string[];
}

/** Reads `iptables-save -t nat` output (an empty or absent nat table is an empty state). */
export function natState(saveText: string): NatState {
  const chains = new Set<string>();
  const jumps: string[] = [];
  for (const line of saveText.split('\n').map((l) => l.trim())) {
    const chain = /^:(\S+)/.exec(line)?.[1];
    if (chain !== undefined && (OUR_CHAINS as readonly string[]).includes(chain)) chains.add(chain);
    const target = /^-A (\S+) .*-[jg] (\S+)$/.exec(line);
    if (target && (OUR_CHAINS as readonly string[]).includes(target[2]!) && !(OUR_CHAINS as readonly string[]).includes(target[1]!)) jumps.push(line);
  }
  return { chains, jumps };
}

const restore = (lines: string[]) => (lines.length === 0 ? '' : ['*nat', ...lines, 'COMMIT', ''].join('\n'));

/**
 * The iptables-restore text (for `--noflush`: only our chains and jumps are
 * touched) that turns `state` into the model's rules for `family`, applied
 * atomically. Our chains are rebuilt; a jump that is already exactly
 * right (one per hook) is kept where it is, any other jump to our chains is
 * deleted; a chain the model no longer wants (inbound turned off) goes.
 */
export function applyRules(model: CaptureModel, family: Family, state: NatState): string {
  const { chains, jumps } = wanted(model, family);
  const keep = new Set(jumps.filter((j) => state.jumps.filter((s) => s === j).length === 1));
  const lines = [
    ...[...chains.keys()].filter((c) => !state.chains.has(c)).map((c) => `:${c} - [0:0]`),
    ...state.jumps.filter((j) => !keep.has(j)).map((j) => j.replace(/^-A /, '-D ')),
    ...[...state.chains].filter((c) => !chains.has(c)).flatMap((c) => [`-F ${c}`, `-X ${c}`]),
    ...[...chains.keys()].filter((c) => state.chains.has(c)).map((c) => `-F ${c}`),
    ...[...chains].flatMap(([chain, body]) => body.map((rule) => `-A ${chain} ${rule}`)),
    ...jumps.filter((j) => !keep.has(j)),
  ];
  return restore(lines);
}

/** The restore text that deletes every jump to our chains and the chains themselves, or '' when there are none. */
export function removeRules(state: NatState): string {
  return restore([...state.jumps.map((j) => j.replace(/^-A /, '-D ')), ...[...state.chains].flatMap((c) => [`-F ${c}`, `-X ${c}`])]);
}
