"""Safety of deploy/docker-compose.yml: VM containers and the IMDS address 169.254.169.254 stay on
internal networks, and nothing is published beyond the machine's loopback.

Static checks on the parsed compose file (PyYAML); no Docker needed.
"""

import ipaddress
import pathlib
import re

import pytest
import yaml

COMPOSE = pathlib.Path(__file__).resolve().parents[2] / "deploy" / "docker-compose.yml"
IMDS = "169.254.169.254"


@pytest.fixture(scope="module")
def compose():
    return yaml.safe_load(COMPOSE.read_text())


def service_networks(service):
    """Names of the networks a service joins (list or mapping form)."""
    nets = service.get("networks", {})
    return list(nets) if isinstance(nets, (list, dict)) else []


def vm_services(compose):
    return {name: s for name, s in compose["services"].items() if name.startswith("vm-")}


def internal_networks(compose):
    return {n for n, cfg in (compose.get("networks") or {}).items() if (cfg or {}).get("internal") is True}


def test_there_are_vm_services(compose):
    assert set(vm_services(compose)) == {"vm-1a", "vm-1b", "vm-2a", "vm-2b"}


def test_every_network_a_vm_joins_is_internal(compose):
    internal = internal_networks(compose)
    for name, service in vm_services(compose).items():
        nets = service_networks(service)
        assert nets, f"{name} joins no network (it would get the default, non-internal one)"
        for net in nets:
            assert net in internal, f"{name} joins {net}, which is not internal: true"


def test_vms_publish_nothing_and_do_not_share_the_machine_network(compose):
    for name, service in vm_services(compose).items():
        assert "ports" not in service, f"{name} publishes ports"
        assert "network_mode" not in service, f"{name} sets network_mode"
        assert "extra_hosts" not in service, f"{name} sets extra_hosts"


def test_imds_address_is_only_used_by_services_on_internal_networks(compose):
    internal = internal_networks(compose)
    for name, service in compose["services"].items():
        if IMDS in yaml.safe_dump(service):
            assert set(service_networks(service)) & internal, f"{name} uses {IMDS} but joins no internal network"
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
    service on the VM's only network, and that host's shared IMDS listens there on port 80."""
    services = compose["services"]
    for name, service in vm_services(compose).items():
        (net,) = service_networks(service)
        subnet = ipaddress.ip_network(compose["networks"][net]["ipam"]["config"][0]["subnet"])
        vm_ip = ipaddress.ip_address(service["networks"][net]["ipv4_address"])
        assert vm_ip in subnet
        host_ip = service["environment"]["MISIM_HOST_IP"]
        hosts = [
            h
            for h, s in services.items()
            if not h.startswith("vm-")
            and isinstance(s.get("networks"), dict)
            and (s["networks"].get(net) or {}).get("ipv4_address") == host_ip
        ]
        assert len(hosts) == 1, f"{name}: no single host at {host_ip} on {net}"
        command = services[hosts[0]]["command"]
        assert command[command.index("--imds-listen") + 1] == f"{host_ip}:80", f"{hosts[0]} IMDS not on {host_ip}:80"


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
