#!/usr/bin/env bash
# Issues the control-plane certificates of a misim release (`misim certs issue`) and stores each in a
# Secret of the release namespace with cert.pem, key.pem and ca.pem:
#   <release>-tls-arm, <release>-tls-msrp, <release>-tls-aad, and <release>-tls-host-<node> for each
#   node of NODES_VALUES (a values file as node-values.sh prints it).
# Each certificate names the addresses its party is reached by (Service names; a host: its node's
# name and address). misim's CA stays on this machine in MISIM_CA_DIR (default ./misim-k8s-ca): the
# cluster never holds its key. An admin certificate for debugging (grpcurl through port-forward) is
# written to MISIM_CA_DIR/admin. Re-running replaces the Secrets (restart the pods to pick them up).
#
#   deploy/kubernetes/make-certs.sh NAMESPACE NODES_VALUES [RELEASE]      (RELEASE default: misim)
set -euo pipefail

ns=${1:?usage: make-certs.sh NAMESPACE NODES_VALUES [RELEASE]}
values=${2:?usage: make-certs.sh NAMESPACE NODES_VALUES [RELEASE]}
release=${3:-misim}
misim=${MISIM:-misim}
ca_dir=${MISIM_CA_DIR:-./misim-k8s-ca}
# The chart's object names: the release name, or <release>-misim when it does not contain "misim".
case "$release" in *misim*) full=$release ;; *) full="$release-misim" ;; esac

command -v "$misim" >/dev/null || { echo "make-certs.sh: '$misim' not found: build it (cargo build) and put it on PATH, or set MISIM" >&2; exit 1; }
umask 077
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

secret() { # secret NAME DIR: create or replace the Secret NAME from DIR/{cert,key,ca}.pem
  kubectl -n "$ns" create secret generic "$1" \
    --from-file=cert.pem="$2/cert.pem" --from-file=key.pem="$2/key.pem" --from-file=ca.pem="$2/ca.pem" \
    --dry-run=client -o yaml \
    | kubectl label --local -f - -o yaml app.kubernetes.io/name=misim app.kubernetes.io/instance="$release" misim/tls=true \
    | kubectl apply -f - >/dev/null
  echo "make-certs.sh: secret $ns/$1"
}

party() { # party ROLE: a certificate for a Deployment behind its Service
  local svc="$full-$1"
  "$misim" certs issue --ca-dir "$ca_dir" --role "$1" --out "$work/$1" \
    --name "$svc" --name "$svc.$ns" --name "$svc.$ns.svc" --name "$svc.$ns.svc.cluster.local" >/dev/null
  secret "$full-tls-$1" "$work/$1"
}

party arm
party msrp
party aad
hosts=0
while read -r name address; do
  "$misim" certs issue --ca-dir "$ca_dir" --role "host:$name" --out "$work/host-$name" \
    --name "$name" --name "$address" >/dev/null
  secret "$full-tls-host-$name" "$work/host-$name"
  hosts=$((hosts + 1))
done < <(sed -nE 's/^ *- *\{ *name: *([^,} ]+) *, *address: *([0-9.]+) *\} *$/\1 \2/p' "$values")
if [ "$hosts" -eq 0 ]; then
  echo "make-certs.sh: no '- {name: NODE, address: IP}' line in $values (make it with node-values.sh)" >&2
  exit 1
fi
"$misim" certs issue --ca-dir "$ca_dir" --role admin --out "$ca_dir/admin" >/dev/null
echo "make-certs.sh: $hosts host certificates; CA and admin certificate in $ca_dir (keep them off the cluster)"
