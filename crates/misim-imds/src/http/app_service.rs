//! The App Service / Azure Functions managed-identity endpoint of one web app: what the platform
//! serves at `IDENTITY_ENDPOINT`, guarded by the site's `IDENTITY_HEADER` secret
//! (<https://learn.microsoft.com/azure/app-service/overview-managed-identity#rest-endpoint-reference>).
//!
//! `GET {IDENTITY_ENDPOINT}?resource=…&api-version=2019-08-01[&client_id=…|principal_id=…|object_id=…|mi_res_id=…]`
//! with header `X-IDENTITY-HEADER: {IDENTITY_HEADER}`, as azure-identity 1.27.0 sends it
//! (`azure/identity/_credentials/app_service.py`, through msal) and msal 1.39.0 does
//! (`msal/managed_identity.py`, `_obtain_token_on_app_service`, which also sends `Metadata: true`
//! and maps an object id to `object_id`, the documented alias of `principal_id`).
//!
//! The answer is `{"access_token","expires_on","resource","token_type","client_id"}`, `expires_on`
//! in epoch seconds as a string (Learn, "REST endpoint reference"). Errors are App Service's
//! `{"statusCode":N,"message":"…"}`:
//! - unknown identity: 400 "No User Assigned or Delegated Managed Identity found for specified
//!   ClientId/ResourceId/PrincipalId." (the message MSAL's integration tests expect from a live App
//!   Service,
//!   <https://github.com/AzureAD/microsoft-authentication-library-for-dotnet/blob/main/tests/Microsoft.Identity.Test.Integration.netcore/HeadlessTests/ManagedIdentityTests.cs>);
//! - Azure AD refused the token (e.g. an unknown resource): 500 "An unexpected error occured while
//!   fetching the AAD Token." with a `correlationId` (the same tests' wrong-scope case; msal's
//!   comment "Empirically, wrong resource ends up with a vague statusCode=500"); misim appends Azure
//!   AD's own description (`AADSTS500011: …`) so the cause is visible;
//! - a missing or wrong `X-IDENTITY-HEADER`, a missing or unsupported `api-version`, a missing
//!   `resource` and more than one identity selector are refused before anything else; the status
//!   of those is not documented: misim answers 401 for the header and 400 for the others.
//!
//! The web app's listener is its own (like a VM's IMDS listener), so a request can only ever be
//! answered with an identity of that web app.

use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::Response;
use misim_core::ResourceId;
use serde_json::{json, Value};
use tracing::{debug, warn};

use super::query::Query;
use super::{Incoming, VmCtx};
use crate::error::{ImdsError, QueryError};
use crate::model::{HeldIdentity, IdentityKind};
use crate::throttle::Category;

/// The path of the identity endpoint on the web app's listener.
pub const TOKEN_PATH: &str = crate::vm::APP_SERVICE_TOKEN_PATH;

/// The only api-version of the `IDENTITY_ENDPOINT` protocol (Learn, "REST endpoint reference").
pub const API_VERSION: &str = "2019-08-01";

/// The header carrying the site's secret.
pub const IDENTITY_HEADER: &str = "x-identity-header";

/// App Service's message for an identity the site does not have.
pub const NOT_FOUND_MESSAGE: &str =
    "No User Assigned or Delegated Managed Identity found for specified ClientId/ResourceId/PrincipalId.";

/// App Service's message when Azure AD did not issue a token (spelling as App Service sends it).
pub const AAD_FAILURE_MESSAGE: &str = "An unexpected error occured while fetching the AAD Token.";

/// An App Service error: status and message, plus a correlation id on Azure AD failures.
#[derive(Debug, PartialEq, Eq)]
pub struct AppServiceError {
    status: StatusCode,
    message: String,
    correlated: bool,
}

