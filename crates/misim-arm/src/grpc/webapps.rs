//! The web app (`Microsoft.Web/sites`) RPCs of the ARM gRPC adapter: `az webapp` and
//! `az webapp identity` over [`crate::resources::webapps`].

use misim_proto::arm as pb;
use tonic::{Request, Response};

use super::convert::{all, identity_pb};
use super::{ArmGrpc, R};
use crate::resources::webapps::{CreateWebApp, WebApp};

/// The admin API's view of a site, including its `IDENTITY_ENDPOINT` and `IDENTITY_HEADER` (what
/// the platform puts in the app's environment).
pub(super) fn webapp_pb(site: WebApp) -> pb::WebApp {
    pb::WebApp {
        id: site.id.to_string(),
        name: site.id.name().to_string(),
        resource_group: site
            .id
            .resource_group_name()
            .unwrap_or_default()
            .to_string(),
        subscription_id: site.id.subscription_id().to_string(),
        location: site.location.clone(),
        kind: site.kind.clone(),
        tags: site.tags.clone().into_iter().collect(),
        identity: Some(identity_pb(&site.identity)),
        host: site.host.clone(),
        identity_endpoint: site.identity_endpoint.clone(),
        identity_header: site.identity_header.clone(),
        default_host_name: site.default_host_name(),
        state: "Running".into(),
        provisioning_state: site.provisioning_state().into(),
    }
}

impl ArmGrpc {
    pub(super) async fn webapp_create(&self, r: Request<pb::CreateWebAppRequest>) -> R<pb::WebApp> {
        let r = r.into_inner();
        let req = CreateWebApp {
            resource: new_resource!(r),
            kind: r.kind,
            host: r.host,
        };
        Ok(Response::new(webapp_pb(self.arm.create_webapp(req).await?)))
    }

    pub(super) async fn webapp_get(&self, r: Request<pb::GetWebAppRequest>) -> R<pb::WebApp> {
        let r = r.into_inner();
        let site = self
            .arm
            .get_webapp(&r.subscription_id, &r.resource_group, &r.name)
            .await?;
        Ok(Response::new(webapp_pb(site)))
    }

    pub(super) async fn webapp_list(
        &self,
        r: Request<pb::ListWebAppsRequest>,
    ) -> R<pb::ListWebAppsResponse> {
        let r = r.into_inner();
        let web_apps = all(
            self.arm
                .list_webapps(&r.subscription_id, &r.resource_group)?,
            webapp_pb,
        );
        Ok(Response::new(pb::ListWebAppsResponse { web_apps }))
    }

    pub(super) async fn webapp_delete(
        &self,
        r: Request<pb::DeleteWebAppRequest>,
    ) -> R<pb::DeleteWebAppResponse> {
        let r = r.into_inner();
        self.arm
            .delete_webapp(&r.subscription_id, &r.resource_group, &r.name)
            .await?;
        Ok(Response::new(pb::DeleteWebAppResponse {}))
    }
}
