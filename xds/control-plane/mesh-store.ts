// The mesh as the control plane holds it: the declarative config (services,
// routes, policies, peer authentication) in its YAML shape, kept in a store (xds/store/: memory, the mesh
// state file, or etcd shared by replicas), changed by the config API and
// validated as a whole on every change (a change that would make it invalid
// is refused and changes nothing).
//
// In the store each service, route, policy and peer authentication is a record (`/vsockmesh/mesh/services/web`,
// its YAML entry as JSON), and `/vsockmesh/mesh/changed` is rewritten by every
// change. A change is one transaction that checks that key's mod revision (no
// one changed the mesh since the view it was validated against) and, when the
// caller gave one, the entry's own mod revision (compare-and-swap: two
// operators editing the same service, one wins, the other gets ABORTED). When
// only the mesh moved on, the change is validated again against the new mesh
// and retried. A change resolves once it is durable in the store and visible
// here; the changes of other replicas arrive through a watch.
//
// Changes from this process run one at a time (a queue). Entries are listed
// in the order they were created (a replaced entry keeps its place).
//
// A store without `changed` holds no mesh yet: the mesh file is written to it
// in chunks etcd takes with its default limits (xds/store/seed.ts, shared
// with the VM registry: one replica claims the seed, the last chunk writes
// `changed`; replicas starting meanwhile wait for it, and one with a mesh
// file takes over from a seeder that died).
//
// etcd out of reach: at start, the mesh is read again after 250 ms doubling
// to 5 s until it is (until then there is no mesh: `loaded` is false and
// nothing is served); later, the mesh last read stays in service while the
// watch reconnects, and a watch that ends (etcd cancelled it, or compacted
// past it) is followed by reading the mesh again with the same backoff until
// the store answers, then a new watch from there. Either way the store is not ready (notReady() says why),
// changes are refused with UNAVAILABLE and 'health' is emitted on each turn.

import { EventEmitter } from 'node:events';
import { readFile } from 'node:fs/promises';
import { ConfigError, parseYamlText } from '../../proxy/runtime/config-file.js';
import { VsockmeshError } from '../../proxy/runtime/errors.js';
import { silentLogger, type Logger } from '../../proxy/runtime/log.js';
import { FileStore } from '../store/file-store.js';
import { nextSeedChange, readSeedMarker, readSeedOwner, SEED_STALL_MS, seedKeys, seedOwnerName, writeSeed } from '../store/seed.js';
import { MemoryStore } from '../store/memory-store.js';
import { PrefixFollower } from '../store/prefix-follower.js';
import { StoreUnavailableError, type Store, type StoreEvent, type StoreRecord } from '../store/store.js';
import { MAX_MESH_FILE_BYTES, quoteBounded } from './bounds.js';
import { parseMeshConfig } from './mesh.js';
import type { MeshConfig } from './types.js';

/** A service or route as written in the YAML (snake_case). */
export type RawEntry = { name: string } & Record<string, unknown>;

export interface RawMesh {
  services: RawEntry[];
  routes: RawEntry[];
  policies: RawEntry[];
  peer_authentication: RawEntry[];
}

export const MESH_PREFIX = '/vsockmesh/mesh/';
/** Rewritten by every change: its mod revision is the mesh's. */
const CHANGED_KEY = `${MESH_PREFIX}changed`;
const KINDS = ['services', 'routes', 'policies', 'peer_authentication'] as const;
/** A change retried this many times while other replicas keep changing the mesh gives up with ABORTED. */
const MAX_ATTEMPTS = 16;

/** The entry is not at the mod revision the change expected: someone else changed (or removed) it. */
export class MeshChangeConflictError extends VsockmeshError {
  constructor(what: string, expected: number, now: number) {
    super(
      'ABORTED',
      now === 0
        ? `not applied: ${what} no longer exists (the change expected it at revision ${expected}): read it again and retry`
        : `not applied: ${what} was changed by someone else (now at revision ${now}, the change expected ${expected}): read it again and retry`,
    );
  }
}

interface Entry {
  raw: RawEntry;
  createRevision: number;
  modRevision: number;
}

/** An entry as stored, with the revision of its last change (the compare-and-swap token). */
export type StoredEntry = RawEntry & { modRevision: number };

const entryKey = (kind: keyof RawMesh, name: string): string => `${MESH_PREFIX}${kind}/${name}`;
const SINGULAR: Record<keyof RawMesh, string> = { services: 'service', routes: 'route', policies: 'policy', peer_authentication: 'peer authentication' };
const what = (kind: keyof RawMesh, name: string): string => `${SINGULAR[kind]} ${quoteBounded(name)}`;

