//! ARM's tables in its sled store, keyed by lower-cased resource ids ([`ResourceId::key`]) so lookups
//! ignore case as ARM does.

use std::collections::BTreeMap;
use std::path::Path;

use misim_core::store::Tx;
use misim_core::{ResourceId, Store, StoreError, Table};

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::Result;
use crate::model::{
    Counter, HostLoad, IpClaim, ResourceGroup, RoleAssignment, Secret, Subscription, SyncState,
    Uami, Vault, Vm, Vmss, WebApp,
};

/// A resource kept in one table of [`ArmStore`] with its reconcile state: VMs, scale sets, web apps
/// and user-assigned identities. The reconciler's side is `service::Record`.
pub(crate) trait Stored:
    Clone + Serialize + DeserializeOwned + Send + Sync + 'static
{
    /// Its resource type, e.g. `Microsoft.Compute/virtualMachines`.
    const TYPE: &'static str;
    /// Its resource id.
    fn id(&self) -> &ResourceId;
    /// Its location, e.g. `westeurope`.
    fn location(&self) -> &str;
    /// The table that keeps it.
    fn table(store: &ArmStore) -> &Table<Self>;
    /// Whether it is being deleted (hidden from reads).
    fn deleting(&self) -> bool;
    /// Its reconcile state.
    fn sync_mut(&mut self) -> &mut SyncState;
    /// Marks it as being deleted, for the reconciler to finish.
    fn mark_deleting(&mut self);
}

