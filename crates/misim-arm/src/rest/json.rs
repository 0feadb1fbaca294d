//! Azure's JSON shapes for the REST surface: subscription, resource group, virtual machine (with its
//! `identity` block,
//! <https://learn.microsoft.com/entra/identity/managed-identities-azure-resources/how-to-configure-managed-identities?pivots=identity-mi-methods-rest>)
//! and user-assigned identity.

use serde_json::{json, Map, Value};

use crate::model::{IdentityBlock, ResourceGroup, RoleAssignment, Subscription, Uami, Vm, Vmss};
use crate::rbac::{find_role, RoleDefinition};
use crate::vault::Vault;

/// `GET /subscriptions/{s}` body (Subscriptions - Get).
pub fn subscription(s: &Subscription) -> Value {
    json!({
        "id": s.id().to_string(),
        "authorizationSource": "RoleBased",
        "subscriptionId": s.subscription_id,
        "tenantId": s.tenant_id,
        "displayName": s.display_name,
        "state": s.state,
        "subscriptionPolicies": {
            "locationPlacementId": "Public_2014-09-01",
            "quotaId": "PayAsYouGo_2014-09-01",
            "spendingLimit": "Off"
        }
    })
}

/// `GET /subscriptions/{s}/resourceGroups/{g}` body (Resource Groups - Get).
pub fn resource_group(g: &ResourceGroup) -> Value {
    let mut v = json!({
        "id": g.id.to_string(),
        "name": g.id.name(),
        "type": "Microsoft.Resources/resourceGroups",
        "location": g.location,
        "properties": { "provisioningState": "Succeeded" }
    });
    if !g.tags.is_empty() {
        v["tags"] = json!(g.tags);
    }
    v
}

/// The VM `identity` block; `None` when the VM has no identity (ARM then omits the property).
/// principalId/tenantId are null without a system-assigned identity (aad-pod-identity#521).
pub fn vm_identity(vm: &Vm) -> Option<Value> {
    identity(&vm.identity)
}

/// An `identity` block; `None` for type `None`.
pub fn identity(block: &IdentityBlock) -> Option<Value> {
    let kind = block.kind();
    if kind == "None" {
        return None;
    }
    let system = block.enabled_system_identity();
    let nullable = |s: Option<&String>| match s.filter(|s| !s.is_empty()) {
        Some(s) => Value::String(s.clone()),
        None => Value::Null,
    };
    let mut identity = json!({
        "type": kind,
        "principalId": nullable(system.map(|i| &i.principal_id)),
        "tenantId": nullable(system.map(|i| &i.tenant_id)),
    });
    if !block.user_assigned.is_empty() {
        let map: Map<String, Value> = block
            .user_assigned
            .values()
            .map(|e| {
                (
                    e.id.to_string(),
                    json!({ "principalId": e.principal_id, "clientId": e.client_id }),
                )
            })
            .collect();
        identity["userAssignedIdentities"] = Value::Object(map);
    }
    Some(identity)
}

/// `GET …/Microsoft.Compute/virtualMachines/{vm}` body (Virtual Machines - Get).
pub fn vm(vm: &Vm) -> Value {
    let mut v = json!({
        "name": vm.id.name(),
        "id": vm.id.to_string(),
        "type": "Microsoft.Compute/virtualMachines",
        "location": vm.location,
        "tags": vm.tags,
        "properties": {
            "vmId": vm.vm_id,
            "hardwareProfile": { "vmSize": vm.vm_size },
            "storageProfile": {
                "osDisk": {
                    "osType": vm.os_type,
                    "name": format!("{}_OsDisk_1", vm.id.name()),
                    "createOption": "FromImage"
                }
            },
            "osProfile": { "computerName": vm.id.name() },
            "networkProfile": { "networkInterfaces": [{
                "id": nic_id(vm),
                "properties": { "primary": true, "privateIPAddress": vm.private_ip }
            }] },
            "provisioningState": vm.provisioning_state()
        }
    });
    if let Some(identity) = vm_identity(vm) {
        v["identity"] = identity;
    }
    v
}