/**
 * Emits 'change' (MeshConfig) after every change, this process's once durable, another replica's once seen;
 * 'health' when the store goes out of reach or comes back (see notReady()).
 */
export class MeshStore extends EventEmitter {
  private entries: Record<keyof RawMesh, Map<string, Entry>> = emptyEntries();
  private current: MeshConfig;
  /** The mod revision of CHANGED_KEY in the view (0: the store holds no mesh yet). */
  private changedRevision = 0;
  /** The store revision the view is as of. */
  private revision = 0;
  /** The tail of the change queue (never rejects). */
  private writes: Promise<unknown> = Promise.resolve();
  /** False until the mesh was read from the store (etcd out of reach at start). */
  private read = true;
  /** The watch on the mesh, what follows a watch that ends, and whether the store answers. */
  private readonly follower: PrefixFollower;

  /** Throws ConfigError listing every problem of the records (by path, named after `source`). */
  private constructor(
    readonly store: Store,
    records: StoreRecord[],
    revision: number,
    source: string,
    private readonly logger?: Logger,
  ) {
    super();
    this.follower = new PrefixFollower(store, MESH_PREFIX, {
      revision: () => this.revision,
      onEvents: (events) => this.applyEvents(events),
      onListed: (listed, at) => {
        this.reload(listed, at);
        this.follower.answered();
      },
      onReadinessChange: (unavailable) => {
        if (unavailable === null) this.logger?.info({ revision: this.revision }, 'mesh store reachable again: ready');
        else this.logger?.warn({ reason: 'mesh_store_unavailable', error: unavailable, revision: this.revision }, `mesh store out of reach (${unavailable}): serving the mesh as of revision ${this.revision}, refusing changes, reconnecting`);
        this.emit('health');
      },
      // Compacted past the view (this replica was cut off long enough): read at once. Any other end (etcd
      // cancelled the watch, the store is gone): not ready, the mesh read again after a backoff.
      endedReason: (err) => `watch ended: ${err.message}`,
      onWatchEnded: (err, compacted) =>
        this.logger?.warn({ reason: compacted ? 'mesh_watch_compacted' : 'mesh_watch_failed', error: err.message }, `mesh store watch ended (${err.message}): reading the mesh again`),
      onListFailed: (err, delay) =>
        this.logger?.warn({ reason: 'mesh_store_unavailable', error: err.message, retry_ms: delay }, `cannot read the mesh from the store (${err.message}): serving the mesh as of revision ${this.revision}, retrying in ${delay} ms`),
    });
    this.load(records, revision);
    this.current = parseMeshConfig(this.raw(), source);
  }

  /**
   * The mesh in `store`, else in the mesh state file (`statePath`, a file store), else in memory;
   * a store that holds no mesh yet gets the mesh file's (`meshPath`), or an empty one.
   */
  static async open(options: { meshPath?: string; statePath?: string; store?: Store; logger?: Logger }): Promise<MeshStore> {
    const store =
      options.store ??
      (options.statePath !== undefined ? await FileStore.open(options.statePath, { what: 'mesh state file', legacy: (text) => legacyRecords(options.statePath!, text) }) : new MemoryStore());
    // Read first: a mesh file that breaks a bound does not start the control plane, whether or not it seeds.
    const seed: Seed = { mesh: options.meshPath !== undefined ? parseMeshText(options.meshPath, await readFile(options.meshPath, 'utf8')) : emptyMesh(), fromFile: options.meshPath !== undefined, logger: options.logger };
    const source = store.kind === 'etcd' ? 'the mesh in etcd' : (options.statePath ?? options.meshPath ?? 'mesh config');
    let listed: { records: StoreRecord[]; revision: number };
    try {
      listed = await readOrSeed(store, seed);
    } catch (err) {
      // Only etcd can be out of reach for a while; a file that cannot be read is an input error.
      if (store.kind !== 'etcd' || !(err instanceof StoreUnavailableError)) throw err;
      const mesh = new MeshStore(store, [], 0, source, options.logger);
      mesh.read = false;
      mesh.follower.unavailable = err.message;
      mesh.readLater(seed);
      return mesh;
    }
    const mesh = new MeshStore(store, listed.records, listed.revision, source, options.logger);
    mesh.follower.follow();
    return mesh;
  }

