//! The directory: tenants and managed-identity service principals, the domain behind the admin gRPC API
//! and the token endpoint's client lookup.
//!
//! Writes are serialized by one async mutex (held across the flush, never a std lock across `.await`),
//! which makes "create unless it exists" and read-modify-write of key credentials race-free.

use misim_core::Clock;
use tokio::sync::Mutex;
use tracing::info;

use crate::error::{AadError, Result};
use crate::model::{KeyCredential, ServicePrincipal, Tenant};
use crate::store::AadStore;

mod applications;
pub use applications::RoleRef;

/// Display name of the default tenant.
pub const DEFAULT_TENANT_NAME: &str = "misim default directory";
/// Initial domain of the default tenant.
pub const DEFAULT_TENANT_DOMAIN: &str = "misim.onmicrosoft.com";

/// What a caller asks for when creating a managed identity's service principal.
#[derive(Clone, Debug)]
pub struct NewServicePrincipal {
    /// Tenant to create it in.
    pub tenant_id: String,
    /// Display name (the identity's name).
    pub display_name: String,
    /// ARM resource ID of the identity (VM or UAMI).
    pub msi_resource_id: String,
    /// True for user-assigned identities.
    pub is_explicit: bool,
    /// The identity's first certificate, DER.
    pub certificate_der: Vec<u8>,
}

/// Tenants and service principals over the store.
pub struct Directory {
    store: AadStore,
    writes: Mutex<()>,
    clock: Clock,
}

fn require(value: &str, name: &str) -> Result<()> {
    if value.trim().is_empty() {
        return Err(AadError::InvalidArgument(format!("{name} is required")));
    }
    Ok(())
}

impl Directory {
    /// A directory over `store` whose new tenants get `clock`'s time as their creation time.
    pub fn new(store: AadStore, clock: Clock) -> Self {
        Directory {
            store,
            writes: Mutex::new(()),
            clock,
        }
    }

    /// Returns the default tenant, creating it (random GUID, "misim default directory",
    /// `misim.onmicrosoft.com`) on the first call.
    ///
    /// # Errors
    /// [`AadError::Store`] on store failure.
    pub async fn ensure_default_tenant(&self) -> Result<Tenant> {
        let _w = self.writes.lock().await;
        if let Some(id) = self.store.default_tenant_id()? {
            if let Some(t) = self.store.tenant(&id)? {
                return Ok(t);
            }
        }
        let tenant = Tenant {
            tenant_id: uuid::Uuid::new_v4().to_string(),
            display_name: DEFAULT_TENANT_NAME.to_string(),
            default_domain: DEFAULT_TENANT_DOMAIN.to_string(),
            created_date_time: self.clock.now(),
        };
        self.store.put_tenant(&tenant, true)?;
        self.store.flush().await?;
        info!(tenant_id = %tenant.tenant_id, "created default tenant");
        Ok(tenant)
    }

    /// Creates a tenant; `tenant_id` (a GUID) is generated when `None`. Creating an existing ID returns
    /// the existing tenant. The domain is `{display name, letters and digits}.onmicrosoft.com`, made
    /// unique with the ID's first 8 characters when taken.
    ///
    /// # Errors
    /// [`AadError::InvalidArgument`] when the display name is empty or the ID is not a GUID.
    pub async fn create_tenant(
        &self,
        display_name: &str,
        tenant_id: Option<&str>,
    ) -> Result<Tenant> {
        require(display_name, "display_name")?;
        let id = match tenant_id {
            Some(id) => uuid::Uuid::parse_str(id).map_err(|_| {
                AadError::InvalidArgument(format!("tenant_id '{id}' is not a guid"))
            })?,
            None => uuid::Uuid::new_v4(),
        }
        .to_string();
        let _w = self.writes.lock().await;
        if let Some(t) = self.store.tenant(&id)? {
            return Ok(t);
        }
        let mut base: String = display_name
            .chars()
            .filter(|c| c.is_ascii_alphanumeric())
            .collect();
        base.make_ascii_lowercase();
        if base.is_empty() {
            base = "tenant".into();
        }
        let mut domain = format!("{base}.onmicrosoft.com");
        if self.store.tenant_by_domain(&domain)?.is_some() {
            domain = format!("{base}{}.onmicrosoft.com", &id[..8]);
        }
        let tenant = Tenant {
            tenant_id: id,
            display_name: display_name.to_string(),
            default_domain: domain,
            created_date_time: self.clock.now(),
        };
        self.store.put_tenant(&tenant, false)?;
        self.store.flush().await?;
        info!(tenant_id = %tenant.tenant_id, domain = %tenant.default_domain, "created tenant");
        Ok(tenant)
    }

