//! The Key Vault data plane a workload calls with its managed-identity token:
//! `GET /vaults/{vault}/secrets/{name}[/{version}]?api-version=7.4`. Real Key Vault is host-based
//! (`https://{vault}.vault.azure.net/secrets/{name}`); misim serves the same API under a path prefix
//! on ARM's REST listener. Tokens must be for `https://vault.azure.net` (with or without trailing
//! slash) from the vault's tenant; reading needs the data action
//! `Microsoft.KeyVault/vaults/secrets/getSecret/action` at the secret, the vault or a parent scope
//! (RBAC permission model: Owner/Contributor do not grant it).

use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use misim_core::ResourceId;
use serde_json::{json, Value};

use super::RestState;
use crate::error::{ArmError, Result};

/// Audiences Key Vault accepts.
pub const VAULT_AUDIENCES: &[&str] = &["https://vault.azure.net", "https://vault.azure.net/"];

/// The data action needed to read a secret's value.
pub const GET_SECRET: &str = "Microsoft.KeyVault/vaults/secrets/getSecret/action";

/// Handles `/vaults/{vault}/…`; returns Key Vault's JSON or its error shape.
pub async fn handle(
    st: &RestState,
    _method: &Method,
    path: &str,
    query: Option<&str>,
    headers: &HeaderMap,
    _body: &[u8],
) -> Response {
    let vault_name = path.split('/').nth(2).unwrap_or_default().to_string();
    match serve(st, path, query, headers).await {
        Ok(v) => (StatusCode::OK, Json(v)).into_response(),
        Err(e) => {
            let mut resp = (e.http_status(), Json(e.body())).into_response();
            if e.http_status() == StatusCode::UNAUTHORIZED {
                // Key Vault's challenge: clients read the authority and resource from it.
                let tenant = st
                    .arm
                    .vault(&vault_name)
                    .map(|v| v.tenant_id)
                    .unwrap_or_default();
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

async fn serve(
    st: &RestState,
    path: &str,
    query: Option<&str>,
    headers: &HeaderMap,
) -> Result<Value> {
    let seg: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let (vault_name, secret_name) = match seg.as_slice() {
        ["vaults", v, "secrets", n] | ["vaults", v, "secrets", n, _] => (*v, *n),
        _ => return Err(ArmError::RouteNotFound(path.to_string())),
    };
    let auth = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let vault = st.arm.vault(vault_name).ok();
    let tenant = vault
        .as_ref()
        .map(|v| v.tenant_id.clone())
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
    if super::api_version(query).is_none() {
        return Err(ArmError::BadRequest(
            "The api-version query parameter is required.".into(),
        ));
    }
    let vault = vault.ok_or_else(|| ArmError::RouteNotFound(path.to_string()))?;
    let scope = ResourceId::parse(&format!("{}/secrets/{secret_name}", vault.id))?;
    if !st
        .arm
        .authorize_data(&caller.object_id, GET_SECRET, &scope)?
    {
        tracing::info!(principal = %caller.object_id, vault = %vault.id, secret = secret_name, "key vault access denied");
        return Err(ArmError::VaultForbidden(format!(
            "Caller is not authorized to perform action on resource.\r\nIf role assignments, deny assignments or role definitions were changed recently, please observe propagation time.\r\nCaller: appid={};oid={};iss=https://sts.windows.net/{}/\r\nAction: '{GET_SECRET}'\r\nResource: '{}'\r\nAssignment: (not found)\r\nDenyAssignmentId: null\r\nDecisionReason: null \r\nVault: {};location={}\r\n",
            caller.app_id,
            caller.object_id,
            caller.tenant_id,
            scope.key(),
            vault.id.name(),
            vault.location
        )));
    }
    let secret = st.arm.secret(vault_name, secret_name)?;
    tracing::info!(step = 7, principal = %caller.object_id, vault = %vault.id, secret = secret_name, "key vault secret read");
    Ok(json!({
        "value": secret.value,
        "id": secret.id(),
        "attributes": {
            "enabled": true,
            "created": secret.created,
            "updated": secret.updated,
            "recoveryLevel": "Recoverable+Purgeable",
            "recoverableDays": 90
        },
        "tags": {}
    }))
}
