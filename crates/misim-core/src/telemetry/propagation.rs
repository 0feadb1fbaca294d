//! W3C trace context (<https://www.w3.org/TR/trace-context/>) over every hop: [`grpc_request`] and
//! [`inject_headers`] put the current span's `traceparent` on outgoing gRPC and HTTP calls;
//! [`TraceLayer`] (installed by [`crate::serve`] on every gRPC and HTTP server) extracts it, opens
//! the request's server span as its child, and counts the request in [`super::metrics`].

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::Instant;

use axum::http::{self, HeaderMap, HeaderName, HeaderValue};
use opentelemetry::propagation::{Extractor, Injector};
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use super::{metrics, trace_id_of, TARGET};

struct HeaderInjector<'a>(&'a mut HeaderMap);

impl Injector for HeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(k), Ok(v)) = (
            HeaderName::from_bytes(key.as_bytes()),
            HeaderValue::from_str(&value),
        ) {
            self.0.insert(k, v);
        }
    }
}

struct HeaderExtractor<'a>(&'a HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }
    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(HeaderName::as_str).collect()
    }
}

/// Puts the current span's `traceparent` (and `tracestate`) into `headers` (an outgoing HTTP
/// request). Nothing when no flow is being traced.
pub fn inject_headers(headers: &mut HeaderMap) {
    let cx = tracing::Span::current().context();
    opentelemetry::global::get_text_map_propagator(|p| {
        p.inject_context(&cx, &mut HeaderInjector(headers))
    });
}

/// A gRPC request carrying `message` and the current span's `traceparent` in its metadata: pass
/// it to a tonic client method instead of the bare message.
pub fn grpc_request<T>(message: T) -> tonic::Request<T> {
    let mut req = tonic::Request::new(message);
    let mut headers = HeaderMap::new();
    inject_headers(&mut headers);
    for (k, v) in headers.iter() {
        if let Ok(key) = tonic::metadata::MetadataKey::from_bytes(k.as_str().as_bytes()) {
            if let Ok(val) = tonic::metadata::MetadataValue::try_from(v.as_bytes()) {
                req.metadata_mut().insert(key, val);
            }
        }
    }
    req
}

/// The parent context carried by incoming `headers`.
pub fn extract(headers: &HeaderMap) -> opentelemetry::Context {
    opentelemetry::global::get_text_map_propagator(|p| p.extract(&HeaderExtractor(headers)))
}

static LISTENERS: Mutex<Option<HashMap<SocketAddr, String>>> = Mutex::new(None);

/// Names the party serving on `addr` (its server spans' and metrics' `party`). Listeners not
/// named get a party from the request path (`/misim.msrp.v1…` → `msrp`, `/metadata/…` → `imds`).
pub fn name_listener(addr: SocketAddr, party: &str) {
    let mut g = LISTENERS.lock().unwrap_or_else(|p| p.into_inner());
    g.get_or_insert_with(HashMap::new)
        .insert(addr, party.to_string());
}

/// Forgets the party named for `addr`: a listener that closed must not name the next one that gets
/// its port (tests start and stop many systems in one process).
pub fn forget_listener(addr: SocketAddr) {
    let mut g = LISTENERS.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(map) = g.as_mut() {
        map.remove(&addr);
    }
}

/// Calls [`forget_listener`] when dropped: held by a serving function for its listener's lifetime.
pub struct ListenerNameGuard(pub Option<SocketAddr>);

impl Drop for ListenerNameGuard {
    fn drop(&mut self) {
        if let Some(addr) = self.0 {
            forget_listener(addr);
        }
    }
}

/// The party named for `addr`.
pub fn listener_party(addr: Option<SocketAddr>) -> Option<String> {
    let addr = addr?;
    let g = LISTENERS.lock().unwrap_or_else(|p| p.into_inner());
    g.as_ref()?.get(&addr).cloned()
}

fn party_from_path(path: &str) -> &'static str {
    if let Some(rest) = path.strip_prefix("/misim.") {
        return match rest.split('.').next() {
            Some("arm") => "arm",
            Some("msrp") => "msrp",
            Some("aad") => "aad",
            Some("imds") => "host",
            _ => "misim",
        };
    }
    if path.starts_with("/metadata/") {
        return "imds";
    }
    // The legacy VM extension's endpoint (localhost:50342) and App Service's identity endpoint.
    if path.starts_with("/oauth2/") {
        return "vm extension";
    }
    if path.starts_with("/msi/") {
        return "app service";
    }
    if path.starts_with("/subscriptions")
        || path.starts_with("/providers")
        || path.starts_with("/tenants")
    {
        return "arm";
    }
    if path.contains("/oauth2/") || path.contains("/.well-known/") || path.contains("/discovery/") {
        return "aad";
    }
    "misim"
}

