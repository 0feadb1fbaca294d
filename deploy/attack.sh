#!/usr/bin/env bash
# Attack suite of the container stack (issue 10): tries, as code in a VM and as a container on the
# control network, every way found to get an identity that is not one's own, and checks each is refused.
#
#   deploy/attack.sh        # stack up (docker-compose up -d), VMs vm-1a, vm-1b, vm-2a, vm-2b created in
#                           # group $MISIM_ATTACK_RG (default rg-e2e) bound to their containers' private
#                           # IPs, as deploy/e2e.sh does (which runs this suite at its end)
#
# Setup (through ARM, as an admin would): user-assigned identities id-victim-1 on vm-1a (host-1) and
# id-victim-2 on vm-2a (host-2). Then, with deploy/attack_vm.py piped into the containers:
#   - vm-1b and vm-2b (each next to a victim on its host) try to get a victim's token or key: host agent
#     gRPC (ListVms, ConfigureIdentities attaching the other host's victim) at every host address and
#     port they can name, h2c and TLS without a client certificate; MSRP GetCredential, Azure AD admin
#     AddKeyCredential and ARM gRPC at every address; other hosts' IMDS and extension listeners; a port
#     scan of their host and every open port (per-VM listeners); X-Forwarded-For / X-Real-IP /
#     Forwarded / ... headers naming the victim's address; another VM's identity selectors; address
#     spoofing (ip addr add, IP_FREEBIND, raw sockets for gratuitous ARP), changing routes or the
#     firewall; the machine's addresses (bridge gateways) and IPv6; ARM REST and Azure AD without the
#     right credentials; volumes and private keys readable in the VM;
#   - a container on the control network, without a certificate and with host-1's certificate, calls
#     MSRP GetCredential for host-2's identity, AddKeyCredential, ListVms and ConfigureIdentities;
#   - on the machine: key files in the parties' volumes readable beyond their owner.
# One PASS/FAIL line per attempt (PASS = refused: no token, no listing, no key), then `N passed, N failed`;
# exits 1 if any attempt was not refused.
# Environment: MISIM_BIN (CLI, default target/release/misim), MISIM_ARM (default
# http://127.0.0.1:$MISIM_ARM_GRPC_PORT), COMPOSE_PROJECT_NAME (default misim), MISIM_ATTACK_RG.
# Safety: the machine talks only to 127.0.0.1 (ARM) and to Docker; all network attempts run inside
# containers of the stack.
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
project="$COMPOSE_PROJECT_NAME"
export MISIM_ARM="${MISIM_ARM:-http://127.0.0.1:${MISIM_ARM_GRPC_PORT:-7700}}"
misim_bin="${MISIM_BIN:-$root/target/release/misim}"
rg="${MISIM_ATTACK_RG:-rg-e2e}"
vm_image="${MISIM_VM_IMAGE:-local/misim-vm:latest}"
resource_q="https%3A%2F%2Fmanagement.azure.com%2F"

# The stack's fixed control addresses (docker-compose.yml)
control='{"arm":"172.31.0.10","msrp":"172.31.0.11","aad":"172.31.0.12","host-1":"172.31.0.21","host-2":"172.31.0.22"}'

passed=0
failed=0
tally() { # reads attack lines, prints them, counts PASS/FAIL
  local line
  while IFS= read -r line; do
    printf '%s\n' "$line"
    case "$line" in
      PASS\ *) passed=$((passed + 1)) ;;
      FAIL\ *) failed=$((failed + 1)) ;;
    esac
  done
}
fail() { echo "FAIL $*"; failed=$((failed + 1)); }
finish() {
  echo "$passed passed, $failed failed"
  [ "$failed" -eq 0 ]
  exit
}
misim() { "$misim_bin" "$@"; }
jget() { jq -er "$1"; }

