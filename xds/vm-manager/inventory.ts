// The inventory file: the hypervisors and VMs a VM manager starts with, in
// YAML with snake_case keys. Parsing checks the file's shape (every problem
// at once, by path); the registry rules (known hypervisor, unique CIDs and
// addresses, ...) are applied when the inventory is loaded into a registry.
//
//   hypervisors:
//     - { id: hv-1, vsock_mode: host-relay, relay_port: 15100 }
//   vms:
//     - id: web-1
//       hypervisor: hv-1
//       cid: 3
//       addresses: [10.0.0.11]
//       sidecar: { tcp_port: 15001, vsock_port: 15001 }
//       services: [{ name: web, port: 8080 }]
//       labels: { team: a }
//       lease_ttl: 30s          # optional: ms or a duration string

import { LineCounter, parseDocument } from 'yaml';
import { z } from 'zod/v3';
import { parseDuration } from '../../proxy/runtime/duration.js';
import { ipAddress } from '../../proxy/config/fields.js';
import { formatIssue } from '../../proxy/runtime/config-file.js';
import { VsockmeshError } from '../../proxy/runtime/errors.js';
import { ValidationError, type Registry, type VmInput } from './registry.js';
import { parseByItem } from './yaml-items.js';
import type { HypervisorRecord } from '../../proxy/resolve/types.js';

export const DEFAULT_RELAY_PORT = 15100;

export interface InventoryVm {
  vm: VmInput;
  leaseTtlMs?: number;
}

export interface Inventory {
  hypervisors: HypervisorRecord[];
  vms: InventoryVm[];
}

/** Every problem of an inventory or VM file; the message is one `source: path: message` line per problem. */
export class InventoryError extends VsockmeshError {
  constructor(
    readonly source: string,
    /** `path: message` each, without the source. */
    readonly problems: string[],
  ) {
    super('INVALID_ARGUMENT', problems.map((p) => `${source}: ${p}`).join('\n'));
  }
}

// ---- schemas -------------------------------------------------------------------

const U32_MAX_PORT = 0xfffffffe;

const integer = (min: number, max: number, rule: string) =>
  z.number({ invalid_type_error: `must be ${rule}` }).int({ message: `must be ${rule}` }).min(min, { message: `must be ${rule}` }).max(max, { message: `must be ${rule}` });

const text = z.string({ invalid_type_error: 'must be a string' }).min(1, { message: 'must not be empty' });

const hypervisorSchema = z
  .object({
    id: text,
    vsock_mode: z.enum(['host-relay', 'direct', 'loopback']),
    relay_port: integer(1, U32_MAX_PORT, `a vsock port 1..${U32_MAX_PORT}`).optional(),
  })
  .strict()
  .superRefine((h, ctx) => {
    // Said outright rather than ignored: a relay port on a direct hypervisor means the mode is probably wrong.
    if (h.relay_port !== undefined && h.vsock_mode !== 'host-relay') {
      ctx.addIssue({ code: 'custom', path: ['relay_port'], message: `only a host-relay hypervisor has a relay port (this one is ${h.vsock_mode})` });
    }
  })
  .transform((h): HypervisorRecord => ({ hypervisorId: h.id, vsockMode: h.vsock_mode, relayPort: h.vsock_mode === 'host-relay' ? (h.relay_port ?? DEFAULT_RELAY_PORT) : 0 }));

const DURATION_RULE = 'must be milliseconds or a duration such as "30s", "5m" (0: no lease, else at least 1s)';

/** Lease TTL: milliseconds or a duration string; 0 means no lease, like the API. */
const leaseTtl = z.unknown().transform((value, ctx) => {
  const ms = typeof value === 'number' ? value : typeof value === 'string' ? parseDuration(value) : undefined;
  if (ms === undefined || !Number.isInteger(ms) || (ms !== 0 && ms < 1000)) {
    ctx.addIssue({ code: 'custom', message: `${DURATION_RULE} (got ${JSON.stringify(value)})` });
    return z.NEVER;
  }
  return ms;
});

