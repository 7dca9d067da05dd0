// Reading a sidecar or host-relay config: YAML (or JSON) text -> validated
// SidecarConfig / HostRelayConfig, or every problem with its path.

import { ConfigError, formatIssue, formatPath, parseYamlText, readConfigFile } from '../runtime/config-file.js';
import { hostRelayConfigSchema, type HostRelayConfig } from './relay.js';
import { crossReferences, sidecarConfigSchema } from './schema.js';
import type { SidecarConfig } from './types.js';

/** Validates already-parsed host-relay config data. */
export function parseHostRelayConfig(data: unknown, source = 'config'): HostRelayConfig {
  const result = hostRelayConfigSchema().safeParse(data ?? {});
  if (!result.success) throw new ConfigError(source, result.error.issues.map(formatIssue));
  return result.data;
}

/** Validates already-parsed data (from YAML, JSON or code). */
export function parseSidecarConfig(data: unknown, source = 'config'): SidecarConfig {
  const input = data ?? {};
  const result = sidecarConfigSchema().safeParse(input);
  const problems = result.success ? [] : result.error.issues.map(formatIssue);
  for (const issue of crossReferences(input)) problems.push(`${formatPath(issue.path)}: ${issue.message}`);
  if (problems.length > 0 || !result.success) throw new ConfigError(source, problems);
  return result.data;
}

export function parseSidecarConfigText(text: string, source = 'config'): SidecarConfig {
  return parseSidecarConfig(parseYamlText(text, source), source);
}

export async function loadSidecarConfig(path: string): Promise<SidecarConfig> {
  return parseSidecarConfigText(await readConfigFile(path), path);
}

export async function loadHostRelayConfig(path: string): Promise<HostRelayConfig> {
  const text = await readConfigFile(path);
  return parseHostRelayConfig(parseYamlText(text, path), path);
}
