//! App Service and Azure Functions web apps (`Microsoft.Web/sites`) with their managed identities
//! (<https://learn.microsoft.com/azure/app-service/overview-managed-identity>).
//!
//! A web app is a placement on a host, like a VM: ARM records it (flushed), places it on its host
//! with the site's secret (`IDENTITY_HEADER`, generated here when the site is created, as App Service
//! generates one per site), and carries identity changes through the same steps as for a VM: MSRP
//! creates the system-assigned identity (step 2), `SetHostAccess` grants the host the site's
//! identities and the host is configured with them (step 3). The host then serves the site's
//! identity endpoint (`IDENTITY_ENDPOINT`) speaking the App Service protocol. The system-assigned
//! identity is tied to the site ("deleted if the app is deleted", Learn); user-assigned identities
//! are shared resources and stay.

use misim_core::ResourceId;
use tracing::info;

use crate::error::{ArmError, Result};
pub use crate::model::WebApp;
use crate::model::{IdentityBlock, SyncState};
use crate::resources::vms::or_default;
use crate::resources::NewResource;
use crate::service::Arm;
use crate::service::Record;
use crate::store::{record_fields, Stored};

/// `Microsoft.Web/sites`.
pub const SITES: &str = "Microsoft.Web/sites";

/// What a caller asks for when creating a web app (empty strings take defaults).
#[derive(Clone, Debug, Default)]
pub struct CreateWebApp {
    /// Where it goes, its name and tags.
    pub resource: NewResource,
    /// `app` (default) or `functionapp`.
    pub kind: String,
    /// Host name; empty: the host with the fewest placements.
    pub host: String,
}

/// A fresh per-site secret: 256 bits from the OS generator (two v4 UUIDs' random bits), hex.
fn new_secret() -> String {
    format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    )
}

/// App Service site names: 2–60 letters, digits and hyphens, not starting or ending with a hyphen
/// (<https://learn.microsoft.com/azure/azure-resource-manager/management/resource-name-rules#microsoftweb>).
fn validate_site_name(name: &str) -> Result<()> {
    let ok = (2..=60).contains(&name.len())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    if ok {
        return Ok(());
    }
    Err(ArmError::InvalidArgument(format!(
        "The site name '{name}' is invalid. It must be 2-60 characters of letters, digits and '-', and must not start or end with '-'."
    )))
}

impl Arm {
    /// The site id for a request, checking subscription, group and name.
    ///
    /// # Errors
    /// Subscription and group lookup errors; [`ArmError::ResourceNotFound`] for a malformed name.
    pub(crate) fn webapp_id(
        &self,
        subscription_id: &str,
        group: &str,
        name: &str,
    ) -> Result<ResourceId> {
        self.resource_in(subscription_id, group, SITES, name, validate_site_name)
    }

    /// Creates a web app and places it on a host with a new secret. Creating an existing site again
    /// returns it unchanged (ARM PUT is idempotent); another location is a 409 as for VMs.
    ///
    /// # Errors
    /// [`ArmError::InvalidArgument`] (bad name or kind, unknown host), lookup errors,
    /// [`ArmError::ReconcilePending`] when the host could not be reached (placement is retried).
    pub async fn create_webapp(&self, req: CreateWebApp) -> Result<WebApp> {
        let group = self.group(&req.resource.subscription_id, &req.resource.resource_group)?;
        validate_site_name(&req.resource.name)?;
        let kind = match req.kind.to_ascii_lowercase().as_str() {
            "" | "app" => "app",
            "functionapp" => "functionapp",
            other => {
                return Err(ArmError::InvalidArgument(format!(
                    "unknown web app kind '{other}': use 'app' or 'functionapp'"
                )))
            }
        };
        let id = ResourceId::resource(
            group.id.subscription_id(),
            group.id.name(),
            "Microsoft.Web",
            "sites",
            &req.resource.name,
        )?;
        let location = or_default(req.resource.location, &group.location);
        let (_guard, existing) = self.begin_create::<WebApp>(&id, &location).await?;
        if let Some(existing) = existing {
            return Ok(existing);
        }
        let host = self.choose_host_among(&req.host, &[])?;
        let mut site = WebApp {
            id: id.clone(),
            site_id: uuid::Uuid::new_v4().to_string(),
            kind: kind.to_string(),
            location,
            tags: req.resource.tags,
            host,
            identity_header: new_secret(),
            identity_endpoint: String::new(),
            placed: false,
            identity: IdentityBlock::default(),
            deleting: false,
            sync: SyncState::Pending,
        };
        self.store.sites.put(&id.key(), &site)?;
        self.store.flush().await?;
        info!(site = %id, host = %site.host, kind, "created web app");
        self.settle(&mut site).await.map_err(ArmError::pending)?;
        Ok(site)
    }

