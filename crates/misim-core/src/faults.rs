//! Fault injection: rules that replace (or delay) a party's answer to matching requests, consulted by
//! a middleware on every HTTP router and gRPC server ([`with_faults`], [`grpc_with_faults`]).
//!
//! One registry per simulated system, reached through the system's [`Clock`] (every party holds it).
//! A rule matches on the receiving party, an endpoint shorthand, the path, the method, the identity
//! and resource asked for, and the caller; it answers with an HTTP status in the surface's error shape,
//! a gRPC status, added latency, a closed or reset connection, or a malformed body; it is bounded by a
//! count, a duration on the simulated clock and a probability drawn from a generator seeded per rule,
//! so a run repeats. Every injection is recorded ([`Faults::hits`]).
//!
//! Error bodies: IMDS's meanings of 404/410/429/5xx are documented in
//! <https://learn.microsoft.com/en-us/entra/identity/managed-identities-azure-resources/how-to-use-vm-token#error-handling>
//! (the exact bodies are not; misim words them as that table does, and 429 as misim's own IMDS
//! throttling does, docs/imds.md). Azure AD answers a throttled client-credentials request with 429,
//! `Retry-After: 60` and a plain-text body
//! (<https://learn.microsoft.com/en-us/entra/msal/dotnet/advanced/client-and-server-throttling>);
//! its other errors use Entra's JSON error shape. ARM uses its `{"error":{"code","message"}}` shape
//! (<https://learn.microsoft.com/en-us/azure/azure-resource-manager/management/request-limits-and-throttling>).
//!
//! [`Clock`]: crate::Clock

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::Response;

use crate::Clock;

/// Most hits kept; older ones are dropped first.
const MAX_HITS: usize = 10_000;

/// What a rule matches; empty fields match anything (see `misim.sim.v1.FaultMatch`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FaultMatch {
    /// `arm`, `aad`, `msrp`, a host name (its agent and all its IMDS listeners) or `vm:NAME`.
    pub party: String,
    /// `imds`, `aad-token`, `arm-rest`, `grpc` or empty.
    pub endpoint: String,
    /// Path prefix.
    pub path: String,
    /// HTTP method (case-insensitive).
    pub method: String,
    /// Substring of the identity asked for (case-insensitive).
    pub identity: String,
    /// Substring of the resource or scope asked for (case-insensitive).
    pub resource: String,
    /// Substring of the caller's socket address or User-Agent.
    pub caller: String,
}

/// The kind of fault injected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultKind {
    /// An HTTP status with the surface's error body.
    HttpStatus,
    /// A gRPC status.
    GrpcStatus,
    /// A delay, then the normal answer.
    Latency,
    /// The connection closed without an answer.
    Close,
    /// The answer started, then the connection aborted.
    Reset,
    /// 200 with a truncated JSON body.
    Malformed,
}

/// What a matching rule does (see `misim.sim.v1.FaultAction`).
#[derive(Clone, Debug, PartialEq)]
pub struct FaultAction {
    /// The kind.
    pub kind: FaultKind,
    /// HTTP status for [`FaultKind::HttpStatus`].
    pub http_status: u16,
    /// `Retry-After` seconds (0: none, except Azure AD's 429 which defaults to 60 as Entra sends).
    pub retry_after_secs: u32,
    /// Body replacing the surface's error body, when not empty.
    pub body: String,
    /// gRPC code for [`FaultKind::GrpcStatus`].
    pub grpc_code: i32,
    /// gRPC message, or the description in the HTTP error body.
    pub message: String,
    /// Delay before the fault (the whole fault for [`FaultKind::Latency`]).
    pub latency_ms: u64,
}

/// How long a rule applies (see `misim.sim.v1.FaultBounds`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FaultBounds {
    /// At most this many injections (0: unbounded).
    pub count: u32,
    /// Seconds of simulated time from the rule's creation (0: unbounded).
    pub duration_secs: i64,
    /// Chance of injecting on a matching request (0 or 1: always).
    pub probability: f64,
    /// Seed of the rule's generator.
    pub seed: u64,
}

