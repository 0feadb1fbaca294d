//! Observability shared by every party: distributed traces, Prometheus metrics and log setup.
//!
//! - **Traces.** `tracing` spans are turned into OpenTelemetry spans by `tracing-opentelemetry`
//!   (<https://docs.rs/tracing-opentelemetry/0.32.1>). Every finished span goes to a bounded
//!   in-memory [`store`] (the last [`store::MAX_TRACES`] flows of this process, for `misim trace
//!   show` and ARM's console) and, when an OTLP endpoint is configured, to OpenTelemetry's OTLP
//!   exporter (HTTP/protobuf, <https://opentelemetry.io/docs/specs/otlp/#otlphttp>). The W3C
//!   `traceparent` header (<https://www.w3.org/TR/trace-context/>) carries a flow across every gRPC
//!   and HTTP hop: [`propagation`] injects it into outgoing calls and the server layer of
//!   [`crate::serve`] extracts it.
//! - **Flow steps.** [`step_span`] opens the span of one of the seven steps with the standard
//!   attributes (`party`, `vm`, `identity`, `resource`, `outcome`).
//! - **Metrics.** [`metrics`] holds the process-wide Prometheus registry and renders `/metrics`.
//! - **Logs.** [`init`] installs the subscriber: text or JSON lines, each line of a flow carrying
//!   its `trace_id` (a field of the request's server span).

pub mod metrics;
pub mod propagation;
pub mod render;
pub mod store;

use std::sync::OnceLock;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing::Span;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// The tracing target of flow spans (server spans and step spans); always enabled for the trace
/// layers whatever the log filter.
pub const TARGET: &str = "misim::flow";

/// Names of the seven steps of the managed-identity flow, index = step number (0 unused).
/// The steps as Microsoft Learn describes them for a VM:
/// <https://learn.microsoft.com/entra/identity/managed-identities-azure-resources/how-managed-identities-work-vm>.
pub const STEP_NAMES: [&str; 8] = [
    "",
    "step 1: enable identity (ARM)",
    "step 2: create service principal and certificate (MSRP, Azure AD)",
    "step 3: configure the host with the identity",
    "step 4: role assignment",
    "step 5: token request to IMDS",
    "step 6: token from Azure AD (client assertion)",
    "step 7: call a protected resource",
];

/// Short labels of the steps (diagram arrows).
pub const STEP_LABELS: [&str; 8] = [
    "",
    "enable identity",
    "create identity",
    "configure host",
    "role assignment",
    "token request",
    "token from Azure AD",
    "protected call",
];

/// Log line format.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines (ANSI colours on a terminal).
    #[default]
    Text,
    /// One JSON object per line, with the current span's fields (`trace_id` among them).
    Json,
}

impl std::str::FromStr for LogFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            other => Err(format!("unknown log format {other:?}: use text or json")),
        }
    }
}

/// How to set up telemetry for a process.
#[derive(Clone, Debug, Default)]
pub struct TelemetryConfig {
    /// `tracing` filter of the log lines (e.g. `info`, `misim_imds=debug`).
    pub log_filter: String,
    /// Text or JSON lines.
    pub log_format: LogFormat,
    /// OTLP/HTTP endpoint (`http://127.0.0.1:4318`); `None` reads `OTEL_EXPORTER_OTLP_ENDPOINT`.
    pub otlp_endpoint: Option<String>,
    /// `service.name` of the exported spans.
    pub service_name: String,
    /// Record flows (in memory, and OTLP when configured); false for client verbs.
    pub traces: bool,
    /// Write log lines to the test harness' captured output instead of stderr.
    pub test_writer: bool,
}

static PROVIDER: OnceLock<SdkTracerProvider> = OnceLock::new();

