// ListVms in pages: hypervisors by id, then VMs by id, a page bounded by a
// count and by bytes. The page token names the last item sent (keyset
// pagination), so a page never repeats or skips an item that stayed in the
// registry, whatever changed between two pages; pages are not one snapshot
// (each carries its own revision): Watch from 0 is the consistent view.

import { DEFAULT_PAGE_SIZE, MAX_ID_CHARS, MAX_PAGE_BYTES, MAX_PAGE_SIZE, MAX_PAGE_TOKEN_CHARS } from './bounds.js';
import { ValidationError, type ListPosition, type Registry } from './registry.js';
import type { HypervisorRecord, VmRecord } from '../../proxy/resolve/types.js';

export interface ListPage {
  hypervisors: HypervisorRecord[];
  vms: VmRecord[];
  revision: number;
  /** '' on the last page. */
  nextPageToken: string;
}

const TOKEN_RULE = 'not a page token from ListVms (send the next_page_token of the previous page, or nothing for the first)';

export function encodePageToken(p: ListPosition): string {
  return Buffer.from(JSON.stringify([p.kind === 'vm' ? 'v' : 'h', p.id]), 'utf8').toString('base64url');
}

export function decodePageToken(token: string): ListPosition | null {
  if (token === '') return null;
  if (token.length > MAX_PAGE_TOKEN_CHARS) throw new ValidationError('page_token', `is ${token.length} characters, at most ${MAX_PAGE_TOKEN_CHARS}`);
  let value: unknown;
  try {
    value = JSON.parse(Buffer.from(token, 'base64url').toString('utf8'));
  } catch {
    throw new ValidationError('page_token', TOKEN_RULE);
  }
  if (!Array.isArray(value) || value.length !== 2 || (value[0] !== 'v' && value[0] !== 'h') || typeof value[1] !== 'string' || value[1].length > MAX_ID_CHARS) {
    throw new ValidationError('page_token', TOKEN_RULE);
  }
  return { kind: value[0] === 'v' ? 'vm' : 'hypervisor', id: value[1] };
}

/** A record's size in a page: its JSON, at least its protobuf encoding (keys spelt out where protobuf has 1-byte tags). */
const recordBytes = (record: HypervisorRecord | VmRecord): number => Buffer.byteLength(JSON.stringify(record), 'utf8');

/** One page: up to `pageSize` items (0: the default) and MAX_PAGE_BYTES of records, at least one item. */
export function listPage(registry: Registry, request: { pageSize: number; pageToken: string }): ListPage {
  if (!Number.isInteger(request.pageSize) || request.pageSize < 0 || request.pageSize > MAX_PAGE_SIZE) {
    throw new ValidationError('page_size', `must be 0 (the default, ${DEFAULT_PAGE_SIZE}) or at most ${MAX_PAGE_SIZE} (got ${request.pageSize})`);
  }
  const limit = request.pageSize === 0 ? DEFAULT_PAGE_SIZE : request.pageSize;
  const page: ListPage = { hypervisors: [], vms: [], revision: registry.revision, nextPageToken: '' };
  let count = 0;
  let bytes = 0;
  let last: ListPosition | undefined;
  for (const item of registry.listAfter(decodePageToken(request.pageToken))) {
    const record = item.kind === 'vm' ? item.vm : item.hypervisor;
    const size = recordBytes(record);
    if (count === limit || (count > 0 && bytes + size > MAX_PAGE_BYTES)) {
      page.nextPageToken = encodePageToken(last!);
      break;
    }
    if (item.kind === 'vm') page.vms.push(item.vm);
    else page.hypervisors.push(item.hypervisor);
    last = item.kind === 'vm' ? { kind: 'vm', id: item.vm.vmId } : { kind: 'hypervisor', id: item.hypervisor.hypervisorId };
    count++;
    bytes += size;
  }
  return page;
}
