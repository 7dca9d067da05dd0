// The composition root of the data plane's roles: a sidecar or a host relay
// with the clients its config asks for, made from xds/ (the VM manager's gRPC
// client, the ADS client). The data plane itself never imports xds/.
//
// The client modules are loaded with a dynamic import, and only when the
// config names a VM manager, a control plane or an identity: a sidecar with static
// listeners does not load gRPC and protobuf at all.

import { readFile } from 'node:fs/promises';
import type { HostRelayConfig } from '../config/relay.js';
import type { IdentitySettings, LogLevel, SidecarConfig } from '../config/types.js';
import type { RenewingSource } from '../identity/renewing-source.js';
import { meshIdentityId } from '../identity/spiffe.js';
import { createLogger } from '../runtime/log.js';
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

/** The identity a config's identity section asks for, kept current through the control plane's Certify. */
async function identitySource(settings: IdentitySettings, spiffeId: string, options: ServerOptions, level: LogLevel): Promise<RenewingSource> {
  // Loaded only with an identity section: the X.509 library is a sidecar's largest optional module.
  const [{ certifyClient }, { RenewingSource }] = await Promise.all([import('../../xds/identity/certify-client.js'), import('../identity/renewing-source.js')]);
  const bootstrapBundlePem = settings.trustBundleFile === null ? undefined : await readFile(settings.trustBundleFile, 'utf8');
  const certify = certifyClient(settings.controlPlane, { trustDomain: settings.trustDomain, insecure: settings.insecure, ...(bootstrapBundlePem !== undefined && { bootstrapBundlePem }) });
  return new RenewingSource({ spiffeId, certify, joinToken: () => readFile(settings.joinTokenFile, 'utf8'), logger: options.logger ?? createLogger({ level }) });
}

function spiffeIdOf(settings: IdentitySettings, kind: 'vm' | 'hv', name: string): string {
  const id = meshIdentityId(settings.trustDomain, kind, name);
  if (!id.ok) throw new Error(`identity: ${kind} "${name}" makes no SPIFFE ID: ${id.message}`);
  return id.value;
}

export interface ProxyClients {
  /** A VM manager to use instead of a gRPC client to vm_manager.address (the demo runs one in process). */
  vmManager?: OwnedClient<VmManagerApi>;
}

export async function createSidecar(config: SidecarConfig, options: ServerOptions & ProxyClients = {}): Promise<Sidecar> {
  const vmManager = options.vmManager ?? (config.vmManager ? await vmManagerClient(config.vmManager.address) : undefined);
  const configSource = config.xds ? await adsConfigSource() : undefined;
  const identity = config.identity ? await identitySource(config.identity, spiffeIdOf(config.identity, 'vm', config.node.id), options, config.log.level) : undefined;
  return new Sidecar(config, { ...options, ...(vmManager && { vmManager }), ...(configSource && { configSource }), ...(identity && { identity }) });
}

export async function createHostRelay(config: HostRelayConfig, options: ServerOptions & ProxyClients = {}): Promise<HostRelay> {
  const vmManager = options.vmManager ?? (config.vmManager ? await vmManagerClient(config.vmManager.address) : undefined);
  const hypervisorId = config.vmManager?.hypervisorId ?? config.node.id;
  const identity = config.identity ? await identitySource(config.identity, spiffeIdOf(config.identity, 'hv', hypervisorId), options, config.log.level) : undefined;
  return new HostRelay(config, { ...options, ...(vmManager && { vmManager }), ...(identity && { identity }) });
}
