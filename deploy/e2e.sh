#!/usr/bin/env bash
# End-to-end check of the container deployment: brings the stack up from a clean state, drives ARM from
# the machine with the misim CLI (published loopback port), gets tokens inside VM containers from
# 169.254.169.254 (curl and azure-identity), verifies them against Azure AD's JWKS (fetched from the
# published loopback port; the verifier runs in the VM image, network none, so the machine's Python
# does not matter), restarts ARM, runs the attack suite (deploy/attack.sh), and tears everything down
# (volumes included).
#
#   deploy/e2e.sh
#
# Prints PASS/FAIL per check and ends with "N passed, M failed"; exits 1 if any check failed.
# Environment: MISIM_BIN (CLI binary, default target/release/misim), MISIM_E2E_SKIP_BUILD=1 (use the
# existing images), MISIM_E2E_KEEP=1 (leave the stack running), MISIM_ARM_GRPC_PORT / MISIM_ARM_REST_PORT /
# MISIM_AAD_HTTP_PORT (published loopback ports, default 7700 / 7701 / 7702).
# Safety: the machine only talks to 127.0.0.1; 169.254.169.254 is called only inside VM containers,
# which sit on internal networks.
# Files: its own temporary directory (mktemp -d), removed at the end.
set -uo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/.." && pwd)"
cd "$here" || exit 1

if command -v docker-compose >/dev/null 2>&1; then
  compose() { docker-compose "$@"; }
else
  compose() { docker compose "$@"; }
fi
export COMPOSE_PROJECT_NAME="${COMPOSE_PROJECT_NAME:-misim}"
export MISIM_ARM_GRPC_PORT="${MISIM_ARM_GRPC_PORT:-7700}"
export MISIM_ARM_REST_PORT="${MISIM_ARM_REST_PORT:-7701}"
export MISIM_AAD_HTTP_PORT="${MISIM_AAD_HTTP_PORT:-7702}"
export MISIM_ARM="http://127.0.0.1:$MISIM_ARM_GRPC_PORT"
misim_bin="${MISIM_BIN:-$root/target/release/misim}"
jwks="http://127.0.0.1:$MISIM_AAD_HTTP_PORT/common/discovery/keys"
vm_image="local/misim-vm:latest"
tmp="$(mktemp -d "${TMPDIR:-/tmp}/misim-e2e.XXXXXX")" || { echo "mktemp -d failed" >&2; exit 1; }
arm_rest="http://127.0.0.1:$MISIM_ARM_REST_PORT"
resource="https://management.azure.com/"
resource_q="https%3A%2F%2Fmanagement.azure.com%2F"
rg="rg-e2e"

passed=0
failed=0
pass() { echo "PASS $*"; passed=$((passed + 1)); }
fail() { echo "FAIL $*"; failed=$((failed + 1)); }
check() { # check NAME COMMAND...: PASS when the command succeeds
  local name="$1" out
  shift
  if out="$("$@" 2>&1)"; then pass "$name"; else fail "$name"; printf '%s\n' "$out" | tail -n 15 | sed 's/^/    /'; fi
}
finish() {
  if [ "${MISIM_E2E_KEEP:-0}" = 1 ]; then
    echo "stack left running (MISIM_E2E_KEEP=1); stop it with: cd deploy && docker-compose down -v"
  else
    compose down -v --remove-orphans >/dev/null 2>&1
  fi
  rm -rf "$tmp"
  echo "$passed passed, $failed failed"
  [ "$failed" -eq 0 ]
  exit
}
abort() { # a failed step the rest depends on: show state, stop
  fail "$*"
  echo "---- docker-compose ps"
  compose ps 2>&1 | sed 's/^/    /'
  echo "---- last logs"
  compose logs --no-color --tail=15 2>&1 | sed 's/^/    /'
  finish
}
trap 'echo "interrupted"; finish' INT TERM

misim() { "$misim_bin" "$@"; }
jget() { jq -er "$1"; } # jget FILTER < json: the value, fails when null/missing

# exec in a VM container, quietly
vm() { compose exec -T "$@"; }