  /** A mesh in memory only (tests, the demo). */
  static fromConfig(raw: Partial<RawMesh>): MeshStore {
    const seed = withKinds(raw);
    const records = [...seedPuts(seed), { key: CHANGED_KEY, value: 'seed' }].map((p) => ({ ...p, createRevision: 1, modRevision: 1, lease: '' }));
    const store = new MemoryStore({ epoch: 'mesh', revision: 1, records, leases: [] });
    return new MeshStore(store, records, 1, 'mesh config');
  }

  get config(): MeshConfig {
    return this.current;
  }

  /** False until the mesh was read from the store: there is nothing to serve yet. */
  get loaded(): boolean {
    return this.read;
  }

  /** Why the mesh is not ready (the store is out of reach), or undefined when it is. */
  notReady(): string | undefined {
    const unavailable = this.follower.unavailable;
    if (!this.read) return `mesh store unavailable, no mesh read yet (retrying): ${unavailable ?? ''}`;
    if (unavailable !== null) return `mesh store unavailable, serving the mesh as of revision ${this.revision} (reconnecting): ${unavailable}`;
    return undefined;
  }

  rawServices(): StoredEntry[] {
    return this.stored('services');
  }

  rawRoutes(): StoredEntry[] {
    return this.stored('routes');
  }

  rawPolicies(): StoredEntry[] {
    return this.stored('policies');
  }

  rawPeerAuthentication(): StoredEntry[] {
    return this.stored('peer_authentication');
  }

  /**
   * Adds or replaces (by name) and resolves with the entry as stored, once durable and visible.
   * `expectedRevision` > 0: only if the entry is still at that mod revision (else MeshChangeConflictError, ABORTED).
   * Rejects with ConfigError if the mesh would be invalid, UNAVAILABLE if the store cannot take it (nothing changed either way).
   */
  put(kind: keyof RawMesh, entry: RawEntry, expectedRevision = 0): Promise<StoredEntry> {
    return this.change(kind, entry.name, expectedRevision, () => entry).then((revision) => ({ ...entry, modRevision: revision }));
  }

  /** Removes by name; false if there was none. Rejects as put() does (e.g. a route still names the service). */
  async delete(kind: keyof RawMesh, name: string, expectedRevision = 0): Promise<boolean> {
    return (await this.change(kind, name, expectedRevision, () => undefined)) !== 0;
  }

  /** Stops following the store and closes it. */
  async close(): Promise<void> {
    this.follower.close();
    await this.writes;
    await this.store.close();
  }

  private stored(kind: keyof RawMesh): StoredEntry[] {
    return ordered(this.entries[kind]).map((e) => ({ ...e.raw, modRevision: e.modRevision }));
  }

  private raw(): RawMesh {
    const mesh = emptyMesh();
    for (const kind of KINDS) mesh[kind] = ordered(this.entries[kind]).map((e) => e.raw);
    return mesh;
  }

  /**
   * Queues the change of one entry (`next`: its new value, undefined to remove it) and resolves with the
   * revision it was applied at (0: a removal of an entry that was not there).
   */
  private change(kind: keyof RawMesh, name: string, expectedRevision: number, next: () => RawEntry | undefined): Promise<number> {
    const run = this.writes.then(async () => {
      // Known to fail: refused at once, saying what is served meanwhile (a commit would only time out or be refused).
      const why = this.notReady();
      if (why !== undefined) throw new StoreUnavailableError(`not applied: ${why}: retry once the control plane is ready`);
      for (let attempt = 1; ; attempt++) {
        const entry = this.entries[kind].get(name);
        const now = entry?.modRevision ?? 0;
        if (expectedRevision > 0 && now !== expectedRevision) throw new MeshChangeConflictError(what(kind, name), expectedRevision, now);
        const value = next();
        if (value === undefined && entry === undefined) return 0;
        const mesh = this.raw();
        const list = mesh[kind].filter((e) => e.name !== name);
        if (value !== undefined) list.splice(entry === undefined ? list.length : mesh[kind].findIndex((e) => e.name === name), 0, value);
        const config = parseMeshConfig({ ...mesh, [kind]: list }, 'the changed mesh');
        const key = entryKey(kind, name);
        const result = await this.store.commit({
          checks: [
            { key: CHANGED_KEY, modRevision: this.changedRevision },
            { key, modRevision: now },
          ],
          puts: [...(value === undefined ? [] : [{ key, value: JSON.stringify(value) }]), { key: CHANGED_KEY, value: key }],
          ...(value === undefined && { deletes: [key] }),
        });
        if (result.ok) {
          // Nothing changed the mesh between the view and this revision: the view plus this change is the mesh at it.
          if (value === undefined) this.entries[kind].delete(name);
          else this.entries[kind].set(name, { raw: value, createRevision: entry?.createRevision ?? result.revision, modRevision: result.revision });
          this.changedRevision = result.revision;
          this.revision = Math.max(this.revision, result.revision);
          this.current = config;
          this.emit('change', config);
          return result.revision;
        }
        if (attempt >= MAX_ATTEMPTS) throw new VsockmeshError('ABORTED', `not applied: the mesh kept changing under ${what(kind, name)} (${MAX_ATTEMPTS} attempts): retry`);
        // Someone else changed the mesh: validate again against what it is now.
        const listed = await this.store.list(MESH_PREFIX);
        this.reload(listed.records, listed.revision);
      }
    });
    this.writes = run.catch(() => undefined);
    return run;
  }

