"""The Azure management SDKs (azure-mgmt-resource, -compute, -msi, -authorization) and
azure-keyvault-secrets, unmodified, against misim's ARM REST surface over HTTPS, with tokens from the
VM's IMDS through azure-identity's ManagedIdentityCredential. The only knobs are the documented ones:
`base_url` (ARM), `vault_url` (Key Vault: the vault's `vaultUri`, which misim serves on its own
loopback https port), `AZURE_POD_IDENTITY_AUTHORITY_HOST` (IMDS), and
`REQUESTS_CA_BUNDLE` (misim's CA). Key Vault also needs `verify_challenge_resource=False`: the SDK
accepts a challenge only when the vault host is a subdomain of the challenge's resource
(`vault.azure.net`), which a loopback address cannot be without DNS changes (the Azure CLI passes the
same option itself).

Safety: a guard fails the test if anything resolves a host other than loopback."""
import socket
import time
import uuid

import pytest
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError
from azure.identity import ManagedIdentityCredential

from conftest import LOOPBACK_HOSTS

from azure.mgmt.authorization import AuthorizationManagementClient  # noqa: E402
from azure.mgmt.compute import ComputeManagementClient  # noqa: E402
from azure.mgmt.msi import ManagedServiceIdentityClient  # noqa: E402
from azure.mgmt.resource.resources import ResourceManagementClient  # noqa: E402
from azure.mgmt.resource.subscriptions import SubscriptionClient  # noqa: E402
from azure.keyvault.secrets import SecretClient  # noqa: E402


