//! az-shaped JSON for what the client verbs print (camelCase keys, as `az … show` prints them).

use misim_proto::arm as pb;
use serde_json::{json, Map, Value};

/// `az account show`.
pub fn subscription(s: &pb::Subscription) -> Value {
    json!({
        "id": s.subscription_id,
        "name": s.display_name,
        "state": s.state,
        "tenantId": s.tenant_id,
        "isDefault": s.is_default,
        "environmentName": "misim",
        "user": {"name": "misim", "type": "user"},
    })
}

/// `az group show`.
pub fn resource_group(g: &pb::ResourceGroup) -> Value {
    json!({
        "id": g.id,
        "name": g.name,
        "location": g.location,
        "tags": g.tags,
        "type": "Microsoft.Resources/resourceGroups",
        "properties": {"provisioningState": g.provisioning_state},
    })
}

/// The VM `identity` block; `null` when the VM has no identity (as az prints it).
pub fn vm_identity(i: Option<&pb::VmIdentity>) -> Value {
    let Some(i) = i.filter(|i| !i.r#type.is_empty() && i.r#type != "None") else {
        return Value::Null;
    };
    let uami: Map<String, Value> = i
        .user_assigned_identities
        .iter()
        .map(|(id, v)| {
            (
                id.clone(),
                json!({"principalId": v.principal_id, "clientId": v.client_id}),
            )
        })
        .collect();
    json!({
        "type": i.r#type,
        "principalId": none_if_empty(&i.principal_id),
        "tenantId": none_if_empty(&i.tenant_id),
        "userAssignedIdentities": if uami.is_empty() { Value::Null } else { Value::Object(uami) },
    })
}

/// `az vm show`, plus misim's `host` and `imdsEndpoint`.
pub fn vm(v: &pb::VirtualMachine) -> Value {
    json!({
        "id": v.id,
        "name": v.name,
        "type": "Microsoft.Compute/virtualMachines",
        "location": v.location,
        "resourceGroup": v.resource_group,
        "tags": v.tags,
        "vmId": v.vm_id,
        "hardwareProfile": {"vmSize": v.vm_size},
        "storageProfile": {"osDisk": {"osType": v.os_type}},
        "identity": vm_identity(v.identity.as_ref()),
        "provisioningState": v.provisioning_state,
        "host": v.host,
        "imdsEndpoint": v.imds_endpoint,
        "privateIps": v.private_ip_address,
        "instanceId": none_if_empty(&v.instance_id),
        "vmScaleSet": none_if_empty(&v.vm_scale_set),
        "extensionEndpoint": none_if_empty(&v.extension_endpoint),
    })
}

/// `az vmss show`.
pub fn vmss(s: &pb::VirtualMachineScaleSet) -> Value {
    json!({
        "id": s.id,
        "name": s.name,
        "type": "Microsoft.Compute/virtualMachineScaleSets",
        "location": s.location,
        "resourceGroup": s.resource_group,
        "tags": s.tags,
        "sku": {"name": s.vm_size, "capacity": s.capacity},
        "uniqueId": s.unique_id,
        "identity": vm_identity(s.identity.as_ref()),
        "provisioningState": s.provisioning_state,
    })
}

/// `az vm extension show`, plus misim's endpoint.
pub fn vm_extension(e: &pb::VmExtension) -> Value {
    json!({
        "id": e.id,
        "name": e.name,
        "publisher": e.publisher,
        "typePropertiesType": e.r#type,
        "typeHandlerVersion": e.type_handler_version,
        "settings": {"port": e.port},
        "forceUpdateTag": none_if_empty(&e.force_update_tag),
        "provisioningState": e.provisioning_state,
        "endpoint": none_if_empty(&e.endpoint),
        "credentialPath": none_if_empty(&e.credential_path),
    })
}

/// `az keyvault show`, plus misim's data-plane endpoint.
pub fn vault(v: &pb::Vault) -> Value {
    json!({
        "id": v.id,
        "name": v.name,
        "type": "Microsoft.KeyVault/vaults",
        "location": v.location,
        "resourceGroup": v.resource_group,
        "properties": {
            "tenantId": v.tenant_id,
            "vaultUri": v.vault_uri,
            "enableRbacAuthorization": true,
        },
        "dataPlaneEndpoint": v.data_plane_endpoint,
    })
}

/// `az keyvault secret set`.
pub fn secret(s: &pb::Secret) -> Value {
    json!({
        "id": s.id,
        "name": s.name,
        "value": s.value,
        "attributes": {"enabled": true, "created": s.created, "updated": s.updated},
    })
}

/// `az identity show`.
pub fn user_assigned_identity(i: &pb::UserAssignedIdentity) -> Value {
    json!({
        "id": i.id,
        "name": i.name,
        "type": "Microsoft.ManagedIdentity/userAssignedIdentities",
        "location": i.location,
        "resourceGroup": i.resource_group,
        "tags": i.tags,
        "tenantId": i.tenant_id,
        "principalId": i.principal_id,
        "clientId": i.client_id,
    })
}

/// `az role assignment show`.
pub fn role_assignment(r: &pb::RoleAssignment) -> Value {
    json!({
        "id": r.id,
        "name": r.name,
        "scope": r.scope,
        "roleDefinitionId": r.role_definition_id,
        "roleDefinitionName": r.role_definition_name,
        "principalId": r.principal_id,
        "principalType": r.principal_type,
        "type": "Microsoft.Authorization/roleAssignments",
    })
}

/// `az role definition list` entry.
pub fn role_definition(d: &pb::RoleDefinition) -> Value {
    json!({
        "id": d.id,
        "name": d.name,
        "roleName": d.role_name,
        "description": d.description,
        "roleType": "BuiltInRole",
        "type": "Microsoft.Authorization/roleDefinitions",
        "permissions": [{
            "actions": d.actions,
            "notActions": d.not_actions,
            "dataActions": d.data_actions,
            "notDataActions": [],
        }],
    })
}

fn none_if_empty(s: &str) -> Value {
    if s.is_empty() {
        Value::Null
    } else {
        Value::String(s.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_block_is_null_for_none_and_shaped_for_system_assigned() {
        assert_eq!(vm_identity(None), Value::Null);
        let none = pb::VmIdentity {
            r#type: "None".into(),
            ..Default::default()
        };
        assert_eq!(vm_identity(Some(&none)), Value::Null);
        let sys = pb::VmIdentity {
            r#type: "SystemAssigned".into(),
            principal_id: "p".into(),
            tenant_id: "t".into(),
            ..Default::default()
        };
        let v = vm_identity(Some(&sys));
        assert_eq!(v["type"], "SystemAssigned");
        assert_eq!(v["principalId"], "p");
        assert_eq!(v["userAssignedIdentities"], Value::Null);
    }
}
