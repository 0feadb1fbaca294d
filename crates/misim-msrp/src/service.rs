//! MSRP's domain logic: create (step 2 of the flow), read, list and delete identities, and hand their
//! current credential to hosts (step 3).
//!
//! Crash safety of create: the key and certificate are stored (Pending, flushed) *before* Azure AD is
//! asked for the service principal, and Azure AD's `CreateServicePrincipal` is idempotent on
//! (tenant, resource ID). A crash between the two steps leaves a Pending record; the next create reuses
//! its certificate and gets the same principal back, so no orphan principal or second certificate appears.

use std::sync::Arc;

use misim_core::keyed_locks::{KeyedGuard, KeyedLocks};
use misim_core::{Clock, ResourceId};
use tracing::{info, warn};

use crate::error::{MsrpError, Result};
use crate::grpc::aad::AadClient;
use crate::identity::{IdentityKind, IdentityRecord, IdentityState, NewIdentity, StoredCredential};
use crate::keypool::KeyPool;
use crate::principal::NewPrincipal;
use crate::store::{HostGrant, IdentityStore};

/// Certificate lifetimes (Azure: valid 90 days, renewed after 45;
/// <https://learn.microsoft.com/entra/identity/managed-identities-azure-resources/how-managed-identities-work-vm>,
/// <https://learn.microsoft.com/entra/identity/managed-identities-azure-resources/managed-identities-faq>).
#[derive(Clone, Copy, Debug)]
pub struct CertPolicy {
    /// Certificate validity, seconds.
    pub validity_secs: i64,
    /// Age after which a certificate is renewed, seconds.
    pub renew_after_secs: i64,
}

/// The Managed Identity Resource Provider: identity records, their keys and certificates, and their
/// service principals in Azure AD.
pub struct Msrp {
    pub(crate) store: IdentityStore,
    pub(crate) aad: AadClient,
    pub(crate) keys: Arc<KeyPool>,
    pub(crate) clock: Clock,
    pub(crate) policy: CertPolicy,
    locks: KeyedLocks,
}

impl Msrp {
    /// Builds MSRP over an opened store, an AAD client and a key pool.
    pub fn new(
        store: IdentityStore,
        aad: AadClient,
        keys: Arc<KeyPool>,
        clock: Clock,
        policy: CertPolicy,
    ) -> Self {
        Msrp {
            store,
            aad,
            keys,
            clock,
            policy,
            locks: KeyedLocks::new(),
        }
    }

    /// The key pool (for its statistics).
    pub fn key_pool(&self) -> &KeyPool {
        &self.keys
    }

    /// Serializes operations on one identity (create, delete, renewal) without holding a std lock
    /// across `.await`.
    pub(crate) async fn lock(&self, id: &ResourceId) -> KeyedGuard {
        self.locks.lock(&id.key()).await
    }

    /// A new key (from the pool) and a self-signed certificate `CN={common_name}` valid from now for
    /// the configured validity (Azure: 90 days).
    ///
    /// # Errors
    /// [`MsrpError::Cert`] when key or certificate generation fails.
    pub(crate) async fn new_credential(&self, common_name: &str) -> Result<StoredCredential> {
        let key = self.keys.take().await?;
        let now = self.clock.now();
        let (not_before, not_after) = (now, now + self.policy.validity_secs);
        let cn = common_name.to_string();
        let kc = tokio::task::spawn_blocking(move || {
            misim_core::cert::self_signed(&key, &cn, not_before, not_after)
        })
        .await
        .map_err(|e| MsrpError::Internal(e.to_string()))??;
        Ok(StoredCredential::new(kc))
    }

    /// Creates the identity's key, certificate and service principal (step 2), idempotent on the
    /// resource ID: a Ready identity is returned as is; a Pending one is completed with its stored
    /// certificate.
    ///
    /// # Errors
    /// [`MsrpError::InvalidArgument`] for an empty tenant, [`MsrpError::TenantConflict`] when the
    /// identity exists in another tenant, AAD and store errors.
    pub async fn create(&self, req: NewIdentity) -> Result<IdentityRecord> {
        if req.tenant_id.trim().is_empty() {
            return Err(MsrpError::InvalidArgument("tenant_id is required".into()));
        }
        let id = &req.resource_id;
        let _guard = self.lock(id).await;
        let mut record = match self.store.get(id)? {
            Some(r) if !r.tenant_id.eq_ignore_ascii_case(&req.tenant_id) => {
                return Err(MsrpError::TenantConflict {
                    resource_id: r.resource_id,
                    existing: r.tenant_id,
                    requested: req.tenant_id,
                })
            }
            Some(r) if r.is_ready() => return Ok(r),
            Some(r) => {
                info!(step = 2, identity = %id, thumbprint = %r.current.thumbprint_sha1_hex, "resuming pending identity");
                r
            }
            None => {
                let record = IdentityRecord {
                    resource_id: id.as_str().to_string(),
                    kind: req.kind,
                    tenant_id: req.tenant_id.clone(),
                    client_id: None,
                    principal_id: None,
                    state: IdentityState::Pending,
                    current: self.new_credential(id.name()).await?,
                    previous: Vec::new(),
                    next: None,
                };
                self.store.put(id, &record).await?;
                record
            }
        };
        let principal = self
            .aad
            .create_service_principal(NewPrincipal {
                tenant_id: &record.tenant_id,
                display_name: id.name(),
                msi_resource_id: &record.resource_id,
                is_explicit: record.kind == IdentityKind::UserAssigned,
                certificate_der: &record.current.certificate_der,
            })
            .await?;
        record.current.aad_key_id = principal.key_id_for(&record.current.thumbprint_sha1_hex);
        if record.current.aad_key_id.is_none() {
            warn!(identity = %id, thumbprint = %record.current.thumbprint_sha1_hex, "azure ad did not list the certificate as a key credential");
        }
        record.client_id = Some(principal.app_id.clone());
        record.principal_id = Some(principal.object_id.clone());
        record.state = IdentityState::Ready;
        self.store.put(id, &record).await?;
        info!(
            step = 2,
            identity = %id,
            client_id = %principal.app_id,
            principal_id = %principal.object_id,
            tenant_id = %record.tenant_id,
            thumbprint = %record.current.thumbprint_sha1_hex,
            "created service principal and certificate"
        );
        let step = misim_core::telemetry::step_span(2, "msrp"); // the flow's trace
        step.record("identity", id.as_str());
        step.record("principal", principal.object_id.as_str());
        step.record("outcome", "success");
        Ok(record)
    }

