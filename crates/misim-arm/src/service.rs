//! The ARM control plane's domain core: the [`Arm`] handle, subscriptions, resource groups and the
//! shared lookups (default subscription, name validation) the VM, identity and RBAC modules use.

use std::collections::BTreeMap;

use misim_core::keyed_locks::KeyedLocks;
use std::future::Future;

use misim_core::{Clock, ResourceId};
use tracing::info;

use crate::clients::Peers;
use crate::error::{ArmError, Result};
use crate::model::{ResourceGroup, Subscription, Uami, Vm, Vmss, WebApp};
use crate::store::{ArmStore, Stored};

/// A stored resource the reconciler carries to MSRP and the hosts: VMs, scale sets, web apps and
/// user-assigned identities. `Arm::settle` is written once over it.
pub(crate) trait Record: Stored {
    /// One idempotent pass carrying it to its peers; progress is kept in `r` even on failure.
    fn apply(arm: &Arm, r: &mut Self) -> impl Future<Output = Result<()>> + Send;
    /// Forgets a record whose delete the peers finished, with what goes with it, in one store
    /// transaction.
    fn forget(arm: &Arm, r: &Self) -> Result<()>;
}

/// ARM's state and peers; the gRPC and REST adapters call into this.
pub struct Arm {
    pub(crate) store: ArmStore,
    pub(crate) peers: Peers,
    pub(crate) clock: Clock,
    /// Per-resource locks: every change to one resource (RPC or reconcile) runs under its lock
    /// (a lower-cased resource id), so a reconcile tick and an RPC never interleave on it.
    pub(crate) locks: KeyedLocks,
    rest_url: std::sync::OnceLock<String>,
    public_rest_url: std::sync::OnceLock<String>,
}

/// Checks a resource name the way ARM does for groups, VMs and identities: 1–90 characters of
/// letters, digits, `-`, `_`, `.`, `(`, `)`, not ending in `.`.
///
/// # Errors
/// [`ArmError::InvalidArgument`] naming what is wrong.
pub fn validate_name(kind: &str, name: &str) -> Result<()> {
    let ok_chars = name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "-_.()".contains(c));
    if name.is_empty() || name.len() > 90 || !ok_chars || name.ends_with('.') {
        return Err(ArmError::InvalidArgument(format!(
            "The {kind} name '{name}' is invalid. It must be 1-90 characters of letters, digits, '-', '_', '.', '(' or ')' and must not end with '.'."
        )));
    }
    Ok(())
}

impl Arm {
    /// The id of resource `name` of `resource_type` (`Namespace/type`, e.g.
    /// `Microsoft.Compute/virtualMachines`) in a group, checking the subscription, the group and the
    /// name with `valid`. A malformed name is a 404 `ResourceNotFound`, as ARM answers a GET of it.
    ///
    /// # Errors
    /// [`ArmError::SubscriptionNotFound`], [`ArmError::ResourceGroupNotFound`],
    /// [`ArmError::ResourceNotFound`].
    pub(crate) fn resource_in(
        &self,
        subscription_id: &str,
        group: &str,
        resource_type: &str,
        name: &str,
        valid: impl Fn(&str) -> Result<()>,
    ) -> Result<ResourceId> {
        let g = self.group(subscription_id, group)?;
        let (namespace, type_name) = resource_type.split_once('/').unwrap_or_default();
        let not_found = || ArmError::ResourceNotFound {
            resource_type: resource_type.to_string(),
            name: name.to_string(),
            group: group.to_string(),
        };
        valid(name).map_err(|_| not_found())?;
        ResourceId::resource(
            g.id.subscription_id(),
            g.id.name(),
            namespace,
            type_name,
            name,
        )
        .map_err(|_| not_found())
    }

