#!/bin/sh
# Transparent capture for the vsockmesh sidecar: the nat rules that REDIRECT
# this network namespace's outbound TCP (and, with --inbound-port, its inbound
# TCP) to the sidecar, except the sidecar's own connections. A thin wrapper:
# the rules live in one place, `vsockmesh iptables` (proxy/capture/rules.ts);
# see README "Transparent capture" for the flags.
#
#   capture.sh apply  [--port 15001] [--uid vsockmesh] [--gid G] [--mark M] [--exclude-cidr CIDR]... [--exclude-port PORT]...
#                     [--inbound-port P [--inbound-exclude-port PORT]...] [--ipv6 auto|on|off]
#   capture.sh remove [--ipv6 auto|on|off]
#   capture.sh print  [the options of apply]
#
# Needs node (20) on PATH or in VSOCKMESH_NODE, and CAP_NET_ADMIN for apply and remove.
set -eu
here=$(CDPATH='' cd -- "$(dirname -- "$0")" && pwd)
exec "${VSOCKMESH_NODE:-node}" "$here/../../dist/proxy/cmd/cli.js" iptables "$@"
