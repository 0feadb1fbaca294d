//! The Key Vault data plane a workload calls with its managed-identity token (Key Vault REST API
//! 7.x, secrets): `GET/PUT/DELETE /secrets/{name}`, `GET/PATCH /secrets/{name}/{version}`,
//! `GET /secrets`, `GET /secrets/{name}/versions`, `GET/DELETE /deletedsecrets/{name}`,
//! `GET /deletedsecrets`, `POST /deletedsecrets/{name}/recover`.
//!
//! Real Key Vault is host-based (`https://{vault}.vault.azure.net/secrets/{name}`); misim serves the
//! same API at each vault's own loopback HTTPS port (`properties.vaultUri`, `https://127.0.0.1:{port}/`,
//! see `vault_hosts`), on ARM's REST listener under `/vaults/{vault}`, and at that listener's root
//! (`/secrets/…`) while misim has exactly one vault.
//! Returned `id`s and `nextLink`s use the URL the client called (ids in the host-rooted form
//! `{base}/secrets/{name}/{version}` the SDKs parse). Tokens must be for `https://vault.azure.net`
//! (with or without trailing slash) from the vault's tenant; every operation needs its RBAC data
//! action (Key Vault Secrets User: get/list; Secrets Officer: all; Owner/Contributor: none) at the
//! secret, the vault or a parent scope, else 403 `Forbidden` with inner code `ForbiddenByRbac`.

use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use misim_core::ResourceId;
use serde_json::{json, Value};

use super::auth::Caller;
use super::RestState;
use crate::error::{ArmError, Result};
use crate::vault::{Secret, Vault, RETENTION_DAYS};

/// Audiences Key Vault accepts: its resource URI (v1 tokens carry it as requested) and its
/// first-party application ID, which v2 tokens carry as `aud`
/// (<https://learn.microsoft.com/en-us/entra/identity-platform/access-token-claims-reference>,
/// <https://learn.microsoft.com/en-us/troubleshoot/azure/entra/entra-id/governance/verify-first-party-apps-sign-in>).
pub const VAULT_AUDIENCES: &[&str] = &[
    "https://vault.azure.net",
    "https://vault.azure.net/",
    "cfa8b339-82a2-471a-a3c9-0fc0be7a4093",
];

/// The data action needed to read a secret's value.
pub const GET_SECRET: &str = "Microsoft.KeyVault/vaults/secrets/getSecret/action";
/// Set a secret (a new version).
pub const SET_SECRET: &str = "Microsoft.KeyVault/vaults/secrets/setSecret/action";
/// List secrets and versions, read attributes and deleted secrets.
pub const READ_METADATA: &str = "Microsoft.KeyVault/vaults/secrets/readMetadata/action";
/// Soft-delete a secret.
pub const DELETE_SECRET: &str = "Microsoft.KeyVault/vaults/secrets/delete";
/// Update a secret's attributes.
pub const UPDATE_SECRET: &str = "Microsoft.KeyVault/vaults/secrets/update/action";
/// Recover a deleted secret.
pub const RECOVER_SECRET: &str = "Microsoft.KeyVault/vaults/secrets/recover/deletedSecret/action";
/// Purge a deleted secret.
pub const PURGE_SECRET: &str = "Microsoft.KeyVault/vaults/secrets/purge/deletedSecret/action";

/// True for a root data-plane path (`/secrets…`, `/deletedsecrets…`).
pub fn is_root_vault_path(path: &str) -> bool {
    let first = path.split('/').find(|s| !s.is_empty()).unwrap_or_default();
    first.eq_ignore_ascii_case("secrets") || first.eq_ignore_ascii_case("deletedsecrets")
}

/// Handles a data-plane request; returns Key Vault's JSON or its error shape.
pub async fn handle(
    st: &RestState,
    method: &Method,
    path: &str,
    query: Option<&str>,
    headers: &HeaderMap,
    body: &[u8],
) -> Response {
    let base = super::base_url(&st.arm, headers);
    let vault = resolve(st, path, headers);
    let tenant = vault
        .as_ref()
        .map(|(v, _)| v.tenant_id.clone())
        .unwrap_or_default();
    match serve(
        st,
        method,
        path,
        query.unwrap_or_default(),
        headers,
        body,
        &base,
        vault,
    )
    .await
    {
        Ok((status, Value::Null)) => status.into_response(),
        Ok((status, v)) => (status, Json(v)).into_response(),
        Err(e) => {
            let mut resp = (e.http_status(), Json(e.body())).into_response();
            if e.http_status() == StatusCode::UNAUTHORIZED {
                // Key Vault's challenge: clients read the authority and resource from it.
                let value = format!(
                    "Bearer authorization=\"{}/{tenant}\", resource=\"https://vault.azure.net\"",
                    st.validator.aad_url()
                );
                if let Ok(v) = HeaderValue::from_str(&value) {
                    resp.headers_mut().insert(header::WWW_AUTHENTICATE, v);
                }
            }
            resp
        }
    }
}