  /** Reads (or seeds) the mesh again after a backoff until the store answers; then follows it. */
  private readLater(seed: Seed): void {
    const delay = this.follower.nextDelay();
    const unavailable = this.follower.unavailable;
    this.logger?.warn({ reason: 'mesh_store_unavailable', error: unavailable, retry_ms: delay }, `cannot read the mesh from the store (${unavailable}): not ready, retrying in ${delay} ms`);
    this.follower.later(delay, () => {
      readOrSeed(this.store, seed).then(
        (listed) => {
          if (this.follower.closed) return;
          this.load(listed.records, listed.revision);
          this.read = true;
          this.follower.answered();
          this.publish();
          this.follower.follow();
        },
        (err: unknown) => {
          if (this.follower.closed) return;
          this.follower.unavailable = (err as Error).message;
          this.readLater(seed);
        },
      );
    });
  }

  private applyEvents(events: StoreEvent[]): void {
    const revision = events[0]!.revision;
    if (revision <= this.revision) return;
    for (const event of events) {
      const parsed = parseKey(event.type === 'put' ? event.record.key : event.key);
      if (parsed === 'changed') this.changedRevision = revision;
      if (parsed === undefined || parsed === 'changed') continue;
      if (event.type === 'delete') this.entries[parsed.kind].delete(parsed.name);
      else this.entries[parsed.kind].set(parsed.name, toEntry(event.record));
    }
    this.revision = revision;
    this.publish();
  }

  private reload(records: StoreRecord[], revision: number): void {
    if (revision <= this.revision) return;
    this.load(records, revision);
    this.publish();
  }

  private load(records: StoreRecord[], revision: number): void {
    this.entries = emptyEntries();
    this.changedRevision = 0;
    for (const record of records) {
      const parsed = parseKey(record.key);
      if (parsed === 'changed') this.changedRevision = record.modRevision;
      else if (parsed !== undefined) this.entries[parsed.kind].set(parsed.name, toEntry(record));
    }
    this.revision = revision;
  }

  /** The view's mesh as the served config; a mesh another writer left invalid is logged and the last good one kept. */
  private publish(): void {
    try {
      this.current = parseMeshConfig(this.raw(), 'the mesh in the store');
    } catch (err) {
      this.logger?.error({ reason: 'invalid_mesh_in_store', error: (err as Error).message }, 'the mesh in the store is invalid: serving the last valid one');
      return;
    }
    this.emit('change', this.current);
  }
}

/** What a store without a mesh gets: the mesh file's (fromFile), or an empty mesh. */
interface Seed {
  mesh: RawMesh;
  fromFile: boolean;
  logger: Logger | undefined;
}

const SEED_KEYS = seedKeys(MESH_PREFIX);

/**
 * The mesh records in `store`; a store that holds no mesh yet gets `seed`
 * first, in chunks (unless another replica claims the seed first: then its
 * mesh is the one, waited for until it is whole).
 */
