// The composition root of the data plane's roles: a sidecar or a host relay
// with the clients its config asks for, made from xds/ (the VM manager's gRPC
// client, the ADS client). The data plane itself never imports xds/.
//
// The client modules are loaded with a dynamic import, and only when the
// config names a VM manager or a control plane: a sidecar with static
// listeners does not load gRPC and protobuf at all.

import type { HostRelayConfig } from '../config/relay.js';
import type { ControlTlsFiles, SidecarConfig } from '../config/types.js';
import { silentLogger, type Logger } from '../runtime/log.js';
import type { ControlTransport } from '../../xds/security/transport.js';
import type { ConfigSourceFactory } from '../dynamic/types.js';
import { HostRelay } from '../host-relay.js';
import type { VmManagerApi } from '../resolve/types.js';
import type { ServerOptions } from '../server.js';
import { Sidecar, type OwnedClient } from '../sidecar.js';

/**
 * How the control-plane clients talk: mutual TLS with the identity files of
 * the config's tls: section (polled for rotation), or plain text without one.
 */
async function controlTransport(files: ControlTlsFiles | null, logger: Logger | undefined): Promise<ControlTransport> {
  if (files === null) return { insecure: true };
  const { FileCertificateSource } = await import('../identity/certificate-files.js');
  return { source: await FileCertificateSource.open(files, { logger: logger ?? silentLogger() }) };
}

/** A gRPC client to the VM manager at `address`, owned (closed) by the server that uses it. */
async function vmManagerClient(address: string, transport: ControlTransport): Promise<OwnedClient<VmManagerApi>> {
  const { VmManagerClient } = await import('../../xds/vm-manager/client.js');
  return { client: new VmManagerClient(address, { transport }), closeOnStop: true };
}

async function adsConfigSource(transport: ControlTransport): Promise<ConfigSourceFactory> {
  const { AdsClient } = await import('../../xds/client/ads-client.js');
  return (init) => new AdsClient({ ...init, transport });
}

export interface ProxyClients {
  /** A VM manager to use instead of a gRPC client to vm_manager.address (the demo runs one in process). */
  vmManager?: OwnedClient<VmManagerApi>;
}

export async function createSidecar(config: SidecarConfig, options: ServerOptions & ProxyClients = {}): Promise<Sidecar> {
  const transport = config.vmManager || config.xds ? await controlTransport(config.controlTls, options.logger) : undefined;
  const vmManager = options.vmManager ?? (config.vmManager ? await vmManagerClient(config.vmManager.address, transport!) : undefined);
  const configSource = config.xds ? await adsConfigSource(transport!) : undefined;
  return new Sidecar(config, { ...options, ...(vmManager && { vmManager }), ...(configSource && { configSource }) });
}

export async function createHostRelay(config: HostRelayConfig, options: ServerOptions & ProxyClients = {}): Promise<HostRelay> {
  const vmManager = options.vmManager ?? (config.vmManager ? await vmManagerClient(config.vmManager.address, await controlTransport(config.controlTls, options.logger)) : undefined);
  return new HostRelay(config, { ...options, ...(vmManager && { vmManager }) });
}