# imds VM QUERY [HEADER]: GET the IMDS token endpoint from inside VM; prints body then "HTTP <code>"
imds() {
  local vm_name="$1" query="$2" header="${3:-Metadata:true}"
  vm "$vm_name" curl -s --noproxy '*' -m 10 -H "$header" -w '\nHTTP %{http_code}\n' \
    "http://169.254.169.254/metadata/identity/oauth2/token?api-version=2018-02-01&resource=${resource_q}${query}"
}
# imds_token VM QUERY: the 200 body, retrying while the identity propagates (Azure may briefly answer
# "Identity not found" after an assignment) or the listener starts; fails after ~30 s
imds_token() {
  local out
  for _ in $(seq 1 30); do
    out="$(imds "$1" "$2")"
    if [ "$(tail -n1 <<<"$out")" = "HTTP 200" ]; then
      head -n -1 <<<"$out"
      return 0
    fi
    sleep 1
  done
  echo "last answer: $out" >&2
  return 1
}
# sdk_token VM [--client-id ID]: azure-identity ManagedIdentityCredential inside VM (retries like imds_token)
sdk_token() {
  local vm_name="$1"
  shift
  for _ in $(seq 1 15); do
    if vm "$vm_name" python /opt/misim/check_token.py --scope "${resource}.default" "$@"; then return 0; fi
    sleep 2
  done
  return 1
}
# verify ARGS... < ANSWER: verify_token.py in the VM image (its Python has PyJWT[crypto]), no network,
# against the JWKS fetched from Azure AD's published loopback port just before
verify() {
  curl -fsS --noproxy '*' -m 10 -o "$tmp/jwks.json" "$jwks" || { echo "cannot fetch $jwks"; return 1; }
  docker run --rm -i --network none -v "$tmp/jwks.json:/misim/jwks.json:ro" -v "$here/verify_token.py:/misim/verify_token.py:ro" \
    --entrypoint python "$vm_image" /misim/verify_token.py --jwks-file /misim/jwks.json --tenant "$tid" --aud "$resource" "$@"
}
# azure-identity turns the scope https://management.azure.com/.default into resource=https://management.azure.com
verify_sdk() { verify --aud "${resource%/}" "$@"; }
token_verifies() { # token_verifies VM QUERY VERIFY-ARGS...: IMDS token from VM passes verify_token.py
  local vm_name="$1" query="$2" body
  shift 2
  body="$(imds_token "$vm_name" "$query")" && verify "$@" <<<"$body"
}
routes_ok() { # routes_ok ROUTES HOST_IP: no default route, 169.254.169.254 via the host
  ! grep -q "^default" <<<"$1" && grep -q "^169.254.169.254 via $2 " <<<"$1"
}
expect_400_not_found() { # expect_400_not_found VM QUERY
  local out
  out="$(imds "$1" "$2")"
  [ "$(tail -n1 <<<"$out")" = "HTTP 400" ] && grep -q '"Identity not found"' <<<"$out" || { echo "$out"; return 1; }
}
wait_healthy() { # wait_healthy SECONDS SERVICE...: every service's container running and healthy
  local deadline=$((SECONDS + $1)) svc id state
  shift
  while :; do
    local all=1
    for svc in "$@"; do
      id="$(compose ps -q "$svc" 2>/dev/null)"
      state="$( [ -n "$id" ] && docker inspect -f '{{.State.Status}}/{{if .State.Health}}{{.State.Health.Status}}{{end}}' "$id" 2>/dev/null)"
      [ "$state" = "running/healthy" ] || { all=0; [ "$SECONDS" -ge "$deadline" ] && echo "$svc: ${state:-no container}"; }
    done
    [ "$all" = 1 ] && return 0
    [ "$SECONDS" -ge "$deadline" ] && return 1
    sleep 2
  done
}

# ---------------------------------------------------------------------------------------------------
if [ "${MISIM_E2E_SKIP_BUILD:-0}" != 1 ]; then
  "$here/build-offline.sh" || abort "build images (deploy/build-offline.sh)"
fi
[ -x "$misim_bin" ] || abort "misim CLI at $misim_bin (cargo build --release --bin misim)"

echo "== clean start"
compose down -v --remove-orphans >/dev/null 2>&1
for port in "$MISIM_ARM_GRPC_PORT" "$MISIM_ARM_REST_PORT" "$MISIM_AAD_HTTP_PORT"; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    abort "127.0.0.1:$port is free (something else listens there, e.g. misim up; move the stack with MISIM_ARM_GRPC_PORT, MISIM_ARM_REST_PORT, MISIM_AAD_HTTP_PORT)"
  fi
