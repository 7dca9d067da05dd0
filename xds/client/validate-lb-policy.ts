// A Cluster's load balancing policy, as the sidecar runs it: round robin, or
// least_request with two choices (proxy/upstream/least-request.ts). As in
// Envoy, load_balancing_policy, when set, wins over lb_policy and its first
// policy the sidecar knows is taken: the control plane lists a fallback after
// least_request for gRPC xDS clients, which have none (translate.ts).

import { TYPE_URLS, unpackAny, type Cluster__Output } from '../envoy/proto.js';
import { LEAST_REQUEST_CHOICES } from '../envoy/names.js';
import type { UInt32Value__Output } from '../generated/envoy/google/protobuf/UInt32Value.js';

type Report = (path: string, message: string) => void;

/** What a cluster's HTTP requests balance by (L4 connections always go round robin). */
export type LbPolicy = 'round_robin' | 'least_request';

/** Only two choices are implemented: any other count would balance differently from what the control plane asked. */
function choiceCount(count: UInt32Value__Output | null | undefined, path: string, report: Report): void {
  if (count && count.value !== LEAST_REQUEST_CHOICES) report(path, `unsupported choice count ${count.value} (only ${LEAST_REQUEST_CHOICES})`);
}

/** The policy of `c`, or undefined after reporting why it cannot be run. */
export function clusterLbPolicy(c: Cluster__Output, report: Report): LbPolicy | undefined {
  const listed = c.load_balancing_policy?.policies ?? [];
  if (listed.length > 0) {
    for (const [i, entry] of listed.entries()) {
      const config = entry.typed_extension_config?.typed_config;
      const at = `load_balancing_policy.policies[${i}].typed_extension_config.typed_config`;
      if (config?.type_url === TYPE_URLS.RoundRobin) return 'round_robin';
      if (config?.type_url !== TYPE_URLS.LeastRequest) continue;
      try {
        choiceCount(unpackAny(config, TYPE_URLS.LeastRequest).choice_count, `${at}.choice_count`, report);
      } catch (err) {
        report(at, err instanceof Error ? err.message : String(err));
        return undefined;
      }
      return 'least_request';
    }
    report('load_balancing_policy.policies', `lists no policy the sidecar runs (only ${TYPE_URLS.LeastRequest} and ${TYPE_URLS.RoundRobin})`);
    return undefined;
  }
  if (c.lb_policy === 'ROUND_ROBIN') return 'round_robin';
  if (c.lb_policy === 'LEAST_REQUEST') {
    choiceCount(c.least_request_lb_config?.choice_count, 'least_request_lb_config.choice_count', report);
    return 'least_request';
  }
  report('lb_policy', `unsupported load balancing policy ${JSON.stringify(c.lb_policy)} (only ROUND_ROBIN and LEAST_REQUEST)`);
  return undefined;
}
