"""Safety of deploy/docker-compose.yml: VM containers and the IMDS address 169.254.169.254 stay on
internal networks, nothing is published beyond the machine's loopback, no control-plane listener is
reachable from a VM, VM workloads cannot spoof addresses, and the CA key stays in the certs service.

Static checks on the parsed compose file (PyYAML); no Docker needed. MISIM_COMPOSE_FILE checks another
file (e.g. an older version: each check below fails on the file before issue 10).
"""

import ipaddress
import os
import pathlib
import re

import pytest
import yaml

COMPOSE = pathlib.Path(
    os.environ.get("MISIM_COMPOSE_FILE")
    or pathlib.Path(__file__).resolve().parents[2] / "deploy" / "docker-compose.yml"
)
IMDS = "169.254.169.254"
VM_NAME = re.compile(r"^vm-\d+[a-z]$")
# AKS pods (workload identity): workloads like the VMs, but with their projected token and the CA
# certificate of Azure AD's HTTPS listener mounted read-only, and no IMDS.
POD_NAME = re.compile(r"^pod(-\d+)?$")
# Capabilities that let a process change addresses/routes/firewall or send raw frames (spoofing).
SPOOF_CAPS = {"NET_ADMIN", "NET_RAW", "ALL"}
# Listen flags of the parties' gRPC servers (misim aad/msrp/arm/imds).
GRPC_LISTEN_FLAGS = ("--listen", "--grpc-listen")


@pytest.fixture(scope="module")
def compose():
    return yaml.safe_load(COMPOSE.read_text())


def service_networks(service):
    """Names of the networks a service joins (list or mapping form)."""
    nets = service.get("networks", {})
    return list(nets) if isinstance(nets, (list, dict)) else []


def vm_services(compose):
    """The VMs: where a VM's code runs (vm-1a, ...), not their network containers (vm-1a-net)."""
    return {name: s for name, s in compose["services"].items() if VM_NAME.match(name)}


def netns_owner(compose, name):
    """The service whose network namespace `name` uses (itself unless network_mode: service:X)."""
    mode = compose["services"][name].get("network_mode", "")
    return mode.split(":", 1)[1] if mode.startswith("service:") else name


def effective_networks(compose, name):
    return service_networks(compose["services"][netns_owner(compose, name)])


def vm_side_services(compose):
    """The VMs and the services owning their network namespaces."""
    names = set(vm_services(compose))
    names |= {netns_owner(compose, n) for n in names}
    return {n: compose["services"][n] for n in names}


def workload_side_services(compose):
    """The VMs and pods, and the services owning their network namespaces."""
    names = {n for n in compose["services"] if VM_NAME.match(n) or POD_NAME.match(n)}
    names |= {netns_owner(compose, n) for n in names}
    return {n: compose["services"][n] for n in names}


def vm_networks(compose):
    """Every network a VM joins."""
    return {net for name in vm_services(compose) for net in effective_networks(compose, name)}


def internal_networks(compose):
    return {n for n, cfg in (compose.get("networks") or {}).items() if (cfg or {}).get("internal") is True}


def command(service):
    cmd = service.get("command") or []
    return [str(c) for c in cmd] if isinstance(cmd, list) else str(cmd).split()


def flag(cmd, name):
    """Values of --name in an argument list (both `--name V` and `--name=V`)."""
    out = []
    for i, arg in enumerate(cmd):
        if arg == name and i + 1 < len(cmd):
            out.append(cmd[i + 1])
        elif arg.startswith(name + "="):
            out.append(arg.split("=", 1)[1])
    return out


def party_services(compose):
    """Services running a misim party: {name: (party, command)}."""
    out = {}
    for name, s in compose["services"].items():
        cmd = command(s)
        if cmd and cmd[0] in ("aad", "msrp", "arm", "imds"):
            out[name] = (cmd[0], cmd)
    return out


def fixed_addresses(service):
    nets = service.get("networks")
    if not isinstance(nets, dict):
        return {}
    return {net: (cfg or {}).get("ipv4_address") for net, cfg in nets.items()}


def volume_mounts(service):
    """[(volume or path, target, read_only)] of a service's `volumes` (short form)."""
    out = []
    for v in service.get("volumes") or []:
        if isinstance(v, dict):
            out.append((v.get("source"), v.get("target"), bool(v.get("read_only"))))
        else:
            parts = str(v).split(":")
            out.append((parts[0], parts[1] if len(parts) > 1 else parts[0], len(parts) > 2 and "ro" in parts[2]))
    return out