done
compose up -d >"$tmp/up.log" 2>&1 || { cat "$tmp/up.log"; abort "docker-compose up -d"; }
services=(aad msrp host-1 host-2 arm edge vm-1a-net vm-1b-net vm-2a-net vm-2b-net vm-1a vm-1b vm-2a vm-2b kubelet pod-net pod)
if wait_healthy 150 "${services[@]}"; then
  pass "all ${#services[@]} long-running containers running and healthy"
else
  abort "containers healthy"
fi
certs_state="$(docker inspect -f '{{.State.Status}} {{.State.ExitCode}}' "$(compose ps -q certs)" 2>&1)"
check "certs (one-shot: CA + one certificate per party) exited 0 (got: $certs_state)" test "$certs_state" = "exited 0"

echo "== control-plane certificates: where the keys are"
mounts_of() { # mounts_of SERVICE: the named volumes the service's container mounts, sorted, space separated
  docker inspect -f '{{range .Mounts}}{{if eq .Type "volume"}}{{.Name}} {{end}}{{end}}' "$(compose ps -q "$1")" |
    tr ' ' '\n' | sed '/^$/d' | sort | tr '\n' ' '
}
p="${COMPOSE_PROJECT_NAME}_"
check "certs mounts the CA volume, every party's certificate volume and Azure AD's HTTPS CA" \
  test "$(mounts_of certs)" = "${p}aad-https-ca ${p}aad-https-trust ${p}ca ${p}tls-aad ${p}tls-arm ${p}tls-host-1 ${p}tls-host-2 ${p}tls-msrp "
check "aad mounts its data, its own certificate volume and its HTTPS CA (no control-plane CA)" \
  test "$(mounts_of aad)" = "${p}aad-data ${p}aad-https-ca ${p}tls-aad "
for party in msrp arm host-1 host-2; do
  check "$party mounts its data and its own certificate volume only (no CA)" \
    test "$(mounts_of "$party")" = "${p}$party-data ${p}tls-$party "
done
for name in edge vm-1a-net vm-1b-net vm-2a-net vm-2b-net vm-1a vm-1b vm-2a vm-2b pod-net; do
  check "$name mounts no volume" test -z "$(mounts_of "$name")"
done
check "kubelet mounts the projected token volume only" test "$(mounts_of kubelet)" = "${p}pod-token "
check "pod mounts the projected token volume and Azure AD's HTTPS CA certificate only" \
  test "$(mounts_of pod)" = "${p}aad-https-trust ${p}pod-token "
ro_mounts_of() { docker inspect -f '{{range .Mounts}}{{if not .RW}}{{.Destination}} {{end}}{{end}}' "$(compose ps -q "$1")" | tr ' ' '\n' | sed '/^$/d' | sort | tr '\n' ' '; }
check "pod mounts both read-only" test "$(ro_mounts_of pod)" = "/etc/misim/aad-ca /var/run/secrets/azure/tokens "

echo "== network isolation"
for v in vm-1a:host1-vms:172.31.1.2 vm-1b:host1-vms:172.31.1.2 vm-2a:host2-vms:172.31.2.2 vm-2b:host2-vms:172.31.2.2; do
  IFS=: read -r name net host_ip <<<"$v"
  net_id="$(compose ps -q "$name-net")"
  nets="$(docker inspect -f '{{range $k, $v := .NetworkSettings.Networks}}{{$k}} {{end}}' "$net_id")"
  check "$name-net joins only ${p}$net and ${p}public (joins: $nets)" test "$nets" = "${p}$net ${p}public "
  mode="$(docker inspect -f '{{.HostConfig.NetworkMode}}' "$(compose ps -q "$name")")"
  check "$name runs in $name-net's network namespace (NetworkMode $mode)" test "$mode" = "container:$net_id"
  routes="$(vm "$name" ip -4 route)"
  check "$name has no default route and routes 169.254.169.254 via $host_ip" routes_ok "$routes" "$host_ip"
  check "$name-net DNATs 169.254.169.254:80 to $host_ip:80" \
    grep -q -- "-d 169.254.169.254/32 -p tcp -m tcp --dport 80 -j DNAT --to-destination $host_ip:80" <<<"$(vm "$name-net" iptables -t nat -S OUTPUT)"
  gw="${host_ip%.*}.1"
  check "$name-net rejects everything to the machine ($gw, 172.31.10.1)" \
    test "$(vm "$name-net" iptables -S MISIM-NO-MACHINE | grep -c -e "-d $gw/32 -j REJECT" -e "-d 172.31.10.1/32 -j REJECT")" = 2
  capeff="$(vm "$name" sh -c 'grep ^CapEff: /proc/self/status' | awk '{print $2}')"
  check "$name: processes (docker-compose exec) hold neither NET_ADMIN nor NET_RAW (CapEff ${capeff:-?})" \
    test -n "$capeff" -a "$(( (0x${capeff:-0} >> 12) & 3 ))" = 0