/// The vault a request addresses and how many path segments name it: `/vaults/{vault}/…` (2), a
/// vault's own port (`Host` port, see `vault_hosts`) or, while misim has exactly one vault, the
/// root of ARM's listener (0).
fn resolve(st: &RestState, path: &str, headers: &HeaderMap) -> Option<(Vault, usize)> {
    let seg: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    if seg
        .first()
        .is_some_and(|s| s.eq_ignore_ascii_case("vaults"))
    {
        return st.arm.vault(seg.get(1)?).ok().map(|v| (v, 2));
    }
    let vaults = st.arm.store().vaults.values().ok()?;
    let port = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .and_then(|h| h.rsplit_once(':'))
        .and_then(|(_, p)| p.parse::<u16>().ok());
    if let Some(v) = port.and_then(|p| vaults.iter().find(|v| v.port != 0 && v.port == p)) {
        return Some((v.clone(), 0));
    }
    match vaults.as_slice() {
        [only] => Some((only.clone(), 0)),
        _ => None,
    }
}

fn unauthorized(e: ArmError) -> ArmError {
    match e {
        ArmError::AuthenticationFailed(_) => ArmError::VaultUnauthorized(
            "AKV10000: Request is missing a Bearer or PoP token.".into(),
        ),
        ArmError::InvalidToken {
            code: "InvalidAuthenticationTokenAudience",
            message,
        } => ArmError::VaultUnauthorized(format!(
            "AKV10022: Invalid audience. Expected https://vault.azure.net. {message}"
        )),
        ArmError::InvalidToken { message, .. } | ArmError::ExpiredToken(message) => {
            ArmError::VaultUnauthorized(format!("AKV10032: Invalid token. {message}"))
        }
        other => other,
    }
}

fn forbidden(caller: &Caller, vault: &Vault, action: &str, scope: &ResourceId) -> ArmError {
    ArmError::VaultForbidden(format!(
        "Caller is not authorized to perform action on resource.\r\nIf role assignments, deny assignments or role definitions were changed recently, please observe propagation time.\r\nCaller: appid={};oid={};iss=https://sts.windows.net/{}/\r\nAction: '{action}'\r\nResource: '{}'\r\nAssignment: (not found)\r\nDenyAssignmentId: null\r\nDecisionReason: null \r\nVault: {};location={}\r\n",
        caller.app_id,
        caller.object_id,
        caller.tenant_id,
        scope.key(),
        vault.id.name(),
        vault.location
    ))
}

/// A secret bundle (with the value) or item (without), ids rooted at `base`.
fn bundle(s: &Secret, base: &str, with_value: bool, with_version: bool) -> Value {
    let mut v = json!({
        "id": if with_version {
            format!("{base}/secrets/{}/{}", s.name, s.version)
        } else {
            format!("{base}/secrets/{}", s.name)
        },
        "attributes": {
            "enabled": true,
            "created": s.created,
            "updated": s.updated,
            "recoveryLevel": "Recoverable+Purgeable",
            "recoverableDays": RETENTION_DAYS
        },
        "tags": s.tags,
    });
    if with_value {
        v["value"] = json!(s.value);
    }
    if !s.content_type.is_empty() {
        v["contentType"] = json!(s.content_type);
    }
    if let Some(deleted) = s.deleted {
        v["recoveryId"] = json!(format!("{base}/deletedsecrets/{}", s.name));
        v["deletedDate"] = json!(deleted);
        v["scheduledPurgeDate"] = json!(deleted.saturating_add(RETENTION_DAYS * 86_400));
    }
    v
}

