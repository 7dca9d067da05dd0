// The host relay's assertion of the source VM: what the relay writes to the
// destination guest before the bytes it relays, so the destination, which
// sees every relayed connection come from CID 2, learns which VM the relay
// found behind the kernel-given source CID (it asked the VM manager), and can
// check that the relay of its own hypervisor, and nothing else, said so.
//
// Signed with the relay's X509-SVID key (spiffe://<td>/hv/<hypervisor>); the
// relay's chain travels in the record, so the destination needs only its
// trust bundle. Fixed prefix, bounded, big-endian, strict:
//
//   offset 0  4 bytes  magic "VMRA"
//   offset 4  1 byte   version = 1
//   offset 5  1 byte   reserved, zero
//   offset 6  2 bytes  body length (at most MAX_ASSERTION_BODY)
//   body:     4 source CID | 4 destination CID | 4 destination port
//             8 issued at (ms since the epoch)
//             1 + n source VM id (UTF-8, 1..253)
//             2 + n relay chain (PEM, leaf first)
//             1 + n signature (SHA-256; ECDSA in IEEE P1363 form, 64 bytes for
//               P-256) over everything before it, its length byte included
//
// Why a signature and not the vsock reserved-port rule (Linux refuses to bind
// a vsock port below 1024 without CAP_NET_BIND_SERVICE): that rule would say
// "a privileged process on the host", not "the relay"; it allows at most
// 1,023 relayed connections at once (one bound port each); and a guest could
// not tell it from a host it cannot see. README "vsock" has the argument.

import { createPrivateKey, sign, verify, type KeyObject } from 'node:crypto';
import { parseMeshIdentity } from './identity/spiffe.js';
import { trustBundle, verifySvid, type SvidVerdict } from './identity/svid.js';

const MAGIC = Buffer.from('VMRA', 'latin1');
const VERSION = 1;
export const ASSERTION_PREFIX_LENGTH = 8;
/** A relay chain (leaf and intermediate, PEM) is about 1.5 KiB; nothing legitimate comes near this. */
export const MAX_ASSERTION_BODY = 8 * 1024;
/** How old (or how far ahead, clocks differ) an assertion may be: the relay writes it as it connects. */
export const MAX_ASSERTION_AGE_MS = 30_000;

export interface RelayAssertionFields {
  sourceCid: number;
  sourceVmId: string;
  destination: { cid: number; port: number };
  issuedAtMs: number;
}

export interface RelayAssertion extends RelayAssertionFields {
  chainPem: string;
  /** The bytes the signature covers, and the signature. */
  signed: Buffer;
  signature: Buffer;
}

/** The length of a signature by `key` (ECDSA in IEEE P1363 form, fixed: 64 bytes for P-256; RSA: the modulus). */
function signatureLength(key: KeyObject): number {
  const details = key.asymmetricKeyDetails ?? {};
  if (key.asymmetricKeyType === 'ec') return { prime256v1: 64, secp384r1: 96, secp521r1: 132 }[details.namedCurve ?? ''] ?? 0;
  return Math.ceil((details.modulusLength ?? 0) / 8);
}

const SIGN_OPTIONS = { dsaEncoding: 'ieee-p1363' } as const;

// Parsing a key or checking a chain costs more than the signature: the relay
// signs with one key and a destination sees one relay chain, so the last of
// each is kept (a rotation replaces it).
let lastKey: { pem: string; key: KeyObject } | undefined;
function privateKey(pem: string): KeyObject {
  if (lastKey?.pem !== pem) lastKey = { pem, key: createPrivateKey(pem) };
  return lastKey.key;
}

let lastChain: { chainPem: string; bundlePem: string; trustDomain: string; verdict: Extract<SvidVerdict, { ok: true }> } | undefined;
/** verifySvid, the last good verdict reused for the same chain and bundle while `now` is within the leaf's validity. */
function verifiedChain(chainPem: string, bundlePem: string, trustDomain: string, now: Date): SvidVerdict {
  const last = lastChain;
  if (last && last.chainPem === chainPem && last.bundlePem === bundlePem && last.trustDomain === trustDomain && now < last.verdict.notAfter && now.getTime() >= Date.parse(last.verdict.leaf.validFrom)) return last.verdict;
  const verdict = verifySvid(chainPem, trustBundle(trustDomain, bundlePem), now);
  if (verdict.ok) lastChain = { chainPem, bundlePem, trustDomain, verdict };
  return verdict;
}