    /// The live records of type `R` in resource group `group` of the subscription (empty: default).
    ///
    /// # Errors
    /// Subscription and group lookups, store failures.
    pub(crate) fn list_in<R: Stored>(&self, subscription_id: &str, group: &str) -> Result<Vec<R>> {
        let g = self.group(subscription_id, group)?;
        self.store.live_within(&g.id)
    }

    /// Builds the core over an opened store and peer clients.
    pub(crate) fn new(store: ArmStore, peers: Peers, clock: Clock) -> Self {
        Arm {
            store,
            peers,
            clock,
            locks: KeyedLocks::default(),
            rest_url: std::sync::OnceLock::new(),
            public_rest_url: std::sync::OnceLock::new(),
        }
    }

    /// Records the REST surface's base URL (set once by `run`; it hosts the Key Vault data plane).
    pub fn set_rest_url(&self, url: String) {
        let _ = self.rest_url.set(url);
    }

    /// The REST surface's base URL, empty when not serving REST.
    pub fn rest_url(&self) -> &str {
        self.rest_url.get().map(String::as_str).unwrap_or_default()
    }

    /// Records the URL others reach the REST surface at when it differs from its listener (e.g.
    /// `http://arm:7701` in containers, where the listener is `0.0.0.0:7701`); set once by `run`.
    pub fn set_public_rest_url(&self, url: String) {
        let _ = self
            .public_rest_url
            .set(url.trim_end_matches('/').to_string());
    }

    /// The URL others reach the REST surface at, for URLs ARM hands out (AKS OIDC issuer URLs, Key
    /// Vault data-plane endpoints): the public REST URL when set, else [`Arm::rest_url`].
    pub fn public_rest_url(&self) -> &str {
        match self.public_rest_url.get() {
            Some(url) => url,
            None => self.rest_url(),
        }
    }

    /// The store (tests and the REST surface read it).
    pub(crate) fn store(&self) -> &ArmStore {
        &self.store
    }

    /// The clock.
    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    /// The subscription `subscription_id`, or the default one when empty.
    ///
    /// # Errors
    /// [`ArmError::SubscriptionNotFound`]; [`ArmError::Unavailable`] when bootstrap has not yet
    /// created the default subscription (Azure AD not reachable yet).
    pub fn subscription(&self, subscription_id: &str) -> Result<Subscription> {
        if subscription_id.is_empty() {
            return self.store.default_subscription()?.ok_or_else(|| {
                ArmError::Unavailable(
                    "the default subscription is not created yet (waiting for azure ad)".into(),
                )
            });
        }
        self.store
            .subscription(subscription_id)?
            .ok_or_else(|| ArmError::SubscriptionNotFound(subscription_id.to_string()))
    }

    /// All subscriptions.
    ///
    /// # Errors
    /// Store failures.
    pub fn list_subscriptions(&self) -> Result<Vec<Subscription>> {
        Ok(self.store.subscriptions.values()?)
    }

    /// The resource group `name` of the subscription (empty: default).
    ///
    /// # Errors
    /// [`ArmError::ResourceGroupNotFound`], [`ArmError::SubscriptionNotFound`].
    pub fn group(&self, subscription_id: &str, name: &str) -> Result<ResourceGroup> {
        let sub = self.subscription(subscription_id)?;
        validate_name("resource group", name)
            .map_err(|_| ArmError::ResourceGroupNotFound(name.to_string()))?;
        let id = ResourceId::resource_group(&sub.subscription_id, name);
        self.store
            .group(&id)?
            .ok_or_else(|| ArmError::ResourceGroupNotFound(name.to_string()))
    }

