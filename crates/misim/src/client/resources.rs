//! Client verbs for resource groups, VMs, VM extensions and scale sets.

use misim_proto::arm as pb;
use serde_json::Value;

use super::identity::{vm_identity, vmss_identity};
use super::{print, status, Arm};
use crate::cli::*;
use crate::output;

pub(super) async fn group(arm: &mut Arm, c: GroupCommand) -> anyhow::Result<()> {
    match c {
        GroupCommand::Create { name, location } => {
            let req = pb::CreateResourceGroupRequest {
                name,
                location,
                ..Default::default()
            };
            print(&output::resource_group(
                &arm.create_resource_group(req)
                    .await
                    .map_err(status)?
                    .into_inner(),
            ));
        }
        GroupCommand::Show { name } => {
            let req = pb::GetResourceGroupRequest {
                name,
                ..Default::default()
            };
            print(&output::resource_group(
                &arm.get_resource_group(req)
                    .await
                    .map_err(status)?
                    .into_inner(),
            ));
        }
        GroupCommand::List => {
            let list = arm
                .list_resource_groups(pb::ListResourceGroupsRequest::default())
                .await
                .map_err(status)?;
            print(&Value::Array(
                list.into_inner()
                    .resource_groups
                    .iter()
                    .map(output::resource_group)
                    .collect(),
            ));
        }
        GroupCommand::Delete { name } => {
            let req = pb::DeleteResourceGroupRequest {
                name,
                ..Default::default()
            };
            arm.delete_resource_group(req).await.map_err(status)?;
        }
    }
    Ok(())
}

pub(super) async fn vm(arm: &mut Arm, c: VmCommand) -> anyhow::Result<()> {
    match c {
        VmCommand::Create {
            vm,
            host,
            location,
            size,
            private_ip,
        } => {
            let existing = arm
                .get_vm(pb::GetVmRequest {
                    resource_group: vm.resource_group.clone(),
                    name: vm.name.clone(),
                    ..Default::default()
                })
                .await
                .is_ok();
            if existing {
                eprintln!(
                    "note: VM {} already exists in {}: misim returns it unchanged (in Azure, a create \
                     on an existing VM is an update of it)",
                    vm.name, vm.resource_group
                );
            }
            let req = pb::CreateVmRequest {
                resource_group: vm.resource_group,
                name: vm.name,
                location: location.unwrap_or_default(),
                vm_size: size,
                host: host.unwrap_or_default(),
                private_ip_address: private_ip.unwrap_or_default(),
                ..Default::default()
            };
            print(&output::vm(
                &arm.create_vm(req).await.map_err(status)?.into_inner(),
            ));
        }
        VmCommand::Show { vm } => {
            let req = pb::GetVmRequest {
                resource_group: vm.resource_group,
                name: vm.name,
                ..Default::default()
            };
            print(&output::vm(
                &arm.get_vm(req).await.map_err(status)?.into_inner(),
            ));
        }
        VmCommand::List { resource_group } => {
            let req = pb::ListVmsRequest {
                resource_group,
                ..Default::default()
            };
            let list = arm.list_vms(req).await.map_err(status)?.into_inner();
            print(&Value::Array(list.vms.iter().map(output::vm).collect()));
        }
        VmCommand::Delete { vm } => {
            let req = pb::DeleteVmRequest {
                resource_group: vm.resource_group,
                name: vm.name,
                ..Default::default()
            };
            arm.delete_vm(req).await.map_err(status)?;
        }
        VmCommand::Identity { command } => vm_identity(arm, command).await?,
        VmCommand::Extension { command } => vm_extension(arm, command).await?,
    }
    Ok(())
}