async function readOrSeed(store: Store, seed: Seed): Promise<{ records: StoreRecord[]; revision: number }> {
  const self = seedOwnerName();
  let waiting = '';
  for (;;) {
    const listed = await store.list(MESH_PREFIX);
    const marker = readSeedMarker(listed.records.find((r) => r.key === SEED_KEYS.seed));
    if (listed.records.some((r) => r.key === CHANGED_KEY) || marker?.state === 'seeded') return listed;
    const owner = readSeedOwner(listed.records.find((r) => r.key === SEED_KEYS.owner));
    // A first seed (none claimed), or a takeover from a seeder that died (its owner key gone) by a replica with the mesh file.
    if (marker === undefined || (owner === undefined && seed.fromFile)) {
      if (marker !== undefined) seed.logger?.warn({ reason: 'seed_taken_over', owner: marker.owner }, `replica ${marker.owner} went away while seeding the mesh: this replica writes what is not there yet`);
      const wanted = seedPuts(seed.mesh).map((p) => ({ ...p, leaseTtlMs: 0 }));
      const written = await writeSeed({ store, prefix: MESH_PREFIX, self, previous: marker, firstChecks: [{ key: CHANGED_KEY, modRevision: 0 }], wanted, finalPuts: [{ key: CHANGED_KEY, value: 'seed' }], logger: seed.logger ?? silentLogger() });
      if (written.claimed) seed.logger?.info({ entries: wanted.length, written: written.written, transactions: written.transactions }, `mesh seeded in ${written.transactions} store transactions`);
      continue;
    }
    const why = owner === undefined ? `replica ${marker.owner} went away while seeding it, and only a replica with --mesh takes it over` : `replica ${owner} is seeding it`;
    if (why !== waiting) {
      waiting = why;
      seed.logger?.info({ owner: owner ?? marker.owner, revision: listed.revision }, `the mesh in the store is not whole yet (${why}): waiting before serving (at most ${SEED_STALL_MS / 1000} s without a change)`);
    }
    await nextSeedChange(store, MESH_PREFIX, listed.revision, `the mesh in the store is not whole (${why}), and nothing changed in ${SEED_STALL_MS / 1000} s: not serving a part of it`);
  }
}

function emptyMesh(): RawMesh {
  return { services: [], routes: [], policies: [], peer_authentication: [] };
}

/** `data` with every kind a list (a kind absent or empty in the YAML is none). */
function withKinds<T extends Partial<RawMesh>>(data: T): T & RawMesh {
  const mesh = { ...data } as T & RawMesh;
  for (const kind of KINDS) mesh[kind] = data[kind] ?? [];
  return mesh;
}

function emptyEntries(): Record<keyof RawMesh, Map<string, Entry>> {
  return { services: new Map(), routes: new Map(), policies: new Map(), peer_authentication: new Map() };
}

function ordered(entries: Map<string, Entry>): Entry[] {
  return [...entries.values()].sort((a, b) => a.createRevision - b.createRevision || (a.raw.name < b.raw.name ? -1 : a.raw.name > b.raw.name ? 1 : 0));
}

function parseKey(key: string): { kind: keyof RawMesh; name: string } | 'changed' | undefined {
  if (key === CHANGED_KEY) return 'changed';
  for (const kind of KINDS) if (key.startsWith(`${MESH_PREFIX}${kind}/`)) return { kind, name: key.slice(MESH_PREFIX.length + kind.length + 1) };
  return undefined;
}

function toEntry(record: StoreRecord): Entry {
  // The value is validated with the whole mesh (parseMeshConfig); a value that is not JSON is an entry no service can match.
  let raw: RawEntry;
  try {
    raw = JSON.parse(record.value) as RawEntry;
  } catch {
    raw = { name: `(unreadable record ${record.key})` };
  }
  return { raw, createRevision: record.createRevision, modRevision: record.modRevision };
}

/**
 * A mesh's records in name order per kind: entries list by creation, then
 * name, so a seed written in chunks lists in name order as one transaction did
 * (file order would interleave with the chunk boundaries).
 */
function seedPuts(mesh: RawMesh): Array<{ key: string; value: string }> {
  const byName = (a: RawEntry, b: RawEntry): number => (String(a.name) < String(b.name) ? -1 : String(a.name) > String(b.name) ? 1 : 0);
  return KINDS.flatMap((kind) => [...mesh[kind]].sort(byName).map((e) => ({ key: entryKey(kind, String(e.name)), value: JSON.stringify(e) })));
}

/** A mesh file: bounded, YAML, every problem named (an unknown top-level key is one). */
function parseMeshText(path: string, text: string): RawMesh {
  const bytes = Buffer.byteLength(text);
  if (bytes > MAX_MESH_FILE_BYTES) throw new ConfigError(path, [`(file): ${bytes} bytes, more than the ${MAX_MESH_FILE_BYTES} a mesh file may take`]);
  const data = (parseYamlText(text, path) ?? {}) as Partial<RawMesh>;
  const mesh = withKinds(data);
  parseMeshConfig(mesh, path);
  return mesh;
}

/** A mesh state file of earlier versions (the mesh as YAML): its entries, validated, as the store's first records. */
function legacyRecords(path: string, text: string): Array<{ key: string; value: string }> {
  return [...seedPuts(parseMeshText(path, text)), { key: CHANGED_KEY, value: 'legacy' }];
}
