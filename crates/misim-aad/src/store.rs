//! Azure AD's tables in its store ([`misim_core::Store`], whichever engine `MISIM_STORE_ENGINE`
//! names) and the index keys that make lookups by tenant + appId, tenant + objectId and tenant + MSI
//! resource ID single reads.
//!
//! Writes that belong together are one store transaction ([`misim_core::Store::transaction`]): a
//! principal with its app-ID and MSI indexes, a tenant with its domain index, a key rotation
//! (`store/signing.rs`). A crash therefore never leaves a principal that its MSI index does not find
//! (MSRP's idempotent retry would then create a second, orphaned principal). Callers serialize
//! writes (see `directory.rs`, `keyring.rs`) and call [`AadStore::flush`] before acknowledging.

use std::path::Path;

use misim_core::store::{Table, Tx};
use misim_core::{Store, StoreError};

use crate::error::Result;
use crate::model::{ServicePrincipal, Tenant};

mod signing;
pub use signing::SigningKeyRecord;
mod applications;
pub use applications::AppTables;

/// Azure AD's schema version ([`misim_core::Store::open_party`]).
pub const SCHEMA_VERSION: u32 = 1;

/// Typed access to every table Azure AD keeps.
#[derive(Clone)]
pub struct AadStore {
    store: Store,
    tenants: Table<Tenant>,
    tenant_by_domain: Table<String>,
    meta: Table<String>,
    principals: Table<ServicePrincipal>,
    principal_by_app: Table<String>,
    principal_by_msi: Table<String>,
    signing: Table<SigningKeyRecord>,
    apps: AppTables,
}

const DEFAULT_TENANT: &str = "default_tenant";
/// Meta key written once the first token-signing key is durable: from then on a store without
/// signing keys has lost records. Before it, tenants without a key are a normal state (Azure AD
/// serves its admin API before it has generated its first key, and may be stopped in between).
pub(crate) const SIGNING_KEY_ISSUED: &str = "signing_key_issued";

fn sp_key(tenant_id: &str, id: &str) -> String {
    format!(
        "{}/{}",
        tenant_id.to_ascii_lowercase(),
        id.to_ascii_lowercase()
    )
}

impl AadStore {
    /// Opens (or creates) the store in directory `path` and its tables, after the engine, schema and
    /// integrity checks of [`misim_core::Store::open_party`] and Azure AD's own
    /// ([`AadStore::check_invariants`]).
    ///
    /// # Errors
    /// [`StoreError::Corrupt`] naming the path, what is wrong and what to do;
    /// [`StoreError::Locked`] when another process has it open; an engine error otherwise.
    pub fn open(path: &Path) -> std::result::Result<Self, StoreError> {
        let store = Self::with_store(Store::open_party(path, "aad", SCHEMA_VERSION)?)?;
        if let Err(detail) = store.check_invariants() {
            return Err(StoreError::Corrupt {
                party: "aad".into(),
                path: path.to_path_buf(),
                detail,
            });
        }
        Ok(store)
    }

    /// The references between Azure AD's own tables, checked at open: the default tenant exists, a
    /// directory with tenants has a token-signing key once one was issued, and every app-ID and MSI index entry names a
    /// stored principal. A store that lost records (a truncated file) fails here instead of
    /// answering every token request with a server error.
    ///
    /// # Errors
    /// What does not hold, as a sentence.
    pub fn check_invariants(&self) -> std::result::Result<(), String> {
        let e = |e: StoreError| e.to_string();
        if let Some(id) = self.meta.get(DEFAULT_TENANT).map_err(e)? {
            if self.tenant(&id).map_err(|x| x.to_string())?.is_none() {
                return Err(format!("the default tenant {id} is missing"));
            }
        }
        let tenants = self.tenants.values().map_err(e)?;
        let issued = self.meta.get(SIGNING_KEY_ISSUED).map_err(e)?.is_some();
        if issued && !tenants.is_empty() && self.signing.values().map_err(e)?.is_empty() {
            return Err("the tenants have no token-signing key".into());
        }
        for (name, index) in [
            ("app-ID", &self.principal_by_app),
            ("MSI resource ID", &self.principal_by_msi),
        ] {
            for (key, oid) in index.scan_prefix("").map_err(e)? {
                let tenant = key.split('/').next().unwrap_or_default();
                if self
                    .principals
                    .get(&sp_key(tenant, &oid))
                    .map_err(e)?
                    .is_none()
                {
                    return Err(format!(
                        "the {name} index entry {key} names service principal {oid}, which is missing"
                    ));
                }
            }
        }
        Ok(())
    }

