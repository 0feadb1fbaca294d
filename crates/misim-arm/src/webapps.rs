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

use std::collections::BTreeMap;

use misim_core::ResourceId;
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use crate::error::{ArmError, Result};
use crate::identity::{current_set, Change};
use crate::identity_spec::{self, IdentityRequest, Mode};
use crate::model::{identity_view, IdentityIds, SyncState, UserAssignedEntry, VmIdentityView};
use crate::service::Arm;

/// `Microsoft.Web/sites`.
pub const SITES: &str = "Microsoft.Web/sites";

/// A web app with its desired and actual identity state (what ARM's store keeps).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct WebApp {
    /// `/subscriptions/{s}/resourceGroups/{g}/providers/Microsoft.Web/sites/{name}`.
    pub id: ResourceId,
    /// A GUID identifying the site on its host (the placement's `vm_id`).
    pub site_id: String,
    /// `app` or `functionapp` (ARM's `kind` of a site).
    pub kind: String,
    /// Location.
    pub location: String,
    /// Tags.
    pub tags: BTreeMap<String, String>,
    /// Name of the host the site runs on.
    pub host: String,
    /// The site's secret, `IDENTITY_HEADER` in the app's environment. Kept in ARM's store only and
    /// given to the site's host; shown by the admin gRPC API, never by the REST surface.
    pub identity_header: String,
    /// `IDENTITY_ENDPOINT` as the host last reported it; empty until placed.
    pub identity_endpoint: String,
    /// True once the host accepted the site.
    pub placed: bool,
    /// Desired: system-assigned identity enabled.
    pub system_assigned: bool,
    /// Desired: user-assigned identities, keyed by [`ResourceId::key`].
    pub user_assigned: BTreeMap<String, UserAssignedEntry>,
    /// Actual: the system-assigned identity MSRP created.
    pub system_identity: Option<IdentityIds>,
    /// A disabled system-assigned identity still has to be deleted in MSRP.
    pub system_delete_pending: bool,
    /// The site is being deleted (hidden from reads; the reconciler finishes the delete).
    pub deleting: bool,
    /// Reconcile state.
    pub sync: SyncState,
}

impl WebApp {
    /// The site's `identity` block (`ManagedServiceIdentity`: type, principalId, tenantId,
    /// userAssignedIdentities {principalId, clientId}; the same shape as a VM's).
    pub fn identity_view(&self) -> VmIdentityView {
        identity_view(
            self.system_assigned,
            self.system_identity.as_ref(),
            &self.user_assigned,
        )
    }

    /// `properties.provisioningState`: `InProgress` until the host runs the site with its identities
    /// (the reconciler retries a failed step), then `Succeeded`.
    pub fn provisioning_state(&self) -> &'static str {
        match &self.sync {
            SyncState::Succeeded => "Succeeded",
            SyncState::Pending | SyncState::Failed(_) => "InProgress",
        }
    }

    /// `properties.defaultHostName`: `{name}.azurewebsites.net` (lower case, as App Service shows it).
    pub fn default_host_name(&self) -> String {
        format!("{}.azurewebsites.net", self.id.name().to_ascii_lowercase())
    }
}

/// What a caller asks for when creating a web app (empty strings take defaults).
#[derive(Clone, Debug, Default)]
pub struct CreateWebApp {
    /// Subscription GUID; empty: the default subscription.
    pub subscription_id: String,
    /// Resource group name.
    pub resource_group: String,
    /// Site name.
    pub name: String,
    /// Location; empty: the group's location.
    pub location: String,
    /// `app` (default) or `functionapp`.
    pub kind: String,
    /// Host name; empty: the host with the fewest placements.
    pub host: String,
    /// Tags.
    pub tags: BTreeMap<String, String>,
}

