//! Azure's JSON shapes for the REST surface: subscription, resource group, virtual machine (with its
//! `identity` block, reference §4) and user-assigned identity.

use serde_json::{json, Map, Value};

use crate::model::{ResourceGroup, Subscription, Uami, Vm};

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
    let view = vm.identity_view();
    if view.kind == "None" {
        return None;
    }
    let nullable = |s: &str| {
        if s.is_empty() {
            Value::Null
        } else {
            Value::String(s.to_string())
        }
    };
    let mut identity = json!({
        "type": view.kind,
        "principalId": nullable(&view.principal_id),
        "tenantId": nullable(&view.tenant_id),
    });
    if !view.user_assigned.is_empty() {
        let map: Map<String, Value> = view
            .user_assigned
            .iter()
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
            "provisioningState": vm.provisioning_state()
        }
    });
    if let Some(identity) = vm_identity(vm) {
        v["identity"] = identity;
    }
    v
}

/// `GET …/Microsoft.ManagedIdentity/userAssignedIdentities/{name}` body; `isolationScope` only from
/// api-version 2024-11-30 (reference §4).
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

/// A list response: `{"value":[...]}`.
pub fn list(values: Vec<Value>) -> Value {
    json!({ "value": values })
}
