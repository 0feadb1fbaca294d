//! ARM's REST surface (step 7): `GET` of subscriptions, resource groups, VMs and user-assigned
//! identities in `management.azure.com` shapes, guarded as ARM guards them: bearer token
//! (401), `api-version` (400), RBAC (403), then existence (404). Path segments are case-insensitive.

pub mod auth;
pub mod json;

use std::sync::Arc;

use axum::extract::{OriginalUri, RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use misim_core::ResourceId;
use serde_json::Value;

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

/// The REST router: `/healthz` and `GET` of ARM resource paths.
pub fn router(state: RestState) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .fallback(get(handle))
        .with_state(state)
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

/// A parsed ARM resource path.
enum Target {
    Subscription(String),
    Group(String, String),
    Vms(String, String),
    Vm(String, String, String),
    Uamis(String, String),
    Uami(String, String, String),
}

fn parse_path(path: &str) -> Option<Target> {
    let seg: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let is = |i: usize, word: &str| seg.get(i).is_some_and(|s| s.eq_ignore_ascii_case(word));
    if !is(0, "subscriptions") || seg.len() < 2 {
        return None;
    }
    let s = seg[1].to_string();
    if seg.len() == 2 {
        return Some(Target::Subscription(s));
    }
    if !is(2, "resourceGroups") || seg.len() < 4 {
        return None;
    }
    let g = seg[3].to_string();
    if seg.len() == 4 {
        return Some(Target::Group(s, g));
    }
    if !is(4, "providers") || !(7..=8).contains(&seg.len()) {
        return None;
    }
    let name = seg.get(7).map(|n| n.to_string());
    if is(5, "Microsoft.Compute") && is(6, "virtualMachines") {
        return Some(match name {
            Some(n) => Target::Vm(s, g, n),
            None => Target::Vms(s, g),
        });
    }
    if is(5, "Microsoft.ManagedIdentity") && is(6, "userAssignedIdentities") {
        return Some(match name {
            Some(n) => Target::Uami(s, g, n),
            None => Target::Uamis(s, g),
        });
    }
    None
}

fn api_version(query: Option<&str>) -> Option<String> {
    query?.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k.eq_ignore_ascii_case("api-version") && !v.is_empty()).then(|| v.to_string())
    })
}

async fn handle(
    State(st): State<RestState>,
    OriginalUri(uri): OriginalUri,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    match serve(&st, uri.path(), query.as_deref(), &headers).await {
        Ok(v) => (StatusCode::OK, Json(v)).into_response(),
        Err(error) => {
            if matches!(error, ArmError::Store(_) | ArmError::Unavailable(_)) {
                tracing::warn!(path = uri.path(), error = %error, "rest request failed");
            }
            RestError {
                error,
                authorization_uri: format!("{}/", st.validator.aad_url()),
            }
            .into_response()
        }
    }
}

async fn serve(
    st: &RestState,
    path: &str,
    query: Option<&str>,
    headers: &HeaderMap,
) -> Result<Value> {
    let arm = &st.arm;
    let tenants: Vec<String> = arm
        .list_subscriptions()?
        .into_iter()
        .map(|s| s.tenant_id.to_ascii_lowercase())
        .collect();
    let auth = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let caller = st
        .validator
        .validate(auth, |tid| tenants.contains(&tid.to_ascii_lowercase()))
        .await?;
    let api = api_version(query).ok_or(ArmError::MissingApiVersion)?;
    let target = parse_path(path).ok_or_else(|| ArmError::RouteNotFound(path.to_string()))?;
    let sub_id = match &target {
        Target::Subscription(s)
        | Target::Group(s, _)
        | Target::Vms(s, _)
        | Target::Vm(s, _, _)
        | Target::Uamis(s, _)
        | Target::Uami(s, _, _) => s.clone(),
    };
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
        });
    }
    let s = sub.subscription_id.as_str();
    let bad_name = |e: misim_core::ids::IdError| ArmError::RouteNotFound(e.to_string());
    match target {
        Target::Subscription(_) => {
            authorize(
                arm,
                &caller,
                "Microsoft.Resources/subscriptions/read",
                &sub.id(),
            )?;
            Ok(json::subscription(&sub))
        }
        Target::Group(_, g) => {
            let id = ResourceId::parse(&format!("/subscriptions/{s}/resourceGroups/{g}"))
                .map_err(bad_name)?;
            authorize(
                arm,
                &caller,
                "Microsoft.Resources/subscriptions/resourceGroups/read",
                &id,
            )?;
            Ok(json::resource_group(&arm.group(s, &g)?))
        }
        Target::Vms(_, g) => {
            let id = ResourceId::parse(&format!("/subscriptions/{s}/resourceGroups/{g}"))
                .map_err(bad_name)?;
            authorize(arm, &caller, "Microsoft.Compute/virtualMachines/read", &id)?;
            Ok(json::list(
                arm.list_vms(s, &g)?.iter().map(json::vm).collect(),
            ))
        }
        Target::Vm(_, g, n) => {
            let id = ResourceId::vm(s, &g, &n).map_err(bad_name)?;
            authorize(arm, &caller, "Microsoft.Compute/virtualMachines/read", &id)?;
            Ok(json::vm(&arm.get_vm(s, &g, &n).await?))
        }
        Target::Uamis(_, g) => {
            let id = ResourceId::parse(&format!("/subscriptions/{s}/resourceGroups/{g}"))
                .map_err(bad_name)?;
            authorize(
                arm,
                &caller,
                "Microsoft.ManagedIdentity/userAssignedIdentities/read",
                &id,
            )?;
            Ok(json::list(
                arm.list_user_assigned_identities(s, &g)?
                    .iter()
                    .map(|u| json::uami(u, &api))
                    .collect(),
            ))
        }
        Target::Uami(_, g, n) => {
            let id = ResourceId::user_assigned_identity(s, &g, &n).map_err(bad_name)?;
            authorize(
                arm,
                &caller,
                "Microsoft.ManagedIdentity/userAssignedIdentities/read",
                &id,
            )?;
            Ok(json::uami(
                &arm.get_user_assigned_identity(s, &g, &n)?,
                &api,
            ))
        }
    }
}

fn authorize(arm: &Arm, caller: &Caller, action: &str, scope: &ResourceId) -> Result<()> {
    if arm.authorize(&caller.object_id, action, scope)? {
        return Ok(());
    }
    tracing::info!(principal = %caller.object_id, action, scope = %scope, "authorization failed");
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
    fn paths_parse_case_insensitively() {
        assert!(matches!(
            parse_path("/SUBSCRIPTIONS/s/resourcegroups/g/PROVIDERS/microsoft.compute/VirtualMachines/vm"),
            Some(Target::Vm(_, _, n)) if n == "vm"
        ));
        assert!(matches!(
            parse_path(
                "/subscriptions/s/resourceGroups/g/providers/Microsoft.Compute/virtualMachines"
            ),
            Some(Target::Vms(..))
        ));
        assert!(matches!(
            parse_path("/subscriptions/s"),
            Some(Target::Subscription(_))
        ));
        assert!(parse_path("/subscriptions/s/foo/g").is_none());
        assert!(parse_path("/tenants").is_none());
    }

    #[test]
    fn api_version_is_found_in_any_case() {
        assert_eq!(
            api_version(Some("a=b&Api-Version=2024-03-01")).as_deref(),
            Some("2024-03-01")
        );
        assert_eq!(api_version(Some("api-version=")), None);
        assert_eq!(api_version(None), None);
    }
}
