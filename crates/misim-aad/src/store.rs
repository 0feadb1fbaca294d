//! Azure AD's tables in its sled database and the index keys that make lookups by tenant + appId,
//! tenant + objectId and tenant + MSI resource ID single reads.
//!
//! Writes that belong together are one sled transaction: a principal with its app-ID and MSI indexes,
//! a tenant with its domain index, a key rotation (`store/signing.rs`). A crash therefore never leaves a principal that its
//! MSI index does not find (MSRP's idempotent retry would then create a second, orphaned principal).
//! Callers serialize writes (see `directory.rs`, `keyring.rs`) and call [`AadStore::flush`] before
//! acknowledging.

use std::path::Path;

use misim_core::StoreError;
use sled::transaction::TransactionalTree;
use sled::Transactional;

use crate::error::Result;
use crate::model::{ServicePrincipal, Tenant};
use crate::table::{self, finish, Tree, TxResult};

mod signing;
pub use signing::SigningKeyRecord;
mod applications;
pub use applications::AppTrees;

/// Typed access to every table Azure AD keeps.
#[derive(Clone)]
pub struct AadStore {
    db: sled::Db,
    tenants: Tree<Tenant>,
    tenant_by_domain: Tree<String>,
    meta: Tree<String>,
    principals: Tree<ServicePrincipal>,
    principal_by_app: Tree<String>,
    principal_by_msi: Tree<String>,
    signing: Tree<SigningKeyRecord>,
    apps: AppTrees,
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

/// A principal's three entries, encoded, as one transaction writes them.
struct PrincipalWrite {
    key: String,
    app_key: String,
    msi_key: String,
    value: Vec<u8>,
    object_id: Vec<u8>,
}

type PrincipalTrees = (TransactionalTree, TransactionalTree, TransactionalTree);

impl AadStore {
    /// Opens (or creates) the database in directory `path` and its tables.
    ///
    /// # Errors
    /// [`StoreError::Sled`] when the directory cannot be opened (or is locked by another process) or
    /// a tree cannot be opened.
    pub fn open(path: &Path) -> std::result::Result<Self, StoreError> {
        let store = Self::with_db(table::open_db(path)?)?;
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

    /// A store in a temporary in-memory database (unit tests).
    #[cfg(test)]
    pub fn temporary() -> Self {
        Self::with_db(table::temporary_db().unwrap()).unwrap()
    }

    fn with_db(db: sled::Db) -> std::result::Result<Self, StoreError> {
        Ok(AadStore {
            tenants: Tree::open(&db, "tenants")?,
            tenant_by_domain: Tree::open(&db, "tenant_by_domain")?,
            meta: Tree::open(&db, "meta")?,
            principals: Tree::open(&db, "service_principals")?,
            principal_by_app: Tree::open(&db, "service_principal_by_app_id")?,
            principal_by_msi: Tree::open(&db, "service_principal_by_msi_resource_id")?,
            signing: Tree::open(&db, "signing_key")?,
            apps: AppTrees::open(&db)?,
            db,
        })
    }

    /// Flushes pending writes to disk (off the runtime).
    ///
    /// # Errors
    /// [`crate::error::AadError::Store`] on I/O failure.
    pub async fn flush(&self) -> Result<()> {
        Ok(table::flush(&self.db).await?)
    }

    /// Opens another table of this database (workload identity federation keeps its credentials in
    /// one, [`crate::federation`]).
    ///
    /// # Errors
    /// [`crate::error::AadError::Store`] when sled cannot open the tree.
    pub fn open_tree<T: serde::Serialize + serde::de::DeserializeOwned>(
        &self,
        name: &'static str,
    ) -> Result<Tree<T>> {
        Ok(Tree::open(&self.db, name)?)
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
    /// [`crate::error::AadError::Store`] when sled fails; then nothing is written.
    pub fn put_tenant(&self, tenant: &Tenant, default: bool) -> Result<()> {
        let key = tenant.tenant_id.to_ascii_lowercase();
        let domain = tenant.default_domain.to_ascii_lowercase();
        let value = self.tenants.encode(tenant)?;
        let id = self.meta.encode(&tenant.tenant_id)?;
        let trees = (
            self.tenants.raw(),
            self.tenant_by_domain.raw(),
            self.meta.raw(),
        );
        finish(trees.transaction(|(tenants, by_domain, meta)| {
            tenants.insert(key.as_str(), value.clone())?;
            by_domain.insert(domain.as_str(), id.clone())?;
            if default {
                meta.insert(DEFAULT_TENANT, id.clone())?;
            }
            Ok(())
        }))?;
        Ok(())
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

    fn principal_write(&self, sp: &ServicePrincipal) -> Result<PrincipalWrite> {
        Ok(PrincipalWrite {
            key: sp_key(&sp.tenant_id, &sp.object_id),
            app_key: sp_key(&sp.tenant_id, &sp.app_id),
            msi_key: sp_key(&sp.tenant_id, &sp.msi_resource_id),
            value: self.principals.encode(sp)?,
            object_id: self.principal_by_app.encode(&sp.object_id)?,
        })
    }

    /// Inside a transaction on the three principal trees: writes the principal and both indexes.
    fn write_principal((sps, by_app, by_msi): &PrincipalTrees, w: &PrincipalWrite) -> TxResult<()> {
        sps.insert(w.key.as_str(), w.value.clone())?;
        by_app.insert(w.app_key.as_str(), w.object_id.clone())?;
        by_msi.insert(w.msi_key.as_str(), w.object_id.clone())?;
        Ok(())
    }

    fn principal_trees(&self) -> (&sled::Tree, &sled::Tree, &sled::Tree) {
        (
            self.principals.raw(),
            self.principal_by_app.raw(),
            self.principal_by_msi.raw(),
        )
    }

    /// Writes a principal and its app-ID and MSI-resource-ID indexes in one transaction.
    ///
    /// # Errors
    /// [`crate::error::AadError::Store`] when sled fails; then nothing is written.
    pub fn put_principal(&self, sp: &ServicePrincipal) -> Result<()> {
        let w = self.principal_write(sp)?;
        finish(
            self.principal_trees()
                .transaction(|trees| Self::write_principal(trees, &w)),
        )?;
        Ok(())
    }

    /// Removes a principal and the index entries that point to it, in one transaction; returns it if
    /// it existed.
    ///
    /// # Errors
    /// [`crate::error::AadError::Store`] when sled fails or the record does not decode; then nothing
    /// is removed.
    pub fn remove_principal(
        &self,
        tenant_id: &str,
        object_id: &str,
    ) -> Result<Option<ServicePrincipal>> {
        let key = sp_key(tenant_id, object_id);
        let removed = self.principal_trees().transaction(|(sps, by_app, by_msi)| {
            let Some(sp) = self.principals.tx_remove(sps, &key)? else {
                return Ok(None);
            };
            let indexes = [
                (&self.principal_by_app, by_app, &sp.app_id),
                (&self.principal_by_msi, by_msi, &sp.msi_resource_id),
            ];
            for (index, tx, id) in indexes {
                let index_key = sp_key(&sp.tenant_id, id);
                let points_here = index
                    .tx_get(tx, &index_key)?
                    .is_some_and(|oid| oid.eq_ignore_ascii_case(&sp.object_id));
                if points_here {
                    tx.remove(index_key.as_str())?;
                }
            }
            Ok(Some(sp))
        });
        Ok(finish(removed)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::table::abort;

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
        let w = store.principal_write(&sp("o1", "a1")).unwrap();
        let r: std::result::Result<(), StoreError> =
            finish(store.principal_trees().transaction(|trees| {
                AadStore::write_principal(trees, &w)?;
                abort(StoreError::Transaction("injected".into()))
            }));
        assert!(r.is_err());
        assert_eq!(store.principal(TID, "o1").unwrap(), None);
        assert_eq!(store.principal_by_app_id(TID, "a1").unwrap(), None);
        assert_eq!(store.principal_by_msi_resource_id(TID, VM).unwrap(), None);
        assert!(store.principal_by_msi.raw().is_empty() && store.principal_by_app.raw().is_empty());
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
        store.signing.raw().clear().unwrap();
        assert!(store
            .check_invariants()
            .unwrap_err()
            .contains("no token-signing key"));
    }
}
