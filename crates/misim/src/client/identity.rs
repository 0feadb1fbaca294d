//! Client verbs for managed identities: VM and scale-set identity blocks, user-assigned identities, credential export.

use misim_proto::arm as pb;
use serde_json::Value;

use super::{print, status, Arm};
use crate::cli::*;
use crate::output;

pub(super) async fn split_identities(
    arm: &mut Arm,
    group: &str,
    values: &[String],
) -> anyhow::Result<(bool, Vec<String>)> {
    let mut system = false;
    let mut user = Vec::new();
    for v in values {
        if v.eq_ignore_ascii_case("system") || v.eq_ignore_ascii_case("[system]") {
            system = true;
        } else if v.starts_with('/') {
            user.push(v.clone());
        } else {
            let req = pb::GetUserAssignedIdentityRequest {
                resource_group: group.to_string(),
                name: v.clone(),
                ..Default::default()
            };
            user.push(
                arm.get_user_assigned_identity(req)
                    .await
                    .map_err(status)?
                    .into_inner()
                    .id,
            );
        }
    }
    Ok((system, user))
}

pub(super) async fn vm_identity(arm: &mut Arm, c: VmIdentityCommand) -> anyhow::Result<()> {
    vm_or_vmss_identity(arm, c, false).await
}

pub(super) async fn vmss_identity(arm: &mut Arm, c: VmIdentityCommand) -> anyhow::Result<()> {
    vm_or_vmss_identity(arm, c, true).await
}

/// `misim vm identity …` and `misim vmss identity …`: the same verbs on a VM or a scale set.
async fn vm_or_vmss_identity(
    arm: &mut Arm,
    c: VmIdentityCommand,
    scale_set: bool,
) -> anyhow::Result<()> {
    // The assign and remove requests of both resource kinds take the same fields.
    macro_rules! change {
        ($method:ident, $t:ident, $vm:expr, $identities:expr) => {{
            let (system_assigned, user_assigned_identities) =
                split_identities(arm, &$vm.resource_group, &$identities).await?;
            let req = pb::$t {
                resource_group: $vm.resource_group,
                name: $vm.name,
                system_assigned,
                user_assigned_identities,
                ..Default::default()
            };
            arm.$method(req).await.map_err(status)?.into_inner()
        }};
    }
    let identity = match c {
        VmIdentityCommand::Assign { vm, identities } if scale_set => {
            change!(
                assign_vmss_identity,
                AssignVmssIdentityRequest,
                vm,
                identities
            )
        }
        VmIdentityCommand::Assign { vm, identities } => {
            change!(assign_vm_identity, AssignVmIdentityRequest, vm, identities)
        }
        VmIdentityCommand::Remove { vm, identities } if scale_set => {
            change!(
                remove_vmss_identity,
                RemoveVmssIdentityRequest,
                vm,
                identities
            )
        }
        VmIdentityCommand::Remove { vm, identities } => {
            change!(remove_vm_identity, RemoveVmIdentityRequest, vm, identities)
        }
        VmIdentityCommand::Show { vm } if scale_set => {
            let req = pb::GetVmssRequest {
                resource_group: vm.resource_group,
                name: vm.name,
                ..Default::default()
            };
            let ss = arm.get_vmss(req).await.map_err(status)?.into_inner();
            ss.identity.unwrap_or_default()
        }
        VmIdentityCommand::Show { vm } => {
            let req = pb::GetVmIdentityRequest {
                resource_group: vm.resource_group,
                name: vm.name,
                ..Default::default()
            };
            arm.get_vm_identity(req).await.map_err(status)?.into_inner()
        }
    };
    print(&output::vm_identity(Some(&identity)));
    Ok(())
}

pub(super) async fn identity(arm: &mut Arm, c: IdentityCommand) -> anyhow::Result<()> {
    match c {
        IdentityCommand::Create { identity, location } => {
            let req = pb::CreateUserAssignedIdentityRequest {
                resource_group: identity.resource_group,
                name: identity.name,
                location: location.unwrap_or_default(),
                ..Default::default()
            };
            print(&output::user_assigned_identity(
                &arm.create_user_assigned_identity(req)
                    .await
                    .map_err(status)?
                    .into_inner(),
            ));
        }
        IdentityCommand::Show { identity } => {
            let req = pb::GetUserAssignedIdentityRequest {
                resource_group: identity.resource_group,
                name: identity.name,
                ..Default::default()
            };
            print(&output::user_assigned_identity(
                &arm.get_user_assigned_identity(req)
                    .await
                    .map_err(status)?
                    .into_inner(),
            ));
        }
        IdentityCommand::List { resource_group } => {
            let req = pb::ListUserAssignedIdentitiesRequest {
                resource_group,
                ..Default::default()
            };
            let list = arm
                .list_user_assigned_identities(req)
                .await
                .map_err(status)?
                .into_inner();
            print(&Value::Array(
                list.identities
                    .iter()
                    .map(output::user_assigned_identity)
                    .collect(),
            ));
        }
        IdentityCommand::Credential {
            command:
                CredentialCommand::Export {
                    resource_group,
                    name,
                    resource_id,
                    out,
                    msrp,
                    cert_dir,
                },
        } => {
            let resource_id = match resource_id {
                Some(id) => id,
                None => {
                    let req = pb::GetUserAssignedIdentityRequest {
                        resource_group: resource_group.unwrap_or_default(),
                        name: name.unwrap_or_default(),
                        ..Default::default()
                    };
                    arm.get_user_assigned_identity(req)
                        .await
                        .map_err(status)?
                        .into_inner()
                        .id
                }
            };
            print(&crate::export::export_pem(&msrp, &cert_dir, &resource_id, &out).await?);
        }
        IdentityCommand::FederatedCredential { command } => {
            super::aks::federated_credential(arm, command).await?;
        }
        IdentityCommand::Delete { identity } => {
            let req = pb::DeleteUserAssignedIdentityRequest {
                resource_group: identity.resource_group,
                name: identity.name,
                ..Default::default()
            };
            arm.delete_user_assigned_identity(req)
                .await
                .map_err(status)?;
        }
    }
    Ok(())
}
