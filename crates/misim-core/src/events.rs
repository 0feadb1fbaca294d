//! Request recording: every request a party serves — IMDS, Azure AD, ARM REST, the vault, every
//! inter-party gRPC call — is appended to a bounded in-memory ring of this process with its time
//! (simulated and wall), party, caller, operation, parameters (secrets and assertions redacted),
//! outcome, latency and the flow's W3C trace ID (<https://www.w3.org/TR/trace-context/>).
//!
//! Retention: the newest [`CAPACITY`] events of the process; older ones are dropped (counted in
//! [`dropped`]). The hooks are the server layers of [`crate::serve`]: [`HttpRecordLayer`] on every
//! HTTP listener and [`GrpcRecordLayer`] on every gRPC listener. [`EventsService`] serves the ring
//! over gRPC (`misim.events.v1.Events`).

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock, RwLock};
use std::time::Instant;

use axum::http;
use misim_proto::events as pb;
use tokio::sync::broadcast;

use crate::Clock;

/// How many events the ring keeps (per process; `misim up` is one process).
pub const CAPACITY: usize = 20_000;

/// Largest request body read for its form parameters (Azure AD's token endpoint); larger bodies are
/// passed on unread and recorded without parameters.
const MAX_FORM_BODY: usize = 64 * 1024;

/// Parameter names whose values are never recorded: client assertions, secrets, tokens.
const SECRET_PARAMS: &[&str] = &[
    "client_assertion",
    "client_secret",
    "assertion",
    "refresh_token",
    "password",
    "code",
    "code_verifier",
    "access_token",
    "id_token",
    "sig",
    "x-identity-header",
];

/// One recorded request (the wire form is [`pb::Event`]).
pub type Event = pb::Event;

struct Ring {
    events: VecDeque<Event>,
    dropped: u64,
}

static RING: Mutex<Ring> = Mutex::new(Ring {
    events: VecDeque::new(),
    dropped: 0,
});
static SEQ: AtomicU64 = AtomicU64::new(0);
static CLOCK: RwLock<Option<Clock>> = RwLock::new(None);
static PROCESS: OnceLock<String> = OnceLock::new();
static WATCH: OnceLock<broadcast::Sender<Event>> = OnceLock::new();

fn process_id() -> &'static str {
    PROCESS.get_or_init(|| uuid::Uuid::new_v4().simple().to_string()[..8].to_string())
}

fn watchers() -> &'static broadcast::Sender<Event> {
    WATCH.get_or_init(|| broadcast::channel(1024).0)
}

/// Sets the simulated clock events are stamped with (the parties' clock); the system clock until set.
pub fn set_clock(clock: Clock) {
    *CLOCK.write().unwrap_or_else(|p| p.into_inner()) = Some(clock);
}

fn sim_now() -> i64 {
    match &*CLOCK.read().unwrap_or_else(|p| p.into_inner()) {
        Some(c) => c.now(),
        None => Clock::system().now(),
    }
}

/// Events dropped because the ring was full, since the process started.
pub fn dropped() -> u64 {
    RING.lock().unwrap_or_else(|p| p.into_inner()).dropped
}

/// Appends `event` (its `id`, `seq` and `sim_time` are filled here) and tells watchers.
pub fn record(mut event: Event) {
    let seq = SEQ.fetch_add(1, Ordering::SeqCst) + 1;
    event.seq = seq;
    event.id = format!("{}-{seq}", process_id());
    event.sim_time = sim_now();
    {
        let mut ring = RING.lock().unwrap_or_else(|p| p.into_inner());
        if ring.events.len() >= CAPACITY {
            ring.events.pop_front();
            ring.dropped += 1;
        }
        ring.events.push_back(event.clone());
    }
    let _ = watchers().send(event);
}

