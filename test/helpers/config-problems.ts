import { parseSidecarConfig } from '../../proxy/config/load.js';
import { ConfigError } from '../../proxy/runtime/config-file.js';
import { parseMeshConfig } from '../../xds/control-plane/mesh.js';

/** Every problem `parse` finds in `data` (throws if it accepts it). */
function problemsOf(parse: (data: unknown) => unknown, what: string, data: unknown): string[] {
  try {
    parse(data);
  } catch (err) {
    if (err instanceof ConfigError) return err.problems;
    throw err;
  }
  throw new Error(`${what} was accepted`);
}

/** Every problem parseMeshConfig finds in `data` (throws if it accepts it). */
export const meshProblems = (data: unknown): string[] => problemsOf(parseMeshConfig, 'mesh config', data);

/** Every problem parseSidecarConfig finds in `data` (throws if it accepts it). */
export const sidecarProblems = (data: unknown): string[] => problemsOf(parseSidecarConfig, 'config', data);
