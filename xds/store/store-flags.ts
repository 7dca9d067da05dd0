// `--store etcd://host:2379[,host:2379]` and its TLS client identity
// (`--store-cert/--store-key/--store-ca`, or `?cert=&key=&ca=` in the URL):
// secure by default like the control APIs; plain text only with
// `--store-insecure`. parseStoreFlags is pure; openStore reads the files.

import { readFile } from 'node:fs/promises';
import { EtcdStore } from './etcd-store.js';

export interface StoreFlags {
  store?: string;
  storeCert?: string;
  storeKey?: string;
  storeCa?: string;
  storeInsecure?: boolean;
}

export interface EtcdStoreConfig {
  endpoints: string[];
  tls: { cert: string; key: string; ca: string } | 'insecure';
}

export class StoreFlagsError extends Error {
  override name = 'StoreFlagsError';
}

const HOST_PORT = /^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+):(\d{1,5})$/;

/** The etcd endpoints and TLS files `flags` name; throws StoreFlagsError naming the flag that is wrong. */
export function parseStoreFlags(flags: StoreFlags): EtcdStoreConfig {
  const url = flags.store ?? '';
  const scheme = 'etcd://';
  if (!url.startsWith(scheme)) throw new StoreFlagsError(`--store: ${JSON.stringify(url.slice(0, 64))} is not etcd://host:port[,host:port]`);
  const [hosts = '', query = ''] = url.slice(scheme.length).split('?', 2);
  const endpoints = hosts.split(',');
  for (const endpoint of endpoints) {
    const m = HOST_PORT.exec(endpoint);
    if (m === null || Number(m[2]) < 1 || Number(m[2]) > 65535) throw new StoreFlagsError(`--store: ${JSON.stringify(endpoint.slice(0, 64))} is not host:port (port 1-65535)`);
  }
  const params = new URLSearchParams(query);
  for (const name of params.keys()) if (!['cert', 'key', 'ca'].includes(name)) throw new StoreFlagsError(`--store: unknown parameter ${JSON.stringify(name.slice(0, 64))} (cert, key, ca)`);
  const cert = flags.storeCert ?? params.get('cert') ?? undefined;
  const key = flags.storeKey ?? params.get('key') ?? undefined;
  const ca = flags.storeCa ?? params.get('ca') ?? undefined;
  const given = [cert, key, ca].filter((f) => f !== undefined).length;
  if (flags.storeInsecure === true) {
    if (given > 0) throw new StoreFlagsError('--store-insecure cannot be combined with --store-cert/--store-key/--store-ca');
    return { endpoints, tls: 'insecure' };
  }
  if (given < 3) throw new StoreFlagsError('--store: etcd is spoken to over TLS with a client certificate: give --store-cert, --store-key and --store-ca (or --store-insecure for plain text)');
  return { endpoints, tls: { cert: cert!, key: key!, ca: ca! } };
}

/** The etcd store `flags` name, or undefined without --store. */
export async function openStore(flags: StoreFlags): Promise<EtcdStore | undefined> {
  if (flags.store === undefined) {
    if (flags.storeCert !== undefined || flags.storeKey !== undefined || flags.storeCa !== undefined || flags.storeInsecure === true) throw new StoreFlagsError('--store-cert, --store-key, --store-ca and --store-insecure need --store');
    return undefined;
  }
  const config = parseStoreFlags(flags);
  const transport = config.tls === 'insecure' ? ({ insecure: true } as const) : { cert: await readFile(config.tls.cert), key: await readFile(config.tls.key), ca: await readFile(config.tls.ca) };
  return new EtcdStore({ endpoints: config.endpoints, transport });
}