/// Whether `e` matches `f` (empty fields match everything).
pub fn matches(e: &Event, f: &pb::EventFilter) -> bool {
    (f.party.is_empty()
        || e.party == f.party
        || (f.party == "imds" && e.party.starts_with("host-") && e.kind == "http"))
        && (f.vm.is_empty() || e.vm == f.vm)
        && (f.operation.is_empty() || e.operation.contains(&f.operation))
        && (f.trace_id.is_empty() || e.trace_id.starts_with(&f.trace_id))
        && e.seq > f.after_seq
}

/// The kept events matching `f`, oldest first (the newest `f.limit` when set).
pub fn list(f: &pb::EventFilter) -> Vec<Event> {
    let ring = RING.lock().unwrap_or_else(|p| p.into_inner());
    let mut out: Vec<Event> = ring
        .events
        .iter()
        .filter(|e| matches(e, f))
        .cloned()
        .collect();
    if f.limit > 0 && out.len() > f.limit as usize {
        out.drain(..out.len() - f.limit as usize);
    }
    out
}

/// A receiver of every event recorded from now on.
pub fn subscribe() -> broadcast::Receiver<Event> {
    watchers().subscribe()
}

/// `value`, or `[redacted]` when `name` is a secret parameter.
fn redact(name: &str, value: &str) -> String {
    if SECRET_PARAMS.contains(&name.to_ascii_lowercase().as_str()) {
        "[redacted]".to_string()
    } else {
        value.chars().take(512).collect()
    }
}

fn parse_params(query: &str, into: &mut BTreeMap<String, String>) {
    for (k, v) in url_pairs(query) {
        let red = redact(&k, &v);
        into.insert(k, red);
    }
}

/// `application/x-www-form-urlencoded` pairs (also a URL's query).
fn url_pairs(s: &str) -> Vec<(String, String)> {
    serde_urlencoded::from_str::<Vec<(String, String)>>(s).unwrap_or_default()
}

fn party_of(path: &str, listener: Option<&str>) -> String {
    if let Some(p) = listener {
        return p.to_string();
    }
    if path.starts_with("/metadata/") {
        "imds".into()
    } else if path.contains("/oauth2/") || path.contains("/.well-known/") {
        "aad".into()
    } else if path.starts_with("/secrets") || path.starts_with("/keys") {
        "vault".into()
    } else {
        "arm".into()
    }
}