/// A rule as listed.
#[derive(Clone, Debug, PartialEq)]
pub struct FaultRule {
    /// `f1`, `f2`, …
    pub id: String,
    /// What it matches.
    pub matcher: FaultMatch,
    /// What it does.
    pub action: FaultAction,
    /// Its bounds.
    pub bounds: FaultBounds,
    /// Injections so far.
    pub hits: u64,
    /// Matching requests so far.
    pub considered: u64,
    /// Creation time, simulated epoch seconds.
    pub created: i64,
    /// Whether it still applies.
    pub active: bool,
}

/// One injected fault.
#[derive(Clone, Debug, PartialEq)]
pub struct FaultHit {
    /// The rule.
    pub rule_id: String,
    /// Simulated time.
    pub epoch_seconds: i64,
    /// Wall-clock time, Unix milliseconds (clients back off in real time).
    pub wall_unix_ms: i64,
    /// The party that received the request.
    pub party: String,
    /// HTTP method (`POST` for gRPC).
    pub method: String,
    /// Path without query.
    pub path: String,
    /// The caller's address (or empty).
    pub caller: String,
    /// What was injected, e.g. `http 429`.
    pub action: String,
}

/// Invalid rules.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FaultError {
    /// The rule is malformed.
    #[error("{0}")]
    Invalid(String),
    /// No rule has that id.
    #[error("no fault rule {0}")]
    NotFound(String),
}

/// A request as the matcher sees it.
#[derive(Debug, Default)]
pub struct RequestInfo {
    /// Label of the receiving listener: `arm`, `aad`, `msrp`, `host-1`, `host-1/vm:vm1`.
    pub party: String,
    /// HTTP method.
    pub method: String,
    /// Path.
    pub path: String,
    /// Identities named in the request (IMDS selectors, the token endpoint's `client_id`).
    pub identities: Vec<String>,
    /// Resources or scopes named in the request.
    pub resources: Vec<String>,
    /// The caller's socket address.
    pub peer: String,
    /// The caller's User-Agent.
    pub user_agent: String,
    /// Whether it is a gRPC call.
    pub grpc: bool,
}

impl RequestInfo {
    /// The endpoint shorthand of this request.
    pub fn endpoint(&self) -> &'static str {
        if self.grpc {
            "grpc"
        } else if self.path.starts_with("/metadata/identity") || self.is_host() {
            "imds"
        } else if self.party == "aad"
            && (self.path.ends_with("/oauth2/token") || self.path.ends_with("/oauth2/v2.0/token"))
        {
            "aad-token"
        } else if self.party == "arm" {
            "arm-rest"
        } else {
            ""
        }
    }

    fn is_host(&self) -> bool {
        !matches!(self.party.as_str(), "arm" | "aad" | "msrp")
    }
}

#[derive(Debug)]
struct RuleState {
    rule: FaultRule,
    rng: u64,
}

#[derive(Debug, Default)]
struct State_ {
    next_id: u64,
    rules: Vec<RuleState>,
    hits: std::collections::VecDeque<FaultHit>,
}

/// The registry of one system's fault rules and their hits. Cloning shares it.
#[derive(Clone, Debug, Default)]
pub struct Faults {
    state: Arc<Mutex<State_>>,
    /// Fast path: false while no rule exists.
    any: Arc<AtomicBool>,
}

fn contains_ci(hay: &str, needle: &str) -> bool {
    hay.to_ascii_lowercase()
        .contains(&needle.to_ascii_lowercase())
}

fn party_matches(want: &str, label: &str) -> bool {
    if want.is_empty() || want.eq_ignore_ascii_case(label) {
        return true;
    }
    if let Some(vm) = want.strip_prefix("vm:") {
        return label
            .rsplit_once("/vm:")
            .is_some_and(|(_, v)| v.eq_ignore_ascii_case(vm));
    }
    label
        .split_once('/')
        .is_some_and(|(host, _)| host.eq_ignore_ascii_case(want))
}

