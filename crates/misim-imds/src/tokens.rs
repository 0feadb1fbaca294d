//! The token service of a host: the token cache in front of Azure AD (step 6), shared by IMDS, the
//! VM extension and the App Service endpoint, and the state every token request reads (clock,
//! identity changes still propagating, throttling's `Retry-After`).

use misim_core::{Clock, ResourceId};
use tracing::info;

use crate::aad_client::{AadClient, AadToken, TokenRequest};
use crate::cache::{CacheKey, TokenCache};
use crate::error::Result;
use crate::model::{HeldIdentity, IdentityKind};
use crate::propagation::Propagating;

/// What serving a token needs, shared by the host (which empties the cache when identities change)
/// and the HTTP layer.
#[derive(Debug)]
pub(crate) struct Tokens {
    /// Time source.
    pub clock: Clock,
    /// Azure AD token client (step 6).
    pub aad: AadClient,
    /// Token cache.
    pub cache: TokenCache,
    /// Identity changes still propagating (`misim up --propagation identity=…`).
    pub propagating: Propagating,
    /// `Retry-After` seconds for 429 answers, when configured.
    pub retry_after_secs: Option<u32>,
}

impl Tokens {
    /// The token of `held` for `resource` from the cache filed under `cache_vm`, or from Azure AD on a
    /// miss (step 6; `served_by` names IMDS or the VM extension in the logs).
    ///
    /// # Errors
    /// [`crate::ImdsError::InvalidResource`] / [`crate::ImdsError::Aad`] from Azure AD.
    pub async fn obtain(
        &self,
        cache_vm: &str,
        vm: &ResourceId,
        held: &HeldIdentity,
        resource: &str,
        bypass: bool,
        served_by: &'static str,
    ) -> Result<std::sync::Arc<AadToken>> {
        let identity = &held.identity;
        let key = CacheKey::new(cache_vm, &identity.client_id, resource);
        let fetch = || async {
            let request = TokenRequest {
                tenant_id: &identity.tenant_id,
                client_id: &identity.client_id,
                resource,
                credential: held.credential.current(),
                xms_az_rid: (identity.kind == IdentityKind::UserAssigned).then_some(vm.as_str()),
            };
            info!(step = 5, vm = %vm, identity = %identity.msi_res_id, client_id = %identity.client_id, resource, served_by, "token not cached: asking azure ad");
            let step = misim_core::telemetry::step_span(6, "imds"); // the flow's trace
            step.record("identity", identity.msi_res_id.as_str());
            step.record("resource", resource);
            let token =
                tracing::Instrument::instrument(self.aad.fetch(request), step.clone()).await;
            misim_core::telemetry::record_outcome(&step, &token);
            let token = token?;
            info!(step = 6, vm = %vm, identity = %identity.msi_res_id, client_id = %identity.client_id, resource, served_by, expires_on = token.expires_on, "obtained a token from azure ad");
            Ok(token)
        };
        let (token, from_cache) = self.cache.get_or_fetch(key, bypass, fetch).await?;
        misim_core::telemetry::metrics::get()
            .imds_cache
            .with_label_values(&["imds", if from_cache { "hit" } else { "miss" }])
            .inc();
        Ok(token)
    }
}