fn trace_id_now() -> String {
    crate::telemetry::trace_id_of(&tracing::Span::current()).unwrap_or_default()
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// The request paths not recorded: scrapes, the console, health checks, reflection, the Events
/// service itself.
fn unrecorded(path: &str) -> bool {
    path == "/metrics"
        || path.starts_with("/console")
        || path.starts_with("/debug/")
        || path.starts_with("/grpc.health")
        || path.starts_with("/grpc.reflection")
        || path.starts_with("/misim.events.")
        || path.starts_with("/misim.scenario.")
        || path == "/favicon.ico"
}

/// Tower layer of every HTTP listener (inside the trace layer, so events carry the flow's trace
/// ID): reads form bodies up to 64 KiB for their parameters and records each request.
#[derive(Clone, Debug)]
pub struct HttpRecordLayer {
    party: Option<String>,
    host: Option<String>,
}

impl HttpRecordLayer {
    /// The layer of a listener of `party` (`None`: from each request's path). A VM's own IMDS
    /// listener is named after its host by the telemetry registry; `vm` comes from the request.
    pub fn new(party: Option<String>) -> Self {
        HttpRecordLayer { party, host: None }
    }
}

impl<S> tower::Layer<S> for HttpRecordLayer {
    type Service = HttpRecord<S>;
    fn layer(&self, inner: S) -> HttpRecord<S> {
        HttpRecord {
            inner,
            party: self.party.clone(),
            _host: self.host.clone(),
        }
    }
}

/// The service of [`HttpRecordLayer`].
#[derive(Clone, Debug)]
pub struct HttpRecord<S> {
    inner: S,
    party: Option<String>,
    _host: Option<String>,
}

impl<S, RB> tower::Service<http::Request<hyper::body::Incoming>> for HttpRecord<S>
where
    S: tower::Service<http::Request<axum::body::Body>, Response = http::Response<RB>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    RB: Send + 'static,
{
    crate::telemetry::propagation::boxed_inner_service!();

    fn call(&mut self, req: http::Request<hyper::body::Incoming>) -> Self::Future {
        use http_body_util::BodyExt;
        // The readied service handles this request; a clone is readied for the next.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let path = req.uri().path().to_string();
        if unrecorded(&path) {
            return Box::pin(inner.call(req.map(axum::body::Body::new)));
        }
        let party = party_of(&path, self.party.as_deref());
        let started = Instant::now();
        let wall = now_ms();
        let trace_id = trace_id_now();
        let mut params = BTreeMap::new();
        parse_params(req.uri().query().unwrap_or(""), &mut params);
        let caller = req
            .extensions()
            .get::<axum::extract::ConnectInfo<SocketAddr>>()
            .map(|c| c.0.to_string())
            .unwrap_or_default();
        // The client's User-Agent names it (an Azure SDK, the Azure CLI, misim's own parties).
        let caller = match req
            .headers()
            .get(http::header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
        {
            Some(ua) if !ua.is_empty() => {
                let ua: String = ua.chars().take(80).collect();
                format!("{caller} ({ua})")
            }
            _ => caller,
        };
        let operation = format!("{} {}", req.method(), path);
        let form = req
            .headers()
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
        let small = req
            .headers()
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<usize>().ok())
            .is_some_and(|n| n <= MAX_FORM_BODY);
        Box::pin(async move {
            let req = if form && small {
                let (parts, body) = req.into_parts();
                match body.collect().await {
                    Ok(collected) => {
                        let bytes = collected.to_bytes();
                        parse_params(&String::from_utf8_lossy(&bytes), &mut params);
                        http::Request::from_parts(parts, axum::body::Body::from(bytes))
                    }
                    Err(_) => http::Request::from_parts(parts, axum::body::Body::empty()),
                }
            } else {
                req.map(axum::body::Body::new)
            };
            let (out, vm) = VM
                .scope(std::cell::RefCell::new(None), async move {
                    let out = inner.call(req).await;
                    (out, VM.try_with(|c| c.borrow().clone()).ok().flatten())
                })
                .await;
            let outcome = match &out {
                Ok(resp) => resp.status().as_u16().to_string(),
                Err(_) => "error".to_string(),
            };
            record(Event {
                wall_time_ms: wall,
                party,
                caller,
                vm: vm.unwrap_or_default(),
                operation,
                params: params.into_iter().collect(),
                outcome,
                latency_us: started.elapsed().as_micros() as u64,
                trace_id,
                kind: "http".into(),
                ..Default::default()
            });
            out
        })
    }
}

tokio::task_local! {
    static VM: std::cell::RefCell<Option<String>>;
}

/// Notes the VM the current request is about (recorded on its event); a no-op outside a
/// recorded HTTP request.
pub fn note_vm(vm: &str) {
    let name = vm.rsplit('/').next().unwrap_or(vm).to_string();
    let _ = VM.try_with(|c| *c.borrow_mut() = Some(name));
}

/// `router` with every request noted as about `vm` (a VM's own IMDS or extension listener), so
/// its recorded events name the VM even when no handler runs (an injected fault answers first).
pub fn with_vm(router: axum::Router, vm: &str) -> axum::Router {
    let vm: std::sync::Arc<str> = std::sync::Arc::from(vm.rsplit('/').next().unwrap_or(vm));
    router.layer(axum::middleware::from_fn(
        move |req: axum::extract::Request, next: axum::middleware::Next| {
            note_vm(&vm);
            next.run(req)
        },
    ))
}

/// Tower layer of every gRPC listener: records each call with the caller's misim role (from its
/// client certificate on control ports) or socket address. `GrpcRecordLayer::new(party)`: the layer
/// of a listener of `party` (`None`: from each call's service name).
pub type GrpcRecordLayer = crate::telemetry::propagation::PartyLayer<GrpcRecordWrap>;

/// The [`PartyWrap`](crate::telemetry::propagation::PartyWrap) of [`GrpcRecordLayer`]: wraps
/// services in [`GrpcRecord`].
#[derive(Debug)]
pub enum GrpcRecordWrap {}

impl crate::telemetry::propagation::PartyWrap for GrpcRecordWrap {
    type Service<S> = GrpcRecord<S>;
    fn wrap<S>(inner: S, party: Option<String>) -> GrpcRecord<S> {
        GrpcRecord { inner, party }
    }
}

/// The service of [`GrpcRecordLayer`].
#[derive(Clone, Debug)]
pub struct GrpcRecord<S> {
    inner: S,
    party: Option<String>,
}

impl<S, B, RB> tower::Service<http::Request<B>> for GrpcRecord<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<RB>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    RB: Send + 'static,
{
    crate::telemetry::propagation::boxed_inner_service!();

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let path = req.uri().path().to_string();
        if unrecorded(&path) {
            return Box::pin(self.inner.call(req));
        }
        let party = self.party.clone().unwrap_or_else(|| {
            match path
                .strip_prefix("/misim.")
                .and_then(|r| r.split('.').next())
            {
                Some("imds") => "host".to_string(),
                Some(p) => p.to_string(),
                None => "misim".to_string(),
            }
        });
        let caller = grpc_caller(&req);
        let started = Instant::now();
        let wall = now_ms();
        let trace_id = trace_id_now();
        let fut = self.inner.call(req);
        Box::pin(async move {
            let out = fut.await;
            let outcome = match &out {
                Ok(resp) => match resp
                    .headers()
                    .get("grpc-status")
                    .and_then(|v| v.to_str().ok())
                {
                    None | Some("0") if resp.status().is_success() => "OK".to_string(),
                    Some(c) => c
                        .parse::<i32>()
                        .map(|n| format!("{:?}", tonic::Code::from(n)))
                        .unwrap_or_else(|_| c.to_string()),
                    None => resp.status().as_u16().to_string(),
                },
                Err(_) => "error".to_string(),
            };
            record(Event {
                wall_time_ms: wall,
                party,
                caller,
                operation: path,
                outcome,
                latency_us: started.elapsed().as_micros() as u64,
                trace_id,
                kind: "grpc".into(),
                ..Default::default()
            });
            out
        })
    }
}