/** The relay's record for one connection, signed with its SVID key. */
export function encodeRelayAssertion(fields: RelayAssertionFields, identity: { keyPem: string; chainPem: string }): Buffer {
  const vm = Buffer.from(fields.sourceVmId, 'utf8');
  if (vm.length < 1 || vm.length > 253) throw new RangeError(`source VM id of ${vm.length} bytes: must be 1..253`);
  const key = privateKey(identity.keyPem);
  const sigLength = signatureLength(key);
  if (sigLength < 1 || sigLength > 255) throw new RangeError(`the relay key (${key.asymmetricKeyType ?? 'unknown'}) cannot sign an assertion`);
  const chain = Buffer.from(identity.chainPem, 'utf8');
  const fixed = Buffer.alloc(20);
  fixed.writeUInt32BE(fields.sourceCid, 0);
  fixed.writeUInt32BE(fields.destination.cid, 4);
  fixed.writeUInt32BE(fields.destination.port, 8);
  fixed.writeBigUInt64BE(BigInt(fields.issuedAtMs), 12);
  const chainLength = Buffer.alloc(2);
  chainLength.writeUInt16BE(chain.length);
  const body = Buffer.concat([fixed, Buffer.from([vm.length]), vm, chainLength, chain, Buffer.from([sigLength])]);
  const bodyLength = body.length + sigLength;
  if (bodyLength > MAX_ASSERTION_BODY) throw new RangeError(`relay assertion body of ${bodyLength} bytes: more than ${MAX_ASSERTION_BODY}`);
  const prefix = Buffer.alloc(ASSERTION_PREFIX_LENGTH);
  MAGIC.copy(prefix, 0);
  prefix[4] = VERSION;
  prefix.writeUInt16BE(bodyLength, 6);
  const signed = Buffer.concat([prefix, body]);
  return Buffer.concat([signed, sign('sha256', signed, { key, ...SIGN_OPTIONS })]);
}

export type RelayAssertionResult =
  | { kind: 'incomplete'; needed: number }
  | { kind: 'assertion'; assertion: RelayAssertion; length: number }
  | { kind: 'invalid'; code: 'bad_assertion'; reason: string };

/** Whether these first bytes start a relay assertion (else they are the PROXY v2 header of a relay that asserts nothing). */
export function startsRelayAssertion(buf: Uint8Array): boolean {
  return buf.length > 0 && buf[0] === MAGIC[0];
}

/** Judges the first bytes of a relayed connection: an assertion, more needed, or invalid. */
export function decodeRelayAssertion(buf: Uint8Array): RelayAssertionResult {
  const bad = (reason: string): RelayAssertionResult => ({ kind: 'invalid', code: 'bad_assertion', reason });
  for (let i = 0; i < Math.min(buf.length, MAGIC.length); i++) if (buf[i] !== MAGIC[i]) return bad(`byte ${i} does not match the relay assertion magic "VMRA"`);
  if (buf.length > 4 && buf[4] !== VERSION) return bad(`relay assertion version ${buf[4]}, expected ${VERSION}`);
  if (buf.length > 5 && buf[5] !== 0) return bad('reserved byte 5 must be zero');
  if (buf.length < ASSERTION_PREFIX_LENGTH) return { kind: 'incomplete', needed: ASSERTION_PREFIX_LENGTH };
  const view = Buffer.from(buf.buffer, buf.byteOffset, buf.length);
  const bodyLength = view.readUInt16BE(6);
  if (bodyLength > MAX_ASSERTION_BODY) return bad(`body of ${bodyLength} bytes, more than ${MAX_ASSERTION_BODY}`);
  const total = ASSERTION_PREFIX_LENGTH + bodyLength;
  if (buf.length < total) return { kind: 'incomplete', needed: total };
  let at = ASSERTION_PREFIX_LENGTH;
  const need = (n: number): boolean => at + n <= total;
  if (!need(21)) return bad('body too short');
  const sourceCid = view.readUInt32BE(at);
  const destination = { cid: view.readUInt32BE(at + 4), port: view.readUInt32BE(at + 8) };
  const issuedAtMs = Number(view.readBigUInt64BE(at + 12));
  at += 20;
  const vmLength = view[at]!;
  at += 1;
  if (vmLength === 0 || !need(vmLength + 2)) return bad('source VM id missing or cut');
  const sourceVmId = view.toString('utf8', at, at + vmLength);
  at += vmLength;
  const chainLength = view.readUInt16BE(at);
  at += 2;
  if (!need(chainLength + 1)) return bad('relay chain cut');
  const chainPem = view.toString('utf8', at, at + chainLength);
  at += chainLength;
  const sigLength = view[at]!;
  at += 1;
  const signed = Buffer.from(view.subarray(0, at));
  if (sigLength === 0 || at + sigLength !== total) return bad('signature length does not end the body');
  const signature = Buffer.from(view.subarray(at, total));
  return { kind: 'assertion', assertion: { sourceCid, sourceVmId, destination, issuedAtMs, chainPem, signed, signature }, length: total };
}