@pytest.fixture
def world(client_world, monkeypatch):
    real = socket.getaddrinfo

    def guarded(host, *args, **kwargs):
        if host not in LOOPBACK_HOSTS:
            raise AssertionError(f"attempted to resolve non-loopback host {host!r}")
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", guarded)
    for var in ("IDENTITY_ENDPOINT", "IDENTITY_HEADER", "MSI_ENDPOINT", "MSI_SECRET", "AZURE_CLIENT_ID",
                "AZURE_FEDERATED_TOKEN_FILE", "HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("AZURE_POD_IDENTITY_AUTHORITY_HOST", client_world["imds"])
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", client_world["ca"])
    monkeypatch.setenv("SSL_CERT_FILE", client_world["ca"])
    return client_world


def mgmt(cls, world, **kwargs):
    return cls(ManagedIdentityCredential(), world["sub"], base_url=world["arm"], **kwargs)


def test_subscriptions_and_tenants_list(world):
    client = SubscriptionClient(ManagedIdentityCredential(), base_url=world["arm"])
    subs = list(client.subscriptions.list())
    assert [s.subscription_id for s in subs] == [world["sub"]]
    assert client.subscriptions.get(world["sub"]).state == "Enabled"
    assert [t.tenant_id for t in client.tenants.list()] == [world["system"]["tenantId"]]
    assert any(loc.name == "westeurope" for loc in client.subscriptions.list_locations(world["sub"]))


def test_resource_groups_create_list_delete_with_poller(world):
    client = mgmt(ResourceManagementClient, world)
    name = f"py-sdk-{uuid.uuid4().hex[:6]}"
    created = client.resource_groups.create_or_update(name, {"location": "westeurope", "tags": {"a": "b"}})
    assert created.name == name and created.properties.provisioning_state == "Succeeded"
    assert name in [g.name for g in client.resource_groups.list()]
    client.resource_groups.begin_delete(name).result()
    assert name not in [g.name for g in client.resource_groups.list()]
    with pytest.raises(ResourceNotFoundError):
        client.resource_groups.get(name)


def test_generic_resources_filter_and_paging(world):
    client = mgmt(ResourceManagementClient, world)
    rg = world["rg"]
    types = {r.type for r in client.resources.list_by_resource_group(rg)}
    assert {"Microsoft.Compute/virtualMachines", "Microsoft.Network/networkInterfaces",
            "Microsoft.ManagedIdentity/userAssignedIdentities", "Microsoft.KeyVault/vaults"} <= types
    vms = list(client.resources.list(filter=f"resourceGroup eq '{rg}' and resourceType eq 'Microsoft.Compute/virtualMachines'",
                                     expand="createdTime,changedTime"))
    assert [r.name for r in vms] == ["py-clients-vm"]
    paged = client.resources.list_by_resource_group(rg, top=1).by_page()
    first = list(next(paged))
    assert len(first) == 1 and paged.continuation_token  # nextLink followed by the SDK
    assert len(first) + sum(len(list(p)) for p in paged) == len(types) + 1  # two UAMIs share a type


def test_compute_lists_instance_view_and_nic(world):
    client = mgmt(ComputeManagementClient, world)
    rg = world["rg"]
    assert "py-clients-vm" in [v.name for v in client.virtual_machines.list_all()]
    assert [v.name for v in client.virtual_machines.list(rg)] == ["py-clients-vm"]
    vm = client.virtual_machines.get(rg, "py-clients-vm", expand="instanceView")
    assert any(s.code == "PowerState/running" for s in vm.instance_view.statuses)
    assert vm.identity.principal_id == world["system"]["principalId"]
    view = client.virtual_machines.instance_view(rg, "py-clients-vm")
    assert view.statuses[0].code.startswith("ProvisioningState/")
    nic_id = vm.network_profile.network_interfaces[0].id
    assert nic_id.endswith("/networkInterfaces/py-clients-vmVMNic")


def test_user_assigned_identities_crud_and_system_identity_by_scope(world):
    client = mgmt(ManagedServiceIdentityClient, world)
    rg = world["rg"]
    uami = client.user_assigned_identities.create_or_update(rg, "py-sdk-uami", {"location": "westeurope"})
    assert uami.client_id and uami.principal_id
    assert "py-sdk-uami" in [u.name for u in client.user_assigned_identities.list_by_resource_group(rg)]
    assert client.user_assigned_identities.get(rg, "py-sdk-uami").client_id == uami.client_id
    client.user_assigned_identities.delete(rg, "py-sdk-uami")
    with pytest.raises(ResourceNotFoundError):
        client.user_assigned_identities.get(rg, "py-sdk-uami")
    system = client.system_assigned_identities.get_by_scope(world["vm"]["id"])
    assert system.principal_id == world["system"]["principalId"]


def test_role_definitions_and_assignments(world):
    client = mgmt(AuthorizationManagementClient, world)
    scope = f"/subscriptions/{world['sub']}/resourceGroups/{world['rg']}"
    reader = list(client.role_definitions.list(scope, filter="roleName eq 'Reader'"))
    assert [r.role_name for r in reader] == ["Reader"]
    name = str(uuid.uuid4())
    ra = client.role_assignments.create(scope, name, {
        "role_definition_id": reader[0].id, "principal_id": world["officer"]["principalId"],
        "principal_type": "ServicePrincipal"})
    assert ra.name == name
    mine = list(client.role_assignments.list_for_scope(
        scope, filter=f"principalId eq '{world['officer']['principalId']}'"))
    assert name in [a.name for a in mine]
    client.role_assignments.delete(scope, name)
    assert name not in [a.name for a in client.role_assignments.list_for_scope(scope)]


def vault_uri(world) -> str:
    """`properties.vaultUri` read through ARM, as an app would (its own https port, opened within
    a moment of the vault's creation)."""
    client = mgmt(ResourceManagementClient, world)
    for _ in range(50):
        uri = client.resources.get_by_id(world["vault"]["id"], api_version="2023-07-01").properties["vaultUri"]
        if uri.startswith("https://127.0.0.1:"):
            return uri
        time.sleep(0.1)
    raise AssertionError(f"vault has no misim data-plane URL yet: {uri}")


def secrets(world, identity=None):
    cred = ManagedIdentityCredential(client_id=identity["clientId"]) if identity else ManagedIdentityCredential()
    return SecretClient(vault_uri(world), cred, verify_challenge_resource=False)


def test_key_vault_secrets_get_set_list_delete_recover(world):
    client = secrets(world, world["officer"])
    assert client.get_secret("greeting").value == "hello"
    first = client.set_secret("py-sdk-secret", "one")
    second = client.set_secret("py-sdk-secret", "two")
    assert second.properties.version != first.properties.version
    assert second.id.startswith(client.vault_url.rstrip("/") + "/secrets/py-sdk-secret/")
    assert second.properties.vault_url == client.vault_url.rstrip("/")
    assert client.get_secret("py-sdk-secret").value == "two"
    assert client.get_secret("py-sdk-secret", first.properties.version).value == "one"
    assert "py-sdk-secret" in [s.name for s in client.list_properties_of_secrets()]
    assert len(list(client.list_properties_of_secret_versions("py-sdk-secret"))) == 2
    deleted = client.begin_delete_secret("py-sdk-secret").result()
    assert deleted.recovery_id.endswith("/deletedsecrets/py-sdk-secret")
    with pytest.raises(ResourceNotFoundError):
        client.get_secret("py-sdk-secret")
    assert client.get_deleted_secret("py-sdk-secret").name == "py-sdk-secret"
    client.begin_recover_deleted_secret("py-sdk-secret").result()
    assert client.get_secret("py-sdk-secret").value == "two"
    client.begin_delete_secret("py-sdk-secret").result()
    client.purge_deleted_secret("py-sdk-secret")
    assert "py-sdk-secret" not in [s.name for s in client.list_deleted_secrets()]


def test_key_vault_secrets_user_reads_but_is_refused_set_with_forbidden_by_rbac(world):
    client = secrets(world, world["reader"])
    assert client.get_secret("greeting").value == "hello"
    with pytest.raises(HttpResponseError) as e:
        client.set_secret("greeting", "changed")
    assert e.value.status_code == 403
    assert e.value.error.code == "Forbidden"
    assert "ForbiddenByRbac" in str(e.value)
    assert client.get_secret("greeting").value == "hello"


def test_scale_set_instances_list_get_and_instance_view(world, misim):
    misim.cli("vmss", "create", "-g", world["rg"], "-n", "py-sdk-ss", "--instance-count", "2")
    client = mgmt(ComputeManagementClient, world)
    assert "py-sdk-ss" in [s.name for s in client.virtual_machine_scale_sets.list(world["rg"])]
    instances = list(client.virtual_machine_scale_set_vms.list(world["rg"], "py-sdk-ss"))
    assert len(instances) == 2
    first = instances[0].instance_id
    vm = client.virtual_machine_scale_set_vms.get(world["rg"], "py-sdk-ss", first, expand="instanceView")
    assert vm.instance_id == first
    assert any(s.code.startswith("PowerState/") for s in vm.instance_view.statuses)
    view = client.virtual_machine_scale_set_vms.get_instance_view(world["rg"], "py-sdk-ss", first)
    assert view.statuses[0].code.startswith("ProvisioningState/")
    with pytest.raises(ResourceNotFoundError):
        client.virtual_machine_scale_set_vms.get(world["rg"], "py-sdk-ss", "99")


def test_vm_create_and_delete_pollers_follow_the_asynchronous_operations(world):
    client = mgmt(ComputeManagementClient, world)
    rg = world["rg"]
    poller = client.virtual_machines.begin_create_or_update(rg, "py-sdk-vm", {
        "location": "westeurope",
        "hardware_profile": {"vm_size": "Standard_B1s"},
        "storage_profile": {"os_disk": {"os_type": "Linux", "create_option": "FromImage"}},
    })
    vm = poller.result()
    assert vm.provisioning_state == "Succeeded" and vm.name == "py-sdk-vm"
    client.virtual_machines.begin_delete(rg, "py-sdk-vm").result()
    with pytest.raises(ResourceNotFoundError):
        client.virtual_machines.get(rg, "py-sdk-vm")