/// `{"value":[…],"nextLink":…}` with Key Vault's `maxresults` paging.
fn list(items: Vec<Value>, base: &str, path: &str, query: &str) -> Result<Value> {
    let max = super::query::param(query, "maxresults");
    let translated: String = query
        .split('&')
        .map(|kv| {
            if kv.to_ascii_lowercase().starts_with("maxresults=") {
                format!("$top={}", &kv[11..])
            } else {
                kv.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("&");
    let q = if max.is_some() {
        translated
    } else {
        query.to_string()
    };
    let mut page = super::query::page(items, base, path, &q).map_err(ArmError::BadRequest)?;
    if let Some(next) = page
        .get("nextLink")
        .and_then(Value::as_str)
        .map(|n| n.replace("$top=", "maxresults="))
    {
        page["nextLink"] = json!(next);
    } else {
        page["nextLink"] = Value::Null;
    }
    Ok(page)
}

#[allow(clippy::too_many_arguments)]
async fn serve(
    st: &RestState,
    method: &Method,
    path: &str,
    query: &str,
    headers: &HeaderMap,
    body: &[u8],
    base: &str,
    vault: Option<(Vault, usize)>,
) -> Result<(StatusCode, Value)> {
    let auth = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let tenant = vault
        .as_ref()
        .map(|(v, _)| v.tenant_id.clone())
        .unwrap_or_default();
    let caller = st
        .validator
        .validate_for(
            auth,
            |tid| tid.eq_ignore_ascii_case(&tenant),
            VAULT_AUDIENCES,
        )
        .await
        .map_err(unauthorized)?;
    if super::api_version(Some(query)).is_none() {
        return Err(ArmError::BadRequest(
            "The api-version query parameter is required.".into(),
        ));
    }
    let (vault, skip) = vault.ok_or_else(|| {
        ArmError::RouteNotFound(format!(
            "{path}: no such vault; use the vault URL {base}/vaults/{{vault}} (root paths work only while misim has exactly one vault)"
        ))
    })?;
    let seg: Vec<&str> = path
        .split('/')
        .filter(|s| !s.is_empty())
        .skip(skip)
        .collect();
    let seg_lower: Vec<String> = seg.iter().map(|s| s.to_ascii_lowercase()).collect();
    let words: Vec<&str> = seg_lower.iter().map(String::as_str).collect();
    let arm = &st.arm;
    let vname = vault.id.name().to_string();
    let allow = |action: &str, secret: Option<&str>| -> Result<()> {
        let scope = match secret {
            Some(n) => ResourceId::parse(&format!("{}/secrets/{n}", vault.id))?,
            None => vault.id.clone(),
        };
        if arm.authorize_data(&caller.object_id, action, &scope)? {
            tracing::info!(step = 7, principal = %caller.object_id, vault = %vault.id, action, "key vault request authorized");
            Ok(())
        } else {
            tracing::info!(principal = %caller.object_id, vault = %vault.id, action, "key vault access denied");
            Err(forbidden(&caller, &vault, action, &scope))
        }
    };
    let not_allowed = || ArmError::MethodNotAllowed(method.to_string());
    let ok = |v: Value| Ok((StatusCode::OK, v));
    match (words.as_slice(), method) {
        (["secrets"], &Method::GET) => {
            allow(READ_METADATA, None)?;
            let items = arm
                .list_secrets(&vname, false)?
                .iter()
                .map(|s| bundle(s, base, false, false))
                .collect();
            ok(list(items, base, path, query)?)
        }
        (["secrets", _], &Method::GET) | (["secrets", _, _], &Method::GET)
            if words.get(2) != Some(&"versions") =>
        {
            let name = seg[1];
            allow(GET_SECRET, Some(name))?;
            let s = arm.secret_version(&vname, name, seg.get(2).copied().unwrap_or_default())?;
            tracing::info!(step = 7, principal = %caller.object_id, vault = %vault.id, secret = name, "key vault secret read");
            ok(bundle(&s, base, true, true))
        }
        (["secrets", _, "versions"], &Method::GET) => {
            let name = seg[1];
            allow(READ_METADATA, Some(name))?;
            let items = arm
                .list_secret_versions(&vname, name)?
                .iter()
                .map(|s| bundle(s, base, false, true))
                .collect();
            ok(list(items, base, path, query)?)
        }
        (["secrets", _], &Method::PUT) => {
            let name = seg[1];
            allow(SET_SECRET, Some(name))?;
            let req = super::body::parse(body)?;
            let value = req["value"].as_str().ok_or_else(|| {
                ArmError::BadRequest("The request body must contain a string 'value'.".into())
            })?;
            let tags = super::body::tags(&req).unwrap_or_default();
            let s = arm
                .set_secret_with(
                    &vname,
                    name,
                    value,
                    req["contentType"].as_str().unwrap_or_default(),
                    tags,
                )
                .await?;
            ok(bundle(&s, base, true, true))
        }
        (["secrets", _], &Method::PATCH) | (["secrets", _, _], &Method::PATCH) => {
            let name = seg[1];
            allow(UPDATE_SECRET, Some(name))?;
            let s = arm.secret_version(&vname, name, seg.get(2).copied().unwrap_or_default())?;
            ok(bundle(&s, base, false, true))
        }
        (["secrets", _], &Method::DELETE) => {
            let name = seg[1];
            allow(DELETE_SECRET, Some(name))?;
            let s = arm.delete_secret(&vname, name).await?;
            ok(bundle(&s, base, false, true))
        }
        (["deletedsecrets"], &Method::GET) => {
            allow(READ_METADATA, None)?;
            let items = arm
                .list_secrets(&vname, true)?
                .iter()
                .map(|s| bundle(s, base, false, false))
                .collect();
            ok(list(items, base, path, query)?)
        }
        (["deletedsecrets", _], &Method::GET) => {
            let name = seg[1];
            allow(READ_METADATA, Some(name))?;
            ok(bundle(
                &arm.deleted_secret(&vname, name)?,
                base,
                false,
                true,
            ))
        }
        (["deletedsecrets", _], &Method::DELETE) => {
            let name = seg[1];
            allow(PURGE_SECRET, Some(name))?;
            arm.purge_secret(&vname, name).await?;
            Ok((StatusCode::NO_CONTENT, Value::Null))
        }
        (["deletedsecrets", _, "recover"], &Method::POST) => {
            let name = seg[1];
            allow(RECOVER_SECRET, Some(name))?;
            let s = arm.recover_secret(&vname, name).await?;
            ok(bundle(&s, base, false, true))
        }
        (["secrets", ..] | ["deletedsecrets", ..], _) => Err(not_allowed()),
        _ => Err(ArmError::RouteNotFound(path.to_string())),
    }
}
