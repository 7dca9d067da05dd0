// The standard gRPC health service (grpc.health.v1.Health), for every server
// that has one (the VM manager's own, the control plane's): Check answers the
// status a service has now, Watch sends it and again on every changed().
// Which services exist and their status is the owner's decision (statusOf).

import * as grpc from '@grpc/grpc-js';
import type { HealthCheckRequest__Output } from './generated/grpc/health/v1/HealthCheckRequest.js';
import type { HealthCheckResponse } from './generated/grpc/health/v1/HealthCheckResponse.js';
import type { HealthHandlers } from './generated/grpc/health/v1/Health.js';
import { healthProto } from './proto.js';

export type HealthStatus = 'SERVING' | 'NOT_SERVING';

export class HealthService {
  private readonly watches = new Set<grpc.ServerWritableStream<HealthCheckRequest__Output, HealthCheckResponse>>();

  /** `statusOf(service)`: its status, undefined for a service this server does not have ('' is the whole server). */
  constructor(private readonly statusOf: (service: string) => HealthStatus | undefined) {}

  addTo(server: grpc.Server): void {
    server.addService(healthProto().grpc.health.v1.Health.service, this.handlers());
  }

  /** Tells every Watch the status its service has now. */
  changed(): void {
    for (const call of this.watches) call.write({ status: this.statusOf(call.request.service) ?? 'SERVICE_UNKNOWN' });
  }

  /** Ends every Watch stream (clients look elsewhere, or again later). */
  end(): void {
    for (const call of this.watches) call.end();
    this.watches.clear();
  }

  private handlers(): HealthHandlers {
    return {
      Check: (call, callback) => {
        const status = this.statusOf(call.request.service);
        if (status === undefined) callback({ code: grpc.status.NOT_FOUND, details: `unknown service "${call.request.service}"` });
        else callback(null, { status });
      },
      Watch: (call) => {
        this.watches.add(call);
        call.on('cancelled', () => this.watches.delete(call));
        call.write({ status: this.statusOf(call.request.service) ?? 'SERVICE_UNKNOWN' });
      },
    };
  }
}
