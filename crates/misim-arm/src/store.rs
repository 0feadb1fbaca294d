//! ARM's tables in its sled store, keyed by lower-cased resource ids ([`ResourceId::key`]) so lookups
//! ignore case as ARM does.

use std::path::Path;

use misim_core::{ResourceId, Store, Table};

use crate::error::Result;
use crate::model::{ResourceGroup, RoleAssignment, Subscription, Uami, Vm, Vmss};
use crate::private_ip::{Counter, IpClaim};
use crate::vault::{Secret, Vault};

/// ARM's schema version ([`misim_core::Store::open_party`]).
pub const SCHEMA_VERSION: u32 = 1;

/// Typed access to ARM's state.
#[derive(Clone)]
pub struct ArmStore {
    store: Store,
    /// Subscriptions by lower-cased GUID.
    pub subscriptions: Table<Subscription>,
    /// Resource groups by id key.
    pub groups: Table<ResourceGroup>,
    /// Virtual machines by id key.
    pub vms: Table<Vm>,
    /// User-assigned identities by id key.
    pub uamis: Table<Uami>,
    /// Role assignments by lower-cased assignment id.
    pub role_assignments: Table<RoleAssignment>,
    /// Deleted role assignments that still authorize while their deletion propagates.
    pub revoked_role_assignments: Table<RoleAssignment>,
    /// Virtual machine scale sets by id key.
    pub vmss: Table<Vmss>,
    /// Scale-set instances (VM records with `scale_set` set) by instance id key.
    pub instances: Table<Vm>,
    /// Key vaults by lower-cased vault name (vault names are globally unique, as in Azure).
    pub vaults: Table<Vault>,
    /// Secrets by `{vault name}/{secret name}`, lower-cased.
    pub secrets: Table<Secret>,
    /// Private IP address → its holder ([`crate::private_ip`]).
    pub ip_claims: Table<IpClaim>,
    /// Counters (the private IP allocation hint).
    pub(crate) counters: Table<Counter>,
    /// App Service web apps (`Microsoft.Web/sites`) by id key.
    pub sites: Table<crate::webapps::WebApp>,
    /// Federated identity credentials of user-assigned identities by id key ([`crate::workload`]).
    pub federated_credentials: Table<crate::workload::FederatedCredential>,
    /// AKS managed clusters by id key ([`crate::workload`]).
    pub clusters: Table<crate::workload::ManagedCluster>,
}

impl ArmStore {
    /// Opens ARM's database in `dir`.
    ///
    /// # Errors
    /// [`misim_core::StoreError`] when sled cannot open the directory.
    pub fn open(dir: &Path) -> Result<Self, misim_core::StoreError> {
        Self::from_store(Store::open_party(dir, "arm", SCHEMA_VERSION)?)
    }

    /// Wraps an already open store (tests use [`Store::temporary`]).
    ///
    /// # Errors
    /// [`misim_core::StoreError`] when a table cannot be opened.
    pub fn from_store(store: Store) -> Result<Self, misim_core::StoreError> {
        let arm = ArmStore {
            subscriptions: store.table("subscriptions")?,
            groups: store.table("resource_groups")?,
            vms: store.table("vms")?,
            uamis: store.table("uamis")?,
            role_assignments: store.table("role_assignments")?,
            revoked_role_assignments: store.table("revoked_role_assignments")?,
            vmss: store.table("vmss")?,
            instances: store.table("vmss_instances")?,
            vaults: store.table("vaults")?,
            secrets: store.table("secrets")?,
            ip_claims: store.table("private_ips")?,
            counters: store.table("counters")?,
            sites: store.table("sites")?,
            federated_credentials: store.table("federated_identity_credentials")?,
            clusters: store.table("managed_clusters")?,
            store,
        };
        arm.backfill_ip_claims()?;
        Ok(arm)
    }

    /// Flushes to disk (call before acknowledging a write).
    ///
    /// # Errors
    /// [`crate::error::ArmError::Store`] on I/O failure.
    pub async fn flush(&self) -> Result<()> {
        Ok(self.store.flush().await?)
    }