    /// The web app with its live identity endpoint (asked from the host; the stored one when the
    /// host cannot be reached).
    ///
    /// # Errors
    /// Lookup errors.
    pub async fn get_webapp(
        &self,
        subscription_id: &str,
        group: &str,
        name: &str,
    ) -> Result<WebApp> {
        let id = self.webapp_id(subscription_id, group, name)?;
        let mut site: WebApp = self.live(&id)?;
        if site.placed {
            if let Some(live) = self.live_endpoints(&site.host, &id).await {
                site.identity_endpoint = live.identity_endpoint;
            }
        }
        Ok(site)
    }

    /// Web apps of a resource group.
    ///
    /// # Errors
    /// Lookup errors.
    pub fn list_webapps(&self, subscription_id: &str, group: &str) -> Result<Vec<WebApp>> {
        self.list_in(subscription_id, group)
    }

    /// Deletes a web app: removes it from its host (its endpoint closes, its grant is revoked) and
    /// deletes its system-assigned identity in MSRP. Deleting an absent site succeeds.
    ///
    /// # Errors
    /// Group lookup errors; [`ArmError::ReconcilePending`] when a peer is down (the site is hidden and
    /// the reconciler finishes the delete).
    pub async fn delete_webapp(
        &self,
        subscription_id: &str,
        group: &str,
        name: &str,
    ) -> Result<()> {
        match self.webapp_id(subscription_id, group, name) {
            Ok(id) => self.mark_deleting::<WebApp>(&id).await,
            Err(ArmError::ResourceNotFound { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }
}

impl Stored for WebApp {
    const TYPE: &'static str = SITES;
    record_fields!(sites);
}

impl Record for WebApp {
    async fn apply(arm: &Arm, site: &mut Self) -> Result<()> {
        if site.deleting {
            // Closes the endpoint and revokes the host's grant (SetHostAccess with nothing).
            return arm
                .unplace(&site.id, &site.host, &mut site.placed, &mut site.identity)
                .await;
        }
        if !site.placed {
            let live = arm.peers.place_site(&site.host, site).await?;
            site.identity_endpoint = live.identity_endpoint;
            site.placed = true;
            info!(site = %site.id, host = %site.host, endpoint = %site.identity_endpoint, "placed web app on host");
        }
        arm.serve_identities(&site.id, &site.host, &mut site.identity)
            .await
    }
    fn forget(arm: &Arm, site: &Self) -> Result<()> {
        arm.store.sites.remove(&site.id.key())?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn site_names_follow_app_service_rules() {
        assert!(validate_site_name("web-1").is_ok());
        assert!(validate_site_name("a").is_err());
        assert!(validate_site_name("-web").is_err());
        assert!(validate_site_name("web_1").is_err());
        assert!(validate_site_name(&"w".repeat(61)).is_err());
    }

    #[test]
    fn secrets_are_long_hex_and_fresh() {
        let (a, b) = (new_secret(), new_secret());
        assert_eq!(a.len(), 64);
        assert!(a.chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
    }
}
