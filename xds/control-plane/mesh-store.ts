// The mesh as the control plane holds it: the declarative config (services,
// routes) in its YAML shape, changed by the config API, validated as a whole
// on every change (a change that would make it invalid is refused and changes
// nothing), optionally written to a file so a restart keeps API changes.

import { EventEmitter } from 'node:events';
import { existsSync } from 'node:fs';
import { readFile, rename, writeFile } from 'node:fs/promises';
import { stringify } from 'yaml';
import { parseYamlText } from '../../proxy/config/load.js';
import { parseMeshConfig } from './mesh.js';
import type { MeshConfig } from './types.js';

/** A service or route as written in the YAML (snake_case). */
export type RawEntry = { name: string } & Record<string, unknown>;

export interface RawMesh {
  services: RawEntry[];
  routes: RawEntry[];
}

/** Emits 'change' (MeshConfig) after every accepted change. */
export class MeshStore extends EventEmitter {
  private raw: RawMesh;
  private current: MeshConfig;

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
    if (path === undefined) return new MeshStore({ services: [], routes: [] }, options.statePath, 'mesh config');
    const data = (parseYamlText(await readFile(path, 'utf8'), path) ?? {}) as Partial<RawMesh>;
    // The whole file is validated (an unknown top-level key is a problem), then kept in the shape the API edits.
    return new MeshStore({ ...data, services: data.services ?? [], routes: data.routes ?? [] }, options.statePath, path);
  }

  static fromConfig(raw: Partial<RawMesh>): MeshStore {
    return new MeshStore({ services: raw.services ?? [], routes: raw.routes ?? [] }, undefined, 'mesh config');
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

  /** Adds or replaces (by name); throws ConfigError (nothing changed) if the mesh would be invalid. */
  async put(kind: keyof RawMesh, entry: RawEntry): Promise<void> {
    const list = this.raw[kind].filter((e) => e.name !== entry.name);
    const index = this.raw[kind].findIndex((e) => e.name === entry.name);
    list.splice(index === -1 ? list.length : index, 0, entry);
    await this.replace({ ...this.raw, [kind]: list });
  }

  /** Removes by name; false if there was none. Throws ConfigError if the rest would be invalid (a route still names the service). */
  async delete(kind: keyof RawMesh, name: string): Promise<boolean> {
    if (!this.raw[kind].some((e) => e.name === name)) return false;
    await this.replace({ ...this.raw, [kind]: this.raw[kind].filter((e) => e.name !== name) });
    return true;
  }

  private async replace(next: RawMesh): Promise<void> {
    const config = parseMeshConfig(next, 'the changed mesh');
    if (this.statePath !== undefined) {
      const tmp = `${this.statePath}.tmp`;
      await writeFile(tmp, stringify(next), { mode: 0o600 });
      await rename(tmp, this.statePath);
    }
    this.raw = next;
    this.current = config;
    this.emit('change', config);
  }
}