/// Paths that are not part of any flow (scrapes, the console, health checks): no span, no count.
fn untraced(path: &str) -> bool {
    path == "/metrics"
        || path.starts_with("/console")
        || path.starts_with("/debug/")
        || path.starts_with("/grpc.health")
        || path.starts_with("/grpc.reflection")
}

/// A bounded label for a request path: gRPC methods as they are; in HTTP paths, IDs and resource
/// names replaced with `{id}` / `{name}`, so a label never grows with the number of resources.
pub fn endpoint_label(path: &str) -> String {
    if path.starts_with("/misim.") {
        return path.to_string();
    }
    let mut out = Vec::new();
    let mut next_is_name = false;
    let mut after_providers = 0u8;
    for seg in path.split('/').skip(1) {
        let lower = seg.to_ascii_lowercase();
        let is_guid = seg.len() == 36 && seg.chars().filter(|c| *c == '-').count() == 4;
        if next_is_name {
            out.push("{name}".to_string());
            next_is_name = false;
            continue;
        }
        if after_providers == 1 {
            out.push(seg.to_string());
            after_providers = 2;
            continue;
        }
        if is_guid {
            out.push("{id}".to_string());
            continue;
        }
        match lower.as_str() {
            "subscriptions" | "resourcegroups" | "tenants" => {
                out.push(seg.to_string());
                next_is_name = true;
            }
            "providers" => {
                out.push(seg.to_string());
                after_providers = 1;
            }
            _ if after_providers == 2 => {
                out.push(seg.to_string());
                next_is_name = true;
            }
            _ => out.push(seg.to_string()),
        }
        if out.len() > 12 {
            break;
        }
    }
    format!("/{}", out.join("/"))
}

tokio::task_local! {
    static REQUEST_VM: std::cell::RefCell<Option<String>>;
}

/// Notes the VM the current request is about (the `vm` label of its request metric).
pub fn note_vm(vm: &str) {
    let name = vm.rsplit('/').next().unwrap_or(vm).to_string();
    let _ = REQUEST_VM.try_with(|c| *c.borrow_mut() = Some(name));
}

/// Wraps a listener's services for one tower layer of [`PartyLayer`] (the service it builds around
/// each inner service `S`, given the listener's party).
pub trait PartyWrap {
    /// The service wrapping `S`.
    type Service<S>;
    /// Wraps `inner` for a listener of `party`.
    fn wrap<S>(inner: S, party: Option<String>) -> Self::Service<S>;
}

/// A tower layer for a listener of `party` (`None`: from each request's path) that wraps every
/// service as `K` says: [`TraceLayer`] here, the event recorder's gRPC layer in `crate::events`.
pub struct PartyLayer<K> {
    party: Option<String>,
    kind: std::marker::PhantomData<fn() -> K>,
}

impl<K> PartyLayer<K> {
    /// The layer for a listener of `party` (`None`: from each request's path).
    pub fn new(party: Option<String>) -> Self {
        PartyLayer {
            party,
            kind: std::marker::PhantomData,
        }
    }
}

impl<K> Clone for PartyLayer<K> {
    fn clone(&self) -> Self {
        Self::new(self.party.clone())
    }
}

impl<K> Default for PartyLayer<K> {
    fn default() -> Self {
        Self::new(None)
    }
}

impl<K> std::fmt::Debug for PartyLayer<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PartyLayer")
            .field("kind", &std::any::type_name::<K>())
            .field("party", &self.party)
            .finish()
    }
}

impl<K: PartyWrap, S> tower::Layer<S> for PartyLayer<K> {
    type Service = K::Service<S>;
    fn layer(&self, inner: S) -> K::Service<S> {
        K::wrap(inner, self.party.clone())
    }
}

/// Tower layer of every misim server (gRPC and HTTP): opens a server span that continues the
/// caller's trace (W3C `traceparent`), records the call's result and counts it.
pub type TraceLayer = PartyLayer<Trace>;

/// The [`PartyWrap`] of [`TraceLayer`]: wraps services in [`TraceService`].
#[derive(Debug)]
pub enum Trace {}

impl PartyWrap for Trace {
    type Service<S> = TraceService<S>;
    fn wrap<S>(inner: S, party: Option<String>) -> TraceService<S> {
        TraceService { inner, party }
    }
}

/// The service of [`TraceLayer`].
#[derive(Clone, Debug)]
pub struct TraceService<S> {
    inner: S,
    party: Option<String>,
}