    /// A store in a temporary database (unit tests), with the engine `MISIM_STORE_ENGINE` names.
    #[cfg(test)]
    pub fn temporary() -> Self {
        Self::with_store(Store::temporary().unwrap()).unwrap()
    }

    fn with_store(store: Store) -> std::result::Result<Self, StoreError> {
        Ok(AadStore {
            tenants: store.table("tenants")?,
            tenant_by_domain: store.table("tenant_by_domain")?,
            meta: store.table("meta")?,
            principals: store.table("service_principals")?,
            principal_by_app: store.table("service_principal_by_app_id")?,
            principal_by_msi: store.table("service_principal_by_msi_resource_id")?,
            signing: store.table("signing_key")?,
            apps: AppTables::open(&store)?,
            store,
        })
    }

    /// Runs `body` as one store transaction over any of Azure AD's tables: all its writes or none.
    ///
    /// # Errors
    /// The body's error, or the engine's when the commit fails (then nothing is written).
    fn transaction<R>(
        &self,
        body: impl FnOnce(&mut Tx) -> std::result::Result<R, StoreError>,
    ) -> Result<R> {
        Ok(self.store.transaction(body)?)
    }

    /// Flushes pending writes to disk (off the runtime).
    ///
    /// # Errors
    /// [`crate::error::AadError::Store`] on I/O failure.
    pub async fn flush(&self) -> Result<()> {
        Ok(self.store.flush().await?)
    }

    /// Opens another table of this store (workload identity federation keeps its credentials in
    /// one, [`crate::federation`]).
    ///
    /// # Errors
    /// [`crate::error::AadError::Store`] when the engine cannot open the table.
    pub fn open_table<T: serde::Serialize + serde::de::DeserializeOwned>(
        &self,
        name: &'static str,
    ) -> Result<Table<T>> {
        Ok(self.store.table(name)?)
    }

    /// The tenant with this ID (case-insensitive).
    pub fn tenant(&self, tenant_id: &str) -> Result<Option<Tenant>> {
        Ok(self.tenants.get(&tenant_id.to_ascii_lowercase())?)
    }

    /// The tenant whose default domain is `domain` (case-insensitive).
    pub fn tenant_by_domain(&self, domain: &str) -> Result<Option<Tenant>> {
        match self.tenant_by_domain.get(&domain.to_ascii_lowercase())? {
            Some(id) => self.tenant(&id),
            None => Ok(None),
        }
    }

    /// All tenants, by ID.
    pub fn tenants(&self) -> Result<Vec<Tenant>> {
        Ok(self.tenants.values()?)
    }

    /// Writes a tenant and its domain index, and when `default` records it as the default tenant,
    /// all in one transaction.
    ///
    /// # Errors
    /// [`crate::error::AadError::Store`] when the store fails; then nothing is written.
    pub fn put_tenant(&self, tenant: &Tenant, default: bool) -> Result<()> {
        let key = tenant.tenant_id.to_ascii_lowercase();
        let domain = tenant.default_domain.to_ascii_lowercase();
        self.transaction(|tx| {
            tx.put(&self.tenants, &key, tenant)?;
            tx.put(&self.tenant_by_domain, &domain, &tenant.tenant_id)?;
            if default {
                tx.put(&self.meta, DEFAULT_TENANT, &tenant.tenant_id)?;
            }
            Ok(())
        })
    }

    /// The ID of the default tenant, once created.
    pub fn default_tenant_id(&self) -> Result<Option<String>> {
        Ok(self.meta.get(DEFAULT_TENANT)?)
    }

