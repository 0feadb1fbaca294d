//! `misim webapp …` (like `az webapp` and `az webapp identity`) and `misim token get --webapp`, which
//! calls the web app's App Service identity endpoint as code in the app would: `GET
//! {IDENTITY_ENDPOINT}?api-version=2019-08-01&resource=…` with `X-IDENTITY-HEADER: {IDENTITY_HEADER}`
//! (<https://learn.microsoft.com/azure/app-service/overview-managed-identity#rest-endpoint-reference>).

use anyhow::{bail, Context};
use misim_proto::arm as pb;
use serde_json::{json, Value};

use super::identity::split_identities;
use super::{print, status, Arm};
use crate::cli::*;
use crate::output;

/// `az webapp show`'s fields, plus misim's `host` and the `environment` the platform gives the app
/// (`IDENTITY_ENDPOINT`, `IDENTITY_HEADER`; shown because this is the owner's admin API).
pub fn webapp_json(w: &pb::WebApp) -> Value {
    let env = if w.identity_endpoint.is_empty() {
        Value::Null
    } else {
        json!({
            "IDENTITY_ENDPOINT": w.identity_endpoint,
            "IDENTITY_HEADER": w.identity_header,
        })
    };
    json!({
        "id": w.id,
        "name": w.name,
        "type": "Microsoft.Web/sites",
        "kind": w.kind,
        "location": w.location,
        "resourceGroup": w.resource_group,
        "tags": w.tags,
        "identity": output::vm_identity(w.identity.as_ref()),
        "defaultHostName": w.default_host_name,
        "state": w.state,
        "provisioningState": w.provisioning_state,
        "host": w.host,
        "environment": env,
    })
}

pub(super) async fn webapp(arm: &mut Arm, c: WebappCommand) -> anyhow::Result<()> {
    match c {
        WebappCommand::Create {
            site,
            kind,
            host,
            location,
        } => {
            let req = pb::CreateWebAppRequest {
                resource_group: site.resource_group,
                name: site.name,
                kind,
                host: host.unwrap_or_default(),
                location: location.unwrap_or_default(),
                ..Default::default()
            };
            let w = arm.create_web_app(req).await.map_err(status)?.into_inner();
            print(&webapp_json(&w));
        }
        WebappCommand::Show { site } => {
            print(&webapp_json(
                &get(arm, &site.resource_group, &site.name).await?,
            ));
        }
        WebappCommand::List { resource_group } => {
            let req = pb::ListWebAppsRequest {
                resource_group,
                ..Default::default()
            };
            let list = arm.list_web_apps(req).await.map_err(status)?.into_inner();
            print(&Value::Array(
                list.web_apps.iter().map(webapp_json).collect(),
            ));
        }
        WebappCommand::Delete { site } => {
            let req = pb::DeleteWebAppRequest {
                resource_group: site.resource_group,
                name: site.name,
                ..Default::default()
            };
            arm.delete_web_app(req).await.map_err(status)?;
        }
        WebappCommand::Identity { command } => identity(arm, command).await?,
    }
    Ok(())
}

async fn identity(arm: &mut Arm, c: WebappIdentityCommand) -> anyhow::Result<()> {
    let block = match c {
        WebappIdentityCommand::Assign { site, identities } => {
            let (system_assigned, user_assigned_identities) =
                split_identities(arm, &site.resource_group, &identities).await?;
            let req = pb::AssignVmIdentityRequest {
                resource_group: site.resource_group,
                name: site.name,
                system_assigned,
                user_assigned_identities,
                ..Default::default()
            };
            arm.assign_web_app_identity(req).await.map_err(status)?
        }
        WebappIdentityCommand::Remove { site, identities } => {
            let (system_assigned, user_assigned_identities) =
                split_identities(arm, &site.resource_group, &identities).await?;
            let req = pb::RemoveVmIdentityRequest {
                resource_group: site.resource_group,
                name: site.name,
                system_assigned,
                user_assigned_identities,
                ..Default::default()
            };
            arm.remove_web_app_identity(req).await.map_err(status)?
        }
        WebappIdentityCommand::Show { site } => {
            let req = pb::GetVmIdentityRequest {
                resource_group: site.resource_group,
                name: site.name,
                ..Default::default()
            };
            arm.get_web_app_identity(req).await.map_err(status)?
        }
    };
    print(&output::vm_identity(Some(&block.into_inner())));
    Ok(())
}

async fn get(arm: &mut Arm, group: &str, name: &str) -> anyhow::Result<pb::WebApp> {
    let req = pb::GetWebAppRequest {
        resource_group: group.to_string(),
        name: name.to_string(),
        ..Default::default()
    };
    Ok(arm.get_web_app(req).await.map_err(status)?.into_inner())
}

/// The identity selector of `token get --webapp` (at most one; clap enforces it).
#[derive(Debug, Default)]
pub(super) struct WebappSelector {
    /// `client_id`.
    pub client_id: Option<String>,
    /// `principal_id` (from `--object-id`).
    pub principal_id: Option<String>,
    /// `mi_res_id` (from `--msi-res-id`).
    pub mi_res_id: Option<String>,
}

/// `misim token get --webapp NAME`: the web app's identity endpoint's answer, printed.
pub(super) async fn webapp_token(
    arm: &mut Arm,
    group: &str,
    name: &str,
    resource: &str,
    selector: WebappSelector,
) -> anyhow::Result<()> {
    let w = get(arm, group, name).await?;
    if w.identity_endpoint.is_empty() {
        bail!("web app {name} has no identity endpoint yet (is its host running, with per-app listeners?)");
    }
    let mut url = super::loopback_url(&w.identity_endpoint, "identity endpoint")?;
    {
        let mut q = url.query_pairs_mut();
        q.append_pair("api-version", "2019-08-01")
            .append_pair("resource", resource);
        let given = [
            ("client_id", &selector.client_id),
            ("principal_id", &selector.principal_id),
            ("mi_res_id", &selector.mi_res_id),
        ];
        for (k, v) in given {
            if let Some(v) = v {
                q.append_pair(k, v);
            }
        }
    }
    let http = reqwest::Client::builder().no_proxy().build()?;
    let resp = http
        .get(url)
        .header("X-IDENTITY-HEADER", &w.identity_header)
        .send()
        .await
        .context("the web app's identity endpoint did not answer")?;
    let code = resp.status();
    let body: Value = resp
        .json()
        .await
        .context("the identity endpoint answered with something other than JSON")?;
    print(&body);
    if !code.is_success() {
        let hint = match &w.identity {
            Some(i) if i.r#type != "None" && !i.r#type.is_empty() => String::new(),
            _ => format!(
                "\nhint: {name} has no managed identity: enable one with \
                 `misim webapp identity assign -g {group} -n {name}`"
            ),
        };
        bail!("the identity endpoint answered {code}{hint}");
    }
    Ok(())
}
