import { ConfigError } from '../../proxy/runtime/config-file.js';
import { parseMeshConfig } from '../../xds/control-plane/mesh.js';

/** Every problem parseMeshConfig finds in `data` (throws if it accepts it). */
export function meshProblems(data: unknown): string[] {
  try {
    parseMeshConfig(data);
  } catch (err) {
    if (err instanceof ConfigError) return err.problems;
    throw err;
  }
  throw new Error('mesh config was accepted');
}
