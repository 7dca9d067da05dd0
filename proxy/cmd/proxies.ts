// The composition root of the data plane's roles: a sidecar or a host relay
// with the clients its config asks for, made from xds/ (the VM manager's gRPC
// client, the ADS client). The data plane itself never imports xds/.
//
// The client modules are loaded with a dynamic import, and only when the
// config names a VM manager, a control plane or an identity: a sidecar with static
// listeners does not load gRPC and protobuf at all, one without HTTP listeners
// not the HTTP stack (nor does its xDS applier until a pushed listener is HTTP). The host relay's module is
// loaded only by a host relay (a sidecar's idle RSS is its budget).

import { readFile } from 'node:fs/promises';
import type { HostRelayConfig } from '../config/relay.js';
import type { ControlTlsFiles, IdentitySettings, SidecarConfig } from '../config/types.js';
import type { RenewingSource } from '../identity/renewing-source.js';
import type { ForwardAttested } from '../identity/attestation-endpoint.js';
import { meshIdentityId } from '../identity/spiffe.js';
import { silentLogger } from '../runtime/log.js';
import type { ControlTransport } from '../../xds/security/transport.js';
import type { ConfigSourceFactory } from '../dynamic/types.js';
import type { HostRelay } from '../host-relay.js';
import type { VmManagerApi } from '../resolve/types.js';
import type { ServerOptions } from '../server.js';
import { Sidecar, loadHttpListeners, needsHttpListeners, type OwnedClient } from '../sidecar.js';

/** Where the control-plane clients take their identity from: exactly one of the config's tls:, identity: or insecure: true (fields.ts). */
interface ControlIdentity {
  controlTls: ControlTlsFiles | null;
  identity: IdentitySettings | null;
}

/**
 * How the control-plane clients (VM manager, ADS) talk: mutual TLS with the
 * identity files of tls: (polled for rotation), or with the certificate the
 * renewing source of identity: keeps current (the server starts it before any
 * client connects); plain text only with insecure: true.
 */
async function controlTransport(config: ControlIdentity, renewing: RenewingSource | undefined, options: ServerOptions): Promise<{ transport: ControlTransport; owned: Array<{ close(): void }> }> {
  if (renewing !== undefined) return { transport: { source: renewing }, owned: [] };
  if (config.controlTls === null) return { transport: { insecure: true }, owned: [] };
  const { FileCertificateSource } = await import('../identity/certificate-files.js');
  const files = await FileCertificateSource.open(config.controlTls, { logger: options.logger ?? silentLogger() });
  // The server that uses the clients stops polling the files when it stops.
  return { transport: { source: files }, owned: [files] };
}

/** A gRPC client to the VM manager's replicas at `addresses`, owned (closed) by the server that uses it. */
async function vmManagerClient(addresses: string[], transport: ControlTransport): Promise<OwnedClient<VmManagerApi>> {
  const { ReplicaVmManagerClient } = await import('../../xds/vm-manager/replicas.js');
  const client = new ReplicaVmManagerClient(addresses, { transport });
  client.connect();
  return { client, closeOnStop: true };
}

async function adsConfigSource(transport: ControlTransport): Promise<ConfigSourceFactory> {
  const { AdsClient } = await import('../../xds/client/ads-client.js');
  return (init) => new AdsClient({ ...init, transport });
}

/** The identity a config's identity section asks for, kept current through the control plane's Certify (not started: the server starts it). */
async function identitySource(settings: IdentitySettings, kind: 'vm' | 'hv', name: string, options: ServerOptions): Promise<RenewingSource> {
  const id = meshIdentityId(settings.trustDomain, kind, name);
  if (!id.ok) throw new Error(`identity: ${kind} "${name}" makes no SPIFFE ID: ${id.message}`);
  // Loaded only with an identity section: the X.509 library is a sidecar's largest optional module.
  const [{ certifyClient }, { RenewingSource }] = await Promise.all([import('../../xds/identity/certify-client.js'), import('../identity/renewing-source.js')]);
  const bootstrapBundlePem = await readFile(settings.trustBundleFile, 'utf8');
  const certify = certifyClient(settings.controlPlane, { trustDomain: settings.trustDomain, bootstrapBundlePem });
  const logger = options.logger ?? silentLogger();
  const { joinTokenFile, attest } = settings;
  const kept = settings.stateDir !== null ? { stateDir: settings.stateDir } : {};
  if (attest !== null) {
    const { attestationClient } = await import('../identity/attestation-client.js');
    return new RenewingSource({ spiffeId: id.value, certify, attest: attestationClient({ vmId: name, port: attest.port }), logger, ...kept });
  }
  return new RenewingSource({ spiffeId: id.value, certify, joinToken: () => readFile(joinTokenFile!, 'utf8'), logger, ...kept });
}

export interface ProxyClients {
  /** A VM manager to use instead of a gRPC client to vm_manager.addresses (the demo runs one in process). */
  vmManager?: OwnedClient<VmManagerApi>;
}

/** The host agent's Identity.CertifyAttested client, with the same identity as its VM manager client. */
async function attestationClient(controlPlane: string, transport: ControlTransport): Promise<{ forward: ForwardAttested; close(): void }> {
  const { certifyAttestedClient } = await import('../../xds/identity/certify-client.js');
  return certifyAttestedClient(controlPlane, transport);
}

export async function createSidecar(config: SidecarConfig, options: ServerOptions & ProxyClients = {}): Promise<Sidecar> {
  const identity = config.identity ? await identitySource(config.identity, 'vm', config.node.id, options) : undefined;
  const control = config.vmManager || config.xds ? await controlTransport(config, identity, options) : undefined;
  const vmManager = options.vmManager ?? (config.vmManager ? await vmManagerClient(config.vmManager.addresses, control!.transport) : undefined);
  const configSource = config.xds ? await adsConfigSource(control!.transport) : undefined;
  const http = needsHttpListeners(config) ? await loadHttpListeners() : undefined;
  const owned = [...(options.owned ?? []), ...(control?.owned ?? [])];
  return new Sidecar(config, { ...options, owned, ...(vmManager && { vmManager }), ...(configSource && { configSource }), ...(identity && { identity }), ...(http && { http }) });
}

export async function createHostRelay(config: HostRelayConfig, options: ServerOptions & ProxyClients = {}): Promise<HostRelay> {
  const hypervisorId = config.vmManager?.hypervisorId ?? config.node.id;
  const identity = config.identity ? await identitySource(config.identity, 'hv', hypervisorId, options) : undefined;
  const control = config.vmManager && (!options.vmManager || config.attestation) ? await controlTransport(config, identity, options) : undefined;
  const vmManager = options.vmManager ?? (config.vmManager ? await vmManagerClient(config.vmManager.addresses, control!.transport) : undefined);
  const attestation = config.attestation ? await attestationClient(config.attestation.controlPlane, control!.transport) : undefined;
  const owned = [...(options.owned ?? []), ...(control?.owned ?? [])];
  // The relay signs its source assertions with the identity its control-plane clients present (an hv/ SVID).
  const signer = identity ?? (control && 'source' in control.transport ? control.transport.source : undefined);
  const { HostRelay } = await import('../host-relay.js');
  return new HostRelay(config, { ...options, owned, ...(vmManager && { vmManager }), ...(identity && { identity }), ...(signer && { assertionIdentity: signer }), ...(attestation && { attestation }) });
}