/// The caller of a gRPC request: its misim role (mutual TLS), else its socket address.
fn grpc_caller<B>(req: &http::Request<B>) -> String {
    use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};
    if let Some(tls) = req.extensions().get::<TlsConnectInfo<TcpConnectInfo>>() {
        if let Some(role) = tls.peer_certs().and_then(|c| {
            c.first()
                .and_then(|leaf| crate::control::role_of(leaf.as_ref()))
        }) {
            return role.to_string();
        }
        return tls
            .get_ref()
            .remote_addr()
            .map(|a| a.to_string())
            .unwrap_or_default();
    }
    req.extensions()
        .get::<TcpConnectInfo>()
        .and_then(|c| c.remote_addr())
        .map(|a| a.to_string())
        .unwrap_or_default()
}

/// The `misim.events.v1.Events` gRPC service over this process' ring. On a control port only the
/// admin role may call it ([`crate::control::ControlAuth`]); on ARM's user API, whoever may call ARM.
#[derive(Clone, Debug)]
pub struct EventsService {
    auth: crate::control::ControlAuth,
    stop: tokio_util::sync::CancellationToken,
}

impl EventsService {
    /// The service, checking callers with `auth`.
    pub fn new(auth: crate::control::ControlAuth) -> Self {
        EventsService {
            auth,
            stop: tokio_util::sync::CancellationToken::new(),
        }
    }