# ------------------------------------------------------------------------------------------------ VMs
def test_there_are_vm_services(compose):
    assert set(vm_services(compose)) == {"vm-1a", "vm-1b", "vm-2a", "vm-2b"}


def test_every_network_a_vm_joins_is_internal(compose):
    internal = internal_networks(compose)
    for name in vm_services(compose):
        nets = effective_networks(compose, name)
        assert nets, f"{name} joins no network (it would get the default, non-internal one)"
        for net in nets:
            assert net in internal, f"{name} joins {net}, which is not internal: true"


def test_vms_publish_nothing_and_do_not_share_the_machine_network(compose):
    for name, service in vm_side_services(compose).items():
        assert "ports" not in service, f"{name} publishes ports"
        assert "extra_hosts" not in service, f"{name} sets extra_hosts"
        mode = service.get("network_mode")
        if VM_NAME.match(name):
            # the VM shares only its own network container's namespace (vm-1a -> vm-1a-net)
            assert mode in (None, f"service:{name}-net"), f"{name} sets network_mode {mode}"
        else:
            assert mode is None, f"{name} sets network_mode {mode}"


def test_vm_workloads_cannot_spoof_addresses(compose):
    """Where a VM's code runs there is neither NET_ADMIN nor NET_RAW (Docker grants NET_RAW unless
    dropped), no privileged mode, no way to regain capabilities; the network setup is done by a
    separate container owning the namespace. Only those network containers get NET_ADMIN. Pods too."""
    vms = {n: s for n, s in compose["services"].items() if VM_NAME.match(n) or POD_NAME.match(n)}
    for name, service in vms.items():
        dropped = {c.upper() for c in service.get("cap_drop") or []}
        added = {c.upper() for c in service.get("cap_add") or []}
        assert not service.get("privileged"), f"{name} is privileged"
        assert not added & SPOOF_CAPS, f"{name} adds {added & SPOOF_CAPS}"
        assert "ALL" in dropped or {"NET_ADMIN", "NET_RAW"} <= dropped, f"{name} keeps NET_ADMIN/NET_RAW"
        assert "no-new-privileges:true" in (service.get("security_opt") or []), f"{name} may gain privileges"
        owner = netns_owner(compose, name)
        assert owner != name, f"{name} owns its network namespace (its setup would need NET_ADMIN in it)"
    owners = {netns_owner(compose, n) for n in vms}
    for name, service in compose["services"].items():
        added = {c.upper() for c in service.get("cap_add") or []}
        if added & SPOOF_CAPS:
            assert name in owners, f"{name} gets {added & SPOOF_CAPS} but is no VM's network container"
            assert not service.get("privileged"), f"{name} is privileged"
            assert service.get("entrypoint") == ["vm-entrypoint.sh"], f"{name} runs more than the network setup"


def test_vm_network_containers_block_the_machine(compose):
    """vm-entrypoint.sh drops packets to the first address of each of the VM's subnets: that must be
    the network's gateway (the machine's address on the bridge), pinned so."""
    for net in vm_networks(compose):
        config = compose["networks"][net]["ipam"]["config"][0]
        subnet = ipaddress.ip_network(config["subnet"])
        gateway = config.get("gateway")
        assert gateway, f"network {net}: no fixed gateway (the VM blocks the subnet's first address)"
        assert ipaddress.ip_address(gateway) == next(subnet.hosts()), f"network {net}: gateway is not the first address"


def test_vms_mount_nothing(compose):
    for name, service in vm_side_services(compose).items():
        assert not service.get("volumes"), f"{name} mounts {service.get('volumes')}"


def test_pods_mount_only_their_token_and_the_https_ca_read_only(compose):
    """A pod mounts its projected service-account token and the HTTPS CA certificate, read-only; no
    certificate, CA key or data volume of a party."""
    services = compose["services"]
    pods = {n: s for n, s in services.items() if POD_NAME.match(n)}
    assert pods, "no pod service"
    party_volumes = {
        src: party for party in party_services(compose) for src, _, _ in volume_mounts(services[party])
    }
    for name, service in pods.items():
        mounts = volume_mounts(service)
        for src, target, read_only in mounts:
            assert read_only, f"{name} mounts {src} at {target} writable"
            assert src not in party_volumes, f"{name} mounts {party_volumes.get(src)}'s volume {src}"
        assert "/var/run/secrets/azure/tokens" in {t for _, t, _ in mounts}, f"{name}: no projected token"