/// The [`Stored`] methods of a record type with `id`, `deleting` and `sync` fields, kept in
/// [`ArmStore`]'s table `$table`.
macro_rules! record_fields {
    ($table:ident) => {
        fn id(&self) -> &misim_core::ResourceId {
            &self.id
        }
        fn location(&self) -> &str {
            &self.location
        }
        fn table(store: &crate::store::ArmStore) -> &misim_core::Table<Self> {
            &store.$table
        }
        fn deleting(&self) -> bool {
            self.deleting
        }
        fn sync_mut(&mut self) -> &mut crate::model::SyncState {
            &mut self.sync
        }
        fn mark_deleting(&mut self) {
            self.deleting = true;
            self.sync = crate::model::SyncState::Pending;
        }
    };
}
pub(crate) use record_fields;

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
    /// Private IP address → its holder ([`crate::resources::private_ip`]).
    pub ip_claims: Table<IpClaim>,
    /// Counters (the private IP allocation hint).
    pub(crate) counters: Table<Counter>,
    /// VMs and scale-set instances per host, by host name: kept in the transaction that adds or
    /// removes a VM or instance and rebuilt from those tables at open, so placement reads one
    /// counter per host instead of every VM.
    pub(crate) host_load: Table<HostLoad>,
    /// App Service web apps (`Microsoft.Web/sites`) by id key.
    pub sites: Table<WebApp>,
    /// Federated identity credentials of user-assigned identities by id key ([`crate::identity::workload`]).
    pub federated_credentials: Table<crate::model::FederatedCredential>,
    /// AKS managed clusters by id key ([`crate::identity::workload`]).
    pub clusters: Table<crate::model::ManagedCluster>,
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
            host_load: store.table("host_placements")?,
            sites: store.table("sites")?,
            federated_credentials: store.table("federated_identity_credentials")?,
            clusters: store.table("managed_clusters")?,
            store,
        };
        arm.backfill_ip_claims()?;
        arm.rebuild_host_load()?;
        Ok(arm)
    }

    /// Flushes to disk (call before acknowledging a write).
    ///
    /// # Errors
    /// [`crate::error::ArmError::Store`] on I/O failure.
    pub async fn flush(&self) -> Result<()> {
        Ok(self.store.flush().await?)
    }

    /// Stores a new VM or scale-set instance (`table`: [`ArmStore::vms`] or
    /// [`ArmStore::instances`]) inside `tx`, with its private IP address and its host's count:
    /// `static_ip` when given (claimed, or [`ArmError::PrivateIpInUse`]), else the next free one,
    /// written into `vm.private_ip`.
    ///
    /// # Errors
    /// [`ArmError::PrivateIpInUse`], [`ArmError::SubnetFull`], store failures.
    pub(crate) fn insert_vm_in(
        &self,
        tx: &mut Tx,
        table: &Table<Vm>,
        vm: &mut Vm,
        static_ip: Option<&str>,
    ) -> Result<()> {
        let key = vm.id.key();
        vm.private_ip = match static_ip {
            Some(ip) => {
                self.claim_static_ip_in(tx, ip, &key)?;
                ip.to_string()
            }
            None => self.allocate_ip_in(tx, &key)?,
        };
        if tx.get(table, &key)?.is_none() {
            self.count_placement_in(tx, &vm.host, 1)?;
        }
        tx.put(table, &key, vm)?;
        Ok(())
    }

    /// Removes a VM or scale-set instance record (`table`: [`ArmStore::vms`] or
    /// [`ArmStore::instances`]), releases its private IP claim and lowers its host's count, in one
    /// transaction.
    ///
    /// # Errors
    /// Store failures; then nothing is changed.
    pub fn remove_vm(&self, table: &Table<Vm>, vm: &Vm) -> Result<()> {
        let key = vm.id.key();
        self.transaction(|tx| {
            if let Some(old) = tx.remove(table, &key)? {
                self.count_placement_in(tx, &old.host, -1)?;
            }
            self.release_ip_in(tx, &vm.private_ip, &key)
        })?;
        Ok(())
    }

    /// How many VMs and scale-set instances are on `host`.
    ///
    /// # Errors
    /// Store failures.
    pub fn host_load(&self, host: &str) -> Result<u64> {
        Ok(self.host_load.get(host)?.unwrap_or_default().placements)
    }

    /// Adds `delta` to `host`'s count inside `tx`.
    fn count_placement_in(&self, tx: &mut Tx, host: &str, delta: i64) -> Result<(), StoreError> {
        let mut load = tx.get(&self.host_load, host)?.unwrap_or_default();
        load.placements = load.placements.saturating_add_signed(delta);
        tx.put(&self.host_load, host, &load)
    }

    /// Recounts the VMs and instances per host from their tables (at open: the counts of a store
    /// written before they existed, or by an older misim, are made right).
    fn rebuild_host_load(&self) -> Result<(), StoreError> {
        let mut counts: BTreeMap<String, u64> = BTreeMap::new();
        for vm in self
            .vms
            .values()?
            .into_iter()
            .chain(self.instances.values()?)
        {
            *counts.entry(vm.host).or_default() += 1;
        }
        let stale = self.host_load.scan_prefix("")?;
        self.transaction(|tx| {
            for (host, _) in stale {
                tx.remove(&self.host_load, &host)?;
            }
            for (host, placements) in &counts {
                let load = HostLoad {
                    placements: *placements,
                };
                tx.put(&self.host_load, host, &load)?;
            }
            Ok(())
        })
    }

    /// Removes a user-assigned identity record and its federated identity credentials, in one
    /// transaction.
    ///
    /// # Errors
    /// Store failures; then nothing is changed.
    pub fn remove_uami(&self, uami: &Uami) -> Result<()> {
        let key = uami.id.key();
        let credentials = self
            .federated_credentials
            .scan_prefix(&format!("{key}/federatedidentitycredentials/"))?;
        self.store.transaction(|tx| {
            tx.remove(&self.uamis, &key)?;
            for (k, _) in &credentials {
                tx.remove(&self.federated_credentials, k)?;
            }
            Ok::<_, misim_core::StoreError>(())
        })?;
        Ok(())
    }

    /// Runs `body` as one transaction over ARM's tables ([`Store::transaction`]): all of its
    /// writes or none; transactions run one at a time.
    ///
    /// # Errors
    /// The body's error or the commit's; then nothing is written.
    pub fn transaction<R, E: From<misim_core::StoreError>>(
        &self,
        body: impl FnOnce(&mut Tx) -> Result<R, E>,
    ) -> Result<R, E> {
        self.store.transaction(body)
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

    /// Records of type `R` whose id lies within `scope` (a subscription or group), excluding ones
    /// being deleted: one prefix scan of their table.
    ///
    /// # Errors
    /// Store failures.
    pub(crate) fn live_within<R: Stored>(&self, scope: &ResourceId) -> Result<Vec<R>> {
        Ok(R::table(self)
            .scan_prefix(&format!("{}/", scope.key()))?
            .into_iter()
            .map(|(_, r)| r)
            .filter(|r| !r.deleting() && r.id().is_type(R::TYPE))
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
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn vm(name: &str, host: &str) -> Vm {
        let id = ResourceId::vm("s", "rg", name).unwrap();
        let none = String::new();
        Vm::new(
            id,
            host.into(),
            "l".into(),
            none.clone(),
            none,
            BTreeMap::new(),
        )
    }

    fn insert(s: &ArmStore, vm: &mut Vm) {
        s.transaction(|tx| s.insert_vm_in(tx, &s.vms, vm, None))
            .unwrap();
    }

    #[test]
    fn host_counts_follow_vm_writes_and_are_rebuilt_at_open() {
        let store = Store::temporary().unwrap();
        let s = ArmStore::from_store(store.clone()).unwrap();
        let (mut a, mut b, mut c) = (vm("a", "h1"), vm("b", "h1"), vm("c", "h2"));
        for v in [&mut a, &mut b, &mut c] {
            insert(&s, v);
        }
        insert(&s, &mut a.clone());
        assert_eq!(
            (s.host_load("h1").unwrap(), s.host_load("h2").unwrap()),
            (2, 1)
        );
        assert_ne!(a.private_ip, b.private_ip);
        s.remove_vm(&s.vms, &a).unwrap();
        s.remove_vm(&s.vms, &a).unwrap();
        assert_eq!(
            s.host_load("h1").unwrap(),
            1,
            "a second remove counts nothing"
        );
        assert!(s.ip_claims.get(&a.private_ip).unwrap().is_none());
        // A count that drifted (a store written before counts existed) is made right at open.
        s.host_load.put("h2", &HostLoad { placements: 9 }).unwrap();
        s.host_load
            .put("gone", &HostLoad { placements: 3 })
            .unwrap();
        let reopened = ArmStore::from_store(store).unwrap();
        assert_eq!(reopened.host_load("h2").unwrap(), 1);
        assert_eq!(reopened.host_load("gone").unwrap(), 0);
    }
}