/// The head of a tower `Service` impl for a wrapper whose `inner: S` does the work: the same
/// response and error as `S`, a boxed `Send` future, and `poll_ready` forwarded to `inner`.
/// Used by [`TraceService`] and the event recorders of [`crate::events`].
macro_rules! boxed_inner_service {
    () => {
        type Response = S::Response;
        type Error = S::Error;
        type Future = std::pin::Pin<
            Box<dyn std::future::Future<Output = Result<S::Response, S::Error>> + Send>,
        >;

        fn poll_ready(
            &mut self,
            cx: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Result<(), Self::Error>> {
            self.inner.poll_ready(cx)
        }
    };
}
pub(crate) use boxed_inner_service;

impl<S, B, RB> tower::Service<http::Request<B>> for TraceService<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<RB>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    RB: Send + 'static,
{
    boxed_inner_service!();

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let path = req.uri().path().to_string();
        if untraced(&path) {
            return Box::pin(self.inner.call(req));
        }
        let grpc = path.starts_with("/misim.");
        let call = if grpc {
            path.clone()
        } else {
            format!("{} {}", req.method(), path)
        };
        let party = self
            .party
            .clone()
            .unwrap_or_else(|| party_from_path(&path).to_string());
        let span = tracing::info_span!(
            target: TARGET,
            "request",
            otel.name = %call,
            otel.kind = "server",
            party = %party,
            call = %call,
            result = tracing::field::Empty,
            trace_id = tracing::field::Empty,
            otel.status_code = tracing::field::Empty,
        );
        let parent = extract(req.headers());
        let _ = span.set_parent(parent);
        if let Some(id) = trace_id_of(&span) {
            span.record("trace_id", id.as_str());
        }
        let fut = span.in_scope(|| self.inner.call(req));
        let endpoint = endpoint_label(&path);
        let started = Instant::now();
        let span2 = span.clone();
        let fut = async move {
            let out = fut.await;
            let vm = REQUEST_VM
                .try_with(|c| c.borrow().clone())
                .ok()
                .flatten()
                .unwrap_or_default();
            let status = match &out {
                Ok(resp) => {
                    let code = resp.status();
                    match resp
                        .headers()
                        .get("grpc-status")
                        .and_then(|v| v.to_str().ok())
                    {
                        Some("0") | None if grpc && code.is_success() => "OK".to_string(),
                        Some(c) => grpc_code_name(c).to_string(),
                        None => code.as_u16().to_string(),
                    }
                }
                Err(_) => "error".to_string(),
            };
            let failed = !(status == "OK" || status.starts_with('2') || status.starts_with('3'));
            span2.record("result", status.as_str());
            span2.record("otel.status_code", if failed { "ERROR" } else { "OK" });
            metrics::observe_request(&party, &endpoint, &status, &vm, started.elapsed());
            out
        };
        Box::pin(
            REQUEST_VM
                .scope(std::cell::RefCell::new(None), fut)
                .instrument(span),
        )
    }
}

/// The gRPC status name of a numeric `grpc-status`.
fn grpc_code_name(code: &str) -> &str {
    match code {
        "0" => "OK",
        "1" => "CANCELLED",
        "2" => "UNKNOWN",
        "3" => "INVALID_ARGUMENT",
        "4" => "DEADLINE_EXCEEDED",
        "5" => "NOT_FOUND",
        "6" => "ALREADY_EXISTS",
        "7" => "PERMISSION_DENIED",
        "8" => "RESOURCE_EXHAUSTED",
        "9" => "FAILED_PRECONDITION",
        "10" => "ABORTED",
        "11" => "OUT_OF_RANGE",
        "12" => "UNIMPLEMENTED",
        "13" => "INTERNAL",
        "14" => "UNAVAILABLE",
        "15" => "DATA_LOSS",
        "16" => "UNAUTHENTICATED",
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_labels_do_not_grow_with_resources() {
        assert_eq!(
            endpoint_label("/subscriptions/0b1f6471-1bf0-4dda-aec3-cb9272f09590/resourceGroups/rg1/providers/Microsoft.Compute/virtualMachines/vm1"),
            "/subscriptions/{name}/resourceGroups/{name}/providers/Microsoft.Compute/virtualMachines/{name}"
        );
        assert_eq!(
            endpoint_label("/72f988bf-86f1-41af-91ab-2d7cd011db47/oauth2/token"),
            "/{id}/oauth2/token"
        );
        assert_eq!(
            endpoint_label("/metadata/identity/oauth2/token"),
            "/metadata/identity/oauth2/token"
        );
        assert_eq!(
            endpoint_label("/misim.msrp.v1.Msrp/CreateIdentity"),
            "/misim.msrp.v1.Msrp/CreateIdentity"
        );
    }
}
