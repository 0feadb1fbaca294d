#!/bin/sh
# Entrypoint of a VM's network container (vm-XX-net, cap NET_ADMIN): sets up the network namespace it
# shares with the VM container (vm-XX, where the VM's code runs without NET_ADMIN and NET_RAW, so it
# cannot undo any of this), then idles until stopped. As Azure's fabric does for a VM:
#
# - route 169.254.169.254/32 via the host's address on the VM network (MISIM_HOST_IP), so connect()
#   to the IMDS address has a route;
# - DNAT tcp 169.254.169.254:80 -> MISIM_HOST_IP:MISIM_HOST_IMDS_PORT (default 80) for this namespace's
#   own connections. Docker's bridge filters frames of an internal network with iptables on the machine
#   (br_netfilter) and drops any whose destination is outside the network's subnet, so a packet to
#   169.254.169.254 itself never reaches the host. DNAT rewrites only the destination: the host's
#   shared IMDS listener still sees the VM's own address as the source and knows which VM asks;
# - forward localhost:50342 to its host's shared VM-extension listener (MISIM_HOST_IP:50342): the legacy
#   managed-identity extension's endpoint is on the VM itself; the host answers for the VMs that have
#   the extension installed (401 unknown_source otherwise), telling them apart by source address;
# - remove any default route, and reject (chain MISIM-NO-MACHINE) every packet to the machine's address
#   on each network the VM joins (the bridge gateway, the first address of the subnet, pinned so in
#   docker-compose.yml) plus MISIM_BLOCK (more addresses, space separated): nothing of the machine is
#   reachable from the VM; a connect() there fails at once (EHOSTUNREACH, "administratively prohibited");
# - drop all IPv6 but loopback (link-local addresses would otherwise reach the machine's bridges).
#
# MISIM_HOST_IP=none (the AKS pod of docker-compose.yml, which uses workload identity, not IMDS): no
# IMDS route, DNAT or extension forwarding; the rest as for a VM.
set -eu

imds_addr="${MISIM_IMDS_ADDRESS:-169.254.169.254}"
host_ip="${MISIM_HOST_IP:?MISIM_HOST_IP (the host address on the VM network) is required}"
host_port="${MISIM_HOST_IMDS_PORT:-80}"
ext_port="${MISIM_EXTENSION_PORT:-50342}"

ip route del default 2>/dev/null || true
if [ "$host_ip" != none ]; then
  ip route replace "$imds_addr/32" via "$host_ip"
  rule="OUTPUT -d $imds_addr/32 -p tcp --dport 80 -j DNAT --to-destination $host_ip:$host_port"
  # shellcheck disable=SC2086 # $rule is a list of words on purpose
  iptables -t nat -C $rule 2>/dev/null || iptables -t nat -A $rule
fi

# The machine's addresses on this namespace's networks: the first host address of each subnet.
gateways="$(ip -4 -o addr show scope global | awk '{print $4}' |
  python3 -c 'import ipaddress, sys; print(" ".join(str(next(ipaddress.ip_interface(l.strip()).network.hosts())) for l in sys.stdin if l.strip()))')"
blocked="$gateways ${MISIM_BLOCK:-}"
iptables -N MISIM-NO-MACHINE 2>/dev/null || iptables -F MISIM-NO-MACHINE
for addr in $blocked; do
  iptables -A MISIM-NO-MACHINE -d "$addr/32" -j REJECT --reject-with icmp-admin-prohibited
done
iptables -C OUTPUT -j MISIM-NO-MACHINE 2>/dev/null || iptables -I OUTPUT 1 -j MISIM-NO-MACHINE

if ip6tables -S OUTPUT >/dev/null 2>&1; then
  ip6tables -C OUTPUT -o lo -j ACCEPT 2>/dev/null || ip6tables -A OUTPUT -o lo -j ACCEPT
  ip6tables -P OUTPUT DROP
  v6="IPv6 dropped"
else
  v6="no IPv6 in this kernel"
fi

if [ "$host_ip" != none ]; then
  socat "TCP-LISTEN:$ext_port,bind=127.0.0.1,fork,reuseaddr" "TCP:$host_ip:$ext_port" &
  echo "vm-entrypoint: $imds_addr:80 -> $host_ip:$host_port, localhost:$ext_port -> $host_ip:$ext_port," \
    "no default route, machine addresses blocked: $(echo $blocked), $v6" >&2
else
  echo "vm-entrypoint: no IMDS, no default route, machine addresses blocked: $(echo $blocked), $v6" >&2
fi

# PID 1 gets no default signal handlers: trap TERM so `docker stop` does not wait for its timeout.
trap 'exit 0' TERM INT
sleep infinity &
wait $!
