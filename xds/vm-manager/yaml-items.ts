// A large YAML file of top-level lists (the inventory: hypervisors, then
// thousands of VMs) parsed one list item at a time. The yaml package's
// document of 10,000 VMs holds ~180 MiB (a node with its range per scalar)
// before the plain data is made of it; parsed item by item, only the data
// and one item's document are held at once. Only the plain block layout is
// split (column-0 keys, block sequences); anything else (flow style at the
// top, document markers, directives, an alias to an anchor of another item,
// any error) gives undefined and the caller parses the whole document, which
// also words every syntax error. Pure.

import { parseDocument } from 'yaml';

/** A top-level entry: its key and where its text starts; a block sequence also has where each item starts. */
interface Entry {
  key: string;
  start: number;
  /** Offsets of the sequence's items; undefined: the value is parsed with its key (inline, or not a block sequence). */
  items: number[] | undefined;
  /** The block sequence's indentation (its items' dash column). */
  indent: number;
}

const BLOCK_KEY = /^([A-Za-z_][A-Za-z0-9_-]*):[ \t]*(#.*)?\r?$/;
const INLINE_KEY = /^([A-Za-z_][A-Za-z0-9_-]*):[ \t]+\S/;
const ITEM = /^( *)-([ \t]|\r?$)/;

/** The top-level entries of a plain block layout, or undefined for any other layout. */
function entriesOf(text: string): Entry[] | undefined {
  const entries: Entry[] = [];
  const keys = new Set<string>();
  let current: Entry | undefined;
  for (let at = 0; at < text.length; ) {
    const eol = text.indexOf('\n', at);
    const next = eol === -1 ? text.length : eol + 1;
    const line = text.slice(at, eol === -1 ? text.length : eol);
    const content = line.trimStart();
    if (content === '' || content.startsWith('#')) {
      at = next;
      continue;
    }
    if (line.startsWith('\t') || /^(---|\.\.\.|%)/.test(line)) return undefined;
    const item = ITEM.exec(line);
    if (item !== null && current?.items !== undefined && (current.items.length === 0 || item[1]!.length === current.indent)) {
      if (current.items.length === 0) current.indent = item[1]!.length;
      current.items.push(at);
    } else if (line[0] !== ' ' && line[0] !== '-') {
      const block = BLOCK_KEY.exec(line);
      const key = block?.[1] ?? INLINE_KEY.exec(line)?.[1];
      if (key === undefined || keys.has(key)) return undefined;
      keys.add(key);
      current = { key, start: at, items: block ? [] : undefined, indent: 0 };
      entries.push(current);
    } else if (current === undefined) {
      return undefined;
    } else if (current.items?.length === 0) {
      // A block value that is not a sequence: parsed with its key.
      current.items = undefined;
    } else if (current.items !== undefined && line.length - content.length <= current.indent) {
      return undefined; // back left of the sequence without a key: not this layout
    }
    at = next;
  }
  return entries;
}

/** The plain data of one YAML fragment, or undefined when it has an error or a warning (an alias it lacks the anchor of throws). */
function plain(fragment: string): unknown {
  const doc = parseDocument(fragment, { prettyErrors: false });
  if (doc.errors.length > 0 || doc.warnings.length > 0) return undefined;
  try {
    return doc.toJS() as unknown;
  } catch {
    return undefined;
  }
}

/**
 * The data of `text` parsed list item by list item when it is a plain block
 * layout (what `parseDocument(text).toJS()` gives), or undefined: parse the
 * whole document instead.
 */
export function parseByItem(text: string): Record<string, unknown> | null | undefined {
  const entries = entriesOf(text);
  if (entries === undefined) return undefined;
  if (entries.length === 0) return null;
  const out: Record<string, unknown> = {};
  for (let e = 0; e < entries.length; e++) {
    const entry = entries[e]!;
    const entryEnd = entries[e + 1]?.start ?? text.length;
    if (entry.items === undefined || entry.items.length === 0) {
      const value = plain(text.slice(entry.start, entryEnd));
      if (value === null || typeof value !== 'object' || !(entry.key in value)) return undefined;
      out[entry.key] = (value as Record<string, unknown>)[entry.key];
      continue;
    }
    const list: unknown[] = [];
    for (let i = 0; i < entry.items.length; i++) {
      const value = plain(text.slice(entry.items[i], entry.items[i + 1] ?? entryEnd));
      if (!Array.isArray(value) || value.length !== 1) return undefined;
      list.push(value[0]);
    }
    out[entry.key] = list;
  }
  return out;
}