fn site_not_found(name: &str, group: &str) -> ArmError {
    ArmError::ResourceNotFound {
        resource_type: SITES.into(),
        name: name.to_string(),
        group: group.to_string(),
    }
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
        let g = self.group(subscription_id, group)?;
        validate_site_name(name).map_err(|_| site_not_found(name, group))?;
        ResourceId::resource(
            g.id.subscription_id(),
            g.id.name(),
            "Microsoft.Web",
            "sites",
            name,
        )
        .map_err(|_| site_not_found(name, group))
    }

    /// The stored site (not being deleted).
    ///
    /// # Errors
    /// [`ArmError::ResourceNotFound`] when absent.
    pub(crate) fn live_webapp(&self, id: &ResourceId) -> Result<WebApp> {
        self.store
            .sites
            .get(&id.key())?
            .filter(|s| !s.deleting)
            .ok_or_else(|| site_not_found(id.name(), id.resource_group_name().unwrap_or_default()))
    }

    /// Creates a web app and places it on a host with a new secret. Creating an existing site again
    /// returns it unchanged (ARM PUT is idempotent); another location is a 409 as for VMs.
    ///
    /// # Errors
    /// [`ArmError::InvalidArgument`] (bad name or kind, unknown host), lookup errors,
    /// [`ArmError::ReconcilePending`] when the host could not be reached (placement is retried).
    pub async fn create_webapp(&self, req: CreateWebApp) -> Result<WebApp> {
        let group = self.group(&req.subscription_id, &req.resource_group)?;
        validate_site_name(&req.name)?;
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
            &req.name,
        )?;
        let location = if req.location.is_empty() {
            group.location.clone()
        } else {
            req.location.clone()
        };
        let guard = self.locks.lock(&id.key()).await;
        if let Some(existing) = self.store.sites.get(&id.key())? {
            if existing.deleting {
                return Err(ArmError::ReconcilePending(format!(
                    "web app '{}' is still being deleted",
                    req.name
                )));
            }
            if !existing.location.eq_ignore_ascii_case(&location) {
                return Err(ArmError::Conflict {
                    code: "InvalidResourceLocation",
                    message: format!(
                        "The resource '{}' already exists in location '{}' in resource group '{}'. A resource with the same name cannot be created in location '{location}'. Please select a new resource name.",
                        req.name, existing.location, group.id.name()
                    ),
                });
            }
            return Ok(existing);
        }
        let host = self.choose_host_among(&req.host, &[])?;
        let site = WebApp {
            id: id.clone(),
            site_id: uuid::Uuid::new_v4().to_string(),
            kind: kind.to_string(),
            location,
            tags: req.tags,
            host: host.clone(),
            identity_header: new_secret(),
            identity_endpoint: String::new(),
            placed: false,
            system_assigned: false,
            user_assigned: BTreeMap::new(),
            system_identity: None,
            system_delete_pending: false,
            deleting: false,
            sync: SyncState::Pending,
        };
        self.store.sites.put(&id.key(), &site)?;
        self.store.flush().await?;
        info!(site = %id, host = %host, kind, "created web app");
        let result = self.reconcile_webapp_locked(&id).await;
        drop(guard);
        result.map_err(|e| ArmError::ReconcilePending(e.to_string()))?;
        self.live_webapp(&id)
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
        let mut site = self.live_webapp(&id)?;
        if site.placed {
            match self.peers.host_vm(&site.host, id.as_str()).await {
                Ok(Some(live)) => site.identity_endpoint = live.identity_endpoint,
                Ok(None) => {
                    warn!(site = %id, host = %site.host, "host does not know the web app; using the stored endpoint")
                }
                Err(e) => {
                    warn!(site = %id, error = %e, "host unreachable; using the stored endpoint")
                }
            }
        }
        Ok(site)
    }

    /// Web apps within `scope` (a subscription or resource group id), excluding ones being deleted.
    ///
    /// # Errors
    /// Store failures.
    pub fn webapps_within(&self, scope: &ResourceId) -> Result<Vec<WebApp>> {
        Ok(self
            .store
            .sites
            .scan_prefix(&format!("{}/", scope.key()))?
            .into_iter()
            .map(|(_, s)| s)
            .filter(|s| !s.deleting && s.id.is_type(SITES))
            .collect())
    }

    /// Web apps of a resource group.
    ///
    /// # Errors
    /// Lookup errors.
    pub fn list_webapps(&self, subscription_id: &str, group: &str) -> Result<Vec<WebApp>> {
        let g = self.group(subscription_id, group)?;
        self.webapps_within(&g.id)
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
        let id = match self.webapp_id(subscription_id, group, name) {
            Ok(id) => id,
            Err(ArmError::ResourceNotFound { .. }) => return Ok(()),
            Err(e) => return Err(e),
        };
        let _guard = self.locks.lock(&id.key()).await;
        let Some(mut site) = self.store.sites.get(&id.key())? else {
            return Ok(());
        };
        site.deleting = true;
        site.sync = SyncState::Pending;
        self.store.sites.put(&id.key(), &site)?;
        self.store.flush().await?;
        info!(site = %id, "deleting web app");
        self.reconcile_webapp_locked(&id)
            .await
            .map_err(|e| ArmError::ReconcilePending(e.to_string()))
    }

    /// Applies an `identity` block to a site with ARM's PUT/PATCH semantics, then reconciles.
    ///
    /// # Errors
    /// As [`Arm::update_vm_identity`].
    pub async fn update_webapp_identity(
        &self,
        id: &ResourceId,
        req: &IdentityRequest,
        mode: Mode,
    ) -> Result<VmIdentityView> {
        self.change_webapp_identity(id, Change::Request(req), mode)
            .await
    }

    async fn change_webapp_identity(
        &self,
        id: &ResourceId,
        change: Change<'_>,
        mode: Mode,
    ) -> Result<VmIdentityView> {
        let guard = self.locks.lock(&id.key()).await;
        let mut site = self.live_webapp(id)?;
        let req = change.request(site.system_assigned, &site.user_assigned)?;
        let plan = identity_spec::plan(&current_set(&site.user_assigned), &req, mode)?;
        let entries = self.plan_entries(&plan, &site.user_assigned)?;
        if plan.system_assigned && !site.system_assigned {
            info!(step = 1, site = %id, "enable system-assigned identity");
            site.system_delete_pending = false;
        }
        if !plan.system_assigned && (site.system_assigned || site.system_identity.is_some()) {
            info!(step = 1, site = %id, "disable system-assigned identity");
            site.system_delete_pending = true;
        }
        for added in &plan.added {
            info!(step = 1, site = %id, identity = %added, "assign user-assigned identity");
        }
        site.system_assigned = plan.system_assigned;
        site.user_assigned = entries;
        site.sync = SyncState::Pending;
        self.store.sites.put(&id.key(), &site)?;
        self.store.flush().await?;
        let result = self.reconcile_webapp_locked(id).await;
        drop(guard);
        result.map_err(|e| ArmError::ReconcilePending(e.to_string()))?;
        Ok(self.live_webapp(id)?.identity_view())
    }

    /// Enables the system-assigned identity and/or assigns user-assigned identities to a web app,
    /// keeping the ones it has (`az webapp identity assign [--identities [system] ID…]`).
    ///
    /// # Errors
    /// As [`Arm::update_webapp_identity`]; [`ArmError::InvalidArgument`] when nothing is asked.
    pub async fn assign_webapp_identity(
        &self,
        subscription_id: &str,
        group: &str,
        name: &str,
        system_assigned: bool,
        user_assigned: &[String],
    ) -> Result<VmIdentityView> {
        if !system_assigned && user_assigned.is_empty() {
            return Err(ArmError::InvalidArgument(
                "specify system_assigned and/or at least one user-assigned identity".into(),
            ));
        }
        let id = self.webapp_id(subscription_id, group, name)?;
        let change = Change::Assign {
            system: system_assigned,
            user: user_assigned,
        };
        self.change_webapp_identity(&id, change, Mode::Patch).await
    }

    /// Disables the system-assigned identity (deleted in MSRP) and/or unassigns user-assigned
    /// identities (`az webapp identity remove`). Removing an identity the site lacks is a no-op.
    ///
    /// # Errors
    /// As [`Arm::update_webapp_identity`].
    pub async fn remove_webapp_identity(
        &self,
        subscription_id: &str,
        group: &str,
        name: &str,
        system_assigned: bool,
        user_assigned: &[String],
    ) -> Result<VmIdentityView> {
        let id = self.webapp_id(subscription_id, group, name)?;
        let change = Change::Remove {
            system: system_assigned,
            user: user_assigned,
        };
        self.change_webapp_identity(&id, change, Mode::Patch).await
    }

    /// The site's identity block (`az webapp identity show`).
    ///
    /// # Errors
    /// Lookup errors.
    pub fn get_webapp_identity(
        &self,
        subscription_id: &str,
        group: &str,
        name: &str,
    ) -> Result<VmIdentityView> {
        let id = self.webapp_id(subscription_id, group, name)?;
        Ok(self.live_webapp(&id)?.identity_view())
    }

    /// Reconciles one web app under its lock.
    ///
    /// # Errors
    /// The first failing step's error; the site is then marked failed and retried by the loop.
    pub async fn reconcile_webapp(&self, id: &ResourceId) -> Result<()> {
        let _guard = self.locks.lock(&id.key()).await;
        self.reconcile_webapp_locked(id).await
    }

    /// Reconciles a web app; the caller holds its lock. Progress made before a failure is stored
    /// with the failure.
    pub(crate) async fn reconcile_webapp_locked(&self, id: &ResourceId) -> Result<()> {
        let Some(mut site) = self.store.sites.get(&id.key())? else {
            return Ok(());
        };
        let result = self.apply_webapp(&mut site).await;
        match &result {
            Ok(()) if site.deleting => {
                self.store.sites.remove(&id.key())?;
                info!(site = %id, "deleted web app");
            }
            Ok(()) => {
                site.sync = SyncState::Succeeded;
                self.store.sites.put(&id.key(), &site)?;
            }
            Err(e) => {
                warn!(site = %id, error = %e, "web app reconcile failed; will retry");
                site.sync = SyncState::Failed(e.to_string());
                self.store.sites.put(&id.key(), &site)?;
            }
        }
        self.store.flush().await?;
        result
    }

    async fn apply_webapp(&self, site: &mut WebApp) -> Result<()> {
        let id = site.id.clone();
        if site.deleting {
            if self.peers.host_names().contains(&site.host) {
                // Closes the endpoint and revokes the host's grant (SetHostAccess with nothing).
                self.peers.remove_vm(&site.host, id.as_str()).await?;
                site.placed = false;
            }
            self.peers.delete_identity(id.as_str()).await?;
            site.system_identity = None;
            return Ok(());
        }
        if !site.placed {
            let placement = crate::clients::VmPlacement {
                resource_id: id.to_string(),
                vm_id: site.site_id.clone(),
                name: id.name().to_string(),
                subscription_id: id.subscription_id().to_string(),
                resource_group: id.resource_group_name().unwrap_or_default().to_string(),
                location: site.location.clone(),
                tags: site.tags.clone(),
                ..Default::default()
            };
            let live = self
                .peers
                .place_site(&site.host, &placement, &site.identity_header)
                .await?;
            site.identity_endpoint = live.identity_endpoint;
            site.placed = true;
            info!(site = %id, host = %site.host, endpoint = %site.identity_endpoint, "placed web app on host");
        }
        let refs = self
            .identity_refs(
                &id,
                site.system_assigned,
                &mut site.system_identity,
                &mut site.user_assigned,
            )
            .await?;
        self.peers
            .configure_identities(&site.host, id.as_str(), &refs)
            .await?;
        info!(step = 3, site = %id, host = %site.host, identities = refs.len(), "configured web app identities on host");
        if site.system_delete_pending && !site.system_assigned {
            self.peers.delete_identity(id.as_str()).await?;
            site.system_identity = None;
            site.system_delete_pending = false;
            info!(identity = %id, "deleted system-assigned identity");
        }
        Ok(())
    }

    /// One reconcile pass over web apps (all, or only dirty ones); returns how many failed.
    ///
    /// # Errors
    /// Store failures while listing.
    pub async fn reconcile_webapps(&self, only_dirty: bool) -> Result<usize> {
        let mut failed = 0;
        for site in self.store.sites.values()? {
            if (!only_dirty || site.sync.is_dirty())
                && self.reconcile_webapp(&site.id).await.is_err()
            {
                failed += 1;
            }
        }
        Ok(failed)
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