impl FaultMatch {
    fn matches(&self, r: &RequestInfo) -> bool {
        party_matches(&self.party, &r.party)
            && (self.endpoint.is_empty() || self.endpoint.eq_ignore_ascii_case(r.endpoint()))
            && (self.path.is_empty() || r.path.starts_with(&self.path))
            && (self.method.is_empty() || self.method.eq_ignore_ascii_case(&r.method))
            && (self.identity.is_empty()
                || r.identities.iter().any(|i| contains_ci(i, &self.identity)))
            && (self.resource.is_empty()
                || r.resources.iter().any(|i| contains_ci(i, &self.resource)))
            && (self.caller.is_empty()
                || r.peer.contains(&self.caller)
                || contains_ci(&r.user_agent, &self.caller))
    }
}

impl FaultAction {
    /// A short description, as recorded in hits.
    pub fn describe(&self) -> String {
        let base = match self.kind {
            FaultKind::HttpStatus => format!("http {}", self.http_status),
            FaultKind::GrpcStatus => format!("grpc {}", self.grpc_code),
            FaultKind::Latency => format!("latency {}ms", self.latency_ms),
            FaultKind::Close => "close".into(),
            FaultKind::Reset => "reset".into(),
            FaultKind::Malformed => "malformed".into(),
        };
        if self.latency_ms > 0 && self.kind != FaultKind::Latency {
            format!("{base} after {}ms", self.latency_ms)
        } else {
            base
        }
    }
}

/// splitmix64: small, seedable, and the same on every platform.
fn next_unit(state: &mut u64) -> f64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    (z >> 11) as f64 / (1u64 << 53) as f64
}

