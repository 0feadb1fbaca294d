//! Workload identity federation on MSRP: ARM sets a user-assigned identity's federated identity
//! credentials (its `federatedIdentityCredentials` child resources) and MSRP, which manages the
//! identity's service principal, registers them on that principal in Azure AD
//! (<https://learn.microsoft.com/en-us/entra/workload-id/workload-identity-federation-create-trust-user-assigned-managed-identity>).
//! MSRP keeps no copy: ARM holds the resources, Azure AD what the token endpoint checks.

use misim_core::ResourceId;
use tracing::info;

use crate::error::{MsrpError, Result};
use crate::identity::IdentityKind;
pub use crate::principal::FederatedCredential;
use crate::service::Msrp;

impl Msrp {
    /// Replaces the federated credentials of the user-assigned identity `id` in Azure AD
    /// (idempotent; empty clears).
    ///
    /// # Errors
    /// [`MsrpError::NotFound`] for an unknown identity, [`MsrpError::InvalidArgument`] for a
    /// system-assigned one (Azure supports federation on user-assigned identities only),
    /// [`MsrpError::NotReady`] while its principal is being created, and Azure AD's errors.
    pub async fn set_federated_credentials(
        &self,
        id: &ResourceId,
        credentials: Vec<FederatedCredential>,
    ) -> Result<()> {
        let _guard = self.lock(id).await;
        let record = self.get(id)?;
        if record.kind != IdentityKind::UserAssigned {
            return Err(MsrpError::InvalidArgument(format!(
                "federated identity credentials are supported on user-assigned identities only, \
                 not on '{}'",
                record.resource_id
            )));
        }
        let object_id = record
            .principal_id
            .clone()
            .ok_or_else(|| MsrpError::NotReady(record.resource_id.clone()))?;
        let count = credentials.len();
        self.aad
            .set_federated_credentials(&record.tenant_id, &object_id, credentials)
            .await?;
        info!(identity = %id, principal_id = %object_id, count, "registered federated identity credentials in azure ad");
        Ok(())
    }
}
