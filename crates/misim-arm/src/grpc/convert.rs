//! pb ⇄ domain conversions for the ARM gRPC adapter.

use std::collections::BTreeMap;

use misim_proto::arm as pb;

use crate::authorization::roles::{find_role, RoleDefinition};
use crate::model::{
    IdentityBlock, ResourceGroup, RoleAssignment, Subscription, Uami, Vm, VmExtension, Vmss,
};
use crate::resources::vault::{Secret, Vault};

pub(super) fn tags(m: std::collections::HashMap<String, String>) -> BTreeMap<String, String> {
    m.into_iter().collect()
}

/// Each of `items` converted with `f` (a list response's entries).
pub(super) fn all<T, P>(items: Vec<T>, f: impl FnMut(T) -> P) -> Vec<P> {
    items.into_iter().map(f).collect()
}

pub(super) fn sub_pb(s: Subscription) -> pb::Subscription {
    pb::Subscription {
        id: s.id().to_string(),
        subscription_id: s.subscription_id,
        tenant_id: s.tenant_id,
        display_name: s.display_name,
        state: s.state,
        is_default: s.is_default,
    }
}

pub(super) fn group_pb(g: ResourceGroup) -> pb::ResourceGroup {
    pb::ResourceGroup {
        id: g.id.to_string(),
        name: g.id.name().to_string(),
        location: g.location,
        tags: g.tags.into_iter().collect(),
        provisioning_state: "Succeeded".into(),
    }
}

pub(super) fn identity_pb(block: &IdentityBlock) -> pb::VmIdentity {
    let system = block.enabled_system_identity();
    pb::VmIdentity {
        r#type: block.kind().to_string(),
        principal_id: system.map(|i| i.principal_id.clone()).unwrap_or_default(),
        tenant_id: system.map(|i| i.tenant_id.clone()).unwrap_or_default(),
        user_assigned_identities: block
            .user_assigned
            .values()
            .map(|e| {
                let value = pb::UserAssignedIdentityValue {
                    principal_id: e.principal_id.clone(),
                    client_id: e.client_id.clone(),
                };
                (e.id.to_string(), value)
            })
            .collect(),
    }
}

pub(super) fn vm_pb(vm: Vm) -> pb::VirtualMachine {
    pb::VirtualMachine {
        vm_scale_set: vm
            .scale_set
            .as_ref()
            .map(|s| s.name().to_string())
            .unwrap_or_default(),
        instance_id: if vm.scale_set.is_some() {
            vm.id.name().to_string()
        } else {
            String::new()
        },
        id: vm.id.to_string(),
        name: vm.id.name().to_string(),
        resource_group: vm.id.resource_group_name().unwrap_or_default().to_string(),
        subscription_id: vm.id.subscription_id().to_string(),
        location: vm.location.clone(),
        vm_id: vm.vm_id.clone(),
        vm_size: vm.vm_size.clone(),
        os_type: vm.os_type.clone(),
        tags: vm.tags.clone().into_iter().collect(),
        identity: Some(identity_pb(&vm.identity)),
        host: vm.host.clone(),
        imds_endpoint: vm.imds_endpoint.clone(),
        provisioning_state: vm.provisioning_state().into(),
        private_ip_address: vm.private_ip.clone(),
        extension_endpoint: vm.extension_endpoint.clone(),
        extension_credential_path: vm.extension_credential_path.clone(),
    }
}

pub(super) fn uami_pb(u: Uami) -> pb::UserAssignedIdentity {
    let (principal_id, client_id) = u
        .identity
        .map(|i| (i.principal_id, i.client_id))
        .unwrap_or_default();
    pb::UserAssignedIdentity {
        id: u.id.to_string(),
        name: u.id.name().to_string(),
        r#type: "Microsoft.ManagedIdentity/userAssignedIdentities".into(),
        location: u.location,
        resource_group: u.id.resource_group_name().unwrap_or_default().to_string(),
        tags: u.tags.into_iter().collect(),
        tenant_id: u.tenant_id,
        principal_id,
        client_id,
    }
}

pub(super) fn role_def_pb(r: &RoleDefinition, subscription_id: &str) -> pb::RoleDefinition {
    let strings = |v: &[&str]| v.iter().map(|s| s.to_string()).collect();
    pb::RoleDefinition {
        id: r.id(subscription_id),
        name: r.guid.into(),
        role_name: r.role_name.into(),
        description: r.description.into(),
        actions: strings(r.actions),
        not_actions: strings(r.not_actions),
        data_actions: strings(r.data_actions),
    }
}

pub(super) fn assignment_pb(ra: RoleAssignment) -> pb::RoleAssignment {
    let role = find_role(&ra.role_definition_guid);
    pb::RoleAssignment {
        role_definition_id: role
            .map(|r| r.id(ra.scope.subscription_id()))
            .unwrap_or_default(),
        role_definition_name: role.map(|r| r.role_name.to_string()).unwrap_or_default(),
        id: ra.id,
        name: ra.name,
        scope: ra.scope.to_string(),
        principal_id: ra.principal_id,
        principal_type: ra.principal_type,
    }
}

/// A scale-set instance as a VM message: the scale set's identity block.
pub(super) fn instance_pb(ss: &Vmss, inst: Vm) -> pb::VirtualMachine {
    let mut v = vm_pb(inst);
    v.identity = Some(identity_pb(&ss.identity));
    v
}

pub(super) fn vmss_pb(ss: Vmss) -> pb::VirtualMachineScaleSet {
    pb::VirtualMachineScaleSet {
        id: ss.id.to_string(),
        name: ss.id.name().to_string(),
        resource_group: ss.id.resource_group_name().unwrap_or_default().to_string(),
        subscription_id: ss.id.subscription_id().to_string(),
        location: ss.location.clone(),
        unique_id: ss.unique_id.clone(),
        vm_size: ss.vm_size.clone(),
        os_type: ss.os_type.clone(),
        tags: ss.tags.clone().into_iter().collect(),
        capacity: ss.capacity,
        identity: Some(identity_pb(&ss.identity)),
        provisioning_state: ss.provisioning_state().into(),
    }
}

pub(super) fn extension_pb(vm: &Vm, e: VmExtension) -> pb::VmExtension {
    pb::VmExtension {
        id: format!("{}/extensions/{}", vm.id, e.name),
        name: e.name,
        publisher: e.publisher,
        r#type: e.extension_type,
        type_handler_version: e.type_handler_version,
        port: e.port,
        force_update_tag: e.force_update_tag,
        provisioning_state: if e.applied { "Succeeded" } else { "Updating" }.into(),
        endpoint: vm.extension_endpoint.clone(),
        credential_path: vm.extension_credential_path.clone(),
    }
}

pub(super) fn vault_pb(v: Vault, rest_url: &str) -> pb::Vault {
    pb::Vault {
        vault_uri: v.vault_uri(),
        data_plane_endpoint: if rest_url.is_empty() {
            String::new()
        } else {
            format!("{rest_url}/vaults/{}", v.id.name())
        },
        id: v.id.to_string(),
        name: v.id.name().to_string(),
        resource_group: v.id.resource_group_name().unwrap_or_default().to_string(),
        location: v.location,
        tenant_id: v.tenant_id,
    }
}

pub(super) fn secret_pb(s: Secret) -> pb::Secret {
    pb::Secret {
        id: s.id(),
        name: s.name,
        value: s.value,
        created: s.created,
        updated: s.updated,
    }
}
