// The composition root of the data plane's roles: a sidecar or a host relay
// with the clients its config asks for, made from xds/ (the VM manager's gRPC
// client, the ADS client). The data plane itself never imports xds/.
//
// The client modules are loaded with a dynamic import, and only when the
// config names a VM manager or a control plane: a sidecar with static
// listeners does not load gRPC and protobuf at all.

import type { HostRelayConfig } from '../config/relay.js';
import type { SidecarConfig } from '../config/types.js';
import type { ConfigSourceFactory } from '../dynamic/types.js';
import { HostRelay } from '../host-relay.js';
import type { VmManagerApi } from '../resolve/types.js';
import type { ServerOptions } from '../server.js';
import { Sidecar, type OwnedClient } from '../sidecar.js';

/** A gRPC client to the VM manager at `address`, owned (closed) by the server that uses it. */
async function vmManagerClient(address: string): Promise<OwnedClient<VmManagerApi>> {
  const { VmManagerClient } = await import('../../xds/vm-manager/client.js');
  return { client: new VmManagerClient(address), closeOnStop: true };
}

async function adsConfigSource(): Promise<ConfigSourceFactory> {
  const { AdsClient } = await import('../../xds/client/ads-client.js');
  return (init) => new AdsClient(init);
}

export interface ProxyClients {
  /** A VM manager to use instead of a gRPC client to vm_manager.address (the demo runs one in process). */
  vmManager?: OwnedClient<VmManagerApi>;
}

export async function createSidecar(config: SidecarConfig, options: ServerOptions & ProxyClients = {}): Promise<Sidecar> {
  const vmManager = options.vmManager ?? (config.vmManager ? await vmManagerClient(config.vmManager.address) : undefined);
  const configSource = config.xds ? await adsConfigSource() : undefined;
  return new Sidecar(config, { ...options, ...(vmManager && { vmManager }), ...(configSource && { configSource }) });
}

export async function createHostRelay(config: HostRelayConfig, options: ServerOptions & ProxyClients = {}): Promise<HostRelay> {
  const vmManager = options.vmManager ?? (config.vmManager ? await vmManagerClient(config.vmManager.address) : undefined);
  return new HostRelay(config, { ...options, ...(vmManager && { vmManager }) });
}
