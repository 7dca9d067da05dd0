// The mesh as the control plane holds it: the declarative config (services,
// routes) in its YAML shape, changed by the config API, validated as a whole
// on every change (a change that would make it invalid is refused and changes
// nothing), optionally written to a file so a restart keeps API changes.
//
// Changes run one at a time (a queue), each validated against the state the
// previous one left, written durably (own temporary file, fsync, rename,
// directory fsync), and only then applied in memory and emitted: a change
// that resolves is on disk and visible; one that rejects changed nothing.
// A compare-and-swap on a revision (etcd later) is one more check in change().

import { EventEmitter } from 'node:events';
import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { stringify } from 'yaml';
import { fileErrorText, writeFileDurably } from '../../proxy/runtime/durable-file.js';
import { ConfigError, parseYamlText } from '../../proxy/runtime/config-file.js';
import { VsockmeshError } from '../../proxy/runtime/errors.js';
import { MAX_MESH_FILE_BYTES } from './bounds.js';
import { parseMeshConfig } from './mesh.js';
import type { MeshConfig } from './types.js';

/** A service or route as written in the YAML (snake_case). */
export type RawEntry = { name: string } & Record<string, unknown>;

export interface RawMesh {
  services: RawEntry[];
  routes: RawEntry[];
  policies: RawEntry[];
}

/** The mesh state file could not be written: the change was not applied. */
export class MeshStateWriteError extends VsockmeshError {
  constructor(
    readonly path: string,
    cause: unknown,
  ) {
    super('UNAVAILABLE', `not applied: cannot write mesh state file: ${fileErrorText(cause)}`, { cause });
  }
}

/** Emits 'change' (MeshConfig) after every accepted change, once it is durable. */
export class MeshStore extends EventEmitter {
  private raw: RawMesh;
  private current: MeshConfig;
  /** The tail of the change queue (never rejects). */
  private writes: Promise<unknown> = Promise.resolve();

  /** Throws ConfigError listing every problem of `raw` (by path, named after `source`). */
  private constructor(
    raw: RawMesh,
    private readonly statePath: string | undefined,
    source: string,
  ) {
    super();
    this.raw = raw;
    this.current = parseMeshConfig(raw, source);
  }

  /** From the state file when it exists (it holds every API change), else from the mesh file, else empty. */
  static async open(options: { meshPath?: string; statePath?: string }): Promise<MeshStore> {
    const path = options.statePath !== undefined && existsSync(options.statePath) ? options.statePath : options.meshPath;
    if (path === undefined) return new MeshStore({ services: [], routes: [], policies: [] }, options.statePath, 'mesh config');
    const text = await readFile(path, 'utf8');
    const bytes = Buffer.byteLength(text);
    if (bytes > MAX_MESH_FILE_BYTES) throw new ConfigError(path, [`(file): ${bytes} bytes, more than the ${MAX_MESH_FILE_BYTES} a mesh file may take`]);
    const data = (parseYamlText(text, path) ?? {}) as Partial<RawMesh>;
    // The whole file is validated (an unknown top-level key is a problem), then kept in the shape the API edits.
    return new MeshStore({ ...data, services: data.services ?? [], routes: data.routes ?? [], policies: data.policies ?? [] }, options.statePath, path);
  }

  static fromConfig(raw: Partial<RawMesh>): MeshStore {
    return new MeshStore({ services: raw.services ?? [], routes: raw.routes ?? [], policies: raw.policies ?? [] }, undefined, 'mesh config');
  }

  get config(): MeshConfig {
    return this.current;
  }

  rawServices(): RawEntry[] {
    return this.raw.services.map((s) => ({ ...s }));
  }

  rawRoutes(): RawEntry[] {
    return this.raw.routes.map((r) => ({ ...r }));
  }

  rawPolicies(): RawEntry[] {
    return this.raw.policies.map((p) => ({ ...p }));
  }

  /**
   * Adds or replaces (by name) and resolves with the entry as stored, once durable and visible.
   * Rejects with ConfigError if the mesh would be invalid, MeshStateWriteError if it cannot be written (nothing changed either way).
   */
  put(kind: keyof RawMesh, entry: RawEntry): Promise<RawEntry> {
    return this.change((raw) => {
      const list = raw[kind].filter((e) => e.name !== entry.name);
      const index = raw[kind].findIndex((e) => e.name === entry.name);
      list.splice(index === -1 ? list.length : index, 0, entry);
      return { next: { ...raw, [kind]: list }, result: { ...entry } };
    });
  }

  /** Removes by name; false if there was none. Rejects as put() does (e.g. a route still names the service). */
  delete(kind: keyof RawMesh, name: string): Promise<boolean> {
    return this.change((raw) => {
      if (!raw[kind].some((e) => e.name === name)) return { result: false };
      return { next: { ...raw, [kind]: raw[kind].filter((e) => e.name !== name) }, result: true };
    });
  }

  /** Queues `edit`: it sees the state every earlier change left, and its `next` (if any) is validated, written, applied. */
  private change<T>(edit: (raw: RawMesh) => { next?: RawMesh; result: T }): Promise<T> {
    const run = this.writes.then(async () => {
      const { next, result } = edit(this.raw);
      if (next !== undefined) await this.replace(next);
      return result;
    });
    this.writes = run.catch(() => undefined);
    return run;
  }

  private async replace(next: RawMesh): Promise<void> {
    const config = parseMeshConfig(next, 'the changed mesh');
    if (this.statePath !== undefined) {
      try {
        await writeFileDurably(this.statePath, stringify(next));
      } catch (err) {
        throw new MeshStateWriteError(this.statePath, err);
      }
    }
    this.raw = next;
    this.current = config;
    this.emit('change', config);
  }
}
