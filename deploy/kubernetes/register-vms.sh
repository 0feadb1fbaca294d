#!/usr/bin/env bash
# Registers the pods labelled misim/vm in NAMESPACE as misim VMs, so that IMDS answers them: for each
# running pod, `misim vm create -g RG -n VM --host NODE --private-ip POD_IP` (VM: the label's value;
# NODE: the pod's node, i.e. its simulated host; RG: the pod's annotation misim/resource-group,
# default rg1, created when missing). ARM's gRPC API is MISIM_ARM, e.g. through a port-forward:
#
#   kubectl -n misim port-forward svc/misim-arm 7700:7700 &
#   MISIM_ARM=http://127.0.0.1:7700 deploy/kubernetes/register-vms.sh misim
#
# Re-running is safe: an existing VM is left alone when it is already bound to the pod's node and IP.
# A pod that was re-created got a new IP, and misim cannot change a VM's private IP: the script says
# so and fails; delete the VM (misim vm delete) and run it again.
set -euo pipefail

ns=${1:?usage: register-vms.sh NAMESPACE}
: "${MISIM_ARM:?set MISIM_ARM to the ARM gRPC endpoint (kubectl -n $ns port-forward svc/misim-arm 7700:7700, then http://127.0.0.1:7700)}"
export MISIM_ARM
misim=${MISIM:-misim}
command -v "$misim" >/dev/null || { echo "register-vms.sh: '$misim' not found: put it on PATH or set MISIM" >&2; exit 1; }

# Right after an install, ARM answers before its default subscription exists (it waits for Azure AD).
for _ in $(seq 60); do
  "$misim" account show >/dev/null 2>&1 && break
  sleep 1
done
"$misim" account show >/dev/null || { echo "register-vms.sh: ARM at $MISIM_ARM is not ready (see its log: kubectl -n $ns logs deploy/misim-arm)" >&2; exit 1; }

lines=$(kubectl -n "$ns" get pods -l misim/vm -o jsonpath='{range .items[*]}{.metadata.labels.misim/vm}{" "}{.spec.nodeName}{" "}{.status.podIP}{" "}{.status.phase}{" "}{.metadata.annotations.misim/resource-group}{"\n"}{end}')
failed=0
declare -A groups=()
while read -r vm node ip phase rg; do
  [ -n "$vm" ] || continue
  rg=${rg:-rg1}
  if [ "$phase" != "Running" ] || [ -z "$ip" ]; then
    echo "register-vms.sh: $vm is $phase without a pod IP yet: run again when it is Running" >&2
    failed=1
    continue
  fi
  if [ -z "${groups[$rg]:-}" ]; then
    "$misim" group create -n "$rg" >/dev/null
    groups[$rg]=1
  fi
  out=$("$misim" vm create -g "$rg" -n "$vm" --host "$node" --private-ip "$ip")
  bound=$(printf '%s' "$out" | python3 -c 'import json,sys; v=json.load(sys.stdin); print(v["host"], v["privateIps"])')
  if [ "$bound" != "$node $ip" ]; then
    echo "register-vms.sh: VM $rg/$vm is bound to '$bound', the pod is on '$node $ip': delete the VM (misim vm delete -g $rg -n $vm) and run again" >&2
    failed=1
    continue
  fi
  echo "register-vms.sh: $rg/$vm -> host $node, private IP $ip"
done <<<"$lines"
exit "$failed"