def test_imds_address_is_only_used_by_services_on_internal_networks(compose):
    internal = internal_networks(compose)
    for name, service in compose["services"].items():
        if IMDS in yaml.safe_dump(service):
            assert set(effective_networks(compose, name)) & internal, f"{name} uses {IMDS} but joins no internal network"
    # and never as a network of its own or a published address
    assert IMDS not in yaml.safe_dump(compose.get("networks") or {})


def test_published_ports_bind_loopback_only(compose):
    for name, service in compose["services"].items():
        for port in service.get("ports", []):
            if isinstance(port, dict):
                host_ip = port.get("host_ip")
            else:
                # ${VAR:-default} -> default, as compose interpolates it when VAR is unset
                spec = re.sub(r"\$\{[A-Za-z_][A-Za-z0-9_]*(?::?-([^}]*))?\}", lambda m: m.group(1) or "", str(port))
                parts = spec.split(":")
                host_ip = parts[0] if len(parts) == 3 else None
            assert host_ip == "127.0.0.1", f"{name} publishes {port} beyond loopback"


def test_vms_route_imds_to_their_own_host(compose):
    """Each VM's MISIM_HOST_IP (where its 169.254.169.254:80 is DNATed) is the fixed address of one host
    service on one of the VM's networks, and that host's shared IMDS listens there on port 80."""
    services = compose["services"]
    for name in vm_services(compose):
        owner = services[netns_owner(compose, name)]
        host_ip = owner["environment"]["MISIM_HOST_IP"]
        hosts = [
            (h, net)
            for net in service_networks(owner)
            for h, s in services.items()
            if h not in vm_side_services(compose) and fixed_addresses(s).get(net) == host_ip
        ]
        assert len(hosts) == 1, f"{name}: no single host at {host_ip} on its networks"
        (host, net), = hosts
        subnet = ipaddress.ip_network(compose["networks"][net]["ipam"]["config"][0]["subnet"])
        assert ipaddress.ip_address(owner["networks"][net]["ipv4_address"]) in subnet
        assert flag(command(services[host]), "--imds-listen") == [f"{host_ip}:80"], f"{host} IMDS not on {host_ip}:80"


def test_every_network_has_a_fixed_subnet_and_they_do_not_overlap(compose):
    """Docker's auto-allocated subnets drift (172.17 -> 172.31) and can collide with the fixed VM
    subnets, so every network of the stack pins its own, and no two overlap."""
    nets = compose["networks"]
    subnets = {}
    for name, net in nets.items():
        configs = ((net or {}).get("ipam") or {}).get("config") or []
        assert configs and configs[0].get("subnet"), f"network {name} has no fixed subnet"
        subnets[name] = ipaddress.ip_network(configs[0]["subnet"])
    names = list(subnets)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            assert not subnets[a].overlaps(subnets[b]), f"{a} and {b} overlap"


# --------------------------------------------------------------------------------------- control plane
def test_grpc_listeners_bind_the_control_network_only(compose):
    """Every party's gRPC listener (host agents' --listen, MSRP's --listen, --grpc-listen of ARM and
    Azure AD) binds the service's fixed address on a network no VM joins, never 0.0.0.0 / ::."""
    vm_nets = vm_networks(compose)
    parties = party_services(compose)
    assert parties, "no misim party services"
    for name, (_, cmd) in parties.items():
        addrs = fixed_addresses(compose["services"][name])
        for f in GRPC_LISTEN_FLAGS:
            for value in flag(cmd, f):
                ip = value.rsplit(":", 1)[0].strip("[]")
                assert not ipaddress.ip_address(ip).is_unspecified, f"{name} {f} {value}: every interface"
                nets = [net for net, a in addrs.items() if a == ip]
                assert nets, f"{name} {f} {value}: not one of its fixed addresses {addrs}"
                assert not set(nets) & vm_nets, f"{name} {f} {value}: on a network VMs join ({nets})"