    /// Ends every `Watch` stream when `stop` is cancelled (the server's shutdown), so an open
    /// `misim events --follow` does not hold the server's graceful shutdown.
    pub fn with_shutdown(mut self, stop: tokio_util::sync::CancellationToken) -> Self {
        self.stop = stop;
        self
    }

    /// The tonic server of this service.
    pub fn server(self) -> pb::events_server::EventsServer<Self> {
        pb::events_server::EventsServer::new(self)
    }
}

/// Stream of [`EventsService`]'s `Watch`.
pub type WatchStream =
    Pin<Box<dyn futures_util::Stream<Item = Result<Event, tonic::Status>> + Send>>;

#[tonic::async_trait]
impl pb::events_server::Events for EventsService {
    async fn list(
        &self,
        req: tonic::Request<pb::ListEventsRequest>,
    ) -> Result<tonic::Response<pb::ListEventsResponse>, tonic::Status> {
        self.auth.check(&req, "Events/List", &[])?;
        let f = req.into_inner().filter.unwrap_or_default();
        Ok(tonic::Response::new(pb::ListEventsResponse {
            events: list(&f),
            capacity: CAPACITY as u32,
            dropped: dropped(),
        }))
    }

    type WatchStream = WatchStream;

    async fn watch(
        &self,
        req: tonic::Request<pb::WatchEventsRequest>,
    ) -> Result<tonic::Response<WatchStream>, tonic::Status> {
        self.auth.check(&req, "Events/Watch", &[])?;
        let r = req.into_inner();
        let f = r.filter.unwrap_or_default();
        let rx = subscribe();
        let backlog = if r.from_start { list(&f) } else { Vec::new() };
        let last = backlog.last().map(|e| e.seq).unwrap_or(0);
        let live = futures_util::stream::unfold(rx, |mut rx| async move {
            loop {
                match rx.recv().await {
                    Ok(e) => return Some((e, rx)),
                    Err(broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(broadcast::error::RecvError::Closed) => return None,
                }
            }
        });
        use futures_util::StreamExt;
        let stream = futures_util::stream::iter(backlog)
            .chain(live.filter(move |e| {
                let ok = e.seq > last && matches(e, &f);
                async move { ok }
            }))
            .map(Ok)
            .take_until(self.stop.clone().cancelled_owned());
        Ok(tonic::Response::new(Box::pin(stream)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_and_assertions_are_redacted() {
        let mut p = BTreeMap::new();
        parse_params(
            "client_id=abc&client_assertion=eyJ.x.y&grant_type=client_credentials&client_secret=s3",
            &mut p,
        );
        assert_eq!(p["client_id"], "abc");
        assert_eq!(p["client_assertion"], "[redacted]");
        assert_eq!(p["client_secret"], "[redacted]");
        assert_eq!(p["grant_type"], "client_credentials");
    }

    #[test]
    fn the_ring_is_bounded_and_filters_apply() {
        let before = SEQ.load(Ordering::SeqCst);
        for i in 0..(CAPACITY + 5) {
            record(Event {
                party: if i % 2 == 0 { "aad" } else { "host-1" }.into(),
                kind: "http".into(),
                vm: "vm1".into(),
                operation: "GET /metadata/identity/oauth2/token".into(),
                ..Default::default()
            });
        }
        let all = list(&pb::EventFilter::default());
        assert!(all.len() <= CAPACITY);
        assert!(dropped() >= 5);
        let f = pb::EventFilter {
            party: "imds".into(),
            after_seq: before,
            limit: 3,
            ..Default::default()
        };
        let some = list(&f);
        assert_eq!(some.len(), 3);
        assert!(some.iter().all(|e| e.party == "host-1"));
        assert!(some.windows(2).all(|w| w[0].seq < w[1].seq));
    }
}