done

echo "== control plane from the machine (misim CLI -> $MISIM_ARM)"
account="$(misim account show)" || abort "misim account show"
tid="$(jget .tenantId <<<"$account")" && sub="$(jget .id <<<"$account")" || abort "account has tenantId and id"
misim group create -n "$rg" -l westeurope >/dev/null || abort "misim group create"
declare -A vm_id
for v in vm-1a:host-1:172.31.1.11 vm-1b:host-1:172.31.1.12 vm-2a:host-2:172.31.2.11 vm-2b:host-2:172.31.2.12; do
  IFS=: read -r name host ip <<<"$v"
  out="$(misim vm create -g "$rg" -n "$name" --host "$host" --private-ip "$ip")" ||
    abort "misim vm create -n $name --host $host --private-ip $ip"
  vm_id[$name]="$(jget .id <<<"$out")"
done
pass "4 VMs created, bound to their containers by private IP"
out="$(misim vm identity assign -g "$rg" -n vm-1a --identities system)" || abort "enable system-assigned identity on vm-1a"
pa="$(jget .principalId <<<"$out")" || abort "vm-1a identity has a principalId"
uami="$(misim identity create -g "$rg" -n id-e2e)" || abort "misim identity create"
uid="$(jget .id <<<"$uami")" && cu="$(jget .clientId <<<"$uami")" && pu="$(jget .principalId <<<"$uami")" ||
  abort "user-assigned identity has id, clientId, principalId"
misim vm identity assign -g "$rg" -n vm-1b --identities id-e2e >/dev/null || abort "assign id-e2e to vm-1b"
misim vm identity assign -g "$rg" -n vm-2a --identities id-e2e >/dev/null || abort "assign id-e2e to vm-2a"
pass "system identity on vm-1a, user-assigned id-e2e on vm-1b and vm-2a"

echo "== tokens from 169.254.169.254 inside the VMs"
if body="$(imds_token vm-1a "")"; then
  pass "vm-1a: curl 169.254.169.254 (Metadata:true) -> 200 with a token"
  check "vm-1a curl token: signature (JWKS), issuer, audience, xms_mirid = vm-1a, oid = its principal" \
    verify --mirid "${vm_id[vm-1a]}" --oid "$pa" <<<"$body"
  check "vm-1a curl answer: IMDS fields are strings, token_type Bearer, resource echoed" \
    jq -e --arg r "$resource" '.token_type == "Bearer" and .resource == $r and (.expires_in|type) == "string" and (.expires_on|type) == "string"' <<<"$body"
else
  fail "vm-1a: curl 169.254.169.254 (Metadata:true) -> 200 with a token"
fi
if body="$(sdk_token vm-1a)"; then
  pass "vm-1a: azure-identity ManagedIdentityCredential (no overrides) -> token"
  check "vm-1a SDK token verifies: xms_mirid = vm-1a" verify_sdk --mirid "${vm_id[vm-1a]}" --oid "$pa" <<<"$body"
else
  fail "vm-1a: azure-identity ManagedIdentityCredential (no overrides) -> token"
fi
if body="$(sdk_token vm-1b --client-id "$cu")"; then
  pass "vm-1b: azure-identity with client_id of id-e2e -> token"
  check "vm-1b SDK token verifies: xms_mirid = id-e2e, appid = its clientId, xms_az_rid = vm-1b" \
    verify_sdk --mirid "$uid" --oid "$pu" --appid "$cu" --az-rid "${vm_id[vm-1b]}" <<<"$body"
else
  fail "vm-1b: azure-identity with client_id of id-e2e -> token"
