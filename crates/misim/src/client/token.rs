//! `misim token get`: asks a VM's IMDS for a token over HTTP, as code inside the VM would.

use anyhow::{bail, Context};
use misim_proto::arm as pb;
use serde_json::Value;

use super::{print, status, Arm};
use crate::cli::*;

pub(super) async fn token(arm: &mut Arm, c: TokenCommand) -> anyhow::Result<()> {
    let TokenCommand::Get {
        vm,
        instance_id,
        resource,
        client_id,
        object_id,
        msi_res_id,
    } = c;
    let v = match instance_id {
        Some(instance) => scale_set_instance(arm, &vm, &instance).await?,
        None => {
            let req = pb::GetVmRequest {
                resource_group: vm.resource_group.clone(),
                name: vm.name.clone(),
                ..Default::default()
            };
            arm.get_vm(req).await.map_err(status)?.into_inner()
        }
    };
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
