#!/bin/sh
# Entrypoint of a host container: puts the IMDS address 169.254.169.254/32 on the host's interface on
# its VMs' (internal) network, so VMs that route 169.254.169.254 to the host reach misim's shared IMDS
# listener, then runs misim. The interface is the one holding the --vm-listen-ip address
# (or MISIM_VM_LISTEN_IP). Needs cap NET_ADMIN. Override the address with MISIM_IMDS_ADDRESS.
set -eu

imds_addr="${MISIM_IMDS_ADDRESS:-169.254.169.254}"
vm_ip="${MISIM_VM_LISTEN_IP:-}"
prev=""
for arg in "$@"; do
  case "$prev" in --vm-listen-ip) vm_ip="$arg" ;; esac
  case "$arg" in --vm-listen-ip=*) vm_ip="${arg#*=}" ;; esac
  prev="$arg"
done
if [ -z "$vm_ip" ]; then
  echo "host-entrypoint: --vm-listen-ip (or MISIM_VM_LISTEN_IP) is required" >&2
  exit 64
fi

dev="$(ip -o -4 addr show | awk -v ip="$vm_ip" '{ split($4, a, "/"); if (a[1] == ip) { print $2; exit } }')"
if [ -z "$dev" ]; then
  echo "host-entrypoint: no interface has address $vm_ip (is the host on its VM network?)" >&2
  exit 65
fi
if ! ip -o -4 addr show dev "$dev" | grep -q " $imds_addr/32 "; then
  ip addr add "$imds_addr/32" dev "$dev"
fi
echo "host-entrypoint: $imds_addr/32 on $dev (VM network address $vm_ip)" >&2
exec misim "$@"
