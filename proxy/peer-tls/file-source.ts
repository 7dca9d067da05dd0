// The sidecar's own identity from PEM files (key, chain, trust bundle), as a
// CertificateSource: checked as an X509-SVID of the trust domain when read,
// and read again when a file changes (polled: a rename over the file, as
// certificate tools write, is seen as well as an edit in place).

import { readFile, stat } from 'node:fs/promises';
import type { CertificateSource, IdentityMaterial } from '../identity/certificate-source.js';
import { trustBundle, verifySvid } from '../identity/svid.js';
import { fileErrorText } from '../runtime/durable-file.js';

export interface IdentityFiles {
  key: string;
  chain: string;
  bundle: string;
}

/** Reads and checks the three files; throws an Error naming the file or the SVID problem. */
export async function readIdentityFiles(files: IdentityFiles, trustDomain: string, now: Date): Promise<IdentityMaterial> {
  const read = async (what: keyof IdentityFiles): Promise<string> => {
    try {
      return await readFile(files[what], 'utf8');
    } catch (err) {
      throw new Error(`peer_tls ${what}_file ${files[what]}: ${fileErrorText(err)}`, { cause: err });
    }
  };
  const [keyPem, chainPem, bundlePem] = await Promise.all([read('key'), read('chain'), read('bundle')]);
  let verdict;
  try {
    verdict = verifySvid(chainPem, trustBundle(trustDomain, bundlePem), now);
  } catch (err) {
    throw new Error(`peer_tls bundle_file ${files.bundle}: ${(err as Error).message}`, { cause: err });
  }
  if (!verdict.ok) throw new Error(`peer_tls chain_file ${files.chain} is not a valid X509-SVID of ${trustDomain} (${verdict.reason}): ${verdict.message}`);
  return { keyPem, chainPem, bundlePem, spiffeId: verdict.spiffeId, notAfter: verdict.notAfter };
}

/** What a file looks like from outside: changes when it is rewritten or replaced. */
async function fingerprint(files: IdentityFiles): Promise<string> {
  const stats = await Promise.all([files.key, files.chain, files.bundle].map((p) => stat(p).then((s) => `${s.ino}:${s.size}:${s.mtimeMs}`, () => 'missing')));
  return stats.join('|');
}

export class FileCertificateSource implements CertificateSource {
  private readonly listeners = new Set<(material: IdentityMaterial) => void>();
  private timer: NodeJS.Timeout | undefined;
  private checking = false;

  private constructor(
    private readonly files: IdentityFiles,
    private readonly trustDomain: string,
    private material: IdentityMaterial,
    private seen: string,
    /** A rewritten file that does not read as an identity: the old one stays. */
    private readonly onReloadFailed: (message: string) => void,
  ) {}

  static async open(files: IdentityFiles, trustDomain: string, onReloadFailed: (message: string) => void): Promise<FileCertificateSource> {
    const seen = await fingerprint(files);
    return new FileCertificateSource(files, trustDomain, await readIdentityFiles(files, trustDomain, new Date()), seen, onReloadFailed);
  }

  current(): IdentityMaterial {
    return this.material;
  }

  onChange(listener: (material: IdentityMaterial) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** Looks at the files every `intervalMs` until stop(). */
  watch(intervalMs: number): void {
    this.timer = setInterval(() => void this.check(), intervalMs);
    this.timer.unref();
  }

  stop(): void {
    clearInterval(this.timer);
    this.timer = undefined;
  }

  private async check(): Promise<void> {
    if (this.checking) return;
    this.checking = true;
    try {
      const now = await fingerprint(this.files);
      if (now === this.seen) return;
      this.seen = now;
      try {
        this.material = await readIdentityFiles(this.files, this.trustDomain, new Date());
      } catch (err) {
        this.onReloadFailed((err as Error).message);
        return;
      }
      for (const listener of this.listeners) listener(this.material);
    } finally {
      this.checking = false;
    }
  }
}