impl AppServiceError {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        AppServiceError {
            status,
            message: message.into(),
            correlated: false,
        }
    }

    fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    /// `{"statusCode":N,"message":"…"[,"correlationId":"…"]}`.
    pub fn body(&self) -> Value {
        let mut body = json!({ "statusCode": self.status.as_u16(), "message": self.message });
        if self.correlated {
            body["correlationId"] = Value::String(uuid::Uuid::new_v4().to_string());
        }
        body
    }

    fn from_imds(e: &ImdsError) -> Self {
        let mut out = match e {
            ImdsError::InvalidResource(description) => {
                // AAD's first line (`AADSTS500011: The resource principal named … was not found …`).
                let first = description.lines().next().unwrap_or_default();
                let first: String = first.chars().take(400).collect();
                Self::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("{AAD_FAILURE_MESSAGE} {first}"),
                )
            }
            ImdsError::Throttled => Self::new(
                StatusCode::TOO_MANY_REQUESTS,
                "Too many requests. Retry after a while.",
            ),
            // Everything else a token request can meet here is Azure AD or misim failing: 500.
            ImdsError::Aad(_)
            | ImdsError::Poisoned(_)
            | ImdsError::MissingMetadataHeader
            | ImdsError::ForwardedFor
            | ImdsError::DuplicateQuery(_)
            | ImdsError::MalformedQuery(_)
            | ImdsError::MissingQuery(_)
            | ImdsError::InvalidApiVersion(_)
            | ImdsError::ConflictingSelectors
            | ImdsError::InvalidQueryValue(_)
            | ImdsError::IdentityNotFound
            | ImdsError::MultipleUserAssigned
            | ImdsError::NotFound
            | ImdsError::MethodNotAllowed
            | ImdsError::LeafNeedsText
            | ImdsError::UnknownSource(_) => {
                Self::new(StatusCode::INTERNAL_SERVER_ERROR, AAD_FAILURE_MESSAGE)
            }
        };
        out.correlated = out.status.is_server_error();
        out
    }
}

/// The identity selector of a request: at most one of `client_id`, `principal_id` (alias
/// `object_id`) and `mi_res_id` (Learn: each "can't be used on a request that includes" another).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SiteSelector {
    /// None given: the system-assigned identity.
    SystemAssigned,
    /// `client_id`.
    ClientId(String),
    /// `principal_id` or `object_id`.
    PrincipalId(String),
    /// `mi_res_id`.
    ResourceId(String),
}

/// The selector of `query`.
///
/// # Errors
/// 400 when more than one selector is given.
pub fn site_selector(query: &Query) -> Result<SiteSelector, AppServiceError> {
    let mut found = Vec::new();
    if let Some(v) = query.get("client_id") {
        found.push(("client_id", SiteSelector::ClientId(v.to_string())));
    }
    for name in ["principal_id", "object_id"] {
        if let Some(v) = query.get(name) {
            found.push((name, SiteSelector::PrincipalId(v.to_string())));
        }
    }
    if let Some(v) = query.get("mi_res_id") {
        found.push(("mi_res_id", SiteSelector::ResourceId(v.to_string())));
    }
    match found.len() {
        0 => Ok(SiteSelector::SystemAssigned),
        1 => Ok(found.remove(0).1),
        _ => {
            let names: Vec<&str> = found.iter().map(|(n, _)| *n).collect();
            Err(AppServiceError::bad_request(format!(
                "Only one of client_id, principal_id, object_id or mi_res_id may be given; the request has {}.",
                names.join(", ")
            )))
        }
    }
}

/// The identity of `identities` that `selector` names; ids compare case-insensitively.
///
/// # Errors
/// 400 [`NOT_FOUND_MESSAGE`] when the site has no such identity (or, without a selector, no
/// system-assigned one).
pub fn select_site_identity<'a>(
    identities: &'a [HeldIdentity],
    selector: &SiteSelector,
) -> Result<&'a HeldIdentity, AppServiceError> {
    let found = match selector {
        SiteSelector::SystemAssigned => identities
            .iter()
            .find(|h| h.identity.kind == IdentityKind::SystemAssigned),
        SiteSelector::ClientId(c) => identities
            .iter()
            .find(|h| h.identity.client_id.eq_ignore_ascii_case(c.trim())),
        SiteSelector::PrincipalId(p) => identities
            .iter()
            .find(|h| h.identity.principal_id.eq_ignore_ascii_case(p.trim())),
        SiteSelector::ResourceId(r) => ResourceId::parse(r.trim())
            .ok()
            .and_then(|wanted| identities.iter().find(|h| h.identity.msi_res_id == wanted)),
    };
    found.ok_or_else(|| AppServiceError::bad_request(NOT_FOUND_MESSAGE))
}