    /// The tenant with this ID.
    ///
    /// # Errors
    /// [`AadError::TenantNotFound`] when absent.
    pub fn tenant(&self, tenant_id: &str) -> Result<Tenant> {
        self.store
            .tenant(tenant_id)?
            .ok_or_else(|| AadError::TenantNotFound(tenant_id.to_string()))
    }

    /// The tenant named by a URL path segment: its ID or its default domain, any casing (Entra accepts
    /// both in `/{tenant}/oauth2/token`).
    ///
    /// # Errors
    /// [`AadError::TenantNotFound`] when neither matches (AADSTS90002).
    pub fn resolve_tenant(&self, id_or_domain: &str) -> Result<Tenant> {
        if let Some(t) = self.store.tenant(id_or_domain)? {
            return Ok(t);
        }
        self.store
            .tenant_by_domain(id_or_domain)?
            .ok_or_else(|| AadError::TenantNotFound(id_or_domain.to_string()))
    }

    /// All tenants.
    ///
    /// # Errors
    /// [`AadError::Store`] on store failure.
    pub fn tenants(&self) -> Result<Vec<Tenant>> {
        self.store.tenants()
    }

    /// Creates a managed identity's service principal (random GUID app and object IDs) with one
    /// certificate key credential. Idempotent on (tenant, MSI resource ID, case-insensitive): returns
    /// the existing principal, adding the certificate if it is new.
    ///
    /// # Errors
    /// [`AadError::InvalidArgument`] for missing fields or a bad certificate,
    /// [`AadError::TenantNotFound`] for an unknown tenant.
    pub async fn create_service_principal(
        &self,
        req: NewServicePrincipal,
    ) -> Result<ServicePrincipal> {
        require(&req.msi_resource_id, "msi_resource_id")?;
        let cred = KeyCredential::from_certificate(&req.certificate_der)?;
        let tenant = self.tenant(&req.tenant_id)?;
        let _w = self.writes.lock().await;
        if let Some(mut sp) = self
            .store
            .principal_by_msi_resource_id(&tenant.tenant_id, &req.msi_resource_id)?
        {
            if !sp
                .key_credentials
                .iter()
                .any(|k| k.certificate_der == cred.certificate_der)
            {
                sp.key_credentials.push(cred);
                self.store.put_principal(&sp)?;
                self.store.flush().await?;
                info!(
                    identity = %sp.msi_resource_id,
                    client_id = %sp.app_id,
                    "added certificate to existing service principal"
                );
            }
            return Ok(sp);
        }
        let sp = ServicePrincipal {
            tenant_id: tenant.tenant_id,
            object_id: uuid::Uuid::new_v4().to_string(),
            app_id: uuid::Uuid::new_v4().to_string(),
            display_name: req.display_name,
            msi_resource_id: req.msi_resource_id,
            is_explicit: req.is_explicit,
            key_credentials: vec![cred],
        };
        self.store.put_principal(&sp)?;
        self.store.flush().await?;
        info!(
            step = 2,
            identity = %sp.msi_resource_id,
            client_id = %sp.app_id,
            principal_id = %sp.object_id,
            "created service principal"
        );
        let step = misim_core::telemetry::step_span(2, "aad"); // the flow's trace
        step.record("identity", sp.msi_resource_id.as_str());
        step.record("principal", sp.object_id.as_str());
        step.record("outcome", "success");
        Ok(sp)
    }