    /// The principal with this object ID in the tenant.
    pub fn principal(&self, tenant_id: &str, object_id: &str) -> Result<Option<ServicePrincipal>> {
        Ok(self.principals.get(&sp_key(tenant_id, object_id))?)
    }

    /// The principal with this app (client) ID in the tenant.
    pub fn principal_by_app_id(
        &self,
        tenant_id: &str,
        app_id: &str,
    ) -> Result<Option<ServicePrincipal>> {
        match self.principal_by_app.get(&sp_key(tenant_id, app_id))? {
            Some(oid) => self.principal(tenant_id, &oid),
            None => Ok(None),
        }
    }

    /// The principal of this managed identity (ARM resource ID, case-insensitive) in the tenant.
    pub fn principal_by_msi_resource_id(
        &self,
        tenant_id: &str,
        msi: &str,
    ) -> Result<Option<ServicePrincipal>> {
        match self.principal_by_msi.get(&sp_key(tenant_id, msi))? {
            Some(oid) => self.principal(tenant_id, &oid),
            None => Ok(None),
        }
    }

    /// All principals of a tenant, by object ID.
    pub fn principals(&self, tenant_id: &str) -> Result<Vec<ServicePrincipal>> {
        let prefix = format!("{}/", tenant_id.to_ascii_lowercase());
        Ok(self
            .principals
            .scan_prefix(&prefix)?
            .into_iter()
            .map(|(_, sp)| sp)
            .collect())
    }

    /// Inside a transaction: writes the principal and both indexes.
    fn write_principal(
        &self,
        tx: &mut Tx,
        sp: &ServicePrincipal,
    ) -> std::result::Result<(), StoreError> {
        tx.put(&self.principals, &sp_key(&sp.tenant_id, &sp.object_id), sp)?;
        tx.put(
            &self.principal_by_app,
            &sp_key(&sp.tenant_id, &sp.app_id),
            &sp.object_id,
        )?;
        tx.put(
            &self.principal_by_msi,
            &sp_key(&sp.tenant_id, &sp.msi_resource_id),
            &sp.object_id,
        )
    }

    /// Writes a principal and its app-ID and MSI-resource-ID indexes in one transaction.
    ///
    /// # Errors
    /// [`crate::error::AadError::Store`] when the store fails; then nothing is written.
    pub fn put_principal(&self, sp: &ServicePrincipal) -> Result<()> {
        self.transaction(|tx| self.write_principal(tx, sp))
    }

