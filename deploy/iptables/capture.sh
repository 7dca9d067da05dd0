#!/bin/sh
# Transparent capture for the vsockmesh sidecar: iptables (nat table) rules
# that REDIRECT the outbound TCP connections of every process in this network
# namespace, except the sidecar's own, to the sidecar's capture listener (an
# outbound listener whose cluster says `resolve: { original_destination: true }`;
# the sidecar reads where each connection was going with SO_ORIGINAL_DST).
#
#   capture.sh apply  [--port 15001] [--uid vsockmesh] [--exclude-cidr CIDR]... [--exclude-port PORT]... [--ipv6 auto|on|off]
#   capture.sh remove [--ipv6 auto|on|off]
#   capture.sh show
#
# Rules, in chain VSOCKMESH_OUTPUT (jumped to from nat OUTPUT for TCP), for IPv4
# and, unless --ipv6 off (auto: when ip6tables works), IPv6:
#   1. the sidecar's uid (--uid, a name or a number): RETURN, so its own
#      connections (to peers, the control plane, local apps) are never captured;
#   2. loopback destinations (127.0.0.0/8, ::1): RETURN (local traffic, and
#      the sidecar's own outbound listeners);
#   3. each --exclude-cidr (of the rule's family) and each --exclude-port
#      (destination port): RETURN;
#   4. everything else: REDIRECT to 127.0.0.1/::1 --port.
# Only NEW connections pass through nat: connections open before `apply`
# stay as they were. UDP (DNS) is never touched. Inbound traffic is not
# captured: peers reach the sidecar's inbound listener directly.
#
# Needs CAP_NET_ADMIN (root, or the Kubernetes init container that runs it);
# the sidecar itself needs no capability. `apply` is idempotent (it rebuilds
# the chain); `remove` deletes the chain and its jump and is idempotent too.
set -eu

CHAIN=VSOCKMESH_OUTPUT
port=15001
uid=vsockmesh
ipv6=auto
cidrs=''
ports=''

usage() {
  sed -n '8,10p' "$0" | sed 's/^# *//' >&2
  exit 2
}

fail() {
  echo "capture.sh: $*" >&2
  exit 2
}

[ $# -ge 1 ] || usage
action=$1
shift
while [ $# -gt 0 ]; do
  case $1 in
    --port) [ $# -ge 2 ] || usage; port=$2; shift 2 ;;
    --uid) [ $# -ge 2 ] || usage; uid=$2; shift 2 ;;
    --exclude-cidr) [ $# -ge 2 ] || usage; cidrs="$cidrs $2"; shift 2 ;;
    --exclude-port) [ $# -ge 2 ] || usage; ports="$ports $2"; shift 2 ;;
    --ipv6) [ $# -ge 2 ] || usage; ipv6=$2; shift 2 ;;
    *) fail "unknown argument: $1" ;;
  esac
done

is_port() {
  case $1 in '' | *[!0-9]*) return 1 ;; esac
  [ "$1" -ge 1 ] && [ "$1" -le 65535 ]
}
is_port "$port" || fail "--port: must be an integer 1..65535, not '$port'"
for p in $ports; do is_port "$p" || fail "--exclude-port: must be an integer 1..65535, not '$p'"; done
for c in $cidrs; do
  case $c in */*) ;; *) fail "--exclude-cidr: must be an address/prefix, not '$c'" ;; esac
done
case $ipv6 in auto | on | off) ;; *) fail "--ipv6: must be auto, on or off, not '$ipv6'" ;; esac
if [ "$action" = apply ]; then
  case $uid in
    '' | *[!0-9]*) id -u "$uid" >/dev/null 2>&1 || fail "--uid: no such user '$uid' (the sidecar's user; create it first)" ;;
  esac
fi

# The families to act on: ip4 always, ip6 by --ipv6.
families() {
  echo 4
  case $ipv6 in
    on) echo 6 ;;
    auto) if ip6tables -t nat -S OUTPUT >/dev/null 2>&1; then echo 6; fi ;;
  esac
}

tables() { if [ "$1" = 6 ]; then echo ip6tables; else echo iptables; fi; }

remove_family() {
  ipt=$(tables "$1")
  while $ipt -w -t nat -D OUTPUT -p tcp -j "$CHAIN" 2>/dev/null; do :; done
  if $ipt -w -t nat -S "$CHAIN" >/dev/null 2>&1; then
    $ipt -w -t nat -F "$CHAIN"
    $ipt -w -t nat -X "$CHAIN"
  fi
}

apply_family() {
  fam=$1
  ipt=$(tables "$fam")
  if [ "$fam" = 6 ]; then loopback=::1/128; else loopback=127.0.0.0/8; fi
  if $ipt -w -t nat -S "$CHAIN" >/dev/null 2>&1; then $ipt -w -t nat -F "$CHAIN"; else $ipt -w -t nat -N "$CHAIN"; fi
  $ipt -w -t nat -A "$CHAIN" -m owner --uid-owner "$uid" -j RETURN
  $ipt -w -t nat -A "$CHAIN" -d "$loopback" -j RETURN
  for c in $cidrs; do
    case $c in
      *:*) [ "$fam" = 6 ] && $ipt -w -t nat -A "$CHAIN" -d "$c" -j RETURN ;;
      *) [ "$fam" = 4 ] && $ipt -w -t nat -A "$CHAIN" -d "$c" -j RETURN ;;
    esac
  done
  for p in $ports; do $ipt -w -t nat -A "$CHAIN" -p tcp --dport "$p" -j RETURN; done
  $ipt -w -t nat -A "$CHAIN" -p tcp -j REDIRECT --to-ports "$port"
  $ipt -w -t nat -C OUTPUT -p tcp -j "$CHAIN" 2>/dev/null || $ipt -w -t nat -A OUTPUT -p tcp -j "$CHAIN"
}

case $action in
  apply)
    for fam in $(families); do apply_family "$fam"; done
    ;;
  remove) for fam in $(families); do remove_family "$fam"; done ;;
  show) for fam in $(families); do $(tables "$fam") -w -t nat -S "$CHAIN" 2>/dev/null || true; done ;;
  *) fail "unknown action '$action' (apply, remove or show)" ;;
esac
