//! The client verbs: each turns a command into ARM gRPC calls (or, for `token get`, an IMDS HTTP call)
//! and prints az-shaped JSON. Nothing here talks to MSRP, Azure AD or hosts directly.

use anyhow::{bail, Context};
use misim_proto::arm::{self as pb, arm_client::ArmClient};
use misim_proto::tonic::transport::Channel;
use serde_json::Value;

use crate::cli::*;
use crate::output;

type Arm = ArmClient<Channel>;

/// Connects to ARM's gRPC API.
///
/// # Errors
/// When `url` is malformed or nothing answers there (the message says how to start misim).
pub async fn connect(url: &str) -> anyhow::Result<Arm> {
    ArmClient::connect(url.to_string()).await.with_context(|| {
        format!("cannot reach ARM at {url}: is `misim up` running? (set --arm or MISIM_ARM)")
    })
}

/// Turns a gRPC status into a one-line error with ARM's message.
fn status(s: tonic::Status) -> anyhow::Error {
    anyhow::anyhow!("{}: {}", code_name(s.code()), s.message())
}

fn code_name(c: tonic::Code) -> &'static str {
    match c {
        tonic::Code::NotFound => "not found",
        tonic::Code::InvalidArgument => "invalid argument",
        tonic::Code::AlreadyExists => "conflict",
        tonic::Code::FailedPrecondition => "failed precondition",
        tonic::Code::PermissionDenied => "forbidden",
        tonic::Code::Unavailable => "unavailable",
        _ => "error",
    }
}

fn print(v: &Value) {
    println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
}

/// Runs one client verb against ARM at `arm_url`, printing JSON to stdout.
///
/// # Errors
/// When ARM is unreachable or answers with an error; the message is ARM's.
pub async fn run(arm_url: &str, command: Command) -> anyhow::Result<()> {
    let mut arm = connect(arm_url).await?;
    match command {
        Command::Account {
            command: AccountCommand::Show,
        } => {
            let s = arm
                .get_account(pb::GetAccountRequest::default())
                .await
                .map_err(status)?;
            print(&output::subscription(&s.into_inner()));
        }
        Command::Group { command } => group(&mut arm, command).await?,
        Command::Vm { command } => vm(&mut arm, command).await?,
        Command::Identity { command } => identity(&mut arm, command).await?,
        Command::Vmss { command } => vmss(&mut arm, command).await?,
        Command::Keyvault { command } => keyvault(&mut arm, command).await?,
        Command::Role { command } => role(&mut arm, command).await?,
        Command::Token { command } => token(&mut arm, command).await?,
        Command::Up(_)
        | Command::Aad(_)
        | Command::Msrp(_)
        | Command::Imds(_)
        | Command::Arm(_) => {
            bail!("not a client verb")
        }
    }
    Ok(())
}

