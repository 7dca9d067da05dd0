// The one answer to "is this address this machine's loopback": IPv4 127/8,
// ::1, or 127/8 mapped into IPv6 (how a dual-stack socket reports it). Used
// for bind addresses (outbound listeners serve only local apps), for clients
// (the forward proxy), and for the admin endpoint's Host check.

export function isLoopbackAddress(address: string): boolean {
  const v4 = address.startsWith('::ffff:') ? address.slice(7) : address;
  return v4 === '::1' || /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(v4);
}
