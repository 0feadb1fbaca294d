//! The IMDS HTTP surface of one VM: one axum router per VM listener, so the listener a request
//! arrives on identifies the calling VM and a VM can only ever see its own identities. The shared
//! listener (containers: one address such as 169.254.169.254:80 for every VM of the host) identifies
//! the VM by the request's source address instead.
//!
//! Routing is done by hand because IMDS treats the `/metadata` segment case-insensitively (as the
//! aad-pod-identity IMDS emulator notes,
//! <https://github.com/Azure/aad-pod-identity/blob/07b01ea01e79bcc594ea0b34f9cd8a2d1fe73a9f/pkg/nmi/server/server.go>)
//! and answers unknown paths and verbs in its own error shapes
//! (<https://learn.microsoft.com/azure/virtual-machines/instance-metadata-service>; docs/imds.md).

pub mod app_service;
pub mod extension;
mod instance;
mod query;
mod token;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Router;
use serde_json::{json, Value};
use tracing::{debug, warn};

use crate::error::{ImdsError, Result, Surface};
use crate::host::{Host, Vm};
use crate::throttle::Category;
use crate::versions;
use query::Query;

/// The `Server` header real IMDS sends (<https://github.com/Hexadite/acs-keyvault-agent/issues/43>).
pub const SERVER: &str = "IMDS/150.870.65.1854";

/// What a VM's router needs: the host (cache, AAD client, clock) and the VM it serves.
#[derive(Clone)]
pub struct VmCtx {
    /// The host.
    pub host: Arc<Host>,
    /// The VM this listener belongs to.
    pub vm: Arc<Vm>,
}

/// The router of one VM's IMDS listener.
pub fn router(ctx: VmCtx) -> Router {
    Router::new().fallback(dispatch).with_state(ctx)
}

/// The router of the host's shared IMDS listener: the VM is the one whose private IP address is the
/// request's source address; any other source gets 400 "Identity not found" (identity category) or
/// 400 "Bad request. …" (other categories).
pub fn shared_router(host: Arc<Host>) -> Router {
    Router::new().fallback(dispatch_shared).with_state(host)
}

async fn dispatch_shared(
    State(host): State<Arc<Host>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    match host.vm_by_ip(peer.ip()) {
        Some(vm) => dispatch(State(VmCtx { host, vm }), method, uri, headers).await,
        None => {
            let segments: Vec<&str> = uri.path().split('/').filter(|s| !s.is_empty()).collect();
            let (status, body) =
                ImdsError::UnknownSource(uri.to_string()).http(Route::of(&segments).surface());
            debug!(source = %peer.ip(), path = uri.path(), "imds request from an unknown source");
            json_response(status, &body)
        }
    }
}

/// Checks the `Metadata: true` header IMDS requires (IMDS doc: "Metadata: true" must be present): one
/// such header, value `true` (surrounding spaces ignored). A repeated header is refused like a
/// missing one: which of two values IMDS would honour is not documented, so neither is trusted.
///
/// # Errors
/// [`ImdsError::MissingMetadataHeader`].
pub(crate) fn check_metadata_header(headers: &HeaderMap) -> Result<()> {
    let mut values = headers.get_all("metadata").iter();
    let first = values.next().and_then(|v| v.to_str().ok()).map(str::trim);
    if first != Some("true") || values.next().is_some() {
        return Err(ImdsError::MissingMetadataHeader);
    }
    Ok(())
}

/// The IMDS paths misim serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Route<'a> {
    Token,
    IdentityInfo,
    IdentityUnknown,
    Instance(&'a [&'a str]),
    Versions,
    Unknown,
}