    /// Creates a resource group; creating an existing one again returns it unchanged (ARM PUT is
    /// idempotent), unless the location differs (409 `InvalidResourceGroupLocation`, as ARM).
    ///
    /// # Errors
    /// [`ArmError::InvalidArgument`] for a bad name or empty location, [`ArmError::Conflict`].
    pub async fn create_group(
        &self,
        subscription_id: &str,
        name: &str,
        location: &str,
        tags: BTreeMap<String, String>,
    ) -> Result<ResourceGroup> {
        let sub = self.subscription(subscription_id)?;
        validate_name("resource group", name)?;
        if location.is_empty() {
            return Err(ArmError::InvalidArgument(
                "The resource group location is required.".into(),
            ));
        }
        let id = ResourceId::resource_group(&sub.subscription_id, name);
        let _guard = self.locks.lock(&id.key()).await;
        if let Some(existing) = self.store.group(&id)? {
            if !existing.location.eq_ignore_ascii_case(location) {
                return Err(ArmError::Conflict {
                    code: "InvalidResourceGroupLocation",
                    message: format!(
                        "Invalid resource group location '{location}'. The Resource group already exists in location '{}'.",
                        existing.location
                    ),
                });
            }
            return Ok(existing);
        }
        let group = ResourceGroup {
            id: id.clone(),
            location: location.to_string(),
            tags,
        };
        self.store.groups.put(&id.key(), &group)?;
        self.store.flush().await?;
        info!(group = %id, location, "created resource group");
        Ok(group)
    }

    /// Resource groups of a subscription.
    ///
    /// # Errors
    /// [`ArmError::SubscriptionNotFound`], store failures.
    pub fn list_groups(&self, subscription_id: &str) -> Result<Vec<ResourceGroup>> {
        let sub = self.subscription(subscription_id)?;
        let prefix = format!("{}/resourcegroups/", sub.id().key());
        Ok(self
            .store
            .groups
            .scan_prefix(&prefix)?
            .into_iter()
            .map(|(_, g)| g)
            .collect())
    }

    /// Deletes a resource group with everything in it (VMs, scale sets, their system-assigned identities, vaults, UAMIs
    /// and role assignments within), as ARM does. Deleting an absent group succeeds.
    ///
    /// # Errors
    /// [`ArmError::ReconcilePending`] when a contained resource could not be deleted yet (the group
    /// stays; deleting it again continues).
    pub async fn delete_group(&self, subscription_id: &str, name: &str) -> Result<()> {
        let group = match self.group(subscription_id, name) {
            Ok(g) => g,
            Err(ArmError::ResourceGroupNotFound(_)) => return Ok(()),
            Err(e) => return Err(e),
        };
        let sub = group.id.subscription_id().to_string();
        for vm in self.store.live_within::<Vm>(&group.id)? {
            self.delete_vm(&sub, name, vm.id.name()).await?;
        }
        for ss in self.store.live_within::<Vmss>(&group.id)? {
            self.delete_vmss(&sub, name, ss.id.name()).await?;
        }
        for site in self.store.live_within::<WebApp>(&group.id)? {
            self.delete_webapp(&sub, name, site.id.name()).await?;
        }
        for vault in self.store.vaults.values()? {
            if vault.id.is_within(&group.id) {
                self.delete_vault_record(&vault)?;
            }
        }
        for uami in self.store.live_within::<Uami>(&group.id)? {
            self.delete_user_assigned_identity(&sub, name, uami.id.name())
                .await?;
        }
        // AKS clusters (workload.rs); federated credentials went with their identities.
        for cluster in self.list_managed_clusters(&sub, name)? {
            self.delete_managed_cluster(&sub, name, cluster.id.name())
                .await?;
        }
        // The group and the role assignments within it go together.
        let assignments = self.store.role_assignments.values()?;
        self.store.transaction(|tx| {
            for ra in assignments
                .iter()
                .filter(|ra| ra.scope.is_within(&group.id))
            {
                tx.remove(&self.store.role_assignments, &ra.id.to_ascii_lowercase())?;
            }
            tx.remove(&self.store.groups, &group.id.key())?;
            Ok::<_, ArmError>(())
        })?;
        self.store.flush().await?;
        info!(group = %group.id, "deleted resource group");
        Ok(())
    }
}