    /// The principal with this object ID.
    ///
    /// # Errors
    /// [`AadError::ServicePrincipalNotFound`] when absent.
    pub fn service_principal(&self, tenant_id: &str, object_id: &str) -> Result<ServicePrincipal> {
        self.store.principal(tenant_id, object_id)?.ok_or_else(|| {
            AadError::ServicePrincipalNotFound {
                tenant_id: tenant_id.to_string(),
                object_id: object_id.to_string(),
            }
        })
    }

    /// The principal with this app (client) ID, if any.
    ///
    /// # Errors
    /// [`AadError::Store`] on store failure.
    pub fn service_principal_by_app_id(
        &self,
        tenant_id: &str,
        app_id: &str,
    ) -> Result<Option<ServicePrincipal>> {
        self.store.principal_by_app_id(tenant_id, app_id)
    }

    /// All principals of a tenant.
    ///
    /// # Errors
    /// [`AadError::TenantNotFound`] for an unknown tenant.
    pub fn service_principals(&self, tenant_id: &str) -> Result<Vec<ServicePrincipal>> {
        let tenant = self.tenant(tenant_id)?;
        self.store.principals(&tenant.tenant_id)
    }

    /// Adds a certificate key credential (renewal); adding a certificate already present is a no-op.
    ///
    /// # Errors
    /// [`AadError::InvalidArgument`] for a bad certificate, [`AadError::ServicePrincipalNotFound`].
    pub async fn add_key_credential(
        &self,
        tenant_id: &str,
        object_id: &str,
        cert_der: &[u8],
    ) -> Result<ServicePrincipal> {
        let cred = KeyCredential::from_certificate(cert_der)?;
        let _w = self.writes.lock().await;
        let mut sp = self.service_principal(tenant_id, object_id)?;
        if !sp
            .key_credentials
            .iter()
            .any(|k| k.certificate_der == cred.certificate_der)
        {
            info!(
                identity = %sp.msi_resource_id,
                key_id = %cred.key_id,
                thumbprint = %cred.thumbprint_sha1_hex,
                "added key credential"
            );
            sp.key_credentials.push(cred);
            self.store.put_principal(&sp)?;
            self.store.flush().await?;
        }
        Ok(sp)
    }

    /// Removes a key credential by key ID.
    ///
    /// # Errors
    /// [`AadError::ServicePrincipalNotFound`], [`AadError::KeyCredentialNotFound`].
    pub async fn remove_key_credential(
        &self,
        tenant_id: &str,
        object_id: &str,
        key_id: &str,
    ) -> Result<ServicePrincipal> {
        let _w = self.writes.lock().await;
        let mut sp = self.service_principal(tenant_id, object_id)?;
        let before = sp.key_credentials.len();
        sp.key_credentials
            .retain(|k| !k.key_id.eq_ignore_ascii_case(key_id));
        if sp.key_credentials.len() == before {
            return Err(AadError::KeyCredentialNotFound(key_id.to_string()));
        }
        self.store.put_principal(&sp)?;
        self.store.flush().await?;
        info!(identity = %sp.msi_resource_id, key_id = %key_id, "removed key credential");
        Ok(sp)
    }

    /// Deletes a principal and the app-role assignments it holds; deleting an absent one succeeds.
    ///
    /// # Errors
    /// [`AadError::Store`] on store failure.
    pub async fn delete_service_principal(&self, tenant_id: &str, object_id: &str) -> Result<()> {
        let _w = self.writes.lock().await;
        if let Some(sp) = self.store.remove_principal(tenant_id, object_id)? {
            self.remove_assignments_of(&sp.tenant_id, &sp.object_id)?;
            self.store.flush().await?;
            info!(
                identity = %sp.msi_resource_id,
                client_id = %sp.app_id,
                "deleted service principal"
            );
        }
        Ok(())
    }
}