/// Splits `--identities` values into (system?, user-assigned resource IDs); bare names resolve to
/// identities in the VM's resource group of the default subscription.
pub(super) async fn vm_extension(arm: &mut Arm, c: VmExtensionCommand) -> anyhow::Result<()> {
    match c {
        VmExtensionCommand::Set {
            ext:
                VmExtensionName {
                    resource_group,
                    vm_name,
                    name,
                },
            publisher,
            version,
            settings,
            force_update,
        } => {
            let req = pb::SetVmExtensionRequest {
                resource_group,
                vm_name,
                r#type: name.clone(),
                name,
                publisher,
                type_handler_version: version,
                settings_json: settings.unwrap_or_default(),
                force_update_tag: if force_update {
                    // A fresh tag (what `az vm extension set --force-update` does).
                    std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map(|d| d.as_nanos().to_string())
                        .unwrap_or_default()
                } else {
                    String::new()
                },
                ..Default::default()
            };
            let e = arm.set_vm_extension(req).await.map_err(status)?;
            print(&output::vm_extension(&e.into_inner()));
        }
        VmExtensionCommand::Delete {
            ext:
                VmExtensionName {
                    resource_group,
                    vm_name,
                    name,
                },
        } => {
            let req = pb::DeleteVmExtensionRequest {
                resource_group,
                vm_name,
                name,
                ..Default::default()
            };
            arm.delete_vm_extension(req).await.map_err(status)?;
        }
        VmExtensionCommand::List {
            resource_group,
            vm_name,
        } => {
            let req = pb::ListVmExtensionsRequest {
                resource_group,
                vm_name,
                ..Default::default()
            };
            let list = arm.list_vm_extensions(req).await.map_err(status)?;
            let v = list.into_inner().extensions;
            print(&Value::Array(v.iter().map(output::vm_extension).collect()));
        }
    }
    Ok(())
}

pub(super) async fn vmss(arm: &mut Arm, c: VmssCommand) -> anyhow::Result<()> {
    let named = |n: &Named| (n.resource_group.clone(), n.name.clone());
    match c {
        VmssCommand::Create {
            vmss,
            instance_count,
            location,
            vm_sku,
        } => {
            let req = pb::CreateVmssRequest {
                resource_group: vmss.resource_group,
                name: vmss.name,
                location: location.unwrap_or_default(),
                vm_size: vm_sku,
                capacity: instance_count,
                ..Default::default()
            };
            let ss = arm.create_vmss(req).await.map_err(status)?;
            print(&output::vmss(&ss.into_inner()));
        }
        VmssCommand::Show { vmss } => {
            let (resource_group, name) = named(&vmss);
            let req = pb::GetVmssRequest {
                resource_group,
                name,
                ..Default::default()
            };
            print(&output::vmss(
                &arm.get_vmss(req).await.map_err(status)?.into_inner(),
            ));
        }
        VmssCommand::List { resource_group } => {
            let req = pb::ListVmssRequest {
                resource_group,
                ..Default::default()
            };
            let list = arm.list_vmss(req).await.map_err(status)?.into_inner();
            print(&Value::Array(
                list.scale_sets.iter().map(output::vmss).collect(),
            ));
        }
        VmssCommand::Delete { vmss } => {
            let (resource_group, name) = named(&vmss);
            let req = pb::DeleteVmssRequest {
                resource_group,
                name,
                ..Default::default()
            };
            arm.delete_vmss(req).await.map_err(status)?;
        }
        VmssCommand::Scale { vmss, new_capacity } => {
            let (resource_group, name) = named(&vmss);
            let req = pb::ScaleVmssRequest {
                resource_group,
                name,
                capacity: new_capacity,
                ..Default::default()
            };
            print(&output::vmss(
                &arm.scale_vmss(req).await.map_err(status)?.into_inner(),
            ));
        }
        VmssCommand::ListInstances { vmss } => {
            let (resource_group, name) = named(&vmss);
            let req = pb::ListVmssInstancesRequest {
                resource_group,
                name,
                ..Default::default()
            };
            let list = arm.list_vmss_instances(req).await.map_err(status)?;
            let v = list.into_inner().instances;
            print(&Value::Array(v.iter().map(output::vm).collect()));
        }
        VmssCommand::Identity { command } => vmss_identity(arm, command).await?,
    }
    Ok(())
}