/// `GET …/Microsoft.ManagedIdentity/userAssignedIdentities/{name}` body; `isolationScope` only from
/// api-version 2024-11-30
/// (<https://github.com/Azure/azure-rest-api-specs/tree/bf53060244d1691ff4ed8b38e849e572e668d460/specification/msi/resource-manager/Microsoft.ManagedIdentity/stable/2024-11-30>).
pub fn uami(u: &Uami, api_version: &str) -> Value {
    let (principal_id, client_id) = u
        .identity
        .as_ref()
        .map(|i| (i.principal_id.clone(), i.client_id.clone()))
        .unwrap_or_default();
    let mut properties =
        json!({ "tenantId": u.tenant_id, "principalId": principal_id, "clientId": client_id });
    if api_version >= "2024-11-30" {
        properties["isolationScope"] = json!("None");
    }
    json!({
        "id": u.id.to_string(),
        "name": u.id.name(),
        "type": "Microsoft.ManagedIdentity/userAssignedIdentities",
        "location": u.location,
        "tags": u.tags,
        "properties": properties
    })
}

/// `GET …/virtualMachineScaleSets/{name}` body (Virtual Machine Scale Sets - Get).
pub fn vmss(ss: &Vmss) -> Value {
    let mut v = json!({
        "name": ss.id.name(),
        "id": ss.id.to_string(),
        "type": "Microsoft.Compute/virtualMachineScaleSets",
        "location": ss.location,
        "tags": ss.tags,
        "sku": { "name": ss.vm_size, "tier": "Standard", "capacity": ss.capacity },
        "properties": {
            "uniqueId": ss.unique_id,
            "upgradePolicy": { "mode": "Manual" },
            "virtualMachineProfile": {
                "storageProfile": { "osDisk": { "osType": ss.os_type, "createOption": "FromImage" } }
            },
            "provisioningState": ss.provisioning_state()
        }
    });
    if let Some(identity) = identity(&ss.identity) {
        v["identity"] = identity;
    }
    v
}

/// A scale-set instance (Virtual Machine Scale Set VMs - List entry); its identity is the scale set's.
pub fn instance(ss: &Vmss, inst: &Vm) -> Value {
    let mut v = json!({
        "name": format!("{}_{}", ss.id.name(), inst.id.name()),
        "id": inst.id.to_string(),
        "type": "Microsoft.Compute/virtualMachineScaleSets/virtualMachines",
        "instanceId": inst.id.name(),
        "location": inst.location,
        "sku": { "name": inst.vm_size, "tier": "Standard" },
        "properties": {
            "vmId": inst.vm_id,
            "latestModelApplied": true,
            "hardwareProfile": { "vmSize": inst.vm_size },
            "osProfile": { "computerName": format!("{}{:06}", ss.id.name(), inst.id.name().parse::<u64>().unwrap_or(0)) },
            "provisioningState": inst.provisioning_state()
        }
    });
    if let Some(identity) = identity(&ss.identity) {
        v["identity"] = identity;
    }
    v
}

/// `GET …/Microsoft.KeyVault/vaults/{name}` body (RBAC permission model).
pub fn vault(v: &Vault) -> Value {
    json!({
        "id": v.id.to_string(),
        "name": v.id.name(),
        "type": "Microsoft.KeyVault/vaults",
        "location": v.location,
        "tags": {},
        "properties": {
            "sku": { "family": "A", "name": "standard" },
            "tenantId": v.tenant_id,
            "accessPolicies": [],
            "enableRbacAuthorization": true,
            "vaultUri": v.vault_uri(),
            "provisioningState": "Succeeded"
        }
    })
}

/// A role assignment (Role Assignments - Get).
pub fn role_assignment(ra: &RoleAssignment) -> Value {
    let role_definition_id = find_role(&ra.role_definition_guid)
        .map(|r| r.id(ra.scope.subscription_id()))
        .unwrap_or_default();
    json!({
        "id": ra.id,
        "name": ra.name,
        "type": "Microsoft.Authorization/roleAssignments",
        "properties": {
            "roleDefinitionId": role_definition_id,
            "principalId": ra.principal_id,
            "principalType": ra.principal_type,
            "scope": ra.scope.to_string()
        }
    })
}

/// The id of the VM's one network interface, named `{vm}VMNic` as `az vm create` names it.
pub fn nic_id(vm: &Vm) -> String {
    format!(
        "/subscriptions/{}/resourceGroups/{}/providers/Microsoft.Network/networkInterfaces/{}VMNic",
        vm.id.subscription_id(),
        vm.id.resource_group_name().unwrap_or_default(),
        vm.id.name()
    )
}