def test_networks_vms_join_carry_no_control_plane(compose):
    """On a network a VM joins, the only other services are its host (listening there only with the
    shared IMDS and extension listeners) and the edge forwarder (ARM REST and Azure AD HTTP)."""
    vm_nets = vm_networks(compose)
    side = workload_side_services(compose)
    parties = party_services(compose)
    for name, service in compose["services"].items():
        on = set(service_networks(service)) & vm_nets
        if name in side or not on:
            continue
        party, cmd = parties.get(name, (None, command(service)))
        if party == "imds":
            assert "--no-vm-listeners" in cmd, f"{name}: per-VM IMDS listeners on a VM network"
            assert not flag(cmd, "--vm-listen-ip"), f"{name}: --vm-listen-ip on a VM network"
            vm_addrs = {a for net, a in fixed_addresses(service).items() if net in vm_nets}
            for f in GRPC_LISTEN_FLAGS:
                for value in flag(cmd, f):
                    ip = value.rsplit(":", 1)[0].strip("[]")
                    assert ip not in vm_addrs and not ipaddress.ip_address(ip).is_unspecified, \
                        f"{name}: {f} {value} is reachable from VMs"
        else:
            assert party is None, f"{name} ({party}) joins {sorted(on)}, a network VMs join"
            text = yaml.safe_dump(service)
            ports = sorted({int(p) for p in re.findall(r"TCP-LISTEN:(\d+)", text)})
            assert ports and set(ports) <= {7701, 7702, 7705}, f"{name} on {sorted(on)} listens on {ports or 'unknown ports'}"


def test_every_party_has_its_own_certificate_and_only_certs_holds_the_ca(compose):
    """Each party gets --control-tls-dir from a volume of its own, mounted read-only and by no other
    party; the CA directory's volume is mounted by the one-shot certs service only."""
    services = compose["services"]
    assert "certs" in services, "no certs service (the CA and the parties' certificates)"
    certs_text = "\n".join(str(c) for c in (services["certs"].get("command") or []))
    # the control-plane CA: the one certs issues the parties' certificates (--out /tls/...) from
    ca_dirs = set(re.findall(r"--ca-dir[ =](\S+)[^\n]*?--out[ =]\"?/tls/", certs_text))
    assert ca_dirs, "certs issues no certificate (misim certs issue --ca-dir ... --out /tls/PARTY)"
    ca_volumes = {
        src
        for src, target, _ in volume_mounts(services["certs"])
        if any(d == target or d.startswith(target.rstrip("/") + "/") for d in ca_dirs)
    }
    assert ca_volumes, f"the CA directory {ca_dirs} is not on a volume of certs"
    assert services["certs"].get("network_mode") == "none", "certs (holding the CA key) has a network"
    for name, service in services.items():
        if name != "certs":
            for src, target, _ in volume_mounts(service):
                assert src not in ca_volumes, f"{name} mounts the CA volume {src} at {target}"
    tls_volumes = {}
    for name, (party, cmd) in party_services(compose).items():
        dirs = flag(cmd, "--control-tls-dir")
        assert dirs, f"{name} ({party}) has no --control-tls-dir: it would issue its own from a CA it can read"
        mounts = [m for m in volume_mounts(services[name]) if m[1] == dirs[0]]
        assert mounts, f"{name}: --control-tls-dir {dirs[0]} is not a mounted volume"
        src, _, read_only = mounts[0]
        assert read_only, f"{name} mounts its certificate volume {src} writable"
        assert src not in tls_volumes, f"{name} and {tls_volumes.get(src)} share the certificate volume {src}"
        tls_volumes[src] = name
        # --ca-dir only for an HTTPS listener's own CA (Azure AD's, for workload identity), read-only,
        # never the control-plane CA's volume (checked above for every service)
        for ca_dir in flag(cmd, "--ca-dir"):
            assert flag(cmd, "--https-listen"), f"{name} is given a CA directory without an HTTPS listener"
            ca_mounts = [m for m in volume_mounts(services[name]) if ca_dir.startswith(m[1].rstrip("/") + "/")]
            assert ca_mounts and ca_mounts[0][2], f"{name}: --ca-dir {ca_dir} is not on a read-only volume"
    certs_volumes = {src for src, _, _ in volume_mounts(services["certs"])}
    assert set(tls_volumes) <= certs_volumes, f"certs does not write {set(tls_volumes) - certs_volumes}"
