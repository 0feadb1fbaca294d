#!/usr/bin/env bash
# Prints the `hosts.nodes` values of the misim chart for the current kubectl context: each node that
# pods can be scheduled on (no NoSchedule or NoExecute taint), or each node matching MISIM_NODE_SELECTOR (a label
# selector), with its first IPv4 InternalIP. One simulated host runs on each listed node.
#
#   deploy/kubernetes/node-values.sh > nodes.yaml
#   helm install misim deploy/helm/misim -n misim --create-namespace -f nodes.yaml
set -euo pipefail

selector=()
if [ -n "${MISIM_NODE_SELECTOR:-}" ]; then
  selector=(-l "$MISIM_NODE_SELECTOR")
fi
# One line per node: NAME|ADDRESS ADDRESS…|EFFECT,EFFECT,…
lines=$(kubectl get nodes "${selector[@]}" -o jsonpath='{range .items[*]}{.metadata.name}{"|"}{range .status.addresses[?(@.type=="InternalIP")]}{.address}{" "}{end}{"|"}{range .spec.taints[*]}{.effect}{","}{end}{"\n"}{end}')

echo "hosts:"
echo "  nodes:"
count=0
while IFS='|' read -r name addresses taints; do
  [ -n "$name" ] || continue
  if [ -z "${MISIM_NODE_SELECTOR:-}" ]; then
    case ",$taints" in *,NoSchedule,* | *,NoExecute,*) continue ;; esac
  fi
  address=""
  for a in $addresses; do
    if [[ $a =~ ^[0-9]+\.[0-9]+\.[0-9]+\.[0-9]+$ ]]; then address=$a; break; fi
  done
  if [ -z "$address" ]; then
    echo "node-values.sh: node $name has no IPv4 InternalIP; misim's hosts need one (skipped)" >&2
    continue
  fi
  echo "    - {name: $name, address: $address}"
  count=$((count + 1))
done <<<"$lines"
if [ "$count" -eq 0 ]; then
  echo "node-values.sh: no schedulable node found (check the kubectl context, or set MISIM_NODE_SELECTOR)" >&2
  exit 1
fi