impl<'a> Route<'a> {
    fn of(segments: &'a [&'a str]) -> Self {
        match segments {
            [m, rest @ ..] if m.eq_ignore_ascii_case("metadata") => match rest {
                ["identity", "oauth2", "token"] => Route::Token,
                ["identity", "info"] => Route::IdentityInfo,
                ["identity", ..] => Route::IdentityUnknown,
                ["instance", path @ ..] => Route::Instance(path),
                ["versions"] => Route::Versions,
                _ => Route::Unknown,
            },
            _ => Route::Unknown,
        }
    }

    fn surface(self) -> Surface {
        match self {
            Route::Token | Route::IdentityInfo | Route::IdentityUnknown => Surface::Identity,
            _ => Surface::Instance,
        }
    }
}

async fn dispatch(
    State(ctx): State<VmCtx>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    misim_core::events::note_vm(&ctx.vm.key); // the VM of this request's recorded event
    let segments: Vec<&str> = uri.path().split('/').filter(|s| !s.is_empty()).collect();
    let route = Route::of(&segments);
    match handle(&ctx, route, &method, uri.query(), &headers).await {
        Ok(response) => response,
        Err(e) => {
            let (status, body) = e.http(route.surface());
            if status.is_server_error() {
                warn!(vm = %ctx.vm.key, path = uri.path(), error = %e, "imds request failed");
            } else {
                debug!(vm = %ctx.vm.key, path = uri.path(), error = %e, "imds request rejected");
            }
            let mut response = json_response(status, &body);
            if let (ImdsError::Throttled, Some(secs)) = (&e, ctx.host.retry_after_secs()) {
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(secs));
            }
            response
        }
    }
}

async fn handle(
    ctx: &VmCtx,
    route: Route<'_>,
    method: &Method,
    raw_query: Option<&str>,
    headers: &HeaderMap,
) -> Result<Response> {
    if matches!(route, Route::Unknown | Route::IdentityUnknown) {
        return Err(ImdsError::NotFound);
    }
    if method != Method::GET {
        return Err(ImdsError::MethodNotAllowed);
    }
    check_metadata_header(headers)?;
    if headers.contains_key("x-forwarded-for") {
        return Err(ImdsError::ForwardedFor);
    }
    let category = match route.surface() {
        Surface::Identity => Category::Identity,
        Surface::Instance => Category::Other,
    };
    let _admission = ctx.vm.throttle.admit(category)?;
    let query = Query::parse(raw_query)?;
    match route {
        Route::Token => token::token(ctx, &query).await,
        Route::IdentityInfo => token::info(ctx, &query),
        Route::Instance(path) => instance::instance(&ctx.vm.snapshot().vm, path, &query),
        Route::Versions => Ok(json_response(
            StatusCode::OK,
            &json!({ "apiVersions": versions::KNOWN }),
        )),
        Route::IdentityUnknown | Route::Unknown => Err(ImdsError::NotFound),
    }
}

/// A JSON answer with IMDS's headers (`Content-Type: application/json; charset=utf-8`, `Server`).
pub fn json_response(status: StatusCode, body: &Value) -> Response {
    with_headers(status, body.to_string(), "application/json; charset=utf-8")
}

/// A plain-text answer (`format=text` on instance metadata leaves).
pub fn text_response(body: String) -> Response {
    with_headers(StatusCode::OK, body, "text/plain; charset=utf-8")
}

fn with_headers(status: StatusCode, body: String, content_type: &'static str) -> Response {
    let mut response = (status, body).into_response();
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::SERVER, HeaderValue::from_static(SERVER));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_ignore_case_of_metadata_segment_only() {
        assert_eq!(
            Route::of(&["Metadata", "identity", "oauth2", "token"]),
            Route::Token
        );
        assert_eq!(
            Route::of(&["METADATA", "identity", "info"]),
            Route::IdentityInfo
        );
        assert_eq!(
            Route::of(&["metadata", "identity", "oauth2", "nope"]),
            Route::IdentityUnknown
        );
        assert_eq!(
            Route::of(&["metadata", "instance", "compute"]),
            Route::Instance(&["compute"])
        );
        assert_eq!(Route::of(&["metadata", "versions"]), Route::Versions);
        assert_eq!(Route::of(&["other"]), Route::Unknown);
        assert_eq!(Route::of(&[]), Route::Unknown);
    }
}
