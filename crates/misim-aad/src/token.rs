//! The token endpoint's logic: client credentials with a client assertion, from form parameters to a
//! signed access token (step 6 of the managed-identity flow: IMDS → Azure AD).

use std::collections::HashMap;
use std::sync::Arc;

use misim_core::Clock;
use serde_json::Value;
use tracing::info;

use crate::assertion;
use crate::claims::{TokenFacts, Version};
use crate::directory::Directory;
use crate::error::{AadError, Result};
use crate::keyring::KeyRing;

/// The only `client_assertion_type` Entra accepts for certificate credentials (RFC 7523).
pub const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// True when `resource` names a first-party resource every misim tenant knows (any other →
/// AADSTS500011, <https://learn.microsoft.com/entra/identity-platform/reference-error-codes>):
/// its application ID URI with or without trailing slash, any casing, a per-account host, or its
/// application ID ([`crate::resources::lookup`]).
pub fn is_known_resource(resource: &str) -> bool {
    crate::resources::is_known(resource)
}

/// Issues tokens: validates the request, authenticates the client and signs.
pub struct TokenService {
    directory: Arc<Directory>,
    keys: Arc<KeyRing>,
    clock: Clock,
    lifetime_secs: i64,
    federation: Option<Arc<crate::federation::Federation>>,
}

/// OIDC scopes clients may add next to `<resource>/.default`; they do not name a resource.
const OIDC_SCOPES: &[&str] = &["openid", "profile", "offline_access"];

/// The audience named by a v2 `scope`: exactly one `<resource>/.default`, optionally with OIDC scopes.
fn audience_from_scope(scope: &str) -> Result<String> {
    let scopes: Vec<&str> = scope
        .split_whitespace()
        .filter(|s| !OIDC_SCOPES.contains(s))
        .collect();
    match scopes.as_slice() {
        [one] => match one.strip_suffix("/.default") {
            Some(res) if !res.is_empty() => Ok(res.to_string()),
            _ => Err(AadError::InvalidScope(scope.to_string())),
        },
        _ => Err(AadError::InvalidScope(scope.to_string())),
    }
}

impl TokenService {
    /// A token service issuing tokens valid `lifetime_secs` seconds, signed with the current key of
    /// `keys`.
    pub fn new(
        directory: Arc<Directory>,
        keys: Arc<KeyRing>,
        clock: Clock,
        lifetime_secs: i64,
    ) -> Self {
        TokenService {
            directory,
            keys,
            clock,
            lifetime_secs,
            federation: None,
        }
    }

    /// Also accepts external tokens as client assertions, validated against the principals'
    /// federated identity credentials (workload identity federation, [`crate::federation`]).
    pub fn with_federation(mut self, federation: Arc<crate::federation::Federation>) -> Self {
        self.federation = Some(federation);
        self
    }

