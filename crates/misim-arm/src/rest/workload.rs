//! REST surface of AKS workload identity ([`crate::identity::workload`]):
//!
//! - the clusters' OIDC issuers, unauthenticated as AKS serves them:
//!   `GET /oidc/{tenant}/{cluster uid}/.well-known/openid-configuration` and
//!   `GET /oidc/{tenant}/{cluster uid}/openid/v1/jwks`
//!   (<https://learn.microsoft.com/en-us/azure/aks/use-oidc-issuer>);
//! - `…/providers/Microsoft.ManagedIdentity/userAssignedIdentities/{id}/federatedIdentityCredentials[/{name}]`
//!   (GET list, GET, PUT, DELETE; <https://learn.microsoft.com/en-us/rest/api/managedidentity/federated-identity-credentials>);
//! - `…/providers/Microsoft.ContainerService/managedClusters[/{name}]` (GET list, GET, PUT, DELETE;
//!   <https://learn.microsoft.com/en-us/rest/api/aks/managed-clusters>),
//!
//! guarded like every ARM path (bearer token, `api-version`, the subscription's tenant, RBAC).

use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use misim_core::ResourceId;
use serde_json::{json, Value};

use super::auth::Caller;
use super::{authorize, Fail, RestState};
use crate::error::ArmError;
use crate::model::Subscription;

/// Path segments, lower-cased, of an OIDC issuer path: `Some((tenant, uid, rest))`.
fn oidc_parts(path: &str) -> Option<(String, String, String)> {
    let seg: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    match seg.as_slice() {
        [o, tenant, uid, rest @ ..] if o.eq_ignore_ascii_case("oidc") && !rest.is_empty() => {
            Some((tenant.to_string(), uid.to_string(), rest.join("/")))
        }
        _ => None,
    }
}

/// True for a cluster issuer path (`/oidc/…`).
pub fn is_oidc_path(path: &str) -> bool {
    path.len() > 6
        && path
            .get(..6)
            .is_some_and(|p| p.eq_ignore_ascii_case("/oidc/"))
}

/// Serves a cluster issuer's discovery document or key set (GET only, no authentication).
pub fn oidc(st: &RestState, method: &Method, path: &str) -> Response {
    let not_found = || (StatusCode::NOT_FOUND, "404 page not found").into_response();
    if *method != Method::GET {
        return (StatusCode::METHOD_NOT_ALLOWED, "method not allowed").into_response();
    }
    let Some((tenant, uid, rest)) = oidc_parts(path) else {
        return not_found();
    };
    let cluster = match st.arm.cluster_by_issuer(&tenant, &uid) {
        Ok(Some(c)) => c,
        Ok(None) => return not_found(),
        Err(e) => {
            tracing::warn!(error = %e, "oidc issuer lookup failed");
            return (StatusCode::INTERNAL_SERVER_ERROR, "internal error").into_response();
        }
    };
    match rest.as_str() {
        ".well-known/openid-configuration" => Json(cluster.discovery()).into_response(),
        "openid/v1/jwks" => Json(cluster.jwks()).into_response(),
        _ => not_found(),
    }
}

/// Which workload-identity resource a path names.
enum Route {
    Fics(String, String),
    Fic(String, String, String),
    Clusters(String),
    Cluster(String, String),
}

fn route(path: &str) -> Option<Route> {
    let seg: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let eq = |a: &str, b: &str| a.eq_ignore_ascii_case(b);
    match seg.as_slice() {
        [s, _, g, rg, p, ns, t, id, f, rest @ ..]
            if eq(s, "subscriptions")
                && eq(g, "resourceGroups")
                && eq(p, "providers")
                && eq(ns, "Microsoft.ManagedIdentity")
                && eq(t, "userAssignedIdentities")
                && eq(f, "federatedIdentityCredentials") =>
        {
            let (rg, id) = (rg.to_string(), id.to_string());
            match rest {
                [] => Some(Route::Fics(rg, id)),
                [name] => Some(Route::Fic(rg, id, name.to_string())),
                _ => None,
            }
        }
        [s, _, g, rg, p, ns, t, rest @ ..]
            if eq(s, "subscriptions")
                && eq(g, "resourceGroups")
                && eq(p, "providers")
                && eq(ns, "Microsoft.ContainerService")
                && eq(t, "managedClusters") =>
        {
            let rg = rg.to_string();
            match rest {
                [] => Some(Route::Clusters(rg)),
                [name] => Some(Route::Cluster(rg, name.to_string())),
                _ => None,
            }
        }
        _ => None,
    }
}

/// True when `path` is a workload-identity resource path this module serves.
pub fn is_resource_path(path: &str) -> bool {
    route(path).is_some()
}

fn scope(sub: &str, rg: &str, rest: &str) -> std::result::Result<ResourceId, Fail> {
    ResourceId::parse(&format!("/subscriptions/{sub}/resourceGroups/{rg}{rest}"))
        .map_err(|e| Fail::Arm(ArmError::InvalidArgument(e.to_string())))
}

fn list(values: Vec<Value>) -> Value {
    json!({ "value": values })
}

fn string_field<'a>(body: &'a Value, name: &str) -> &'a str {
    body["properties"][name].as_str().unwrap_or_default()
}

