//! App registrations and app roles: the Microsoft Graph `application` objects of a tenant, the
//! service principal each gets, and `appRoleAssignment`s of their app roles to managed identities,
//! so that a managed identity's token for the application carries a `roles` claim.
//!
//! Model: <https://learn.microsoft.com/graph/api/resources/application>,
//! <https://learn.microsoft.com/graph/api/resources/approle>,
//! <https://learn.microsoft.com/graph/api/resources/approleassignment>; how roles reach tokens:
//! <https://learn.microsoft.com/entra/identity-platform/howto-add-app-roles-in-apps>; assigning app
//! roles to managed identities:
//! <https://learn.microsoft.com/entra/identity/managed-identities-azure-resources/how-to-assign-app-role-managed-identity>.
//!
//! Tokens: a request whose resource is one of the application's identifier URIs (with or without
//! trailing slash, any casing; v2: `<uri>/.default`) or its appId resolves to the application in the
//! token's tenant. The token's shape follows the application's `api.requestedAccessTokenVersion`
//! (null or 1: v1 tokens, from either endpoint; 2: v2 tokens), "the resource decides the token
//! format" (<https://learn.microsoft.com/entra/identity-platform/access-tokens#token-formats>).
//! `aud`: "In v2.0 tokens, this value is always the client ID of the API. In v1.0 tokens, it can be
//! the client ID or the resource URI used in the request"
//! (<https://learn.microsoft.com/entra/identity-platform/access-token-claims-reference#payload-claims>):
//! v1 the resource as requested, v2 the appId. `roles`: the values of the enabled app roles assigned
//! to the calling principal, omitted when there are none (same reference, `roles`). `xms_mirid` and
//! `xms_az_rid` are left out: Entra issues them only in tokens for first-party resources, not for a
//! tenant's own app registrations (Microsoft's answer quoted in
//! <https://github.com/hashicorp/vault-plugin-auth-azure/issues/237>).

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::claims::{TokenFacts, Version};
use crate::error::AadError;

/// Graph `appRole` (only `allowedMemberTypes: ["Application"]` roles, the kind managed identities
/// can hold).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppRole {
    /// Role ID, a GUID (the assignment's `appRoleId`).
    pub id: String,
    /// The string the `roles` claim carries.
    pub value: String,
    /// Display name.
    pub display_name: String,
    /// Description.
    pub description: String,
    /// Who may be assigned the role: `Application` (service principals) and/or `User`.
    pub allowed_member_types: Vec<String>,
    /// Disabled roles stay defined but no longer appear in tokens.
    pub is_enabled: bool,
}

/// A Graph `application` with the object ID of its service principal in the same tenant.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Application {
    /// Tenant the application is registered in.
    pub tenant_id: String,
    /// Graph `id` (object ID), a GUID.
    pub object_id: String,
    /// Graph `appId` (client ID), a GUID.
    pub app_id: String,
    /// Display name.
    pub display_name: String,
    /// Identifier (application ID) URIs, as registered.
    pub identifier_uris: Vec<String>,
    /// App roles.
    pub app_roles: Vec<AppRole>,
    /// `api.requestedAccessTokenVersion`: `None` (Graph's default, v1 tokens), 1 or 2.
    pub requested_access_token_version: Option<u8>,
    /// Object ID of the application's service principal (the assignments' `resourceId`).
    pub service_principal_id: String,
    /// Creation time, epoch seconds.
    pub created_date_time: i64,
}

impl Application {
    /// The version of the tokens Entra issues for this application: v2 only when the application
    /// asks for them (`requestedAccessTokenVersion: 2`), else v1, whichever endpoint is used.
    pub fn token_version(&self) -> Version {
        match self.requested_access_token_version {
            Some(2) => Version::V2,
            _ => Version::V1,
        }
    }
}

/// Graph `appRoleAssignment` of an application's app role to a managed identity.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppRoleAssignment {
    /// Tenant.
    pub tenant_id: String,
    /// Assignment ID.
    pub id: String,
    /// Object ID of the managed identity's service principal.
    pub principal_id: String,
    /// Its display name.
    pub principal_display_name: String,
    /// Object ID of the application's service principal.
    pub resource_id: String,
    /// The application's display name.
    pub resource_display_name: String,
    /// The assigned app role's ID.
    pub app_role_id: String,
    /// Creation time, epoch seconds.
    pub created_date_time: i64,
}