    /// Removes a principal and the index entries that point to it, in one transaction; returns it if
    /// it existed.
    ///
    /// # Errors
    /// [`crate::error::AadError::Store`] when the store fails or the record does not decode; then
    /// nothing is removed.
    pub fn remove_principal(
        &self,
        tenant_id: &str,
        object_id: &str,
    ) -> Result<Option<ServicePrincipal>> {
        let key = sp_key(tenant_id, object_id);
        self.transaction(|tx| {
            let Some(sp) = tx.remove(&self.principals, &key)? else {
                return Ok(None);
            };
            for (index, id) in [
                (&self.principal_by_app, &sp.app_id),
                (&self.principal_by_msi, &sp.msi_resource_id),
            ] {
                let index_key = sp_key(&sp.tenant_id, id);
                let points_here = tx
                    .get(index, &index_key)?
                    .is_some_and(|oid| oid.eq_ignore_ascii_case(&sp.object_id));
                if points_here {
                    tx.remove(index, &index_key)?;
                }
            }
            Ok(Some(sp))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TID: &str = "11111111-2222-3333-4444-555555555555";
    const VM: &str =
        "/subscriptions/s/resourceGroups/r/providers/Microsoft.Compute/virtualMachines/v";

    fn sp(object_id: &str, app_id: &str) -> ServicePrincipal {
        ServicePrincipal {
            tenant_id: TID.into(),
            object_id: object_id.into(),
            app_id: app_id.into(),
            display_name: "v".into(),
            msi_resource_id: VM.into(),
            is_explicit: false,
            key_credentials: vec![],
        }
    }
    #[test]
    fn put_principal_makes_object_app_and_msi_lookups_resolve() {
        let store = AadStore::temporary();
        let p = sp("o1", "a1");
        store.put_principal(&p).unwrap();
        assert_eq!(store.principal(TID, "O1").unwrap(), Some(p.clone()));
        assert_eq!(
            store.principal_by_app_id(TID, "A1").unwrap(),
            Some(p.clone())
        );
        let msi = VM.to_ascii_uppercase();
        assert_eq!(
            store.principal_by_msi_resource_id(TID, &msi).unwrap(),
            Some(p)
        );
    }

    #[test]
    fn principal_writes_aborted_midway_leave_no_table_written() {
        let store = AadStore::temporary();
        let r: Result<()> = store.transaction(|tx| {
            store.write_principal(tx, &sp("o1", "a1"))?;
            Err(StoreError::Transaction("injected".into()))
        });
        assert!(r.is_err());
        assert_eq!(store.principal(TID, "o1").unwrap(), None);
        assert_eq!(store.principal_by_app_id(TID, "a1").unwrap(), None);
        assert_eq!(store.principal_by_msi_resource_id(TID, VM).unwrap(), None);
        assert!(store.principal_by_msi.is_empty() && store.principal_by_app.is_empty());
    }

    #[test]
    fn remove_principal_drops_its_indexes_but_not_one_that_points_elsewhere() {
        let store = AadStore::temporary();
        let (orphan, live) = (sp("o1", "a1"), sp("o2", "a2"));
        store.put_principal(&orphan).unwrap();
        // A second principal for the same identity takes over the MSI index.
        store.put_principal(&live).unwrap();
        assert_eq!(store.remove_principal(TID, "o1").unwrap(), Some(orphan));
        assert_eq!(store.principal_by_app_id(TID, "a1").unwrap(), None);
        assert_eq!(
            store.principal_by_msi_resource_id(TID, VM).unwrap(),
            Some(live.clone())
        );
        assert_eq!(store.remove_principal(TID, "o2").unwrap(), Some(live));
        assert_eq!(store.principal_by_msi_resource_id(TID, VM).unwrap(), None);
        assert_eq!(store.remove_principal(TID, "o2").unwrap(), None);
    }

    #[test]
    fn put_tenant_writes_domain_index_and_default_marker_together() {
        let store = AadStore::temporary();
        let t = Tenant {
            tenant_id: TID.into(),
            display_name: "d".into(),
            default_domain: "Misim.onmicrosoft.com".into(),
            created_date_time: 1,
        };
        store.put_tenant(&t, false).unwrap();
        assert_eq!(store.default_tenant_id().unwrap(), None);
        assert_eq!(
            store.tenant_by_domain("misim.ONMICROSOFT.com").unwrap(),
            Some(t.clone())
        );
        store.put_tenant(&t, true).unwrap();
        assert_eq!(store.default_tenant_id().unwrap().as_deref(), Some(TID));
    }

    #[test]
    fn tenants_without_a_signing_key_are_damage_only_once_a_key_was_issued() {
        let store = AadStore::temporary();
        let t = Tenant {
            tenant_id: TID.into(),
            display_name: "d".into(),
            default_domain: "misim.onmicrosoft.com".into(),
            created_date_time: 1,
        };
        store.put_tenant(&t, true).unwrap();
        // Stopped before the first key was generated: a normal state, the key ring makes one.
        assert_eq!(store.check_invariants(), Ok(()));
        let key = SigningKeyRecord {
            private_key_pkcs8_der: vec![1],
            certificate_der: vec![2],
            activated_at: 1,
            retired_at: None,
        };
        store.rotate_signing_keys(&[], &[], (1, &key)).unwrap();
        assert_eq!(store.check_invariants(), Ok(()));
        // The keys lost afterwards (a truncated file): damage.
        for (k, _) in store.signing.scan_prefix("").unwrap() {
            store.signing.remove(&k).unwrap();
        }
        assert!(store
            .check_invariants()
            .unwrap_err()
            .contains("no token-signing key"));
    }
}
