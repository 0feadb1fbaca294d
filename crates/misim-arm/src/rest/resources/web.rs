//! App Service web apps (`Microsoft.Web/sites`) on the REST surface: GET, PUT/PATCH (create, and the
//! `identity` block with ARM's PUT/PATCH semantics, checking `…/assign/action` on every newly
//! attached user-assigned identity) and DELETE, in the shape of Web Apps - Get
//! (<https://learn.microsoft.com/rest/api/appservice/web-apps/get>; `identity` is the
//! `ManagedServiceIdentity` of the Microsoft.Web spec: type, tenantId, principalId,
//! userAssignedIdentities {principalId, clientId}). The site's `IDENTITY_HEADER` secret is never
//! part of this surface, as App Service shows it only inside the app's environment.

use misim_core::ResourceId;
use serde_json::{json, Value};

use super::compute::Writable;
use super::json as shapes;
use super::Call;
use crate::error::Result;
use crate::identity::IdentityOwner;
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
    const ASYNC_OPERATION: bool = false;
    async fn read(arm: &Arm, s: &str, g: &str, n: &str) -> Result<Self> {
        arm.get_webapp(s, g, n).await
    }
    async fn delete(arm: &Arm, s: &str, g: &str, n: &str) -> Result<()> {
        arm.delete_webapp(s, g, n).await
    }
    fn to_json(&self) -> Value {
        site_json(self)
    }
    async fn create(c: &Call<'_>, (s, g, n): (&str, &str, &str)) -> Result<()> {
        let req = CreateWebApp {
            resource: c.new_resource((s, g, n)),
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
