#!/bin/sh
# Entrypoint of a VM container: makes 169.254.169.254:80 reach this VM's host, as Azure's fabric does,
# then idles until stopped. Needs cap NET_ADMIN.
#
# - route 169.254.169.254/32 via the host's address on the VM network (MISIM_HOST_IP), so connect()
#   to the IMDS address has a route;
# - DNAT tcp 169.254.169.254:80 -> MISIM_HOST_IP:MISIM_HOST_IMDS_PORT (default 80) for this VM's own
#   connections. Docker's bridge filters frames of an internal network with iptables on the machine
#   (br_netfilter) and drops any whose destination is outside the network's subnet, so a packet to
#   169.254.169.254 itself never reaches the host. DNAT rewrites only the destination: the host's
#   shared IMDS listener still sees the VM's own address as the source and knows which VM asks;
# - forward this VM's localhost:50342 to its host's shared VM-extension listener (MISIM_HOST_IP:50342):
#   the legacy managed-identity extension's endpoint is on the VM itself; the host answers for the VMs
#   that have the extension installed (401 unknown_source otherwise), telling them apart by source address;
# - remove Docker's default route (to the bridge gateway, i.e. the machine): the VM reaches its subnet
#   and its host's IMDS, nothing else.
set -eu

imds_addr="${MISIM_IMDS_ADDRESS:-169.254.169.254}"
host_ip="${MISIM_HOST_IP:?MISIM_HOST_IP (the host address on the VM network) is required}"
host_port="${MISIM_HOST_IMDS_PORT:-80}"

ip route replace "$imds_addr/32" via "$host_ip"
ip route del default 2>/dev/null || true
rule="OUTPUT -d $imds_addr/32 -p tcp --dport 80 -j DNAT --to-destination $host_ip:$host_port"
# shellcheck disable=SC2086 # $rule is a list of words on purpose
iptables -t nat -C $rule 2>/dev/null || iptables -t nat -A $rule
ext_port="${MISIM_EXTENSION_PORT:-50342}"
socat "TCP-LISTEN:$ext_port,bind=127.0.0.1,fork,reuseaddr" "TCP:$host_ip:$ext_port" &
echo "vm-entrypoint: $imds_addr:80 -> $host_ip:$host_port, localhost:$ext_port -> $host_ip:$ext_port, no default route" >&2

# PID 1 gets no default signal handlers: trap TERM so `docker stop` does not wait for its timeout.
trap 'exit 0' TERM INT
sleep infinity &
wait $!
