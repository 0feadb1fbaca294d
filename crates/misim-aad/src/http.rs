//! Azure AD's HTTP surface (axum): token endpoints v1/v2, OpenID discovery v1/v2, JWKS and `/healthz`.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Extension, Path, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use misim_core::Clock;
use serde_json::Value;

use crate::claims::Version;
use crate::directory::Directory;
use crate::discovery::{self, TENANT_PLACEHOLDER};
use crate::error::{AadError, Result};
use crate::keyring::KeyRing;
use crate::token::TokenService;

/// The `{tenant}` path segment. One that does not percent-decode to UTF-8 (`/%91/oauth2/token`) is
/// kept as sent, so it is refused as an unknown tenant in Entra's error body (AADSTS90002) rather
/// than with axum's plain-text rejection (found by tests/fuzz_aad.rs).
struct TenantSegment(String);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for TenantSegment {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> std::result::Result<Self, Self::Rejection> {
        match Path::<String>::from_request_parts(parts, state).await {
            Ok(Path(tenant)) => Ok(TenantSegment(tenant)),
            Err(_) => Ok(TenantSegment(
                parts
                    .uri
                    .path()
                    .split('/')
                    .nth(1)
                    .unwrap_or_default()
                    .to_string(),
            )),
        }
    }
}

/// What the HTTP handlers share.
pub struct HttpState {
    /// Tenants and principals.
    pub directory: Arc<Directory>,
    /// The token endpoint logic.
    pub tokens: TokenService,
    /// The token-signing keys (for JWKS).
    pub keys: Arc<KeyRing>,
    /// Time source (error timestamps).
    pub clock: Clock,
}

/// The router: `POST /{tenant}/oauth2/token`, `POST /{tenant}/oauth2/v2.0/token`,
/// `GET /{tenant}/.well-known/openid-configuration`, `GET /{tenant}/v2.0/.well-known/openid-configuration`,
/// `GET /{tenant}/discovery/keys`, `GET /{tenant}/discovery/v2.0/keys` (`{tenant}` may be `common`) and
/// `GET /healthz`. Discovery documents name URLs under `public_url` (no trailing slash): the same
/// state is served once over HTTP and once over HTTPS, each with its own base URL, because MSAL
/// posts to the discovered `token_endpoint` and requires it to be https
/// (<https://github.com/AzureAD/microsoft-authentication-library-for-python/blob/1.39.0/msal/authority.py>).
pub fn router(state: Arc<HttpState>, public_url: &str) -> Router {
    let public_url = PublicUrl(Arc::from(public_url.trim_end_matches('/')));
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/{tenant}/oauth2/token", post(token_v1))
        .route("/{tenant}/oauth2/v2.0/token", post(token_v2))
        .route(
            "/{tenant}/.well-known/openid-configuration",
            get(openid::<false>),
        )
        .route(
            "/{tenant}/v2.0/.well-known/openid-configuration",
            get(openid::<true>),
        )
        .route("/{tenant}/discovery/keys", get(jwks_v1))
        .route("/{tenant}/discovery/v2.0/keys", get(jwks_v2))
        .layer(Extension(public_url))
        .with_state(state)
}

/// The base URL of the server a request came in on.
#[derive(Clone)]
struct PublicUrl(Arc<str>);

impl HttpState {
    /// Turns a handler result into the response Entra would send.
    fn respond(&self, result: Result<Value>) -> Response {
        match result {
            Ok(body) => Json(body).into_response(),
            Err(e) => {
                tracing::warn!(error = %e, "azure ad request rejected");
                e.into_http_response(self.clock.now())
            }
        }
    }

    /// The tenant ID for a discovery path segment: the placeholder for multi-tenant aliases, else the
    /// resolved tenant's ID.
    fn discovery_tenant(&self, segment: &str) -> Result<String> {
        if ["common", "organizations"]
            .iter()
            .any(|a| a.eq_ignore_ascii_case(segment))
        {
            return Ok(TENANT_PLACEHOLDER.to_string());
        }
        Ok(self.directory.resolve_tenant(segment)?.tenant_id)
    }
}

fn parse_form(body: &[u8]) -> Result<HashMap<String, String>> {
    serde_urlencoded::from_bytes::<Vec<(String, String)>>(body)
        .map(|pairs| pairs.into_iter().collect())
        .map_err(|e| {
            AadError::InvalidArgument(format!(
                "The request body must be application/x-www-form-urlencoded: {e}"
            ))
        })
}

async fn token(state: &HttpState, tenant: &str, version: Version, body: &[u8]) -> Response {
    let result = match parse_form(body) {
        Ok(form) => state.tokens.issue(tenant, version, &form).await,
        Err(e) => Err(e),
    };
    if let Err(e) = &result {
        // Refused token requests by AADSTS code (misim_core::telemetry::metrics).
        misim_core::telemetry::metrics::get()
            .assertion_failures
            .with_label_values(&["aad", &e.aadsts_code().to_string()])
            .inc();
    }
    state.respond(result)
}

#[tracing::instrument(skip_all, fields(tenant = %tenant))]
async fn token_v1(
    State(state): State<Arc<HttpState>>,
    TenantSegment(tenant): TenantSegment,
    body: Bytes,
) -> Response {
    token(&state, &tenant, Version::V1, &body).await
}

#[tracing::instrument(skip_all, fields(tenant = %tenant))]
async fn token_v2(
    State(state): State<Arc<HttpState>>,
    TenantSegment(tenant): TenantSegment,
    body: Bytes,
) -> Response {
    token(&state, &tenant, Version::V2, &body).await
}

/// The OpenID configuration document of `tenant`: v1, or v2 when `V2`.
async fn openid<const V2: bool>(
    State(state): State<Arc<HttpState>>,
    Extension(base): Extension<PublicUrl>,
    TenantSegment(tenant): TenantSegment,
) -> Response {
    let version = if V2 { Version::V2 } else { Version::V1 };
    let doc = state
        .discovery_tenant(&tenant)
        .map(|tid| discovery::openid_configuration(&base.0, &tid, version));
    state.respond(doc)
}

/// The key set after a possible rotation; `v2` key sets carry the tenant's v2 issuer on each key.
async fn jwks(state: &HttpState, tenant: &str, v2: bool) -> Response {
    let result = async {
        let tid = state.discovery_tenant(tenant)?;
        let keys = state.keys.published(state.clock.now()).await?;
        Ok(discovery::jwks(&keys, v2.then_some(tid.as_str())))
    }
    .await;
    state.respond(result)
}

async fn jwks_v1(
    State(state): State<Arc<HttpState>>,
    TenantSegment(tenant): TenantSegment,
) -> Response {
    jwks(&state, &tenant, false).await
}

async fn jwks_v2(
    State(state): State<Arc<HttpState>>,
    TenantSegment(tenant): TenantSegment,
) -> Response {
    jwks(&state, &tenant, true).await
}