    /// Handles one token request to `/{tenant}/oauth2[/v2.0]/token` with form parameters `form`;
    /// returns the JSON success body.
    ///
    /// # Errors
    /// Every rejection as the [`AadError`] variant of its AADSTS code
    /// (<https://learn.microsoft.com/entra/identity-platform/reference-error-codes>).
    pub async fn issue(
        &self,
        tenant: &str,
        version: Version,
        form: &HashMap<String, String>,
    ) -> Result<Value> {
        let param =
            |name: &'static str| form.get(name).map(String::as_str).filter(|v| !v.is_empty());
        let grant_type = param("grant_type").ok_or(AadError::MissingParameter("grant_type"))?;
        if grant_type != "client_credentials" {
            return Err(AadError::UnsupportedGrantType(grant_type.to_string()));
        }
        let tenant = self.directory.resolve_tenant(tenant)?;
        let audience = match version {
            Version::V1 => param("resource")
                .ok_or(AadError::MissingResource)?
                .to_string(),
            Version::V2 => {
                if param("resource").is_some() {
                    return Err(AadError::ResourceOnV2);
                }
                audience_from_scope(param("scope").ok_or(AadError::MissingParameter("scope"))?)?
            }
        };
        let client_id = param("client_id").ok_or(AadError::MissingParameter("client_id"))?;
        let Some(assertion) = param("client_assertion") else {
            if param("client_secret").is_some() {
                return Err(AadError::InvalidClientSecret {
                    client_id: client_id.to_string(),
                });
            }
            return Err(AadError::MissingAssertion);
        };
        if param("client_assertion_type") != Some(JWT_BEARER) {
            return Err(AadError::MissingParameter("client_assertion_type"));
        }
        let sp = self
            .directory
            .service_principal_by_app_id(&tenant.tenant_id, client_id)?
            .ok_or_else(|| AadError::UnknownClient {
                client_id: client_id.to_string(),
                tenant: tenant.tenant_id.clone(),
            })?;
        let now = self.clock.now();
        let thumbprint = match &self.federation {
            Some(f) if crate::federation::is_federated(assertion, &sp.app_id) => {
                format!("federated:{}", f.verify(assertion, &sp, now).await?)
            }
            _ => assertion::verify(assertion, &sp, &tenant, now)?,
        };
        // An application registered in the tenant (identifier URI or appId), else a first-party one.
        let app = self.directory.resolve_application_audience(
            &tenant.tenant_id,
            &audience,
            &sp.object_id,
        )?;
        if app.is_none() && !is_known_resource(&audience) {
            return Err(AadError::UnknownResource {
                resource: audience,
                tenant: tenant.tenant_id,
            });
        }
        let facts = TokenFacts {
            version,
            principal: &sp,
            audience: &audience,
            now,
            lifetime_secs: self.lifetime_secs,
            az_rid: param("xms_az_rid"),
            tenant_created: tenant.created_date_time,
        };
        let (claims, token_version) = match &app {
            Some(app) => (app.claims(&facts), app.application.token_version()),
            None => (facts.claims(), facts.token_version()),
        };
        let key = self.keys.current(now).await?;
        let with_x5t = token_version == Version::V1;
        let token = tokio::task::spawn_blocking(move || key.sign(&claims, with_x5t))
            .await
            .map_err(|e| AadError::Internal(format!("signing task: {e}")))??;
        info!(
            step = 6,
            identity = %sp.msi_resource_id,
            client_id = %sp.app_id,
            resource = %audience,
            version = ?version,
            thumbprint = %thumbprint,
            "issued access token"
        );
        // The flow's trace and metrics (misim_core::telemetry).
        let step = misim_core::telemetry::step_span(6, "aad");
        step.record("identity", sp.msi_resource_id.as_str());
        step.record("principal", sp.object_id.as_str());
        step.record("resource", audience.as_str());
        step.record("outcome", "success");
        misim_core::telemetry::metrics::get()
            .tokens_issued
            .with_label_values(&["aad", audience.as_str(), "client_credentials"])
            .inc();
        Ok(facts.response(token))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scope_names_one_default_resource() {
        assert_eq!(
            audience_from_scope("https://vault.azure.net/.default").unwrap(),
            "https://vault.azure.net"
        );
        assert_eq!(
            audience_from_scope("openid https://management.azure.com//.default offline_access")
                .unwrap(),
            "https://management.azure.com/"
        );
        for bad in [
            "https://vault.azure.net/user_impersonation",
            "a/.default b/.default",
            "/.default",
            "openid",
        ] {
            assert!(
                matches!(audience_from_scope(bad), Err(AadError::InvalidScope(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn known_resources_match_with_or_without_trailing_slash() {
        assert!(is_known_resource("https://management.azure.com"));
        assert!(is_known_resource("https://vault.azure.net/"));
        assert!(is_known_resource("https://cognitiveservices.azure.com"));
        assert!(!is_known_resource("https://example.com/"));
    }
}