async fn group(arm: &mut Arm, c: GroupCommand) -> anyhow::Result<()> {
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

async fn vm(arm: &mut Arm, c: VmCommand) -> anyhow::Result<()> {
    match c {
        VmCommand::Create {
            vm,
            host,
            location,
            size,
            private_ip,
        } => {
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
async fn split_identities(
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

async fn vm_identity(arm: &mut Arm, c: VmIdentityCommand) -> anyhow::Result<()> {
    let identity = match c {
        VmIdentityCommand::Assign { vm, identities } => {
            let (system_assigned, user_assigned_identities) =
                split_identities(arm, &vm.resource_group, &identities).await?;
            let req = pb::AssignVmIdentityRequest {
                resource_group: vm.resource_group,
                name: vm.name,
                system_assigned,
                user_assigned_identities,
                ..Default::default()
            };
            arm.assign_vm_identity(req)
                .await
                .map_err(status)?
                .into_inner()
        }
        VmIdentityCommand::Remove { vm, identities } => {
            let (system_assigned, user_assigned_identities) =
                split_identities(arm, &vm.resource_group, &identities).await?;
            let req = pb::RemoveVmIdentityRequest {
                resource_group: vm.resource_group,
                name: vm.name,
                system_assigned,
                user_assigned_identities,
                ..Default::default()
            };
            arm.remove_vm_identity(req)
                .await
                .map_err(status)?
                .into_inner()
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

async fn identity(arm: &mut Arm, c: IdentityCommand) -> anyhow::Result<()> {
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
            print(&crate::export::export_pem(&msrp, &resource_id, &out).await?);
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

async fn role(arm: &mut Arm, c: RoleCommand) -> anyhow::Result<()> {
    match c {
        RoleCommand::Assignment {
            command:
                RoleAssignmentCommand::Create {
                    assignee_object_id,
                    role,
                    scope,
                },
        } => {
            let req = pb::CreateRoleAssignmentRequest {
                scope: scope.unwrap_or_default(),
                role,
                principal_id: assignee_object_id,
                principal_type: String::new(),
            };
            print(&output::role_assignment(
                &arm.create_role_assignment(req)
                    .await
                    .map_err(status)?
                    .into_inner(),
            ));
        }
        RoleCommand::Assignment {
            command: RoleAssignmentCommand::List { scope, assignee },
        } => {
            let req = pb::ListRoleAssignmentsRequest {
                scope: scope.unwrap_or_default(),
                principal_id: assignee.unwrap_or_default(),
            };
            let list = arm
                .list_role_assignments(req)
                .await
                .map_err(status)?
                .into_inner();
            print(&Value::Array(
                list.role_assignments
                    .iter()
                    .map(output::role_assignment)
                    .collect(),
            ));
        }
        RoleCommand::Assignment {
            command: RoleAssignmentCommand::Delete { ids },
        } => {
            arm.delete_role_assignment(pb::DeleteRoleAssignmentRequest { id: ids })
                .await
                .map_err(status)?;
        }
        RoleCommand::Definition {
            command: RoleDefinitionCommand::List,
        } => {
            let list = arm
                .list_role_definitions(pb::ListRoleDefinitionsRequest::default())
                .await
                .map_err(status)?
                .into_inner();
            print(&Value::Array(
                list.role_definitions
                    .iter()
                    .map(output::role_definition)
                    .collect(),
            ));
        }
    }
    Ok(())
}

async fn token(arm: &mut Arm, c: TokenCommand) -> anyhow::Result<()> {
    let TokenCommand::Get {
        vm,
        resource,
        client_id,
        object_id,
        msi_res_id,
    } = c;
    let req = pb::GetVmRequest {
        resource_group: vm.resource_group.clone(),
        name: vm.name.clone(),
        ..Default::default()
    };
    let v = arm.get_vm(req).await.map_err(status)?.into_inner();
    if v.imds_endpoint.is_empty() {
        bail!(
            "VM {} has no IMDS endpoint yet (is its host running?)",
            v.name
        );
    }
    let mut url = url::Url::parse(&format!(
        "{}/metadata/identity/oauth2/token",
        v.imds_endpoint
    ))
    .with_context(|| format!("bad IMDS endpoint {:?}", v.imds_endpoint))?;
    let host = url.host_str().unwrap_or_default().to_string();
    // Safety: local mode serves IMDS on loopback only; never call any other address from here.
    if !(host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback()))
    {
        bail!(
            "refusing to call non-loopback IMDS endpoint {}",
            v.imds_endpoint
        );
    }
    {
        let mut q = url.query_pairs_mut();
        q.append_pair("api-version", "2018-02-01")
            .append_pair("resource", &resource);
        if let Some(c) = &client_id {
            q.append_pair("client_id", c);
        }
        if let Some(o) = &object_id {
            q.append_pair("object_id", o);
        }
        if let Some(m) = &msi_res_id {
            q.append_pair("msi_res_id", m);
        }
    }
    let http = reqwest::Client::builder().no_proxy().build()?;
    let resp = http
        .get(url)
        .header("Metadata", "true")
        .send()
        .await
        .context("IMDS did not answer")?;
    let code = resp.status();
    let body: Value = resp
        .json()
        .await
        .context("IMDS answered with something other than JSON")?;
    print(&body);
    if !code.is_success() {
        bail!("IMDS answered {code}");
    }
    Ok(())
}

async fn vm_extension(arm: &mut Arm, c: VmExtensionCommand) -> anyhow::Result<()> {
    match c {
        VmExtensionCommand::Set {
            resource_group,
            vm_name,
            name,
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
            resource_group,
            vm_name,
            name,
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

async fn vmss(arm: &mut Arm, c: VmssCommand) -> anyhow::Result<()> {
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

async fn vmss_identity(arm: &mut Arm, c: VmIdentityCommand) -> anyhow::Result<()> {
    let identity = match c {
        VmIdentityCommand::Assign { vm, identities } => {
            let (system_assigned, user_assigned_identities) =
                split_identities(arm, &vm.resource_group, &identities).await?;
            let req = pb::AssignVmssIdentityRequest {
                resource_group: vm.resource_group,
                name: vm.name,
                system_assigned,
                user_assigned_identities,
                ..Default::default()
            };
            arm.assign_vmss_identity(req)
                .await
                .map_err(status)?
                .into_inner()
        }
        VmIdentityCommand::Remove { vm, identities } => {
            let (system_assigned, user_assigned_identities) =
                split_identities(arm, &vm.resource_group, &identities).await?;
            let req = pb::RemoveVmssIdentityRequest {
                resource_group: vm.resource_group,
                name: vm.name,
                system_assigned,
                user_assigned_identities,
                ..Default::default()
            };
            arm.remove_vmss_identity(req)
                .await
                .map_err(status)?
                .into_inner()
        }
        VmIdentityCommand::Show { vm } => {
            let req = pb::GetVmssRequest {
                resource_group: vm.resource_group,
                name: vm.name,
                ..Default::default()
            };
            let ss = arm.get_vmss(req).await.map_err(status)?.into_inner();
            ss.identity.unwrap_or_default()
        }
    };
    print(&output::vm_identity(Some(&identity)));
    Ok(())
}

async fn keyvault(arm: &mut Arm, c: KeyvaultCommand) -> anyhow::Result<()> {
    match c {
        KeyvaultCommand::Create { vault, location } => {
            let req = pb::CreateVaultRequest {
                resource_group: vault.resource_group,
                name: vault.name,
                location: location.unwrap_or_default(),
                ..Default::default()
            };
            print(&output::vault(
                &arm.create_vault(req).await.map_err(status)?.into_inner(),
            ));
        }
        KeyvaultCommand::Secret {
            command:
                SecretCommand::Set {
                    vault_name,
                    name,
                    value,
                },
        } => {
            let req = pb::SetSecretRequest {
                vault_name,
                name,
                value,
            };
            print(&output::secret(
                &arm.set_secret(req).await.map_err(status)?.into_inner(),
            ));
        }
    }
    Ok(())
}