impl Faults {
    fn lock(&self) -> std::sync::MutexGuard<'_, State_> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether no rule exists (the middleware's fast path).
    pub fn is_empty(&self) -> bool {
        !self.any.load(Ordering::Relaxed)
    }

    /// Adds a rule at simulated time `now`.
    ///
    /// # Errors
    /// [`FaultError::Invalid`] when the action is incomplete (an HTTP status outside 100-599, no gRPC
    /// code, a latency fault without latency) or a bound is out of range.
    pub fn add(
        &self,
        matcher: FaultMatch,
        action: FaultAction,
        bounds: FaultBounds,
        now: i64,
    ) -> Result<FaultRule, FaultError> {
        let bad = |m: &str| Err(FaultError::Invalid(m.to_string()));
        match action.kind {
            FaultKind::HttpStatus if !(100..=599).contains(&action.http_status) => {
                return bad("an http fault needs --status between 100 and 599")
            }
            FaultKind::GrpcStatus if !(1..=16).contains(&action.grpc_code) => {
                return bad("a grpc fault needs --grpc-code between 1 and 16 (e.g. 14 UNAVAILABLE)")
            }
            FaultKind::Latency if action.latency_ms == 0 => {
                return bad("a latency fault needs --latency-ms above 0")
            }
            _ => {}
        }
        if !(0.0..=1.0).contains(&bounds.probability) {
            return bad("probability must be between 0 and 1");
        }
        if bounds.duration_secs < 0 {
            return bad("duration must not be negative");
        }
        if !matches!(
            matcher.endpoint.as_str(),
            "" | "imds" | "aad-token" | "arm-rest" | "grpc"
        ) {
            return bad("endpoint must be one of imds, aad-token, arm-rest, grpc");
        }
        let mut s = self.lock();
        s.next_id += 1;
        let rule = FaultRule {
            id: format!("f{}", s.next_id),
            matcher,
            action,
            bounds: bounds.clone(),
            hits: 0,
            considered: 0,
            created: now,
            active: true,
        };
        s.rules.push(RuleState {
            rule: rule.clone(),
            rng: bounds.seed,
        });
        self.any.store(true, Ordering::Relaxed);
        Ok(rule)
    }

    /// Every rule, with `active` evaluated at simulated time `now`.
    pub fn list(&self, now: i64) -> Vec<FaultRule> {
        let mut s = self.lock();
        s.rules
            .iter_mut()
            .map(|r| {
                r.refresh(now);
                r.rule.clone()
            })
            .collect()
    }

    /// Removes rule `id`, or every rule when `None`; with `clear_hits`, forgets recorded hits too.
    /// Returns how many rules were removed.
    ///
    /// # Errors
    /// [`FaultError::NotFound`] for an unknown id.
    pub fn clear(&self, id: Option<&str>, clear_hits: bool) -> Result<usize, FaultError> {
        let mut s = self.lock();
        let before = s.rules.len();
        match id {
            Some(id) => {
                s.rules.retain(|r| r.rule.id != id);
                if s.rules.len() == before {
                    return Err(FaultError::NotFound(id.to_string()));
                }
            }
            None => s.rules.clear(),
        }
        if clear_hits {
            s.hits.clear();
        }
        self.any.store(!s.rules.is_empty(), Ordering::Relaxed);
        Ok(before - s.rules.len())
    }

    /// Recorded injections, oldest first, of rule `rule_id` or all.
    pub fn hits(&self, rule_id: Option<&str>) -> Vec<FaultHit> {
        self.lock()
            .hits
            .iter()
            .filter(|h| rule_id.is_none_or(|id| h.rule_id == id))
            .cloned()
            .collect()
    }

    /// Whether some active rule matches on the identity or resource (the middleware then reads a
    /// form body to find them).
    fn needs_body(&self) -> bool {
        self.lock().rules.iter().any(|r| {
            r.rule.active
                && (!r.rule.matcher.identity.is_empty() || !r.rule.matcher.resource.is_empty())
        })
    }

    /// The action to inject for `req` at simulated time `now`, if any; the first active matching
    /// rule decides, and an injection is recorded.
    pub fn decide(&self, req: &RequestInfo, now: i64) -> Option<FaultAction> {
        let mut s = self.lock();
        let mut chosen = None;
        for r in s.rules.iter_mut() {
            r.refresh(now);
            if !r.rule.active || !r.rule.matcher.matches(req) {
                continue;
            }
            r.rule.considered += 1;
            let p = r.rule.bounds.probability;
            if p > 0.0 && p < 1.0 && next_unit(&mut r.rng) >= p {
                continue;
            }
            r.rule.hits += 1;
            r.refresh(now);
            chosen = Some((r.rule.id.clone(), r.rule.action.clone()));
            break;
        }
        let (rule_id, action) = chosen?;
        if s.hits.len() >= MAX_HITS {
            s.hits.pop_front();
        }
        let wall_unix_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0);
        s.hits.push_back(FaultHit {
            rule_id: rule_id.clone(),
            epoch_seconds: now,
            wall_unix_ms,
            party: req.party.clone(),
            method: req.method.clone(),
            path: req.path.clone(),
            caller: req.peer.clone(),
            action: action.describe(),
        });
        tracing::info!(rule = %rule_id, party = %req.party, path = %req.path, fault = %action.describe(), "fault injected");
        Some(action)
    }
}

impl RuleState {
    fn refresh(&mut self, now: i64) {
        let b = &self.rule.bounds;
        let spent = b.count > 0 && self.rule.hits >= u64::from(b.count);
        let expired = b.duration_secs > 0 && now >= self.rule.created + b.duration_secs;
        self.rule.active = !spent && !expired;
    }
}

/// Context of one listener's fault middleware.
#[derive(Clone)]
struct Ctx {
    clock: Clock,
    party: Arc<str>,
}

/// `router` with the fault middleware of `clock`'s registry, labelled `party` (`arm`, `aad`, `msrp`,
/// `host-1`, `host-1/vm:vm1`, see [`FaultMatch::party`]).
pub fn with_faults(router: axum::Router, clock: &Clock, party: &str) -> axum::Router {
    router.layer(axum::middleware::from_fn_with_state(
        Ctx {
            clock: clock.clone(),
            party: Arc::from(party),
        },
        middleware,
    ))
}