fi
if body="$(imds_token vm-2a "&client_id=$cu")"; then
  pass "vm-2a (host-2): curl with client_id of id-e2e -> token"
  check "vm-2a token verifies: xms_mirid = id-e2e, xms_az_rid = vm-2a" \
    verify --mirid "$uid" --oid "$pu" --az-rid "${vm_id[vm-2a]}" <<<"$body"
else
  fail "vm-2a (host-2): curl with client_id of id-e2e -> token"
fi

echo "== isolation between VMs"
check "vm-1b asking for vm-1a's system identity (object_id) -> 400 Identity not found" \
  expect_400_not_found vm-1b "&object_id=$pa"
check "vm-2b (no identity) -> 400 Identity not found" expect_400_not_found vm-2b ""
check "vm-1a without the Metadata header -> 400" \
  test "$(imds vm-1a "" "X-Not-Metadata: true" | tail -n1)" = "HTTP 400"

echo "== legacy VM extension: localhost:50342 inside the VM"
ext_token() { # ext_token VM: GET localhost:50342/oauth2/token inside the VM; prints body, then "HTTP <code>"
  vm "$1" curl -s --noproxy '*' -H Metadata:true -w '\nHTTP %{http_code}' \
    "http://localhost:50342/oauth2/token?resource=$resource_q"
}
if misim vm extension set -g "$rg" --vm-name vm-1a -n ManagedIdentityExtensionForLinux \
     --publisher Microsoft.ManagedIdentity --version 1.0 --settings '{"port":50342}' >/dev/null; then
  pass "misim vm extension set ManagedIdentityExtensionForLinux on vm-1a"
  out="$(ext_token vm-1a)"
  if [ "$(tail -n1 <<<"$out")" = "HTTP 200" ]; then
    pass "vm-1a: curl localhost:50342/oauth2/token (extension) -> 200"
    check "vm-1a extension token verifies: xms_mirid = vm-1a" \
      verify --mirid "${vm_id[vm-1a]}" --oid "$pa" <<<"$(sed '$d' <<<"$out")"
  else
    fail "vm-1a: curl localhost:50342/oauth2/token (extension) -> 200"
    printf '%s\n' "$out" | tail -n 5 | sed 's/^/    /'
  fi
else
  fail "misim vm extension set ManagedIdentityExtensionForLinux on vm-1a"
fi
check "vm-1b (no extension installed): localhost:50342 -> 401 unknown_source" \
  test "$(ext_token vm-1b | tail -n1)" = "HTTP 401"

echo "== public surfaces from inside a VM (via edge, as a VM reaches them over the internet)"
aad_keys_from_vm() { vm vm-1a curl -fsS --noproxy '*' -m 10 http://aad:7702/common/discovery/keys | jq -e '.keys | length > 0'; }
check "vm-1a: Azure AD discovery keys at http://aad:7702 -> 200 with keys" aad_keys_from_vm
code="$(vm vm-1a curl -s --noproxy '*' -m 10 -o /dev/null -w '%{http_code}' "http://arm:7701${vm_id[vm-1a]}?api-version=2024-07-01")"
check "vm-1a: ARM REST at http://arm:7701 without a token -> 401 (got $code)" test "$code" = 401

echo "== step 7: ARM REST checks the VM's token"
token="$(imds_token vm-1a "" | jq -r .access_token)"
code="$(curl -s --noproxy '*' -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $token" "$arm_rest${vm_id[vm-1a]}?api-version=2024-07-01")"
check "GET vm-1a with vm-1a's token and no role -> 403 (got $code)" test "$code" = 403
misim role assignment create --assignee-object-id "$pa" --role Reader --scope "/subscriptions/$sub/resourceGroups/$rg" >/dev/null ||
  fail "role assignment create Reader for vm-1a's identity"
code="$(curl -s --noproxy '*' -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $token" "$arm_rest${vm_id[vm-1a]}?api-version=2024-07-01")"
check "GET vm-1a with Reader on the group -> 200 (got $code)" test "$code" = 200
code="$(vm vm-1a curl -s --noproxy '*' -m 10 -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $token" "http://arm:7701${vm_id[vm-1a]}?api-version=2024-07-01")"
check "the same GET from inside vm-1a (http://arm:7701) -> 200 (got $code)" test "$code" = 200