/// Serves a workload-identity resource path for `caller`, whose token's tenant owns `sub`.
///
/// # Errors
/// ARM's errors as [`Fail`].
pub async fn serve(
    st: &RestState,
    caller: &Caller,
    sub: &Subscription,
    method: &Method,
    path: &str,
    body: &Value,
) -> std::result::Result<(StatusCode, Value), Fail> {
    let arm = &st.arm;
    let Some(r) = route(path) else {
        return Err(Fail::Arm(ArmError::RouteNotFound(path.to_string())));
    };
    let sid = sub.subscription_id.as_str();
    match (r, method.clone()) {
        (Route::Fics(rg, id), Method::GET) => {
            let at = scope(
                sid,
                &rg,
                &format!("/providers/Microsoft.ManagedIdentity/userAssignedIdentities/{id}"),
            )?;
            authorize(arm, caller, "Microsoft.ManagedIdentity/userAssignedIdentities/federatedIdentityCredentials/read", &at)?;
            let items = arm.list_federated_credentials(sid, &rg, &id)?;
            Ok((
                StatusCode::OK,
                list(items.iter().map(|f| f.to_json()).collect()),
            ))
        }
        (Route::Fic(rg, id, name), m) => {
            let at = scope(
                sid,
                &rg,
                &format!("/providers/Microsoft.ManagedIdentity/userAssignedIdentities/{id}/federatedIdentityCredentials/{name}"),
            )?;
            let action = |verb: &str| {
                format!("Microsoft.ManagedIdentity/userAssignedIdentities/federatedIdentityCredentials/{verb}")
            };
            match m {
                Method::GET => {
                    authorize(arm, caller, &action("read"), &at)?;
                    let f = arm.get_federated_credential(sid, &rg, &id, &name)?;
                    Ok((StatusCode::OK, f.to_json()))
                }
                Method::PUT => {
                    authorize(arm, caller, &action("write"), &at)?;
                    let existed = arm.get_federated_credential(sid, &rg, &id, &name).is_ok();
                    let audiences = body["properties"]["audiences"]
                        .as_array()
                        .map(|a| {
                            a.iter()
                                .filter_map(Value::as_str)
                                .map(str::to_owned)
                                .collect()
                        })
                        .unwrap_or_default();
                    let f = arm
                        .create_federated_credential(
                            sid,
                            &rg,
                            &id,
                            &name,
                            string_field(body, "issuer"),
                            string_field(body, "subject"),
                            audiences,
                        )
                        .await?;
                    let status = put_status(existed);
                    Ok((status, f.to_json()))
                }
                Method::DELETE => {
                    authorize(arm, caller, &action("delete"), &at)?;
                    let deleted = arm
                        .delete_federated_credential(sid, &rg, &id, &name)
                        .await?;
                    let status = delete_status(deleted);
                    Ok((status, Value::Null))
                }
                _ => Err(method_not_allowed(method)),
            }
        }
        (Route::Clusters(rg), Method::GET) => {
            let at = scope(sid, &rg, "")?;
            authorize(
                arm,
                caller,
                "Microsoft.ContainerService/managedClusters/read",
                &at,
            )?;
            let items = arm.list_managed_clusters(sid, &rg)?;
            Ok((
                StatusCode::OK,
                list(items.iter().map(|c| c.to_json()).collect()),
            ))
        }
        (Route::Cluster(rg, name), m) => {
            let at = scope(
                sid,
                &rg,
                &format!("/providers/Microsoft.ContainerService/managedClusters/{name}"),
            )?;
            let action = |verb: &str| format!("Microsoft.ContainerService/managedClusters/{verb}");
            match m {
                Method::GET => {
                    authorize(arm, caller, &action("read"), &at)?;
                    Ok((
                        StatusCode::OK,
                        arm.get_managed_cluster(sid, &rg, &name)?.to_json(),
                    ))
                }
                Method::PUT => {
                    authorize(arm, caller, &action("write"), &at)?;
                    let existed = arm.get_managed_cluster(sid, &rg, &name).is_ok();
                    let location = body["location"].as_str().unwrap_or_default();
                    let c = arm
                        .create_managed_cluster(sid, &rg, &name, location)
                        .await?;
                    let status = put_status(existed);
                    Ok((status, c.to_json()))
                }
                Method::DELETE => {
                    authorize(arm, caller, &action("delete"), &at)?;
                    let deleted = arm.delete_managed_cluster(sid, &rg, &name).await?;
                    let status = delete_status(deleted);
                    Ok((status, Value::Null))
                }
                _ => Err(method_not_allowed(method)),
            }
        }
        (_, m) => Err(method_not_allowed(&m)),
    }
}

fn method_not_allowed(method: &Method) -> Fail {
    Fail::Api(
        StatusCode::METHOD_NOT_ALLOWED,
        "MethodNotAllowed",
        format!("The requested method '{method}' is not allowed for this resource."),
    )
}

/// A PUT's status: 200 when it replaced an existing resource, 201 when it created one.
fn put_status(existed: bool) -> StatusCode {
    if existed {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    }
}

/// A DELETE's status: 200 when it deleted a resource, 204 when there was none.
fn delete_status(deleted: bool) -> StatusCode {
    if deleted {
        StatusCode::OK
    } else {
        StatusCode::NO_CONTENT
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_recognised_in_any_case() {
        assert!(is_oidc_path("/oidc/t/u/.well-known/openid-configuration"));
        assert!(!is_oidc_path("/oidc"));
        assert_eq!(
            oidc_parts("/OIDC/t/u/openid/v1/jwks"),
            Some(("t".into(), "u".into(), "openid/v1/jwks".into()))
        );
        assert!(is_resource_path("/subscriptions/s/resourcegroups/rg/providers/microsoft.managedidentity/userassignedidentities/id1/federatedidentitycredentials"));
        assert!(is_resource_path("/subscriptions/s/resourceGroups/rg/providers/Microsoft.ContainerService/managedClusters/aks1"));
        assert!(!is_resource_path("/subscriptions/s/resourceGroups/rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/id1"));
    }
}