    /// Removes a VM or scale-set instance record (`table`: [`ArmStore::vms`] or
    /// [`ArmStore::instances`]) and releases its private IP claim, in one transaction.
    ///
    /// # Errors
    /// Store failures; then neither is changed.
    pub fn remove_vm_and_ip(&self, table: &Table<Vm>, vm: &Vm) -> Result<()> {
        let key = vm.id.key();
        self.store.transaction(|tx| {
            tx.remove(table, &key)?;
            let claimed = !vm.private_ip.is_empty()
                && tx
                    .get(&self.ip_claims, &vm.private_ip)?
                    .is_some_and(|c| c.owner == key);
            if claimed {
                tx.remove(&self.ip_claims, &vm.private_ip)?;
            }
            Ok::<_, misim_core::StoreError>(())
        })?;
        Ok(())
    }

    /// The subscription with this GUID (any case).
    ///
    /// # Errors
    /// Store failures.
    pub fn subscription(&self, subscription_id: &str) -> Result<Option<Subscription>> {
        Ok(self
            .subscriptions
            .get(&subscription_id.to_ascii_lowercase())?)
    }

    /// The default subscription, if bootstrap created one.
    ///
    /// # Errors
    /// Store failures.
    pub fn default_subscription(&self) -> Result<Option<Subscription>> {
        Ok(self
            .subscriptions
            .values()?
            .into_iter()
            .find(|s| s.is_default))
    }

    /// The resource group with this id.
    ///
    /// # Errors
    /// Store failures.
    pub fn group(&self, id: &ResourceId) -> Result<Option<ResourceGroup>> {
        Ok(self.groups.get(&id.key())?)
    }

    /// The VM with this id, including one being deleted.
    ///
    /// # Errors
    /// Store failures.
    pub fn vm(&self, id: &ResourceId) -> Result<Option<Vm>> {
        Ok(self.vms.get(&id.key())?)
    }

    /// The UAMI with this id, including one being deleted.
    ///
    /// # Errors
    /// Store failures.
    pub fn uami(&self, id: &ResourceId) -> Result<Option<Uami>> {
        Ok(self.uamis.get(&id.key())?)
    }

    /// VMs whose id lies within `scope` (a subscription or group), excluding ones being deleted.
    ///
    /// # Errors
    /// Store failures.
    pub fn vms_within(&self, scope: &ResourceId) -> Result<Vec<Vm>> {
        Ok(self
            .vms
            .scan_prefix(&format!("{}/", scope.key()))?
            .into_iter()
            .map(|(_, v)| v)
            .filter(|v| !v.deleting)
            .collect())
    }

    /// UAMIs whose id lies within `scope`, excluding ones being deleted.
    ///
    /// # Errors
    /// Store failures.
    pub fn uamis_within(&self, scope: &ResourceId) -> Result<Vec<Uami>> {
        Ok(self
            .uamis
            .scan_prefix(&format!("{}/", scope.key()))?
            .into_iter()
            .map(|(_, v)| v)
            .filter(|u| !u.deleting)
            .collect())
    }

    /// The instances of scale set `vmss` (including ones being deleted), by instance id.
    ///
    /// # Errors
    /// Store failures.
    pub fn instances_of(&self, vmss: &ResourceId) -> Result<Vec<Vm>> {
        let mut v: Vec<Vm> = self
            .instances
            .scan_prefix(&format!("{}/", vmss.key()))?
            .into_iter()
            .map(|(_, v)| v)
            .collect();
        v.sort_by_key(|i| i.id.name().parse::<u64>().unwrap_or(u64::MAX));
        Ok(v)
    }

    /// Scale sets whose id lies within `scope`, excluding ones being deleted.
    ///
    /// # Errors
    /// Store failures.
    pub fn vmss_within(&self, scope: &ResourceId) -> Result<Vec<Vmss>> {
        Ok(self
            .vmss
            .scan_prefix(&format!("{}/", scope.key()))?
            .into_iter()
            .map(|(_, v)| v)
            .filter(|v| !v.deleting)
            .collect())
    }
}