/// Compares the presented secret with the site's in constant time (length leaks only).
fn same_secret(given: &[u8], expected: &[u8]) -> bool {
    given.len() == expected.len()
        && given
            .iter()
            .zip(expected)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

/// Checks `X-IDENTITY-HEADER`: exactly one, equal to the site's secret.
fn check_identity_header(headers: &HeaderMap, secret: &str) -> Result<(), AppServiceError> {
    let mut values = headers.get_all(IDENTITY_HEADER).iter();
    match (values.next(), values.next()) {
        (None, _) => Err(AppServiceError::new(
            StatusCode::UNAUTHORIZED,
            "The X-IDENTITY-HEADER header is required: send the value of the IDENTITY_HEADER environment variable.",
        )),
        (Some(v), None) if same_secret(v.as_bytes(), secret.as_bytes()) => Ok(()),
        _ => Err(AppServiceError::new(
            StatusCode::UNAUTHORIZED,
            "The X-IDENTITY-HEADER header does not match this app's IDENTITY_HEADER.",
        )),
    }
}

fn check_api_version(query: &Query) -> Result<(), AppServiceError> {
    match query.get("api-version") {
        None | Some("") => Err(AppServiceError::bad_request(format!(
            "The api-version query parameter is required; use api-version={API_VERSION}."
        ))),
        Some(API_VERSION) => Ok(()),
        Some(other) => {
            let other: String = other.chars().take(40).collect();
            Err(AppServiceError::bad_request(format!(
                "The api-version '{}' is not supported; use api-version={API_VERSION}.",
                other.escape_default()
            )))
        }
    }
}

/// A web app's own listener.
pub(crate) async fn dispatch(Incoming(caller, method, uri, headers): Incoming) -> Response {
    let Ok(caller) = caller else {
        return json(
            StatusCode::NOT_FOUND,
            &AppServiceError::new(StatusCode::NOT_FOUND, "Not Found").body(),
        );
    };
    let ctx = caller.ctx;
    match handle(&ctx, &method, &uri, &headers).await {
        Ok(response) => response,
        Err(e) => {
            if e.status.is_server_error() {
                warn!(site = %ctx.vm.key, status = e.status.as_u16(), message = %e.message, "app service token request failed");
            } else {
                debug!(site = %ctx.vm.key, status = e.status.as_u16(), message = %e.message, "app service token request rejected");
            }
            json(e.status, &e.body())
        }
    }
}

async fn handle(
    ctx: &VmCtx,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
) -> Result<Response, AppServiceError> {
    if !uri.path().eq_ignore_ascii_case(TOKEN_PATH) {
        return Err(AppServiceError::new(StatusCode::NOT_FOUND, "Not Found"));
    }
    if method != Method::GET {
        return Err(AppServiceError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "Only GET is supported.",
        ));
    }
    let record = ctx.vm.snapshot();
    let Some(site) = record.app_service.as_ref() else {
        return Err(AppServiceError::new(StatusCode::NOT_FOUND, "Not Found"));
    };
    check_identity_header(headers, &site.identity_header)?;
    let query = Query::parse(uri.query()).map_err(|e| match e {
        QueryError::Duplicate(name) => AppServiceError::bad_request(format!(
            "The query parameter '{}' is given more than once.",
            name.chars().take(40).collect::<String>().escape_default()
        )),
        QueryError::Malformed(_) => AppServiceError::bad_request("The query string is malformed."),
    })?;
    check_api_version(&query)?;
    let resource = query
        .get("resource")
        .map(str::trim)
        .filter(|r| !r.is_empty())
        .ok_or_else(|| AppServiceError::bad_request("The resource query parameter is required."))?;
    let selector = site_selector(&query)?;
    let held = select_site_identity(&record.identities, &selector)?;
    let _admission = ctx
        .vm
        .throttle
        .admit(Category::Identity)
        .map_err(|e| AppServiceError::from_imds(&e))?;
    let (site_id, identity) = (&record.vm.resource_id, &held.identity);
    debug!(step = 5, site = %site_id, identity = %identity.msi_res_id, client_id = %identity.client_id, resource, "web app requested a token from its identity endpoint");
    let token = ctx
        .state
        .tokens
        .obtain(&ctx.vm.key, site_id, held, resource, false, "app_service")
        .await
        .map_err(|e| AppServiceError::from_imds(&e))?;
    let body = json!({
        "access_token": token.access_token,
        "expires_on": token.expires_on.to_string(),
        "resource": resource,
        "token_type": token.token_type,
        "client_id": identity.client_id,
    });
    Ok(json(StatusCode::OK, &body))
}