echo "== observability: a Prometheus scrape of every party from the control network"
scrape() { compose exec -T arm curl -fsS --noproxy '*' -m 10 "http://$1:9464/metrics" | grep -q '^misim_requests_total{'; }
for party_ip in aad=172.31.0.12 msrp=172.31.0.11 host-1=172.31.0.21 host-2=172.31.0.22 arm=172.31.0.10; do
  check "${party_ip%%=*}: /metrics at ${party_ip#*=}:9464 scraped from the control network" scrape "${party_ip#*=}"
done
metrics_unreachable_from_vm() { ! vm vm-1a curl -fsS --noproxy '*' -m 5 -o /dev/null http://172.31.0.21:9464/metrics; }
check "vm-1a cannot reach host-1's /metrics (control network only)" metrics_unreachable_from_vm
code="$(vm vm-1a curl -s --noproxy '*' -m 10 -o /dev/null -w '%{http_code}' http://arm:7701/console/api/state)"
check "vm-1a: ARM's console API through edge -> 403, loopback callers only (got $code)" test "$code" = 403

echo "== AKS workload identity: a pod in the stack"
# As an AKS user would: a cluster with the OIDC issuer, a user-assigned identity, a federated credential
# for the pod's service account (default/app); the kubelet stand-in projects the token into the pod.
pod_sa="system:serviceaccount:default:app"
workload_identity() {
  local out
  out="$(misim aks create -g "$rg" -n aks-e2e)" || { echo "misim aks create: $out"; return 1; }
  issuer="$(jget .oidcIssuerProfile.issuerUrl <<<"$out")" || return 1
  idpod="$(misim identity create -g "$rg" -n id-pod)" || return 1
  id_pod="$(jget .id <<<"$idpod")" && c_pod="$(jget .clientId <<<"$idpod")" && p_pod="$(jget .principalId <<<"$idpod")" || return 1
  misim identity federated-credential create -g "$rg" --identity-name id-pod -n aks-e2e-app \
    --issuer "$issuer" --subject "$pod_sa" >/dev/null
}
if workload_identity; then
  pass "aks-e2e created, id-pod with a federated credential for $pod_sa"
  check "the cluster's issuer is under ARM's public REST URL (got $issuer)" \
    grep -Eq '^http://arm:7701/oidc/[0-9a-f-]+/[0-9a-f-]+/$' <<<"$issuer"
  code="$(vm vm-1a curl -s --noproxy '*' -m 10 -o /dev/null -w '%{http_code}' "${issuer}.well-known/openid-configuration")"
  check "the issuer's discovery document answers at its URL from the public network (got $code)" test "$code" = 200
  # the webhook's variables are fixed when the pod starts: start it again now that the identity exists
  MISIM_POD_CLIENT_ID="$c_pod" MISIM_POD_TENANT_ID="$tid" compose up -d --no-deps pod >"$tmp/pod-up.log" 2>&1 ||
    { cat "$tmp/pod-up.log"; fail "docker-compose up -d pod (AZURE_CLIENT_ID of id-pod)"; }
  if wait_healthy 60 pod; then pass "pod (re)started with id-pod's client ID"; else fail "pod healthy"; fi
  pod_env="$(vm pod env)"
  check "pod has AZURE_FEDERATED_TOKEN_FILE, AZURE_CLIENT_ID, AZURE_TENANT_ID, AZURE_AUTHORITY_HOST (the webhook's)" \
    test "$(grep -c -e "^AZURE_FEDERATED_TOKEN_FILE=/var/run/secrets/azure/tokens/azure-identity-token$" \
      -e "^AZURE_CLIENT_ID=$c_pod$" -e "^AZURE_TENANT_ID=$tid$" -e "^AZURE_AUTHORITY_HOST=https://aad:7705/$" <<<"$pod_env")" = 4
  projected() { # the kubelet stand-in has written the token: iss = the issuer, sub = the service account
    vm pod python -c 'import json, os, sys, jwt
c = jwt.decode(open(os.environ["AZURE_FEDERATED_TOKEN_FILE"]).read().strip(), options={"verify_signature": False})
ok = c["iss"] == sys.argv[1] and c["sub"] == sys.argv[2] and c["aud"] == ["api://AzureADTokenExchange"]
print(json.dumps({k: c[k] for k in ("iss", "sub", "aud")})); sys.exit(0 if ok else 1)' "$issuer" "$pod_sa"
  }
  ok=0
  for _ in $(seq 1 30); do projected >/dev/null 2>&1 && { ok=1; break; }; sleep 1; done
  check "kubelet projected the service-account token into the pod (iss = issuer, sub = $pod_sa)" projected
  pod_tokens=""
  for _ in $(seq 1 10); do
    pod_tokens="$(vm pod python - --scope "${resource}.default" <"$here/pod/check_workload_identity.py" 2>"$tmp/pod-sdk.err")" && break
    pod_tokens=""
    sleep 2
  done
  for cred in WorkloadIdentityCredential DefaultAzureCredential; do
    body="$(grep "\"credential\": \"$cred\"" <<<"$pod_tokens")"
    if [ -n "$body" ]; then
      pass "pod: azure-identity $cred (no arguments) -> token"
      check "pod $cred token verifies: xms_mirid = id-pod, oid = its principal, appid = its clientId" \
        verify_sdk --mirid "$id_pod" --oid "$p_pod" --appid "$c_pod" <<<"$body"
    else
      fail "pod: azure-identity $cred (no arguments) -> token"
      sed 's/^/    /' "$tmp/pod-sdk.err" | tail -n 8
    fi
  done
  echo "== attacks from the pod"
  other="$(misim aks get-token -g "$rg" -n aks-e2e --service-account other)" || other=""
  cfg="$(jq -nc --arg tenant "$tid" --arg cid "$c_pod" --arg other "$other" '
    {control: {"MSRP": ["172.31.0.11", 7704], "Azure AD admin": ["172.31.0.12", 7703], "ARM": ["172.31.0.10", 7700],
               "host-1 agent": ["172.31.0.21", 7711], "host-2 agent": ["172.31.0.22", 7711]},
     hosts: ["172.31.1.2", "172.31.2.2"], machine: ["172.31.10.1", "172.31.0.1"],
     tenant: $tenant, client_id: $cid, other_token: $other}')"
  while IFS= read -r line; do
    case "$line" in
      PASS\ *) echo "$line"; passed=$((passed + 1)) ;;
      FAIL\ *) echo "$line"; failed=$((failed + 1)) ;;
      *) echo "    $line" ;;
    esac
  done < <(vm pod python - "$cfg" <"$here/pod/attack_pod.py" 2>&1)