/// gRPC `routes` with the fault middleware (see [`with_faults`]).
pub fn grpc_with_faults(
    routes: tonic::service::Routes,
    clock: &Clock,
    party: &str,
) -> tonic::service::Routes {
    tonic::service::Routes::from(with_faults(routes.into_axum_router(), clock, party))
}

const IDENTITY_KEYS: [&str; 6] = [
    "client_id",
    "object_id",
    "principal_id",
    "msi_res_id",
    "mi_res_id",
    "resource_id",
];
const RESOURCE_KEYS: [&str; 2] = ["resource", "scope"];

fn collect(pairs: &[(String, String)], info: &mut RequestInfo) {
    for (k, v) in pairs {
        if IDENTITY_KEYS.contains(&k.as_str()) {
            info.identities.push(v.clone());
        } else if RESOURCE_KEYS.contains(&k.as_str()) {
            info.resources.push(v.clone());
        }
    }
}

async fn middleware(State(ctx): State<Ctx>, req: Request, next: Next) -> Response {
    let faults = ctx.clock.faults();
    // The simulation's own control (and recording) is never faulted: a rule must stay clearable.
    let path = req.uri().path();
    if faults.is_empty() || path.starts_with("/misim.sim.") || path.starts_with("/misim.events.") {
        return next.run(req).await;
    }
    let (parts, body) = req.into_parts();
    let content_type = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let peer = parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.to_string())
        .or_else(|| {
            parts
                .extensions
                .get::<tonic::transport::server::TcpConnectInfo>()
                .and_then(|c| c.remote_addr())
                .map(|a| a.to_string())
        })
        .unwrap_or_default();
    let mut info = RequestInfo {
        party: ctx.party.to_string(),
        method: parts.method.to_string(),
        path: parts.uri.path().to_string(),
        peer,
        user_agent: parts
            .headers
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string(),
        grpc: content_type.starts_with("application/grpc"),
        ..RequestInfo::default()
    };
    if let Some(q) = parts.uri.query() {
        let pairs: Vec<(String, String)> = serde_urlencoded::from_str(q).unwrap_or_default();
        collect(&pairs, &mut info);
    }
    let body = if !info.grpc
        && content_type.starts_with("application/x-www-form-urlencoded")
        && faults.needs_body()
    {
        match axum::body::to_bytes(body, 1 << 20).await {
            Ok(bytes) => {
                let pairs: Vec<(String, String)> =
                    serde_urlencoded::from_bytes(&bytes).unwrap_or_default();
                collect(&pairs, &mut info);
                Body::from(bytes)
            }
            Err(_) => {
                return azure_error(&info, StatusCode::PAYLOAD_TOO_LARGE, 0, "request too large")
            }
        }
    } else {
        body
    };
    let req = Request::from_parts(parts, body);
    let Some(action) = faults.decide(&info, ctx.clock.now()) else {
        return next.run(req).await;
    };
    if action.latency_ms > 0 {
        tokio::time::sleep(Duration::from_millis(action.latency_ms)).await;
    }
    let marker = InjectedFault(action.describe());
    let mut response = match action.kind {
        FaultKind::Latency => next.run(req).await,
        FaultKind::HttpStatus => {
            let status = StatusCode::from_u16(action.http_status)
                .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            if action.body.is_empty() {
                azure_error(&info, status, action.retry_after_secs, &action.message)
            } else {
                let mut r = Response::new(Body::from(action.body.clone()));
                *r.status_mut() = status;
                r.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json; charset=utf-8"),
                );
                retry_after(&mut r, action.retry_after_secs);
                r
            }
        }
        FaultKind::GrpcStatus => {
            let msg = if action.message.is_empty() {
                "injected fault".to_string()
            } else {
                action.message.clone()
            };
            tonic::Status::new(tonic::Code::from_i32(action.grpc_code), msg).into_http::<Body>()
        }
        FaultKind::Close => aborting(StatusCode::OK, None),
        FaultKind::Reset => aborting(StatusCode::OK, Some("{\"access_token\":\"eyJ0eXAiOiJKV1Qi")),
        FaultKind::Malformed => {
            let mut r = Response::new(Body::from(
                "{\"access_token\":\"eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1NiJ9.eyJhdWQi",
            ));
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json; charset=utf-8"),
            );
            r
        }
    };
    response.extensions_mut().insert(marker);
    response
}