/// A JSON answer with `Content-Type: application/json; charset=utf-8`.
fn json(status: StatusCode, body: &Value) -> Response {
    super::json_as(status, body, "application/json; charset=utf-8")
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn q(s: &str) -> Query {
        Query::parse(Some(s)).unwrap()
    }

    fn held(kind: IdentityKind, name: &str) -> HeldIdentity {
        let msi_res_id = match kind {
            IdentityKind::SystemAssigned => ResourceId::parse(&format!(
                "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Web/sites/{name}"
            ))
            .unwrap(),
            IdentityKind::UserAssigned => {
                ResourceId::user_assigned_identity("s", "rg", name).unwrap()
            }
        };
        crate::test_support::held(msi_res_id, kind, name)
    }

    #[test]
    fn one_selector_at_most_and_object_id_is_principal_id() {
        assert_eq!(
            site_selector(&q("resource=r")).unwrap(),
            SiteSelector::SystemAssigned
        );
        assert_eq!(
            site_selector(&q("object_id=o")).unwrap(),
            SiteSelector::PrincipalId("o".into())
        );
        let e = site_selector(&q("client_id=c&mi_res_id=x")).unwrap_err();
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        assert!(e.message.contains("client_id, mi_res_id"));
        assert!(site_selector(&q("principal_id=a&object_id=a")).is_err());
    }

    #[test]
    fn no_selector_means_system_assigned_only() {
        let only_user = [held(IdentityKind::UserAssigned, "u1")];
        let e = select_site_identity(&only_user, &SiteSelector::SystemAssigned).unwrap_err();
        assert_eq!(e.body()["message"], NOT_FOUND_MESSAGE);
        let both = [
            held(IdentityKind::UserAssigned, "u1"),
            held(IdentityKind::SystemAssigned, "site"),
        ];
        let pick = |s| select_site_identity(&both, &s).map(|h| h.identity.client_id.clone());
        assert_eq!(pick(SiteSelector::SystemAssigned).unwrap(), "client-site");
        assert_eq!(
            pick(SiteSelector::ClientId("CLIENT-U1".into())).unwrap(),
            "client-u1"
        );
        assert_eq!(
            pick(SiteSelector::PrincipalId("object-u1".into())).unwrap(),
            "client-u1"
        );
        let rid = "/subscriptions/s/resourcegroups/RG/providers/Microsoft.ManagedIdentity/userAssignedIdentities/u1";
        assert_eq!(
            pick(SiteSelector::ResourceId(rid.into())).unwrap(),
            "client-u1"
        );
        assert!(pick(SiteSelector::ResourceId("garbage".into())).is_err());
    }

    #[test]
    fn header_must_match_exactly_once() {
        let secret = "0123456789abcdef0123456789abcdef";
        let mut h = HeaderMap::new();
        assert_eq!(
            check_identity_header(&h, secret).unwrap_err().status,
            StatusCode::UNAUTHORIZED
        );
        h.insert(IDENTITY_HEADER, HeaderValue::from_static("nope"));
        assert!(check_identity_header(&h, secret).is_err());
        h.insert(IDENTITY_HEADER, HeaderValue::from_str(secret).unwrap());
        assert!(check_identity_header(&h, secret).is_ok());
        h.append(IDENTITY_HEADER, HeaderValue::from_str(secret).unwrap());
        assert!(check_identity_header(&h, secret).is_err());
    }

    #[test]
    fn api_version_is_2019_08_01_only() {
        assert!(check_api_version(&q("api-version=2019-08-01")).is_ok());
        assert!(check_api_version(&q("api-version=2017-09-01")).is_err());
        assert!(check_api_version(&q("resource=r")).is_err());
    }

    #[test]
    fn aad_failures_are_500_with_correlation_and_aadsts_detail() {
        let e = AppServiceError::from_imds(&ImdsError::InvalidResource(
            "AADSTS500011: The resource principal named x was not found.\r\nTrace ID: t".into(),
        ));
        let body = e.body();
        assert_eq!(body["statusCode"], 500);
        let msg = body["message"].as_str().unwrap();
        assert!(msg.starts_with(AAD_FAILURE_MESSAGE) && msg.contains("AADSTS500011"));
        assert!(!msg.contains("Trace ID"));
        assert!(body["correlationId"].is_string());
        let e = AppServiceError::bad_request("x");
        assert!(e.body().get("correlationId").is_none());
    }
}