# ---------------------------------------------------------------------------------------------- setup
[ -x "$misim_bin" ] || { fail "setup: misim CLI at $misim_bin"; finish; }
for v in vm-1a vm-1b vm-2a vm-2b; do
  [ -n "$(compose ps -q "$v" 2>/dev/null)" ] || { fail "setup: container $v running (docker-compose up -d)"; finish; }
done
tid="$(misim account show | jget .tenantId)" || { fail "setup: misim account show ($MISIM_ARM)"; finish; }

declare -A vm_json ident_json uami
for v in vm-1a vm-1b vm-2a vm-2b; do
  vm_json[$v]="$(misim vm show -g "$rg" -n "$v")" || { fail "setup: misim vm show -g $rg -n $v (run deploy/e2e.sh, or create the VMs)"; finish; }
done
for pair in id-victim-1:vm-1a id-victim-2:vm-2a; do
  IFS=: read -r idn vmn <<<"$pair"
  uami[$idn]="$(misim identity show -g "$rg" -n "$idn" 2>/dev/null || misim identity create -g "$rg" -n "$idn")" ||
    { fail "setup: misim identity create -n $idn"; finish; }
  misim vm identity assign -g "$rg" -n "$vmn" --identities "$idn" >/dev/null ||
    { fail "setup: assign $idn to $vmn"; finish; }
done
for v in vm-1a vm-1b vm-2a vm-2b; do
  ident_json[$v]="$(misim vm identity show -g "$rg" -n "$v")" || ident_json[$v]=null
done
# the victims' hosts hold their identities: each victim VM gets a token for its id-victim-N
for pair in id-victim-1:vm-1a id-victim-2:vm-2a; do
  IFS=: read -r idn vmn <<<"$pair"
  cid="$(jget .clientId <<<"${uami[$idn]}")"
  ok=0
  for _ in $(seq 1 30); do
    code="$(compose exec -T "$vmn" curl -s --noproxy '*' -m 5 -o /dev/null -w '%{http_code}' -H Metadata:true \
      "http://169.254.169.254/metadata/identity/oauth2/token?api-version=2018-02-01&resource=$resource_q&client_id=$cid")"
    [ "$code" = 200 ] && { ok=1; break; }
    sleep 1
  done
  [ "$ok" = 1 ] || { fail "setup: $vmn gets a token for $idn (last HTTP $code)"; finish; }
done
echo "setup: id-victim-1 on vm-1a (host-1), id-victim-2 on vm-2a (host-2)"