/** Who the destination is, to check an assertion against. */
export interface RelayAssertionContext {
  trustDomain: string;
  /** PEM roots of the trust domain. */
  bundlePem: string;
  /** Our hypervisor: only its relay (spiffe://<td>/hv/<id>) may assert. */
  hypervisorId: string;
  /** Our own vsock CID and the port the connection arrived on: an assertion made for another guest or port is a replay. */
  destination: { cid: number; port: number };
  now: Date;
}

export type RelayAssertionVerdict = { ok: true; sourceVmId: string; sourceCid: number; relayId: string } | { ok: false; reason: string; detail: string };

/**
 * Checks an assertion: the chain is an X509-SVID of our trust domain and
 * names our hypervisor's relay, the signature is that key's, it was made for
 * us (CID and port), and it is fresh. Every refusal has a reason.
 */
export function verifyRelayAssertion(a: RelayAssertion, context: RelayAssertionContext): RelayAssertionVerdict {
  const refuse = (reason: string, detail: string): RelayAssertionVerdict => ({ ok: false, reason, detail });
  let svid;
  try {
    svid = verifiedChain(a.chainPem, context.bundlePem, context.trustDomain, context.now);
  } catch (err) {
    return refuse('relay_untrusted', `the trust bundle cannot be read: ${(err as Error).message}`);
  }
  if (!svid.ok) return refuse('relay_untrusted', `the relay's certificate does not verify (${svid.reason}): ${svid.message}`);
  const expected = `spiffe://${context.trustDomain}/hv/${context.hypervisorId}`;
  if (svid.spiffeId !== expected) return refuse('wrong_relay', `the assertion is signed by ${svid.spiffeId}, not by our hypervisor's relay ${expected}`);
  let good: boolean;
  try {
    good = verify('sha256', a.signed, { key: svid.leaf.publicKey, ...SIGN_OPTIONS }, a.signature);
  } catch {
    good = false;
  }
  if (!good) return refuse('bad_signature', 'the relay assertion signature does not verify with the relay certificate');
  if (a.destination.cid !== context.destination.cid || a.destination.port !== context.destination.port) {
    return refuse('wrong_destination', `the assertion was made for ${a.destination.cid}:${a.destination.port}, not for us (${context.destination.cid}:${context.destination.port})`);
  }
  const age = context.now.getTime() - a.issuedAtMs;
  if (Math.abs(age) > MAX_ASSERTION_AGE_MS) return refuse('stale_assertion', `the assertion is ${Math.round(age / 1000)} s old (at most ${MAX_ASSERTION_AGE_MS / 1000} s either way)`);
  const vm = parseMeshIdentity(`spiffe://${context.trustDomain}/vm/${a.sourceVmId}`);
  if (!vm.ok) return refuse('bad_assertion', `the asserted source VM id ${JSON.stringify(a.sourceVmId.slice(0, 64))} is not a VM id`);
  return { ok: true, sourceVmId: a.sourceVmId, sourceCid: a.sourceCid, relayId: svid.spiffeId };
}