/// Response extension on every answer a fault shaped (e.g. `http 429`), for layers outside the
/// router such as request recording.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InjectedFault(pub String);

/// A response whose body fails: the server aborts the connection (before any byte with `prefix`
/// `None`, after the status line and `prefix` otherwise).
fn aborting(status: StatusCode, prefix: Option<&'static str>) -> Response {
    let fail = futures_util::stream::once(async {
        Err::<Bytes, std::io::Error>(std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            "injected fault: connection aborted",
        ))
    });
    let body = match prefix {
        None => Body::from_stream(fail),
        Some(p) => {
            let first =
                futures_util::stream::once(async move { Ok(Bytes::from_static(p.as_bytes())) });
            // A pause after the first bytes: the server flushes them before the connection aborts.
            let pause = futures_util::stream::once(async {
                tokio::time::sleep(Duration::from_millis(20)).await;
                Ok(Bytes::new())
            });
            let rest = futures_util::StreamExt::chain(pause, fail);
            Body::from_stream(futures_util::StreamExt::chain(first, rest))
        }
    };
    let mut r = Response::new(body);
    *r.status_mut() = status;
    if prefix.is_some() {
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json; charset=utf-8"),
        );
        // Announce more than is sent, so the cut is visible to the client.
        r.headers_mut()
            .insert(header::CONTENT_LENGTH, HeaderValue::from_static("1024"));
    }
    r
}

fn retry_after(r: &mut Response, secs: u32) {
    if secs > 0 {
        if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
            r.headers_mut().insert(header::RETRY_AFTER, v);
        }
    }
}