ref() { # ref IDENTITY-NAME: IdentityRef JSON of a user-assigned identity
  jq -c --arg n "$1" '{name: $n, kind: "user", msi_res_id: .id, client_id: .clientId, principal_id: .principalId, tenant_id: .tenantId}' <<<"${uami[$1]}"
}
# own_mirids VM: lower-case xms_mirid values of the VM's own identities
own_mirids() {
  jq -c --arg vm "$(jget .id <<<"${vm_json[$1]}")" '
    [ (if (.type // "") | test("SystemAssigned") then $vm else empty end),
      ((.userAssignedIdentities // {}) | keys[]) ] | map(ascii_downcase)' <<<"${ident_json[$1]}"
}
# victim_selectors VICTIM ATTACKER: IMDS selectors of the victim's identities the attacker does not have
victim_selectors() {
  jq -c --arg vm "$(jget .id <<<"${vm_json[$1]}")" --argjson own "$(own_mirids "$2")" '
    [ (if (.type // "") | test("SystemAssigned") then [["object_id", .principalId], ["msi_res_id", $vm]] else [] end)[],
      ((.userAssignedIdentities // {}) | to_entries[] | select((.key | ascii_downcase) as $k | $own | index($k) | not)
        | (["client_id", .value.clientId], ["object_id", .value.principalId], ["msi_res_id", .key])) ]' <<<"${ident_json[$1]}"
}
# my_refs VM: IdentityRefs of the VM's user-assigned identities (kept in the ConfigureIdentities attempt)
my_refs() {
  jq -c --arg tid "$tid" '[(.userAssignedIdentities // {}) | to_entries[]
    | {kind: "user", msi_res_id: .key, client_id: .value.clientId, principal_id: .value.principalId, tenant_id: $tid}]' \
    <<<"${ident_json[$1]}"
}

vm_config() { # vm_config ATTACKER VICTIM HOST HOST_IP OTHER_HOST_IP CROSS_IDENTITY
  jq -nc --arg me "$1" --arg victim "$2" --arg host "$3" --arg host_ip "$4" --arg other "$5" \
    --arg my_vm_id "$(jget .id <<<"${vm_json[$1]}")" --arg victim_vm_id "$(jget .id <<<"${vm_json[$2]}")" \
    --arg victim_ip "$(jq -r '.privateIps // ""' <<<"${vm_json[$2]}")" \
    --argjson own "$(own_mirids "$1")" --argjson sel "$(victim_selectors "$2" "$1")" \
    --argjson refs "$(my_refs "$1")" --argjson cross "$(ref "$6")" --argjson control "$control" '
    {me: $me, victim_name: $victim, victim_ip: $victim_ip, victim_vm_id: $victim_vm_id, host_name: $host,
     host_ip: $host_ip, other_host_ips: [$other], host_names: ["host-1", "host-2"], control: $control,
     my_vm_id: $my_vm_id, own_mirids: $own, victim_selectors: $sel, my_refs: $refs, cross: $cross,
     machine_ips: ["172.31.0.1", "172.17.0.1"]}'
}

# ------------------------------------------------------------------------------------------ VM attacks
declare -A victim_ip_of=([vm-1a]=172.31.1.11 [vm-2a]=172.31.2.11)
for spec in vm-1b:vm-1a:host-1:172.31.1.2:172.31.2.2:id-victim-2 vm-2b:vm-2a:host-2:172.31.2.2:172.31.1.2:id-victim-1; do
  IFS=: read -r attacker victim host host_ip other cross <<<"$spec"
  cfg="$(vm_config "$attacker" "$victim" "$host" "$host_ip" "$other" "$cross")" ||
    { fail "setup: attack configuration for $attacker"; continue; }
  # the private IP ARM knows is the victim container's address; fall back to the fixed one
  [ "$(jq -r .victim_ip <<<"$cfg")" = "" ] && cfg="$(jq -c --arg ip "${victim_ip_of[$victim]}" '.victim_ip = $ip' <<<"$cfg")"
  echo "== $attacker (on $host) attacks $victim and $cross"
  tally < <(compose exec -T "$attacker" python - vm "$cfg" <"$here/attack_vm.py" 2>&1)
done

# ------------------------------------------------------------------------------- connection flood
echo "== connection flood: vm-2b holds ~24000 idle connections to host-2's IMDS (more than a process's"
echo "   20000 open files in the stack); vm-2a asks for its token meanwhile"
# two processes: each VM process has its own open-files limit too
flood_logs=()
flood_pids=()
for i in 1 2; do
  flood_logs[$i]="$(mktemp "${TMPDIR:-/tmp}/misim-attack-flood.XXXXXX")"
  compose exec -T vm-2b python - flood '{"host": "172.31.2.2", "port": 80, "count": 12000, "hold": 30}' \
    <"$here/attack_vm.py" >"${flood_logs[$i]}" 2>&1 &
  flood_pids[$i]=$!
done
for _ in $(seq 1 120); do
  up=0
  for i in 1 2; do
    if grep -q '^holding' "${flood_logs[$i]}" || ! kill -0 "${flood_pids[$i]}" 2>/dev/null; then up=$((up + 1)); fi
  done
  [ "$up" = 2 ] && break
  sleep 1
done
holding="$(for i in 1 2; do grep '^holding' "${flood_logs[$i]}" || tail -n 2 "${flood_logs[$i]}"; done | tr '\n' ';')"
cid2="$(jget .clientId <<<"${uami[id-victim-2]}")"
res="$(compose exec -T vm-2a curl -s --noproxy '*' -m 15 -o /dev/null -w '%{http_code} %{time_total}' -H Metadata:true \
  "http://169.254.169.254/metadata/identity/oauth2/token?api-version=2018-02-01&resource=$resource_q&client_id=$cid2")"
read -r code secs <<<"$res"
if [ "$code" = 200 ] && awk -v t="${secs:-99}" 'BEGIN { exit !(t < 1.0) }'; then
  echo "PASS vm-2a gets its token within 1 s while vm-2b floods their host -- HTTP $code in ${secs}s; vm-2b: $holding"
  passed=$((passed + 1))
else
  fail "vm-2a gets its token within 1 s while vm-2b floods their host -- HTTP ${code:-none} in ${secs:-?}s; vm-2b: $holding"
fi
wait "${flood_pids[@]}" 2>/dev/null
rm -f "${flood_logs[@]}"

# ------------------------------------------------------------------------------- control-network attacks
victim2="$(ref id-victim-2 | jq -c '. + {host: "host-2"}')"
attach="$(jq -nc --arg id "$(jget .id <<<"${vm_json[vm-1a]}")" '{host: "host-1", vm_id: $id, vm_name: "vm-1a"}')"
control_run() { # control_run CONFIG [docker run options...]
  local cfg="$1"
  shift
  docker run --rm -i --network "${project}_control" --cap-drop NET_RAW --entrypoint python "$@" "$vm_image" \
    - control "$cfg" <"$here/attack_vm.py" 2>&1
}
echo "== a container on the control network, without a certificate"
cfg="$(jq -nc --arg who "control, no certificate" --argjson control "$control" --argjson v "$victim2" --argjson a "$attach" \
  '{who: $who, control: $control, victim: $v, attach: $a, host_names: ["host-1", "host-2"]}')"
tally < <(control_run "$cfg")
echo "== a container on the control network with host-1's certificate (a compromised host)"
if docker volume inspect "${project}_tls-host-1" >/dev/null 2>&1; then
  own="$(ref id-victim-1)"
  cfg="$(jq -nc --arg who "control, host-1's certificate" --argjson control "$control" --argjson v "$victim2" \
    --argjson a "$attach" --argjson own "$own" \
    '{who: $who, control: $control, victim: $v, attach: $a, host_names: ["host-1", "host-2"], cert_dir: "/tls",
      as_host: "host-1", own_credential: $own}')"
  tally < <(control_run "$cfg" -v "${project}_tls-host-1:/tls:ro")
else
  echo "SKIP no volume ${project}_tls-host-1 (a stack without control-plane certificates)"
fi

# ------------------------------------------------------------------------------- key files at rest
echo "== key files in the parties' volumes (what another local user or a non-root process could read)"
for vol in ca tls-aad tls-msrp tls-arm tls-host-1 tls-host-2 aad-data msrp-data arm-data host-1-data host-2-data; do
  docker volume inspect "${project}_$vol" >/dev/null 2>&1 || continue
  tally < <(docker run --rm -i --network none -v "${project}_$vol:/v:ro" --entrypoint python "$vm_image" \
    - keys "{\"root\": \"/v\", \"label\": \"volume ${project}_$vol\"}" <"$here/attack_vm.py" 2>&1)
done
echo "== CA key only in the certs service"
if docker volume inspect "${project}_ca" >/dev/null 2>&1; then
  users="$(docker ps -a --filter "volume=${project}_ca" --format '{{.Label "com.docker.compose.service"}}' | sort -u | tr '\n' ' ')"
  if [ "$users" = "certs " ]; then
    echo "PASS volume ${project}_ca (the CA key) is mounted by the certs service only -- $users"
    passed=$((passed + 1))
  else
    fail "volume ${project}_ca (the CA key) is mounted by the certs service only -- mounted by: $users"
  fi
else
  fail "volume ${project}_ca exists (the stack's CA; compose file without a certs service?)"
fi

finish
