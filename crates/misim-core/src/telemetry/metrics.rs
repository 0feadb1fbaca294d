//! The process-wide Prometheus registry and the `/metrics` text
//! (<https://prometheus.io/docs/instrumenting/exposition_formats/#text-based-format>).
//!
//! Every metric is labelled with the `party` that counted it, so under `misim up` (every party in
//! one process, one registry) each party's series stay apart. Gauges (identities, VMs, hosts) are
//! read when scraped from the sources parties register with [`register_gauge`].

use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry, TextEncoder,
};

/// Every metric misim exports.
pub struct Metrics {
    registry: Registry,
    /// `misim_requests_total{party,endpoint,status,vm}`.
    pub requests: IntCounterVec,
    /// `misim_request_duration_seconds{party,endpoint}`.
    pub latency: HistogramVec,
    /// `misim_imds_token_cache_total{party,result="hit"|"miss"}`.
    pub imds_cache: IntCounterVec,
    /// `misim_aad_tokens_issued_total{party,resource,grant_type}`.
    pub tokens_issued: IntCounterVec,
    /// `misim_aad_assertion_failures_total{party,code}` (AADSTS code).
    pub assertion_failures: IntCounterVec,
    /// `misim_throttled_requests_total{party,category}`.
    pub throttled: IntCounterVec,
    /// `misim_certificate_renewals_total{party}`.
    pub cert_renewals: IntCounterVec,
    /// `misim_signing_key_rotations_total{party}`.
    pub key_rotations: IntCounterVec,
}

fn counter(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric definition");
    r.register(Box::new(c.clone()))
        .expect("metric registered once");
    c
}

/// The registry (made on first use).
pub fn get() -> &'static Metrics {
    static M: OnceLock<Metrics> = OnceLock::new();
    M.get_or_init(|| {
        let registry = Registry::new();
        let latency = HistogramVec::new(
            HistogramOpts::new(
                "misim_request_duration_seconds",
                "Time to answer a request, by party and endpoint.",
            )
            .buckets(vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
            ]),
            &["party", "endpoint"],
        )
        .expect("valid histogram");
        registry
            .register(Box::new(latency.clone()))
            .expect("metric registered once");
        registry
            .register(Box::new(Gauges))
            .expect("metric registered once");
        Metrics {
            requests: counter(
                &registry,
                "misim_requests_total",
                "Requests answered, by party, endpoint, status and VM.",
                &["party", "endpoint", "status", "vm"],
            ),
            latency,
            imds_cache: counter(
                &registry,
                "misim_imds_token_cache_total",
                "IMDS token cache lookups, by result (hit or miss).",
                &["party", "result"],
            ),
            tokens_issued: counter(
                &registry,
                "misim_aad_tokens_issued_total",
                "Access tokens Azure AD issued, by resource and grant type.",
                &["party", "resource", "grant_type"],
            ),
            assertion_failures: counter(
                &registry,
                "misim_aad_assertion_failures_total",
                "Token requests Azure AD refused, by AADSTS code.",
                &["party", "code"],
            ),
            throttled: counter(
                &registry,
                "misim_throttled_requests_total",
                "Requests refused with 429 by IMDS throttling, by category.",
                &["party", "category"],
            ),
            cert_renewals: counter(
                &registry,
                "misim_certificate_renewals_total",
                "Identity certificates MSRP renewed.",
                &["party"],
            ),
            key_rotations: counter(
                &registry,
                "misim_signing_key_rotations_total",
                "Token-signing keys Azure AD made: its first key, then one per rotation.",
                &["party"],
            ),
            registry,
        }
    })
}

/// Counts a request (called by the server layer).
pub fn observe_request(party: &str, endpoint: &str, status: &str, vm: &str, took: Duration) {
    let m = get();
    m.requests
        .with_label_values(&[party, endpoint, status, vm])
        .inc();
    m.latency
        .with_label_values(&[party, endpoint])
        .observe(took.as_secs_f64());
}

type GaugeFn = Arc<dyn Fn() -> Option<Vec<(String, f64)>> + Send + Sync>;

/// A gauge source: `name{party, kind}` values read at scrape time.
struct Source {
    party: String,
    read: GaugeFn,
}

static SOURCES: Mutex<Vec<Source>> = Mutex::new(Vec::new());

/// Registers a gauge source of `party`: at each scrape, `read` returns `(kind, value)` pairs,
/// exported as `misim_resources{party, kind}` (`kind` e.g. `identities`, `vms`, `hosts`), or `None`
/// once the party has stopped (the source is then dropped). Values of several live sources of one
/// party (several systems in one test process) are added up.
pub fn register_gauge(
    party: &str,
    read: impl Fn() -> Option<Vec<(String, f64)>> + Send + Sync + 'static,
) {
    let mut g = SOURCES.lock().unwrap_or_else(|p| p.into_inner());
    g.push(Source {
        party: party.to_string(),
        read: Arc::new(read),
    });
}

/// The collector of the registered gauge sources.
struct Gauges;

const GAUGE_NAME: &str = "misim_resources";
const GAUGE_HELP: &str = "Resources a party holds now, by kind (identities, vms, hosts, …).";

impl Collector for Gauges {
    fn desc(&self) -> Vec<&Desc> {
        Vec::new()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let sources: Vec<(String, GaugeFn)> = SOURCES
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|s| (s.party.clone(), s.read.clone()))
            .collect();
        let gauge =
            prometheus::GaugeVec::new(Opts::new(GAUGE_NAME, GAUGE_HELP), &["party", "kind"])
                .expect("valid gauge");
        let mut gone: Vec<&GaugeFn> = Vec::new();
        for (party, read) in &sources {
            match read() {
                Some(values) => {
                    for (kind, value) in values {
                        gauge
                            .with_label_values(&[party.as_str(), kind.as_str()])
                            .add(value);
                    }
                }
                None => gone.push(read),
            }
        }
        if !gone.is_empty() {
            let mut g = SOURCES.lock().unwrap_or_else(|p| p.into_inner());
            g.retain(|s| !gone.iter().any(|d| Arc::ptr_eq(d, &s.read)));
        }
        gauge.collect()
    }
}

/// The Prometheus text of every metric.
pub fn render() -> String {
    let families = get().registry.gather();
    let mut out = Vec::new();
    let _ = TextEncoder::new().encode(&families, &mut out);
    String::from_utf8(out).unwrap_or_default()
}

/// The `Content-Type` of [`render`]'s text.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// `/metrics` (Prometheus text) and `/debug/traces` (this process' spans as JSON, for `misim trace
/// show`): merge into a party's HTTP router, or serve alone on a metrics listener.
pub fn router() -> axum::Router {
    use axum::routing::get;
    axum::Router::new()
        .route(
            "/metrics",
            get(|| async { ([(axum::http::header::CONTENT_TYPE, CONTENT_TYPE)], render()) }),
        )
        .route(
            "/debug/traces",
            get(|| async { axum::Json(super::store::all()) }),
        )
}