/// What a caller asks for when registering an application.
#[derive(Clone, Debug, Default)]
pub struct NewApplication {
    /// Tenant to register it in.
    pub tenant_id: String,
    /// Display name (required).
    pub display_name: String,
    /// Identifier URIs.
    pub identifier_uris: Vec<String>,
    /// App roles to define: `(value, display name, description)`; empty names default to the value.
    pub app_roles: Vec<(String, String, String)>,
    /// `api.requestedAccessTokenVersion`: `None`, 1 or 2.
    pub requested_access_token_version: Option<u8>,
}

/// Errors of the applications API in Microsoft Graph's shape
/// (<https://learn.microsoft.com/graph/errors>): `Request_BadRequest` (HTTP 400) and
/// `Request_ResourceNotFound` (HTTP 404), else an [`AadError`].
#[derive(Debug, thiserror::Error)]
pub enum GraphError {
    /// Graph `Request_BadRequest`: an invalid or conflicting value.
    #[error("Request_BadRequest: {0}")]
    BadRequest(String),
    /// Graph `Request_ResourceNotFound` for the object named.
    #[error("Request_ResourceNotFound: Resource '{0}' does not exist or one of its queried reference-property objects are not present.")]
    NotFound(String),
    /// Anything the directory reports (unknown tenant, store failure).
    #[error(transparent)]
    Aad(#[from] AadError),
}

impl From<misim_core::StoreError> for GraphError {
    fn from(e: misim_core::StoreError) -> Self {
        GraphError::Aad(e.into())
    }
}

impl From<GraphError> for tonic::Status {
    fn from(e: GraphError) -> Self {
        match e {
            GraphError::BadRequest(_) => tonic::Status::invalid_argument(e.to_string()),
            GraphError::NotFound(_) => tonic::Status::not_found(e.to_string()),
            GraphError::Aad(e) => e.into(),
        }
    }
}

/// A token request's resource resolved to a registered application, with the roles the calling
/// principal holds in it.
#[derive(Clone, Debug)]
pub struct AppAudience {
    /// The application.
    pub application: Application,
    /// Values of the enabled app roles assigned to the caller, in the application's role order.
    pub roles: Vec<String>,
}

impl AppAudience {
    /// The claims of a token for this application: the managed-identity claim set of
    /// [`TokenFacts::claims`] in the application's token version, with `aud` (v1: the resource as
    /// requested; v2: the appId), `rh` naming the application, `roles` when any are assigned, and
    /// without the first-party-only `xms_mirid` / `xms_az_rid`.
    pub fn claims(&self, facts: &TokenFacts<'_>) -> Value {
        let version = self.application.token_version();
        let shaped = TokenFacts { version, ..*facts };
        let mut claims = shaped.claims();
        if let Some(obj) = claims.as_object_mut() {
            let aud = match version {
                Version::V1 => facts.audience.to_string(),
                Version::V2 => self.application.app_id.clone(),
            };
            obj.insert("aud".into(), aud.into());
            obj.insert(
                "rh".into(),
                crate::claims::rh(&self.application.tenant_id, Some(&self.application.app_id))
                    .into(),
            );
            obj.remove("xms_mirid");
            obj.remove("xms_az_rid");
            if !self.roles.is_empty() {
                obj.insert("roles".into(), self.roles.clone().into());
            }
        }
        claims
    }
}

/// The form identifier URIs are compared in: no trailing slash, lower case.
pub fn normalize_uri(uri: &str) -> String {
    uri.trim().trim_end_matches('/').to_ascii_lowercase()
}

/// Checks an identifier URI as Entra's default rules do
/// (<https://learn.microsoft.com/entra/identity-platform/identifier-uri-restrictions>): an
/// `api://` URI, or an `https://` URI on a domain of the tenant (here: its initial
/// `*.onmicrosoft.com` domain or a subdomain of it); no query or fragment, no wildcard.
///
/// # Errors
/// [`GraphError::BadRequest`] naming the URI.
pub fn check_identifier_uri(uri: &str, tenant_domain: &str) -> Result<(), GraphError> {
    let lower = uri.to_ascii_lowercase();
    let bad = |why: &str| GraphError::BadRequest(format!("{why}: '{uri}'"));
    if uri.chars().any(|c| c.is_whitespace() || c.is_control()) || uri.contains(['?', '#', '*']) {
        return Err(bad(
            "Identifier URIs must not contain spaces, a query, a fragment or wildcards",
        ));
    }
    if let Some(rest) = lower.strip_prefix("api://") {
        if rest.trim_end_matches('/').is_empty() {
            return Err(bad("An identifier URI needs a name after api://"));
        }
        return Ok(());
    }
    if let Some(rest) = lower.strip_prefix("https://") {
        let host = rest.split('/').next().unwrap_or_default();
        let domain = tenant_domain.to_ascii_lowercase();
        if host == domain || host.ends_with(&format!(".{domain}")) {
            return Ok(());
        }
    }
    Err(bad(
        "Values of identifierUris property must use a verified domain of the organization or its subdomain",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ServicePrincipal;

    fn app(version: Option<u8>) -> Application {
        Application {
            tenant_id: "f2a33211-e46a-4c92-b84d-aff06c2cd13f".into(),
            object_id: "o".into(),
            app_id: "6d3b7a43-4d3d-4c5a-9a53-0d6b7c3c1e11".into(),
            display_name: "api".into(),
            identifier_uris: vec!["api://orders".into()],
            app_roles: vec![],
            requested_access_token_version: version,
            service_principal_id: "s".into(),
            created_date_time: 0,
        }
    }

    fn sp() -> ServicePrincipal {
        ServicePrincipal {
            tenant_id: "f2a33211-e46a-4c92-b84d-aff06c2cd13f".into(),
            object_id: "oid".into(),
            app_id: "client".into(),
            display_name: "vm".into(),
            msi_resource_id: "/subscriptions/s/resourceGroups/r/providers/x/y/vm".into(),
            is_explicit: false,
            key_credentials: vec![],
        }
    }

    #[test]
    fn v1_apps_get_v1_tokens_from_the_v2_endpoint_with_the_requested_aud() {
        let p = sp();
        let facts = TokenFacts {
            version: Version::V2,
            principal: &p,
            audience: "api://Orders/",
            now: 1000,
            lifetime_secs: 60,
            az_rid: Some("/subscriptions/s/resourceGroups/r/providers/x/y/vm"),
            tenant_created: 0,
        };
        let a = AppAudience {
            application: app(None),
            roles: vec!["Orders.Read".into()],
        };
        let c = a.claims(&facts);
        assert_eq!(c["ver"], "1.0");
        assert_eq!(c["aud"], "api://Orders/");
        assert_eq!(c["appid"], "client");
        assert_eq!(c["roles"], serde_json::json!(["Orders.Read"]));
        assert!(c.get("xms_mirid").is_none() && c.get("xms_az_rid").is_none());
        let v2 = AppAudience {
            application: app(Some(2)),
            roles: vec![],
        };
        let c = v2.claims(&facts);
        assert_eq!(c["ver"], "2.0");
        assert_eq!(c["aud"], "6d3b7a43-4d3d-4c5a-9a53-0d6b7c3c1e11");
        assert!(
            c.get("roles").is_none(),
            "no roles claim without assignments"
        );
    }

    #[test]
    fn identifier_uris_follow_entras_default_rules() {
        let domain = "misim.onmicrosoft.com";
        for ok in [
            "api://orders",
            "api://orders/",
            "API://Orders",
            "api://f2a33211-e46a-4c92-b84d-aff06c2cd13f/orders",
            "https://misim.onmicrosoft.com/orders",
            "https://api.misim.onmicrosoft.com",
        ] {
            assert!(check_identifier_uri(ok, domain).is_ok(), "{ok}");
        }
        for bad in [
            "api://",
            "https://vault.azure.net",
            "https://evilmisim.onmicrosoft.com",
            "http://misim.onmicrosoft.com/x",
            "api://orders?x=1",
            "api://a b",
            "urn:orders",
        ] {
            assert!(
                matches!(
                    check_identifier_uri(bad, domain),
                    Err(GraphError::BadRequest(_))
                ),
                "{bad}"
            );
        }
        assert_eq!(normalize_uri("API://Orders/"), "api://orders");
    }
}
