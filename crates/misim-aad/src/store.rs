//! Azure AD's tables in its sled database and the index keys that make lookups by tenant + appId,
//! tenant + objectId and tenant + MSI resource ID single reads.
//!
//! Callers serialize writes (see `directory.rs`) and call [`AadStore::flush`] before acknowledging.

use serde::{Deserialize, Serialize};

use misim_core::{Store, Table};

use crate::error::Result;
use crate::model::{ServicePrincipal, Tenant};

/// A persisted token-signing key: the current one, or a retired one still published in JWKS.
#[derive(Clone, Serialize, Deserialize)]
pub struct SigningKeyRecord {
    /// PKCS#8 DER of the RSA-2048 private key. Never logged.
    pub private_key_pkcs8_der: Vec<u8>,
    /// Self-signed certificate of the key, DER (published in the JWKS `x5c`).
    pub certificate_der: Vec<u8>,
    /// When the key became the signing key, epoch seconds (0 in records written before rotation).
    #[serde(default)]
    pub activated_at: i64,
    /// When a newer key replaced it, epoch seconds; `None` for the current key.
    #[serde(default)]
    pub retired_at: Option<i64>,
}

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
}

const DEFAULT_TENANT: &str = "default_tenant";
/// Key of the single signing key written before rotation existed (migrated on start).
const LEGACY_SIGNING_KEY: &str = "current";
/// Prefix of rotated signing keys, followed by a zero-padded sequence number.
const SIGNING_KEY_PREFIX: &str = "k/";

fn sp_key(tenant_id: &str, id: &str) -> String {
    format!(
        "{}/{}",
        tenant_id.to_ascii_lowercase(),
        id.to_ascii_lowercase()
    )
}

impl AadStore {
    /// Opens the tables in `store`.
    ///
    /// # Errors
    /// [`crate::error::AadError::Store`] when sled cannot open a tree.
    pub fn open(store: Store) -> Result<Self> {
        Ok(AadStore {
            tenants: store.table("tenants")?,
            tenant_by_domain: store.table("tenant_by_domain")?,
            meta: store.table("meta")?,
            principals: store.table("service_principals")?,
            principal_by_app: store.table("service_principal_by_app_id")?,
            principal_by_msi: store.table("service_principal_by_msi_resource_id")?,
            signing: store.table("signing_key")?,
            store,
        })
    }

    /// Flushes pending writes to disk (off the runtime).
    ///
    /// # Errors
    /// [`crate::error::AadError::Store`] on I/O failure.
    pub async fn flush(&self) -> Result<()> {
        Ok(self.store.flush().await?)
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

    /// Writes a tenant and its domain index.
    pub fn put_tenant(&self, tenant: &Tenant) -> Result<()> {
        self.tenants.put(&tenant.tenant_id, tenant)?;
        self.tenant_by_domain.put(
            &tenant.default_domain.to_ascii_lowercase(),
            &tenant.tenant_id,
        )?;
        Ok(())
    }

    /// The ID of the default tenant, once created.
    pub fn default_tenant_id(&self) -> Result<Option<String>> {
        Ok(self.meta.get(DEFAULT_TENANT)?)
    }

    /// Records which tenant is the default one.
    pub fn set_default_tenant_id(&self, tenant_id: &str) -> Result<()> {
        Ok(self.meta.put(DEFAULT_TENANT, &tenant_id.to_string())?)
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

    /// Writes a principal and its app-ID and MSI-resource-ID indexes.
    pub fn put_principal(&self, sp: &ServicePrincipal) -> Result<()> {
        self.principals
            .put(&sp_key(&sp.tenant_id, &sp.object_id), sp)?;
        self.principal_by_app
            .put(&sp_key(&sp.tenant_id, &sp.app_id), &sp.object_id)?;
        self.principal_by_msi
            .put(&sp_key(&sp.tenant_id, &sp.msi_resource_id), &sp.object_id)?;
        Ok(())
    }

    /// Removes a principal and its indexes; returns it if it existed.
    pub fn remove_principal(
        &self,
        tenant_id: &str,
        object_id: &str,
    ) -> Result<Option<ServicePrincipal>> {
        let Some(sp) = self.principals.remove(&sp_key(tenant_id, object_id))? else {
            return Ok(None);
        };
        self.principal_by_app
            .remove(&sp_key(&sp.tenant_id, &sp.app_id))?;
        self.principal_by_msi
            .remove(&sp_key(&sp.tenant_id, &sp.msi_resource_id))?;
        Ok(Some(sp))
    }

    /// The persisted token-signing keys with their sequence numbers, oldest first. A key stored by
    /// a version without rotation is returned as sequence 1 (and moved there).
    pub fn signing_keys(&self) -> Result<Vec<(u64, SigningKeyRecord)>> {
        let mut keys: Vec<(u64, SigningKeyRecord)> = self
            .signing
            .scan_prefix(SIGNING_KEY_PREFIX)?
            .into_iter()
            .filter_map(|(k, r)| {
                let seq = k.strip_prefix(SIGNING_KEY_PREFIX)?.parse().ok()?;
                Some((seq, r))
            })
            .collect();
        if keys.is_empty() {
            if let Some(legacy) = self.signing.get(LEGACY_SIGNING_KEY)? {
                self.put_signing_key(1, &legacy)?;
                self.signing.remove(LEGACY_SIGNING_KEY)?;
                keys.push((1, legacy));
            }
        }
        keys.sort_by_key(|(seq, _)| *seq);
        Ok(keys)
    }

    /// Writes the signing key with sequence number `seq`.
    pub fn put_signing_key(&self, seq: u64, record: &SigningKeyRecord) -> Result<()> {
        Ok(self
            .signing
            .put(&format!("{SIGNING_KEY_PREFIX}{seq:010}"), record)?)
    }

    /// Removes the signing key with sequence number `seq` (a retired key no token needs any more).
    pub fn remove_signing_key(&self, seq: u64) -> Result<()> {
        self.signing
            .remove(&format!("{SIGNING_KEY_PREFIX}{seq:010}"))?;
        Ok(())
    }
}