/// The surface's error answer for `status`: IMDS, Azure AD or ARM shape by the receiving endpoint.
fn azure_error(info: &RequestInfo, status: StatusCode, retry: u32, message: &str) -> Response {
    let json = |v: serde_json::Value| v.to_string();
    let (body, content_type, retry) = match info.endpoint() {
        "imds" => {
            let (error, description) = match status.as_u16() {
                404 => ("not_found", "IMDS endpoint is updating"),
                410 => (
                    "gone",
                    "IMDS is updating and will be available within 70 seconds",
                ),
                429 => (
                    "invalid_request",
                    "Temporarily throttled, too many requests",
                ),
                500 => (
                    "unknown",
                    "Failed to retrieve token from the Active directory",
                ),
                503 => ("service_unavailable", "IMDS is temporarily unavailable"),
                s if s >= 500 => (
                    "unknown",
                    "Transient error from the managed identity service",
                ),
                _ => ("invalid_request", "The request could not be served"),
            };
            let description = if message.is_empty() {
                description
            } else {
                message
            };
            (
                json(serde_json::json!({"error": error, "error_description": description})),
                "application/json; charset=utf-8",
                retry,
            )
        }
        "aad-token" | "" if info.party == "aad" => {
            if status == StatusCode::TOO_MANY_REQUESTS && message.is_empty() {
                (
                    "Too Many Requests".to_string(),
                    "text/plain; charset=utf-8",
                    if retry == 0 { 60 } else { retry },
                )
            } else {
                let (error, code, text) = match status.as_u16() {
                    429 => ("temporarily_unavailable", 90055, "Too many requests"),
                    503 => (
                        "temporarily_unavailable",
                        90033,
                        "A transient error has occurred. Please try again.",
                    ),
                    s if s >= 500 => ("server_error", 90015, "An internal error occurred."),
                    _ => (
                        "invalid_request",
                        900144,
                        "The request could not be served.",
                    ),
                };
                let text = if message.is_empty() { text } else { message };
                let trace = uuid::Uuid::new_v4();
                let corr = uuid::Uuid::new_v4();
                (
                    json(serde_json::json!({
                        "error": error,
                        "error_description": format!("AADSTS{code}: {text}\r\nTrace ID: {trace}\r\nCorrelation ID: {corr}"),
                        "error_codes": [code],
                        "trace_id": trace.to_string(),
                        "correlation_id": corr.to_string(),
                        "error_uri": format!("https://login.microsoftonline.com/error?code={code}"),
                    })),
                    "application/json; charset=utf-8",
                    retry,
                )
            }
        }
        _ => {
            let (code, text) = match status.as_u16() {
                404 => ("NotFound", "The resource was not found."),
                409 => (
                    "Conflict",
                    "The request conflicts with the resource's state.",
                ),
                429 => (
                    "TooManyRequests",
                    "The request is being throttled; retry after the Retry-After interval.",
                ),
                503 => (
                    "ServiceUnavailable",
                    "The service is temporarily unavailable.",
                ),
                s if s >= 500 => ("InternalServerError", "An internal error occurred."),
                _ => ("BadRequest", "The request could not be served."),
            };
            let text = if message.is_empty() { text } else { message };
            (
                json(serde_json::json!({"error": {"code": code, "message": text}})),
                "application/json; charset=utf-8",
                retry,
            )
        }
    };
    let mut r = Response::new(Body::from(body));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    retry_after(&mut r, retry);
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn http(status: u16) -> FaultAction {
        FaultAction {
            kind: FaultKind::HttpStatus,
            http_status: status,
            retry_after_secs: 0,
            body: String::new(),
            grpc_code: 0,
            message: String::new(),
            latency_ms: 0,
        }
    }

    fn imds_req() -> RequestInfo {
        RequestInfo {
            party: "host-1/vm:vm1".into(),
            method: "GET".into(),
            path: "/metadata/identity/oauth2/token".into(),
            identities: vec!["ABC-client".into()],
            resources: vec!["https://management.azure.com/".into()],
            ..RequestInfo::default()
        }
    }

    #[test]
    fn count_bound_stops_after_n_and_hits_are_recorded() {
        let f = Faults::default();
        let rule = f
            .add(
                FaultMatch {
                    party: "vm:vm1".into(),
                    endpoint: "imds".into(),
                    identity: "abc".into(),
                    ..Default::default()
                },
                http(410),
                FaultBounds {
                    count: 2,
                    ..Default::default()
                },
                0,
            )
            .unwrap();
        assert!(f.decide(&imds_req(), 0).is_some());
        assert!(f.decide(&imds_req(), 0).is_some());
        assert!(f.decide(&imds_req(), 0).is_none());
        assert_eq!(f.hits(Some(&rule.id)).len(), 2);
        assert!(!f.list(0)[0].active);
    }

    #[test]
    fn party_host_matches_its_vms_and_duration_uses_the_simulated_clock() {
        let f = Faults::default();
        f.add(
            FaultMatch {
                party: "host-1".into(),
                ..Default::default()
            },
            http(500),
            FaultBounds {
                duration_secs: 60,
                ..Default::default()
            },
            100,
        )
        .unwrap();
        assert!(f.decide(&imds_req(), 159).is_some());
        assert!(f.decide(&imds_req(), 160).is_none());
    }

    #[test]
    fn probability_is_repeatable_with_a_seed() {
        let run = || {
            let f = Faults::default();
            f.add(
                FaultMatch::default(),
                http(503),
                FaultBounds {
                    probability: 0.5,
                    seed: 42,
                    ..Default::default()
                },
                0,
            )
            .unwrap();
            (0..64)
                .map(|_| f.decide(&imds_req(), 0).is_some())
                .collect::<Vec<_>>()
        };
        let a = run();
        assert_eq!(a, run());
        let n = a.iter().filter(|x| **x).count();
        assert!((16..=48).contains(&n), "{n} of 64");
    }

    #[test]
    fn invalid_rules_are_refused() {
        let f = Faults::default();
        assert!(f
            .add(FaultMatch::default(), http(700), FaultBounds::default(), 0)
            .is_err());
        assert!(matches!(
            f.clear(Some("f9"), false),
            Err(FaultError::NotFound(_))
        ));
    }
}