const vmSchema = z
  .object({
    id: text,
    hypervisor: text,
    // Which CIDs are valid depends on the hypervisor's mode: the registry checks that.
    cid: integer(1, U32_MAX_PORT, `a context ID 1..${U32_MAX_PORT}`),
    addresses: z.array(ipAddress, { invalid_type_error: 'must be a list of IP addresses' }).min(1, { message: 'must list at least one IP address' }),
    sidecar: z
      .object({
        tcp_port: integer(0, 65535, 'an integer 0..65535 (0: none)').default(0),
        vsock_port: integer(0, U32_MAX_PORT, `an integer 0..${U32_MAX_PORT} (0: none)`).default(0),
      })
      .strict()
      .nullable()
      .default(null),
    services: z.array(z.object({ name: text, port: integer(1, 65535, 'an integer 1..65535') }).strict()).default([]),
    labels: z.record(z.string({ invalid_type_error: 'must be a string' })).default({}),
    lease_ttl: leaseTtl.optional(),
  })
  .strict()
  .transform(
    (v): InventoryVm => ({
      vm: {
        vmId: v.id,
        hypervisorId: v.hypervisor,
        vsockCid: v.cid,
        addresses: v.addresses,
        sidecar: v.sidecar && { tcpPort: v.sidecar.tcp_port, vsockPort: v.sidecar.vsock_port },
        services: v.services,
        labels: v.labels,
      },
      ...(v.lease_ttl !== undefined && v.lease_ttl > 0 && { leaseTtlMs: v.lease_ttl }),
    }),
  );

const inventorySchema = z
  .object({ hypervisors: z.array(hypervisorSchema).default([]), vms: z.array(vmSchema).default([]) })
  .strict()
  .superRefine((inv, ctx) => {
    // A second entry with the same id would silently update the first on load.
    duplicates(inv.hypervisors.map((h) => h.hypervisorId), 'hypervisor', (i, first) => ctx.addIssue({ code: 'custom', path: ['hypervisors', i, 'id'], message: first }));
    duplicates(inv.vms.map((v) => v.vm.vmId), 'VM', (i, first) => ctx.addIssue({ code: 'custom', path: ['vms', i, 'id'], message: first }));
  });

function duplicates(ids: string[], what: string, report: (index: number, message: string) => void): void {
  const seen = new Map<string, number>();
  ids.forEach((id, i) => {
    const first = seen.get(id);
    if (first === undefined) seen.set(id, i);
    else report(i, `duplicate ${what} id "${id}" (first at [${first}])`);
  });
}

// ---- parsing -------------------------------------------------------------------

/** YAML text -> data, or every syntax problem with its line. */
function parseYaml(textIn: string, source: string): unknown {
  const lineCounter = new LineCounter();
  const doc = parseDocument(textIn, { prettyErrors: false, lineCounter });
  if (doc.errors.length > 0) {
    throw new InventoryError(
      source,
      doc.errors.map((e) => {
        const pos = lineCounter.linePos(e.pos[0]);
        return `line ${pos.line}, column ${pos.col}: ${e.message.split('\n')[0]}`;
      }),
    );
  }
  return doc.toJS() as unknown;
}

function validate<T>(schema: z.ZodType<T, z.ZodTypeDef, unknown>, data: unknown, source: string): T {
  const result = schema.safeParse(data);
  if (!result.success) throw new InventoryError(source, result.error.issues.map(formatIssue));
  return result.data;
}

/**
 * An inventory file (an empty file is an empty inventory); throws
 * InventoryError listing every problem. Parsed VM by VM when it is in the
 * plain block layout (yaml-items.ts): 10,000 VMs parsed whole would hold a
 * document several times the size of their records.
 */
export function parseInventory(textIn: string, source: string): Inventory {
  const data = parseByItem(textIn);
  return validate(inventorySchema, (data === undefined ? parseYaml(textIn, source) : data) ?? {}, source);
}

/** One VM in the inventory's per-VM format (`vsockmesh ctl vms register -f vm.yaml`). */
export function parseVmDocument(textIn: string, source: string): InventoryVm {
  return validate(vmSchema, parseYaml(textIn, source), source);
}

/**
 * Registers the inventory's hypervisors, then its VMs (so every VM's
 * hypervisor exists first). Stops at the first registry rule broken, with the
 * entry in the field: `vms[2].vsock_cid`.
 */
export function loadInventory(registry: Registry, inventory: Inventory): void {
  inventory.hypervisors.forEach((h, i) => atEntry(`hypervisors[${i}]`, () => registry.registerHypervisor(h)));
  inventory.vms.forEach((v, i) => atEntry(`vms[${i}]`, () => registry.registerVm(v.vm, v.leaseTtlMs)));
}

function atEntry(prefix: string, register: () => void): void {
  try {
    register();
  } catch (err) {
    if (err instanceof ValidationError) throw new ValidationError(`${prefix}.${err.field}`, err.detail);
    throw err;
  }
}
