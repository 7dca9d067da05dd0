// Every bound of the VM manager's API, in one place (README "Bounds" lists
// them). A request beyond one is refused with INVALID_ARGUMENT naming the
// field (RESOURCE_EXHAUSTED for the registry's capacity); the inventory and
// the state files go through the same checks. They keep one record, one
// request and one write small whatever the registry holds.

/** vm_id, hypervisor_id (and the caller and destination ids of Resolve), like a DNS name. */
export const MAX_ID_CHARS = 253;
export const MAX_ADDRESSES_PER_VM = 16;
export const MAX_SERVICES_PER_VM = 32;
/** A service name is a DNS label (RFC 1123), like the mesh config's. */
export const MAX_SERVICE_NAME_CHARS = 63;
export const MAX_LABELS_PER_VM = 64;
export const MAX_LABEL_KEY_BYTES = 63;
export const MAX_LABEL_VALUE_BYTES = 63;
/** Keys and values of one VM's labels together (UTF-8). */
export const MAX_LABEL_BYTES_PER_VM = 4096;
export const MIN_LEASE_TTL_MS = 1_000;
export const MAX_LEASE_TTL_MS = 7 * 24 * 3600 * 1000;
/** The longest IP literal (an IPv4-mapped IPv6 address). */
export const MAX_IP_CHARS = 45;
/** Watch's epoch (a UUID is 36). */
export const MAX_EPOCH_CHARS = 64;

/** Capacity of one registry; beyond it RegisterVm / RegisterHypervisor get RESOURCE_EXHAUSTED. */
export const MAX_VMS = 100_000;
export const MAX_HYPERVISORS = 10_000;

/** ListVms: items per page when page_size is 0, the largest page_size, and the bytes of records in one page. */
export const DEFAULT_PAGE_SIZE = 500;
export const MAX_PAGE_SIZE = 1_000;
export const MAX_PAGE_BYTES = 1024 * 1024;
export const MAX_PAGE_TOKEN_CHARS = 1_024;

/**
 * The largest request the VM manager's own gRPC server accepts. The largest
 * valid one is a RegisterVm at every bound, about 8 KiB; a request between
 * that and this limit is decoded and refused naming the field.
 */
export const MAX_REQUEST_BYTES = 64 * 1024;

export const utf8Bytes = (text: string): number => Buffer.byteLength(text, 'utf8');

/** A value for an error message: strings quoted and cut to 64 characters (a 4 MB value must not come back in the reply or the log). */
export function show(value: unknown): string {
  if (typeof value !== 'string') return String(value);
  if (value.length <= 64) return JSON.stringify(value);
  return `${JSON.stringify(value.slice(0, 64))}… (${value.length} characters)`;
}