/// `GET …/Microsoft.Network/networkInterfaces/{nic}` body (Network Interfaces - Get): one primary
/// ip configuration with the VM's private IP, its MAC address and the VM it is attached to.
pub fn nic(vm: &Vm) -> Value {
    let id = nic_id(vm);
    let subnet = format!(
        "/subscriptions/{}/resourceGroups/{}/providers/Microsoft.Network/virtualNetworks/{}VNET/subnets/{}Subnet",
        vm.id.subscription_id(),
        vm.id.resource_group_name().unwrap_or_default(),
        vm.id.name(),
        vm.id.name()
    );
    let mac = vm
        .mac_address
        .as_bytes()
        .chunks(2)
        .map(|c| String::from_utf8_lossy(c).to_string())
        .collect::<Vec<_>>()
        .join("-");
    json!({
        "name": format!("{}VMNic", vm.id.name()),
        "id": id,
        "type": "Microsoft.Network/networkInterfaces",
        "location": vm.location,
        "tags": {},
        "properties": {
            "provisioningState": "Succeeded",
            "ipConfigurations": [{
                "name": format!("ipconfig{}", vm.id.name()),
                "id": format!("{id}/ipConfigurations/ipconfig{}", vm.id.name()),
                "type": "Microsoft.Network/networkInterfaces/ipConfigurations",
                "properties": {
                    "provisioningState": "Succeeded",
                    "privateIPAddress": vm.private_ip,
                    "privateIPAllocationMethod": "Dynamic",
                    "privateIPAddressVersion": "IPv4",
                    "subnet": { "id": subnet },
                    "primary": true
                }
            }],
            "dnsSettings": { "dnsServers": [], "appliedDnsServers": [] },
            "macAddress": mac,
            "enableAcceleratedNetworking": false,
            "enableIPForwarding": false,
            "primary": true,
            "virtualMachine": { "id": vm.id.to_string() },
            "nicType": "Standard"
        }
    })
}

/// A VM's instance view (Virtual Machines - Instance View): provisioning and power state.
pub fn instance_view(vm: &Vm, now: i64) -> Value {
    let time = rfc3339(now);
    let state = vm.provisioning_state();
    let (power, power_text) = if vm.placed {
        ("PowerState/running", "VM running")
    } else {
        ("PowerState/starting", "VM starting")
    };
    json!({
        "computerName": vm.id.name(),
        "osName": if vm.os_type.eq_ignore_ascii_case("windows") { "Windows" } else { "Linux" },
        "vmAgent": {
            "vmAgentVersion": "2.13.1.1",
            "statuses": [{ "code": "ProvisioningState/succeeded", "level": "Info", "displayStatus": "Ready", "message": "Guest Agent is running", "time": time }]
        },
        "disks": [],
        "hyperVGeneration": "V2",
        "statuses": [
            { "code": format!("ProvisioningState/{}", state.to_ascii_lowercase()), "level": "Info", "displayStatus": format!("Provisioning {}", state.to_ascii_lowercase()), "time": time },
            { "code": power, "level": "Info", "displayStatus": power_text }
        ]
    })
}

/// `2026-12-01T14:31:08Z` for epoch seconds (Azure's timestamps).
pub fn rfc3339(epoch_seconds: i64) -> String {
    misim_core::Clock::rfc3339(epoch_seconds)
}

/// A built-in role definition (Role Definitions - Get).
pub fn role_definition(r: &RoleDefinition, scope: &str) -> Value {
    let scope = scope.trim_end_matches('/');
    json!({
        "id": format!("{scope}/providers/Microsoft.Authorization/roleDefinitions/{}", r.guid),
        "name": r.guid,
        "type": "Microsoft.Authorization/roleDefinitions",
        "properties": {
            "roleName": r.role_name,
            "type": "BuiltInRole",
            "description": r.description,
            "assignableScopes": ["/"],
            "permissions": [{
                "actions": r.actions,
                "notActions": r.not_actions,
                "dataActions": r.data_actions,
                "notDataActions": r.not_data_actions
            }],
            "createdOn": "2015-02-02T21:55:09.8806423Z",
            "updatedOn": "2021-11-11T20:13:47.8628684Z",
            "createdBy": null,
            "updatedBy": null
        }
    })
}

/// A generic resource entry of `…/resources` (Resources - List): the common envelope of a full
/// resource body (id, name, type, location, tags, identity, sku).
pub fn generic(full: &Value) -> Value {
    let mut v = json!({
        "id": full["id"],
        "name": full["name"],
        "type": full["type"],
        "location": full["location"],
        "tags": full.get("tags").cloned().unwrap_or(json!({})),
    });
    for key in ["identity", "sku", "kind"] {
        if let Some(x) = full.get(key) {
            v[key] = x.clone();
        }
    }
    v
}

/// A list response: `{"value":[...]}`.
pub fn list(values: Vec<Value>) -> Value {
    json!({ "value": values })
}
