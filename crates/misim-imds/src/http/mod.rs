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
use std::path::PathBuf;
use std::sync::Arc;

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Router;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tracing::{debug, warn};

use crate::directory::VmDirectory;
use crate::error::{ImdsError, Result, Surface};
use crate::listener::{ListenerHandle, Listeners};
use crate::throttle::Category;
use crate::tokens::Tokens;
use crate::versions;
use crate::vm::{Vm, VmListener, VmServing, VM_PATH_PREFIX};
use query::Query;

/// The `Server` header real IMDS sends (<https://github.com/Hexadite/acs-keyvault-agent/issues/43>).
pub const SERVER: &str = "IMDS/150.870.65.1854";

/// What the HTTP layer needs from the host: the token service, the VMs (to resolve callers) and
/// the data directory (the VM extension's log). Nothing else of the host is reachable from here.
#[derive(Clone, Debug)]
pub(crate) struct ImdsState {
    /// Token cache, Azure AD client, clock.
    pub tokens: Arc<Tokens>,
    /// The placed VMs.
    pub vms: Arc<VmDirectory>,
    /// The host's data directory.
    pub data_dir: Arc<PathBuf>,
}

/// What a VM's handlers work with: the host's serving state and the calling VM.
#[derive(Clone)]
pub(crate) struct VmCtx {
    /// The host's serving state.
    pub state: ImdsState,
    /// The calling VM.
    pub vm: Arc<Vm>,
}

/// How a listener tells which VM is calling.
#[derive(Clone, Debug)]
enum Resolve {
    /// The listener is the VM's own (per-VM loopback port).
    Own(Arc<Vm>),
    /// Shared listener: the VM whose private IP address is the source address (containers).
    Source,
    /// Shared loopback listener: the VM named by the path prefix `/vms/{vmId}`.
    PathPrefix,
}

/// A listener's router state.
#[derive(Clone, Debug)]
pub(crate) struct Listening {
    state: ImdsState,
    resolve: Resolve,
}

/// The calling VM of a request, resolved once per request (axum extractor), and where the path
/// below the VM's prefix starts.
pub(crate) struct Caller {
    ctx: VmCtx,
    prefix_len: usize,
}

impl Caller {
    /// The request path below the VM's prefix (`/metadata/…`).
    fn path<'a>(&self, uri: &'a Uri) -> &'a str {
        uri.path().get(self.prefix_len..).unwrap_or("/")
    }
}

/// A request no VM of this host made (unknown source address or `/vms/{vmId}`); carries the path
/// below the prefix, which says which error shape answers.
pub(crate) struct UnknownCaller {
    path: String,
}

impl IntoResponse for UnknownCaller {
    fn into_response(self) -> Response {
        let segments: Vec<&str> = self.path.split('/').filter(|s| !s.is_empty()).collect();
        let (status, body) =
            ImdsError::UnknownSource(self.path.clone()).http(Route::of(&segments).surface());
        json_response(status, &body)
    }
}

impl FromRequestParts<Listening> for Caller {
    type Rejection = UnknownCaller;

    async fn from_request_parts(
        parts: &mut Parts,
        listening: &Listening,
    ) -> std::result::Result<Self, Self::Rejection> {
        let path = parts.uri.path();
        let found = match &listening.resolve {
            Resolve::Own(vm) => Some((Arc::clone(vm), 0)),
            Resolve::Source => parts
                .extensions
                .get::<ConnectInfo<SocketAddr>>()
                .and_then(|ConnectInfo(peer)| listening.state.vms.by_ip(peer.ip()))
                .map(|vm| (vm, 0)),
            Resolve::PathPrefix => split_vm_prefix(path).and_then(|(id, prefix_len)| {
                listening.state.vms.by_vm_id(id).map(|vm| (vm, prefix_len))
            }),
        };
        match found {
            Some((vm, prefix_len)) => Ok(Caller {
                ctx: VmCtx {
                    state: listening.state.clone(),
                    vm,
                },
                prefix_len,
            }),
            None => {
                let below = match &listening.resolve {
                    Resolve::PathPrefix => split_vm_prefix(path)
                        .and_then(|(_, n)| path.get(n..))
                        .unwrap_or(path),
                    _ => path,
                };
                Err(UnknownCaller {
                    path: below.to_string(),
                })
            }
        }
    }
}

/// What every listener's one handler needs of a request: the calling VM (or why there is none),
/// method, URI and headers, in that order (axum extractor; never rejects).
pub(crate) struct Incoming(
    std::result::Result<Caller, UnknownCaller>,
    Method,
    Uri,
    HeaderMap,
);

impl FromRequestParts<Listening> for Incoming {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        listening: &Listening,
    ) -> std::result::Result<Self, Self::Rejection> {
        Ok(Incoming(
            Caller::from_request_parts(parts, listening).await,
            parts.method.clone(),
            parts.uri.clone(),
            parts.headers.clone(),
        ))
    }
}

