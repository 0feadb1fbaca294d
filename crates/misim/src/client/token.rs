//! `misim token get`: asks a VM's IMDS for a token over HTTP, as code inside the VM would.

use anyhow::{bail, Context};
use misim_proto::arm as pb;
use serde_json::Value;

use super::{print, status, Arm};
use crate::cli::*;

pub(super) async fn token(arm: &mut Arm, c: TokenCommand) -> anyhow::Result<()> {
    let TokenCommand::Get {
        resource_group,
        name,
        instance_id,
        webapp,
        resource,
        client_id,
        object_id,
        msi_res_id,
        aks,
    } = c;
    if aks.aks.is_some() {
        return super::aks::token_via_aks(
            arm,
            &resource_group,
            &aks,
            &resource,
            client_id.as_deref(),
        )
        .await;
    }
    if let Some(site) = webapp {
        let selector = super::webapp::WebappSelector {
            client_id,
            principal_id: object_id,
            mi_res_id: msi_res_id,
        };
        return super::webapp::webapp_token(arm, &resource_group, &site, &resource, selector).await;
    }
    let vm = Named {
        resource_group,
        name: name.unwrap_or_default(),
    };
    let v = match instance_id {
        Some(instance) => scale_set_instance(arm, &vm, &instance).await?,
        None => {
            let req = pb::GetVmRequest {
                resource_group: vm.resource_group.clone(),
                name: vm.name.clone(),
                ..Default::default()
            };
            match arm.get_vm(req).await {
                Ok(v) => v.into_inner(),
                Err(s) if s.code() == tonic::Code::NotFound => {
                    return Err(not_a_vm(arm, &vm, s).await);
                }
                Err(s) => return Err(status(s)),
            }
        }
    };
    if v.imds_endpoint.is_empty() {
        bail!(
            "VM {} has no IMDS endpoint yet (is its host running?)",
            v.name
        );
    }
    let mut url = super::loopback_url(
        &format!("{}/metadata/identity/oauth2/token", v.imds_endpoint),
        "IMDS endpoint",
    )?;
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
        let hint = identity_hint(&v, &body);
        bail!("IMDS answered {code}{hint}");
    }
    Ok(())
}

/// When `vm` is not a VM: a scale set of that name gets a hint to name an instance.
async fn not_a_vm(arm: &mut Arm, vm: &Named, s: tonic::Status) -> anyhow::Error {
    let req = pb::ListVmssInstancesRequest {
        resource_group: vm.resource_group.clone(),
        name: vm.name.clone(),
        ..Default::default()
    };
    match arm.list_vmss_instances(req).await {
        Ok(r) => {
            let ids: Vec<String> = r
                .into_inner()
                .instances
                .into_iter()
                .map(|i| i.instance_id)
                .collect();
            anyhow::anyhow!(
                "{name} in {rg} is a scale set, not a VM: ask one of its instances with --instance-id N \
                 (instances: {ids}), e.g. misim token get -g {rg} -n {name} --instance-id {first}",
                name = vm.name,
                rg = vm.resource_group,
                ids = if ids.is_empty() { "none yet".to_string() } else { ids.join(", ") },
                first = ids.first().map_or("0", String::as_str),
            )
        }
        Err(_) => status(s),
    }
}

/// What to do after IMDS refused: assign an identity, or pick one the VM has.
fn identity_hint(v: &pb::VirtualMachine, body: &Value) -> String {
    let described = body["error_description"].as_str().unwrap_or_default();
    if !described.contains("Identity not found") {
        return String::new();
    }
    let rg = &v.resource_group;
    let name = if v.vm_scale_set.is_empty() {
        &v.name
    } else {
        &v.vm_scale_set
    };
    let verb = if v.vm_scale_set.is_empty() {
        "vm"
    } else {
        "vmss"
    };
    match &v.identity {
        Some(id) if id.r#type != "None" && !id.r#type.is_empty() => {
            let mut have = Vec::new();
            if !id.principal_id.is_empty() {
                have.push(format!("system-assigned (object_id {})", id.principal_id));
            }
            for (res, u) in &id.user_assigned_identities {
                have.push(format!("{res} (client_id {})", u.client_id));
            }
            format!(
                "\nhint: {name} has these identities, pick one with --client-id, --object-id or --msi-res-id: {}",
                have.join("; ")
            )
        }
        _ => format!(
            "\nhint: {name} has no managed identity: enable one with \
             `misim {verb} identity assign -g {rg} -n {name} --identities system` (or a user-assigned identity's name)"
        ),
    }
}

/// Instance `instance` of scale set `vmss`, as ARM lists it (with its IMDS endpoint).
async fn scale_set_instance(
    arm: &mut Arm,
    vmss: &Named,
    instance: &str,
) -> anyhow::Result<pb::VirtualMachine> {
    let req = pb::ListVmssInstancesRequest {
        resource_group: vmss.resource_group.clone(),
        name: vmss.name.clone(),
        ..Default::default()
    };
    let instances = arm
        .list_vmss_instances(req)
        .await
        .map_err(status)?
        .into_inner()
        .instances;
    let ids: Vec<&str> = instances.iter().map(|i| i.instance_id.as_str()).collect();
    let ids = ids.join(", ");
    instances
        .iter()
        .find(|i| i.instance_id == instance)
        .cloned()
        .with_context(|| {
            format!(
                "scale set {} has no instance {instance:?} (instances: {ids})",
                vmss.name
            )
        })
}