    /// The identity's record (Pending or Ready).
    ///
    /// # Errors
    /// [`MsrpError::NotFound`] when absent; store errors.
    pub fn get(&self, id: &ResourceId) -> Result<IdentityRecord> {
        self.store
            .get(id)?
            .ok_or_else(|| MsrpError::NotFound(id.as_str().to_string()))
    }

    /// All identity records.
    ///
    /// # Errors
    /// Store errors.
    pub fn list(&self) -> Result<Vec<IdentityRecord>> {
        self.store.list()
    }

    /// Deletes the identity's service principal in Azure AD, then its record (with keys and
    /// certificates). Absent identities succeed (Azure: deleting the resource deletes the principal;
    /// `DeleteIdentity` is idempotent). Returns whether a record existed.
    ///
    /// # Errors
    /// AAD errors (the record is kept so the delete can be retried) and store errors.
    pub async fn delete(&self, id: &ResourceId) -> Result<bool> {
        let _guard = self.lock(id).await;
        let Some(record) = self.store.get(id)? else {
            return Ok(false);
        };
        if record.is_ready() {
            // Pending (stored) before Azure AD is called: a crash after the principal's deletion must
            // not leave a Ready record whose principal is gone, which the next create would return as
            // is (an identity that never gets a token). A Pending record is completed by the next
            // create, or its principal found by resource ID by the next delete.
            let mut deleting = record.clone();
            deleting.state = IdentityState::Pending;
            deleting.principal_id = None;
            self.store.put(id, &deleting).await?;
        }
        match &record.principal_id {
            Some(object_id) => {
                self.aad
                    .delete_service_principal(&record.tenant_id, object_id)
                    .await?
            }
            // A Pending record: AAD may hold a principal created just before a crash; find it by resource ID.
            None => {
                for p in self
                    .aad
                    .principals_of(&record.tenant_id, &record.resource_id)
                    .await?
                {
                    self.aad
                        .delete_service_principal(&record.tenant_id, &p.object_id)
                        .await?;
                }
            }
        }
        self.store.remove(id).await?;
        info!(identity = %id, tenant_id = %record.tenant_id, principal_id = record.principal_id.as_deref().unwrap_or(""), "deleted identity and service principal");
        Ok(true)
    }

    /// The identity with its current credential, for the host that serves it (step 3: the host agent
    /// fetches the certificate and key on `ConfigureIdentities`). Logs the host and thumbprint, never the key.
    ///
    /// # Errors
    /// [`MsrpError::NotFound`] when absent, [`MsrpError::NotReady`] while Pending; store errors.
    pub fn credential(&self, id: &ResourceId, host: &str) -> Result<IdentityRecord> {
        self.credential_checked(id, host, false)
    }

    /// [`Msrp::credential`] for a host authenticated as `host`: refused with
    /// [`MsrpError::HostNotGranted`] unless ARM granted the identity to a VM placed on that host
    /// ([`Msrp::set_host_access`]). In Azure a host holds only the credentials of its own VMs'
    /// identities (<https://learn.microsoft.com/en-us/entra/identity/managed-identities-azure-resources/how-managed-identities-work-vm>).
    ///
    /// # Errors
    /// [`MsrpError::HostNotGranted`], and those of [`Msrp::credential`].
    pub fn credential_for_host(&self, id: &ResourceId, host: &str) -> Result<IdentityRecord> {
        self.credential_checked(id, host, true)
    }

    /// Records which identities a VM on a host has (replacing the previous grant; none revokes).
    ///
    /// # Errors
    /// [`MsrpError::Store`] on a store failure.
    pub async fn set_host_access(&self, grant: &HostGrant) -> Result<()> {
        self.store.set_host_access(grant).await?;
        info!(host = %grant.host, vm = %grant.vm, identities = grant.identities.len(), "host access set");
        Ok(())
    }

    fn credential_checked(
        &self,
        id: &ResourceId,
        host: &str,
        check: bool,
    ) -> Result<IdentityRecord> {
        if check && !self.store.host_has_access(host, id)? {
            tracing::warn!(host, identity = %id, "refused a credential to a host none of whose VMs has the identity");
            return Err(MsrpError::HostNotGranted {
                host: host.to_string(),
                identity: id.as_str().to_string(),
            });
        }
        let record = self.get(id)?;
        if !record.is_ready() {
            return Err(MsrpError::NotReady(id.as_str().to_string()));
        }
        info!(
            step = 3,
            identity = %id,
            host,
            client_id = record.client_id.as_deref().unwrap_or(""),
            thumbprint = %record.current.thumbprint_sha1_hex,
            not_after = record.current.not_after,
            "issued credential to host"
        );
        let step = misim_core::telemetry::step_span(3, "msrp"); // the flow's trace
        step.record("identity", id.as_str());
        step.record("host", host);
        step.record("outcome", "success");
        Ok(record)
    }
}