/// `/vms/{vmId}/rest` → (`vmId`, length of `/vms/{vmId}`).
fn split_vm_prefix(path: &str) -> Option<(&str, usize)> {
    let rest = path.strip_prefix(VM_PATH_PREFIX)?;
    let id = rest.split('/').next().filter(|id| !id.is_empty())?;
    Some((id, VM_PATH_PREFIX.len() + id.len()))
}

/// The serving layer of a host: builds the routers of its listeners and runs the VMs' own ones.
pub(crate) struct Serving {
    state: ImdsState,
    listeners: Listeners,
}

impl Serving {
    /// Serving `state` with listener tasks from `listeners`.
    pub(crate) fn new(state: ImdsState, listeners: Listeners) -> Self {
        Serving { state, listeners }
    }

    /// The shared IMDS listener's router: the calling VM is the one whose private IP address is
    /// the source address (`by_path` false; containers), or the one named by the path prefix
    /// `/vms/{vmId}` (`by_path` true; the shared loopback listener). Any other caller gets 400
    /// "Identity not found" (identity category) or 400 "Bad request. …" (other categories).
    pub(crate) fn shared_imds_router(&self, by_path: bool) -> Router {
        let resolve = if by_path {
            Resolve::PathPrefix
        } else {
            Resolve::Source
        };
        self.router(resolve, dispatch)
    }

    /// The shared VM-extension listener's router (containers): the VM is the one whose private IP
    /// address is the source address; other sources, and VMs without the extension, get 401
    /// `unknown_source`.
    pub(crate) fn shared_extension_router(&self) -> Router {
        self.router(Resolve::Source, extension::dispatch)
    }

    fn router<H, T>(&self, resolve: Resolve, handler: H) -> Router
    where
        H: axum::handler::Handler<T, Listening>,
        T: 'static,
    {
        Router::new().fallback(handler).with_state(Listening {
            state: self.state.clone(),
            resolve,
        })
    }
}

impl VmServing for Serving {
    fn serve(&self, vm: &Arc<Vm>, which: VmListener, listener: TcpListener) -> ListenerHandle {
        let own = Resolve::Own(Arc::clone(vm));
        let router = match which {
            VmListener::Imds if vm.snapshot().app_service.is_some() => {
                self.router(own, app_service::dispatch)
            }
            VmListener::Imds => self.router(own, dispatch),
            VmListener::Extension => self.router(own, extension::dispatch),
        };
        self.listeners.spawn(&vm.key, listener, router)
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

async fn dispatch(Incoming(caller, method, uri, headers): Incoming) -> Response {
    let caller = match caller {
        Ok(caller) => caller,
        Err(unknown) => {
            debug!(path = uri.path(), "imds request from an unknown caller");
            return unknown.into_response();
        }
    };
    let ctx = &caller.ctx;
    misim_core::events::note_vm(&ctx.vm.key); // the VM of this request's recorded event
    let path = caller.path(&uri);
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let route = Route::of(&segments);
    match handle(ctx, route, &method, uri.query(), &headers).await {
        Ok(response) => response,
        Err(e) => {
            let (status, body) = e.http(route.surface());
            if status.is_server_error() {
                warn!(vm = %ctx.vm.key, path = uri.path(), error = %e, "imds request failed");
            } else {
                debug!(vm = %ctx.vm.key, path = uri.path(), error = %e, "imds request rejected");
            }
            let mut response = json_response(status, &body);
            if let (ImdsError::Throttled, Some(secs)) = (&e, ctx.state.tokens.retry_after_secs) {
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

/// A JSON answer of a typed body with IMDS's headers.
pub(crate) fn json_body<T: serde::Serialize>(status: StatusCode, body: &T) -> Response {
    match serde_json::to_string(body) {
        Ok(text) => with_headers(status, text, "application/json; charset=utf-8"),
        // Plain structs of strings and numbers always serialize; answer like any internal error.
        Err(_) => json_response(
            StatusCode::INTERNAL_SERVER_ERROR,
            &json!({ "error": "server_error", "error_description": "Internal server error" }),
        ),
    }
}

/// A JSON answer with only `Content-Type: content_type` (the VM extension and App Service answer
/// without IMDS's `Server` header).
pub(crate) fn json_as(status: StatusCode, body: &Value, content_type: &'static str) -> Response {
    let mut response = (status, body.to_string()).into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
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
    fn vm_prefix_splits_at_the_vm_id() {
        assert_eq!(
            split_vm_prefix("/vms/ABC-1/metadata/identity"),
            Some(("ABC-1", 10))
        );
        assert_eq!(split_vm_prefix("/vms/abc"), Some(("abc", 8)));
        assert_eq!(split_vm_prefix("/vms//metadata"), None);
        assert_eq!(split_vm_prefix("/metadata/vms/x"), None);
    }

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
