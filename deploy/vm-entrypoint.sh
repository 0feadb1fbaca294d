#!/bin/sh
# Entrypoint of a VM container: routes the IMDS address 169.254.169.254 to this VM's host
# (MISIM_HOST_IP, the host's address on the VM network), as Azure's fabric does, then idles until
# stopped. The VM sits on an internal network only; Docker still gives it a default route to the
# bridge's gateway (the machine, which drops forwarded traffic of internal networks): that route is
# removed too, so the VM can reach its subnet and its host's IMDS and nothing else. Needs cap NET_ADMIN.
set -eu

imds_addr="${MISIM_IMDS_ADDRESS:-169.254.169.254}"
host_ip="${MISIM_HOST_IP:?MISIM_HOST_IP (the host address on the VM network) is required}"
ip route replace "$imds_addr/32" via "$host_ip"
ip route del default 2>/dev/null || true
echo "vm-entrypoint: $imds_addr via $host_ip, no default route" >&2

# PID 1 gets no default signal handlers: trap TERM so `docker stop` does not wait for its timeout.
trap 'exit 0' TERM INT
sleep infinity &
wait $!
