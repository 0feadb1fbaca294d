//! App Service web apps (`Microsoft.Web/sites`) on the REST surface: GET, PUT/PATCH (create, and the
//! `identity` block with ARM's PUT/PATCH semantics, checking `…/assign/action` on every newly
//! attached user-assigned identity) and DELETE, in the shape of Web Apps - Get
//! (<https://learn.microsoft.com/rest/api/appservice/web-apps/get>; `identity` is the
//! `ManagedServiceIdentity` of the Microsoft.Web spec: type, tenantId, principalId,
//! userAssignedIdentities {principalId, clientId}). The site's `IDENTITY_HEADER` secret is never
//! part of this surface, as App Service shows it only inside the app's environment.

use axum::http::Method;
use misim_core::ResourceId;
use serde_json::{json, Value};

use super::compute::Writable;
use super::json as shapes;
use super::{body, deleted, ok, put_status, Call, Reply};
use crate::error::Result;
use crate::identity::IdentityOwner;
use crate::resources::NewResource;
use crate::service::Arm;
use crate::webapps::{CreateWebApp, WebApp, SITES};

/// `GET …/Microsoft.Web/sites/{name}` body.
pub fn site_json(w: &WebApp) -> Value {
    let host = w.default_host_name();
    let mut v = json!({
        "id": w.id.to_string(),
        "name": w.id.name(),
        "type": SITES,
        "kind": w.kind,
        "location": w.location,
        "tags": w.tags,
        "properties": {
            "name": w.id.name(),
            "state": "Running",
            "enabled": true,
            "hostNames": [host],
            "enabledHostNames": [host, format!("{}.scm.azurewebsites.net", w.id.name().to_ascii_lowercase())],
            "defaultHostName": host,
            "usageState": "Normal",
            "availabilityState": "Normal",
            "resourceGroup": w.id.resource_group_name().unwrap_or_default(),
            "httpsOnly": false,
            "reserved": false,
            "provisioningState": w.provisioning_state(),
        }
    });
    if let Some(identity) = shapes::identity(&w.identity) {
        v["identity"] = identity;
    }
    v
}

impl Writable for WebApp {
    const OWNER: IdentityOwner = IdentityOwner::WebApp;
    async fn read(arm: &Arm, s: &str, g: &str, n: &str) -> Result<Self> {
        arm.get_webapp(s, g, n).await
    }
    async fn create(c: &Call<'_>, (s, g, n): (&str, &str, &str)) -> Result<()> {
        let req = CreateWebApp {
            resource: NewResource {
                subscription_id: s.into(),
                resource_group: g.into(),
                name: n.into(),
                location: body::location(c.body),
                tags: body::tags(c.body).unwrap_or_default(),
            },
            kind: c.body["kind"].as_str().unwrap_or_default().into(),
            ..Default::default()
        };
        c.arm.create_webapp(req).await.map(drop)
    }
    fn identity_target(
        arm: &Arm,
        (s, g, n): (&str, &str, &str),
        _: &ResourceId,
    ) -> Result<ResourceId> {
        arm.webapp_id(s, g, n)
    }
}

pub(super) async fn site(
    c: &Call<'_>,
    s: &str,
    g: &str,
    n: &str,
    id: &ResourceId,
) -> Result<Reply> {
    let action = |verb: &str| format!("{SITES}/{verb}");
    let arm = c.arm;
    match *c.method {
        Method::GET => {
            c.allow(&action("read"), id)?;
            ok(site_json(&arm.get_webapp(s, g, n).await?))
        }
        Method::PUT | Method::PATCH => {
            let (created, w) = c
                .write_with_identity::<WebApp>(&action("write"), (s, g, n), id)
                .await?;
            Ok((put_status(created), site_json(&w)))
        }
        Method::DELETE => {
            c.allow(&action("delete"), id)?;
            let existed = arm.get_webapp(s, g, n).await.is_ok();
            arm.delete_webapp(s, g, n).await?;
            deleted(existed)
        }
        _ => Err(c.not_allowed()),
    }
}