/// The OTLP endpoint in use: `explicit`, else `OTEL_EXPORTER_OTLP_ENDPOINT`, else none.
pub fn otlp_endpoint(explicit: Option<&str>) -> Option<String> {
    explicit
        .map(str::to_string)
        .or_else(|| std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT").ok())
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

/// Builds the OpenTelemetry tracer provider: the in-memory store always, the OTLP exporter
/// (HTTP/protobuf to `{endpoint}/v1/traces`, batched, no proxy) when an endpoint is given.
///
/// # Errors
/// A message when the OTLP exporter cannot be built (malformed endpoint).
pub fn tracer_provider(
    otlp: Option<&str>,
    service_name: &str,
) -> Result<SdkTracerProvider, String> {
    use opentelemetry_otlp::{WithExportConfig, WithHttpConfig};
    let resource = opentelemetry_sdk::Resource::builder()
        .with_service_name(service_name.to_string())
        .build();
    let mut builder = SdkTracerProvider::builder()
        .with_resource(resource)
        .with_span_processor(store::StoreProcessor);
    if let Some(endpoint) = otlp {
        let url = format!("{}/v1/traces", endpoint.trim_end_matches('/'));
        // The blocking client owns a runtime: build it off any async context.
        // reqwest 0.12 has no TLS provider of its own here: it uses the process' (aws-lc-rs).
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let client = std::thread::spawn(|| {
            reqwest_otlp::blocking::Client::builder()
                .no_proxy()
                .timeout(std::time::Duration::from_secs(10))
                .build()
        })
        .join()
        .map_err(|_| "cannot start the OTLP http client".to_string())?
        .map_err(|e| format!("OTLP http client: {e}"))?;
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_http_client(client)
            .with_endpoint(url.clone())
            .build()
            .map_err(|e| format!("OTLP exporter for {url}: {e}"))?;
        builder = builder.with_batch_exporter(exporter);
    }
    Ok(builder.build())
}

/// Installs the process' subscriber: log lines (text or JSON, filtered by `log_filter`) and, when
/// `traces` is set, the OpenTelemetry layer feeding the in-memory store and the OTLP exporter.
/// Installs the W3C trace-context propagator. A second call is a no-op (tests start many systems).
///
/// # Errors
/// A message when the OTLP exporter cannot be built.
pub fn init(cfg: &TelemetryConfig) -> Result<(), String> {
    opentelemetry::global::set_text_map_propagator(
        opentelemetry_sdk::propagation::TraceContextPropagator::new(),
    );
    let log_filter = EnvFilter::try_new(&cfg.log_filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let otel = if cfg.traces {
        let endpoint = otlp_endpoint(cfg.otlp_endpoint.as_deref());
        let provider = match PROVIDER.get() {
            Some(p) => p.clone(),
            None => {
                let p = tracer_provider(endpoint.as_deref(), &cfg.service_name)?;
                let _ = PROVIDER.set(p.clone());
                if let Some(e) = &endpoint {
                    eprintln!("misim: exporting traces with OTLP/HTTP to {e}/v1/traces");
                }
                p
            }
        };
        let tracer = provider.tracer("misim");
        let filter =
            tracing_subscriber::filter::Targets::new().with_target(TARGET, tracing::Level::INFO);
        Some(
            tracing_opentelemetry::layer()
                .with_tracer(tracer)
                .with_filter(filter),
        )
    } else {
        None
    };
    let ansi = !cfg.test_writer && std::io::IsTerminal::is_terminal(&std::io::stderr());
    let fmt = match (cfg.log_format, cfg.test_writer) {
        (LogFormat::Json, _) => tracing_subscriber::fmt::layer()
            .json()
            .with_current_span(true)
            .with_span_list(true)
            .with_writer(std::io::stderr)
            .with_filter(log_filter)
            .boxed(),
        (LogFormat::Text, true) => tracing_subscriber::fmt::layer()
            .with_test_writer()
            .with_filter(log_filter)
            .boxed(),
        (LogFormat::Text, false) => tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_ansi(ansi)
            .with_filter(log_filter)
            .boxed(),
    };
    let _ = tracing_subscriber::registry()
        .with(otel)
        .with(fmt)
        .try_init();
    Ok(())
}

/// Flushes the OTLP exporter (at exit), waiting at most a few seconds.
pub fn shutdown() {
    if let Some(p) = PROVIDER.get() {
        let _ = p.force_flush();
    }
}

/// The W3C trace ID (32 hex digits) of `span`, if it belongs to a recorded trace.
pub fn trace_id_of(span: &Span) -> Option<String> {
    use opentelemetry::trace::TraceContextExt;
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    let cx = span.context();
    let sc = cx.span().span_context().clone();
    sc.is_valid().then(|| sc.trace_id().to_string())
}

/// Opens the span of flow step `step` (1–7) in `party` (`arm`, `msrp`, `aad`, `imds`, `host-1`, …)
/// with the standard attributes declared: record `vm`, `identity`, `resource` with
/// [`Span::record`] and the result with [`record_outcome`]. The span is named after the step
/// ([`STEP_NAMES`]).
pub fn step_span(step: u8, party: &str) -> Span {
    let name = STEP_NAMES.get(step as usize).copied().unwrap_or("step");
    tracing::info_span!(
        target: TARGET,
        "flow_step",
        otel.name = name,
        step = step as i64,
        party = party,
        vm = tracing::field::Empty,
        host = tracing::field::Empty,
        identity = tracing::field::Empty,
        principal = tracing::field::Empty,
        resource = tracing::field::Empty,
        outcome = tracing::field::Empty,
        otel.status_code = tracing::field::Empty,
    )
}

/// Records `outcome` (`success` or the error) and the OpenTelemetry status on a step span.
pub fn record_outcome<T, E: std::fmt::Display>(span: &Span, result: &Result<T, E>) {
    match result {
        Ok(_) => {
            span.record("outcome", "success");
            span.record("otel.status_code", "OK");
        }
        Err(e) => {
            let text = e.to_string();
            let short: String = text.chars().take(160).collect();
            span.record("outcome", short.as_str());
            span.record("otel.status_code", "ERROR");
        }
    }
}

/// Records the VM a request is about: on the step span (`vm` attribute) and for the request's
/// metrics label.
pub fn record_vm(span: &Span, vm: &str) {
    span.record("vm", vm);
    propagation::note_vm(vm);
}