else
  fail "aks-e2e created, id-pod with a federated credential for $pod_sa"
fi

echo "== ARM killed and started again"
compose kill arm >/dev/null 2>&1 && compose start arm >/dev/null 2>&1 || fail "docker-compose kill arm; start arm"
if wait_healthy 90 arm; then pass "arm healthy again after kill + start"; else abort "arm healthy after restart"; fi
check "misim vm identity show vm-1a after restart -> same principalId" \
  test "$(misim vm identity show -g "$rg" -n vm-1a | jq -r .principalId)" = "$pa"
check "vm-1a still gets a valid token after ARM restart" \
  token_verifies vm-1a "" --mirid "${vm_id[vm-1a]}" --oid "$pa"
if out="$(misim vm identity assign -g "$rg" -n vm-2b --identities system)"; then
  p2b="$(jq -r .principalId <<<"$out")"
  check "vm-2b: system identity enabled after restart converges to host-2 -> token with xms_mirid = vm-2b" \
    token_verifies vm-2b "" --mirid "${vm_id[vm-2b]}" --oid "$p2b"
else
  fail "misim vm identity assign vm-2b after ARM restart"
fi

echo "== attack suite (deploy/attack.sh): every attempt must be refused"
MISIM_BIN="$misim_bin" MISIM_ATTACK_RG="$rg" bash "$here/attack.sh" >"$tmp/attack.log" 2>&1
attack_rc=$?
sed 's/^/  /' "$tmp/attack.log"
counts="$(tail -n1 "$tmp/attack.log")"
if [[ "$counts" =~ ^([0-9]+)\ passed,\ ([0-9]+)\ failed$ ]]; then
  passed=$((passed + BASH_REMATCH[1]))
  failed=$((failed + BASH_REMATCH[2]))
  [ "$attack_rc" = 0 ] || [ "${BASH_REMATCH[2]}" != 0 ] || fail "attack.sh exit status $attack_rc"
else
  fail "attack.sh ends with 'N passed, M failed' (got: $counts)"
fi

finish
