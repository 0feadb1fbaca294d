//! ARM's REST surface (step 7): GET/PUT/PATCH/DELETE of subscriptions, resource groups, VMs, scale
//! sets, user-assigned identities, key vaults and role assignments in `management.azure.com` shapes,
//! guarded as ARM guards them: bearer token (401), `api-version` (400), RBAC (403), then existence
//! (404); plus the Key Vault data plane (`vault`). Path segments are case-insensitive.

pub mod auth;
pub mod body;
pub mod console;
pub mod json;
pub mod listing;
pub mod metadata;
pub mod path;
pub mod query;
pub mod resources;
pub mod vault;
pub mod vault_hosts;
pub mod workload;

use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::{OriginalUri, RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use misim_core::ResourceId;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use crate::error::{ArmError, Result};
use crate::service::Arm;
use auth::{Caller, TokenValidator};

/// What the REST handlers share.
#[derive(Clone)]
pub struct RestState {
    /// The ARM core.
    pub arm: Arc<Arm>,
    /// Bearer-token validation.
    pub validator: Arc<TokenValidator>,
}

/// The REST router: `/healthz`, the Key Vault data plane under `/vaults/`, and every ARM resource
/// path (any method). With [`vault_hosts::enable`]d, it also opens each vault's HTTPS port; those
/// close once the router (and with it the ARM core) is dropped.
pub fn router(state: RestState) -> Router {
    if vault_hosts::enabled() {
        vault_hosts::spawn(state.arm.clone(), CancellationToken::new());
    }
    let console = console::router(state.arm.clone()); // `/console`, `/metrics`: observability
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .fallback(handle)
        .with_state(state)
        .merge(console)
}

/// An error as ARM answers it: status, `{"error":{code,message}}` and, for 401s, a
/// `WWW-Authenticate: Bearer authorization_uri=..., error="invalid_token", error_description=...` header.
struct RestError {
    error: ArmError,
    authorization_uri: String,
}

impl IntoResponse for RestError {
    fn into_response(self) -> Response {
        let mut resp = (self.error.http_status(), Json(self.error.body())).into_response();
        if self.error.is_authentication() {
            let description = self.error.to_string().replace('"', "'");
            let value = format!(
                "Bearer authorization_uri=\"{}\", error=\"invalid_token\", error_description=\"{description}\"",
                self.authorization_uri
            );
            if let Ok(v) = HeaderValue::from_str(&value) {
                resp.headers_mut().insert(header::WWW_AUTHENTICATE, v);
            }
        }
        resp
    }
}

/// The `api-version` query parameter (any case, percent-decoded), when present and not empty.
fn api_version(query: Option<&str>) -> Option<String> {
    query::pairs(query?)
        .into_iter()
        .find_map(|(k, v)| (k.eq_ignore_ascii_case("api-version") && !v.is_empty()).then_some(v))
}

/// True for a Key Vault data-plane path (`/vaults/…`, any case). Compares by `get` so a path with
/// multi-byte UTF-8 near the start cannot panic the handler.
fn is_vault_path(path: &str) -> bool {
    path.len() > 8
        && path
            .get(..8)
            .is_some_and(|p| p.eq_ignore_ascii_case("/vaults/"))
}

/// Why a request failed: an [`ArmError`], or an error shape only the REST surface produces
/// (`InvalidResourceType`, `InvalidResourceNamespace`, `InvalidApiVersionParameter`, …).
pub enum Fail {
    /// A domain error, mapped by [`ArmError::http_status`] and [`ArmError::body`].
    Arm(ArmError),
    /// Status, ARM error code and message.
    Api(StatusCode, &'static str, String),
}

impl From<ArmError> for Fail {
    fn from(e: ArmError) -> Self {
        Fail::Arm(e)
    }
}

/// Response headers a handler adds (e.g. `Location` and `Retry-After` of an asynchronous delete).
pub type ExtraHeaders = Mutex<Vec<(&'static str, String)>>;

/// The base URL the client used to reach this listener: `https://{Host}` when the request came
/// through the TLS forwarder (a port other than the plain listener's), else `http://{Host}`.
pub fn base_url(arm: &Arm, headers: &HeaderMap) -> String {
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let plain = arm.rest_url();
    let port_of = |h: &str| h.rsplit_once(':').map(|(_, p)| p.to_string());
    let plain_port = port_of(plain.rsplit('/').next().unwrap_or_default());
    if host.is_empty() {
        return plain.to_string();
    }
    if plain.is_empty() || port_of(host) == plain_port {
        format!("http://{host}")
    } else {
        format!("https://{host}")
    }
}

/// True for an `api-version` ARM accepts the form of: `YYYY-MM-DD`, optionally `-preview`/`-beta`.
fn api_version_well_formed(v: &str) -> bool {
    let date = v
        .strip_suffix("-preview")
        .or_else(|| v.strip_suffix("-beta"))
        .or_else(|| v.strip_suffix("-privatepreview"))
        .unwrap_or(v);
    let b = date.as_bytes();
    b.len() == 10
        && b.iter().enumerate().all(|(i, c)| match i {
            4 | 7 => *c == b'-',
            _ => c.is_ascii_digit(),
        })
}

/// The first api-version of each resource type misim serves (from the providers' published
/// api-version lists); ARM refuses older ones, and any dated after today, with
/// `NoRegisteredProviderFound`.
fn first_api_version(target: &path::Target) -> Option<(&'static str, &'static str)> {
    use path::{Kind, Target};
    let kind = match target {
        Target::SubCollection(_, k)
        | Target::Collection(_, _, k)
        | Target::Resource(_, _, k, _) => *k,
        Target::InstanceView(..) => Kind::Vm,
        Target::VmssInstances(..) | Target::VmssInstance(..) => Kind::Vmss,
        Target::RoleAssignments(_) | Target::RoleAssignment(..) => {
            return Some(("roleAssignments", "2014-07-01-preview"))
        }
        Target::RoleDefinitions(_) | Target::RoleDefinition(..) => {
            return Some(("roleDefinitions", "2014-07-01-preview"))
        }
        _ => return None,
    };
    Some(match kind {
        Kind::Vm => ("virtualMachines", "2015-05-01-preview"),
        Kind::Vmss => ("virtualMachineScaleSets", "2015-05-01-preview"),
        Kind::Uami => ("userAssignedIdentities", "2015-08-31-preview"),
        Kind::Vault => ("vaults", "2015-06-01"),
        Kind::Nic => ("networkInterfaces", "2014-12-01-preview"),
        Kind::Site => ("sites", "2014-06-01"),
    })
}

fn check_api_version(target: &path::Target, api: &str, now: i64) -> std::result::Result<(), Fail> {
    let Some((ty, first)) = first_api_version(target) else {
        return Ok(());
    };
    let today = json::rfc3339(now);
    let date = api.get(..10).unwrap_or(api);
    if date >= first.get(..10).unwrap_or(first) && date <= today.get(..10).unwrap_or_default() {
        return Ok(());
    }
    Err(Fail::Api(
        StatusCode::BAD_REQUEST,
        "NoRegisteredProviderFound",
        format!(
            "No registered resource provider found for location 'westeurope' and API version '{api}' for type '{ty}'. The supported api-versions are those from '{first}' up to today's date."
        ),
    ))
}

async fn handle(
    State(st): State<RestState>,
    method: Method,
    OriginalUri(uri): OriginalUri,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    bytes: Bytes,
) -> Response {
    let path = uri.path();
    // AKS clusters' OIDC issuers: public, like the real issuer (workload.rs).
    if workload::is_oidc_path(path) {
        return workload::oidc(&st, &method, path);
    }
    if is_vault_path(path) || vault::is_root_vault_path(path) {
        return vault::handle(&st, &method, path, query.as_deref(), &headers, &bytes).await;
    }
    if metadata::is_metadata_path(path) {
        return metadata::handle(&st, &method, query.as_deref(), &headers);
    }
    let base = base_url(&st.arm, &headers);
    let extra = ExtraHeaders::default();
    let req = Request {
        method: &method,
        path,
        query: query.as_deref().unwrap_or_default(),
        headers: &headers,
        bytes: &bytes,
        base: &base,
        extra: &extra,
    };
    let mut resp = match serve(&st, &req).await {
        Ok((status, Value::Null)) => status.into_response(),
        Ok((status, v)) => (status, Json(v)).into_response(),
        Err(Fail::Api(status, code, message)) => (
            status,
            Json(json!({ "error": { "code": code, "message": message } })),
        )
            .into_response(),
        Err(Fail::Arm(error)) => {
            if matches!(error, ArmError::Store(_) | ArmError::Unavailable(_)) {
                tracing::warn!(path, error = %error, "rest request failed");
            }
            RestError {
                error,
                authorization_uri: format!("{}/", st.validator.aad_url()),
            }
            .into_response()
        }
    };
    for (name, value) in extra.into_inner().unwrap_or_else(|p| p.into_inner()) {
        if let Ok(v) = HeaderValue::from_str(&value) {
            resp.headers_mut().insert(name, v);
        }
    }
    resp
}

/// One REST request as the handlers see it.
pub struct Request<'a> {
    /// HTTP method.
    pub method: &'a Method,
    /// Request path.
    pub path: &'a str,
    /// Raw query string (empty when none).
    pub query: &'a str,
    /// Request headers.
    pub headers: &'a HeaderMap,
    /// Request body.
    pub bytes: &'a [u8],
    /// The base URL the client used ([`base_url`]).
    pub base: &'a str,
    /// Response headers to add.
    pub extra: &'a ExtraHeaders,
}

async fn serve(
    st: &RestState,
    req: &Request<'_>,
) -> std::result::Result<(StatusCode, Value), Fail> {
    let arm = &st.arm;
    let (method, path) = (req.method, req.path);
    let tenants: Vec<String> = arm
        .list_subscriptions()?
        .into_iter()
        .map(|s| s.tenant_id.to_ascii_lowercase())
        .collect();
    let auth = req
        .headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let caller = st
        .validator
        .validate(auth, |tid| tenants.contains(&tid.to_ascii_lowercase()))
        .await?;
    let api = api_version(Some(req.query)).ok_or(ArmError::MissingApiVersion)?;
    if !api_version_well_formed(&api) {
        return Err(Fail::Api(
            StatusCode::BAD_REQUEST,
            "InvalidApiVersionParameter",
            format!("The api-version '{api}' is invalid. The supported versions are dates such as '2024-07-01' (optionally with '-preview')."),
        ));
    }
    let seg: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    match seg.as_slice() {
        [t] if t.eq_ignore_ascii_case("tenants") && *method == Method::GET => {
            return Ok(listing::tenants(arm, &caller)?);
        }
        [t] if t.eq_ignore_ascii_case("subscriptions") && *method == Method::GET => {
            return Ok(listing::subscriptions(arm, &caller, req)?);
        }
        _ => {}
    }
    if workload::is_resource_path(path) {
        // Federated identity credentials and managed clusters (workload.rs).
        let sub_id = seg.get(1).copied().unwrap_or_default();
        let sub = arm
            .store()
            .subscription(sub_id)?
            .ok_or_else(|| ArmError::SubscriptionNotFound(sub_id.to_string()))?;
        if !sub.tenant_id.eq_ignore_ascii_case(&caller.tenant_id) {
            return Err(ArmError::InvalidToken {
                code: "InvalidAuthenticationTokenTenant",
                message: format!(
                    "The access token is from the wrong issuer 'https://sts.windows.net/{}/'. It must match the tenant 'https://sts.windows.net/{}/' associated with this subscription.",
                    caller.tenant_id, sub.tenant_id
                ),
            }
            .into());
        }
        let body = if matches!(*method, Method::PUT | Method::PATCH) {
            body::parse(req.bytes)?
        } else {
            Value::Object(Default::default())
        };
        return workload::serve(st, &caller, &sub, method, path, &body).await;
    }
    let target = path::parse_detailed(path).map_err(|e| match e {
        path::PathError::NotFound => Fail::Arm(ArmError::RouteNotFound(path.to_string())),
        path::PathError::Namespace(ns) => Fail::Api(
            StatusCode::NOT_FOUND,
            "InvalidResourceNamespace",
            format!("The resource namespace '{ns}' is invalid."),
        ),
        path::PathError::Type(ns, ty) => Fail::Api(
            StatusCode::BAD_REQUEST,
            "InvalidResourceType",
            format!("The resource type '{ty}' could not be found in the namespace '{ns}' for api version '{api}'."),
        ),
    })?;
    check_api_version(&target, &api, arm.clock().now())?;
    let sub_id = target.subscription().unwrap_or_default().to_string();
    let sub = arm
        .store()
        .subscription(&sub_id)?
        .ok_or_else(|| ArmError::SubscriptionNotFound(sub_id.clone()))?;
    if !sub.tenant_id.eq_ignore_ascii_case(&caller.tenant_id) {
        return Err(ArmError::InvalidToken {
            code: "InvalidAuthenticationTokenTenant",
            message: format!(
                "The access token is from the wrong issuer 'https://sts.windows.net/{}/'. It must match the tenant 'https://sts.windows.net/{}/' associated with this subscription. Please use the authority (URL) 'https://login.windows.net/{}' to get the token.",
                caller.tenant_id, sub.tenant_id, sub.tenant_id
            ),
        }
        .into());
    }
    let body = if matches!(*method, Method::PUT | Method::PATCH) {
        body::parse(req.bytes)?
    } else {
        Value::Object(Default::default())
    };
    let call = resources::Call {
        arm,
        caller: &caller,
        sub: &sub,
        method,
        api: &api,
        body: &body,
        query: req.query,
        path,
        base: req.base,
        extra: req.extra,
    };
    resources::serve(&call, target).await
}

fn authorize(arm: &Arm, caller: &Caller, action: &str, scope: &ResourceId) -> Result<()> {
    // Step 7 in the flow's trace (misim_core::telemetry).
    let step = misim_core::telemetry::step_span(7, "arm");
    step.record("principal", caller.object_id.as_str());
    step.record("resource", scope.as_str());
    let result = authorize_inner(arm, caller, action, scope);
    misim_core::telemetry::record_outcome(&step, &result);
    result
}

fn authorize_inner(arm: &Arm, caller: &Caller, action: &str, scope: &ResourceId) -> Result<()> {
    if arm.authorize(&caller.object_id, action, scope)? {
        tracing::info!(step = 7, principal = %caller.object_id, action, scope = %scope, "bearer token accepted and authorized");
        return Ok(());
    }
    tracing::info!(step = 7, principal = %caller.object_id, action, scope = %scope, "authorization failed");
    Err(ArmError::AuthorizationFailed {
        principal: caller.object_id.clone(),
        action: action.to_string(),
        scope: scope.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_version_is_found_in_any_case() {
        assert_eq!(
            api_version(Some("a=b&Api-Version=2024-03-01")).as_deref(),
            Some("2024-03-01")
        );
        assert_eq!(api_version(Some("api-version=")), None);
        assert_eq!(api_version(None), None);
        assert_eq!(
            api_version(Some("api%2Dversion=2024%2D03%2D01")).as_deref(),
            Some("2024-03-01")
        );
    }

    #[test]
    fn vault_paths_are_recognised_without_slicing_inside_a_character() {
        assert!(is_vault_path("/Vaults/kv1/secrets/s"));
        assert!(!is_vault_path("/vaults/"));
        assert!(!is_vault_path("/subscriptions/x"));
        // "/vaultsé" puts byte 8 inside the two-byte 'é'.
        assert!(!is_vault_path("/vaults\u{e9}/x"));
        assert!(!is_vault_path("/\u{1f600}\u{1f600}x"));
    }
}
