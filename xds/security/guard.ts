// The one place a control API server applies authorization: a gRPC server
// interceptor. Before any handler runs, the caller's client certificate
// (verified by the TLS handshake) must be an X509-SVID of a mesh identity,
// else UNAUTHENTICATED; a method its role may never call is refused then too.
// Each request message is then checked with the facts it carries
// (request-facts.ts) before the handler sees it; a refusal ends the call with
// PERMISSION_DENIED and the reason, logged (sampled) and counted in
// vsockmesh_control_denied_total{role,method,reason}.

import * as grpc from '@grpc/grpc-js';
import type { PeerCertificate } from 'node:tls';
import { Counter, Gauge, type Registry as MetricsRegistry } from '../../proxy/runtime/prom-client.js';
import type { Logger } from '../../proxy/runtime/log.js';
import { RefusalLog } from '../../proxy/runtime/refusal-log.js';
import type { MeshIdentity } from '../../proxy/identity/spiffe.js';
import { ROLES, authorize, mayCallAnonymously, methodLabel, type Decision } from './authorize.js';
import { requestFacts, type VmLocator } from './request-facts.js';
import { VerifiedPeers } from './peer-verdicts.js';
import { bundleOf, type ControlTransport, type PeerVerdict } from './transport.js';

export interface GuardOptions {
  transport: ControlTransport;
  logger: Logger;
  /** Where vsockmesh_control_denied_total and vsockmesh_insecure go. */
  metrics: MetricsRegistry;
  /** Where the registry has a VM (for the host agent's rules); absent: this server has no registry. */
  vmHypervisor?: VmLocator;
  /** Server name in log lines (the `listener` of the sampled refusal log). */
  server: string;
  /** Wall-clock milliseconds (certificates carry wall-clock times). */
  now?: () => number;
}

/** The caller of a call, as far as the guard got. */
interface CallState {
  caller: MeshIdentity | null;
  spiffeId: string | null;
  refused: boolean;
}

export class ControlGuard {
  private readonly denied: Counter<'role' | 'method' | 'reason'>;
  private readonly refusals: RefusalLog;
  /** Callers' certificates already checked: a connection's calls check its leaf once. */
  private readonly verified = new VerifiedPeers();
  readonly secure: boolean;

  constructor(private readonly options: GuardOptions) {
    this.secure = !('insecure' in options.transport);
    const registers = [options.metrics];
    this.denied = new Counter({ name: 'vsockmesh_control_denied_total', help: 'Control API calls refused, by caller role (none: no valid identity), method and reason', labelNames: ['role', 'method', 'reason'], registers });
    const secure = this.secure;
    new Gauge({
      name: 'vsockmesh_insecure',
      help: '1 when the control APIs are served in plain text (--insecure): no caller is authenticated or authorized',
      registers,
      collect() {
        this.set(secure ? 0 : 1);
      },
    });
    this.refusals = new RefusalLog(options.logger);
    if (!secure) options.logger.warn({ reason: 'insecure', server: options.server }, `${options.server}: serving the control APIs in PLAIN TEXT (--insecure): any client that reaches the port can call every method`);
  }

  /** The interceptor for grpc.Server({ interceptors: [...] }); plain text: none. */
  interceptors(): grpc.ServerInterceptor[] {
    return this.secure ? [(descriptor, call) => this.intercept(descriptor.path, call)] : [];
  }

  stop(): void {
    this.refusals.flush();
  }

  private intercept(method: string, call: grpc.ServerInterceptingCallInterface): grpc.ServerInterceptingCall {
    const state: CallState = { caller: null, spiffeId: null, refused: false };
    const refuse = (code: grpc.status, role: string, reason: string, message: string): void => {
      state.refused = true;
      const label = methodLabel(method);
      this.denied.inc({ role, method: label, reason });
      this.refusals.warn({ listener: this.options.server, reason, role, method: label, spiffe_id: state.spiffeId, peer: call.getPeer() }, `${label} refused: ${message}`);
      call.sendStatus({ code, details: `${reason}: ${message}` });
    };
    const decide = (decision: Decision): boolean => {
      if (decision.allow) return true;
      if (state.caller === null) refuse(grpc.status.UNAUTHENTICATED, 'none', decision.reason, decision.message);
      else refuse(grpc.status.PERMISSION_DENIED, ROLES[state.caller.kind], decision.reason, decision.message);
      return false;
    };
    const listener = new grpc.ServerListenerBuilder()
      .withOnReceiveMetadata((metadata, next) => {
        const verdict = this.identify(call);
        if (verdict === 'insecure') return next(metadata);
        if (!verdict.ok) {
          // Without a certificate, only a call that may prove itself otherwise (Certify with a join token) goes on to its message.
          if (verdict.reason === 'no_certificate' && mayCallAnonymously(method)) return next(metadata);
          refuse(grpc.status.UNAUTHENTICATED, 'none', verdict.reason, verdict.message);
          return;
        }
        state.caller = verdict.identity;
        state.spiffeId = verdict.spiffeId;
        // Methods a role may never call are refused before their handler runs (a stream's handler starts here).
        const upfront = authorize(state.caller, method, {});
        if (!upfront.allow && (upfront.reason === 'role_not_allowed' || upfront.reason === 'unknown_method') && !decide(upfront)) return;
        next(metadata);
      })
      .withOnReceiveMessage((message, next) => {
        if (state.refused) return;
        const facts = requestFacts(method, message, this.options.vmHypervisor ?? (() => null));
        if (decide(authorize(state.caller, method, facts))) next(message);
      })
      .withOnReceiveHalfClose((next) => {
        if (!state.refused) next();
      })
      .build();
    return new grpc.ServerInterceptingCall(call, { start: (next) => next(listener) });
  }

  /** Who is calling (for a handler too: WhoAmI); 'insecure' on a plain-text server, where nobody is authenticated. */
  identify(call: { getAuthContext(): { sslPeerCertificate?: PeerCertificate | undefined } }): PeerVerdict | 'insecure' {
    const { transport } = this.options;
    if ('insecure' in transport) return 'insecure';
    return this.verified.verdict(call.getAuthContext().sslPeerCertificate, bundleOf(transport.source.current()), new Date((this.options.now ?? Date.now)()));
  }
}
