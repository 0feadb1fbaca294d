//! The in-memory span store: every finished span of this process, grouped by trace, for `misim
//! trace show` and ARM's console. Bounded: the last [`MAX_TRACES`] flows (traces with a step span)
//! and, apart, the last [`MAX_OTHER_TRACES`] other traces (so a burst of plain requests never pushes
//! a flow out), the oldest dropped first, with at most [`MAX_SPANS_PER_TRACE`] spans each. One store per process: under
//! `misim up` every party shares it; parties run alone each keep their own, merged by trace ID
//! when read ([`merge`]).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use opentelemetry::Value;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{SpanData, SpanProcessor};
use serde::{Deserialize, Serialize};

/// Flows (traces with at least one step span) kept per process.
pub const MAX_TRACES: usize = 500;
/// Other traces (requests outside the seven steps) kept per process.
pub const MAX_OTHER_TRACES: usize = 200;
/// Spans kept per trace.
pub const MAX_SPANS_PER_TRACE: usize = 256;

/// One finished span, as kept in memory and served as JSON.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct SpanRecord {
    /// W3C trace ID, 32 hex digits.
    pub trace_id: String,
    /// Span ID, 16 hex digits.
    pub span_id: String,
    /// Parent span ID (possibly in another process), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_id: Option<String>,
    /// Span name (a step name for step spans, `GET /path` or `/pkg.Service/Rpc` for server spans).
    pub name: String,
    /// `server` for an incoming request, `internal` otherwise.
    pub kind: String,
    /// Start, microseconds since the Unix epoch.
    pub start_us: u64,
    /// Duration, microseconds.
    pub duration_us: u64,
    /// `OK`, `ERROR` or `UNSET`.
    pub status: String,
    /// Attributes (`party`, `step`, `vm`, `identity`, `resource`, `outcome`, `call`, `result`, …).
    pub attributes: BTreeMap<String, String>,
}

impl SpanRecord {
    /// An attribute's value.
    pub fn attr(&self, key: &str) -> Option<&str> {
        self.attributes.get(key).map(String::as_str)
    }

    /// The step number of a step span.
    pub fn step(&self) -> Option<u8> {
        self.attr("step").and_then(|s| s.parse().ok())
    }
}

#[derive(Default)]
struct Inner {
    /// Flow trace IDs, oldest first.
    flows: VecDeque<String>,
    /// Other trace IDs, oldest first.
    others: VecDeque<String>,
    traces: HashMap<String, Vec<SpanRecord>>,
    /// Bumped on every insert: the console polls it to refresh only when something changed.
    version: u64,
}

static STORE: Mutex<Option<Inner>> = Mutex::new(None);

fn with<R>(f: impl FnOnce(&mut Inner) -> R) -> R {
    let mut guard = STORE.lock().unwrap_or_else(|p| p.into_inner());
    f(guard.get_or_insert_with(Inner::default))
}

/// Adds a finished span.
pub fn insert(span: SpanRecord) {
    with(|s| {
        s.version += 1;
        let id = span.trace_id.clone();
        let is_step = span.step().is_some();
        match s.traces.get_mut(&id) {
            Some(spans) => {
                if spans.len() < MAX_SPANS_PER_TRACE {
                    spans.push(span);
                }
                // A trace becomes a flow when its first step span ends.
                if is_step {
                    if let Some(at) = s.others.iter().position(|t| *t == id) {
                        s.others.remove(at);
                        s.push(true, id);
                    }
                }
            }
            None => {
                s.traces.insert(id.clone(), vec![span]);
                s.push(is_step, id);
            }
        }
    });
}

impl Inner {
    /// Files `id` as a flow or another trace, dropping the oldest of its kind beyond the bound.
    fn push(&mut self, flow: bool, id: String) {
        let (queue, max) = if flow {
            (&mut self.flows, MAX_TRACES)
        } else {
            (&mut self.others, MAX_OTHER_TRACES)
        };
        queue.push_back(id);
        if queue.len() > max {
            if let Some(old) = queue.pop_front() {
                self.traces.remove(&old);
            }
        }
    }
}

/// Every span kept, oldest trace first.
pub fn all() -> Vec<SpanRecord> {
    with(|s| {
        s.others
            .iter()
            .chain(s.flows.iter())
            .filter_map(|t| s.traces.get(t))
            .flatten()
            .cloned()
            .collect()
    })
}

/// The spans of one trace.
pub fn trace(trace_id: &str) -> Vec<SpanRecord> {
    with(|s| s.traces.get(trace_id).cloned().unwrap_or_default())
}

/// A counter that changes whenever a span is added.
pub fn version() -> u64 {
    with(|s| s.version)
}

/// Groups spans (from one or several processes) by trace ID, dropping duplicates; each trace's
/// spans sorted by start time, traces by their first span's start.
pub fn merge(spans: impl IntoIterator<Item = SpanRecord>) -> Vec<Vec<SpanRecord>> {
    let mut by_trace: HashMap<String, Vec<SpanRecord>> = HashMap::new();
    for s in spans {
        let v = by_trace.entry(s.trace_id.clone()).or_default();
        if !v.iter().any(|o| o.span_id == s.span_id) {
            v.push(s);
        }
    }
    let mut traces: Vec<Vec<SpanRecord>> = by_trace.into_values().collect();
    for t in &mut traces {
        t.sort_by_key(|s| (s.start_us, std::cmp::Reverse(s.duration_us)));
    }
    traces.sort_by_key(|t| t.first().map(|s| s.start_us).unwrap_or(0));
    traces
}

fn micros(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_micros() as u64
}

fn value_text(v: &Value) -> String {
    v.as_str().into_owned()
}

/// Converts an OpenTelemetry span.
pub fn record_of(span: &SpanData) -> SpanRecord {
    let parent = span.parent_span_id;
    let attributes: BTreeMap<String, String> = span
        .attributes
        .iter()
        .filter(|kv| {
            !kv.key.as_str().starts_with("code.") && !kv.key.as_str().starts_with("thread.")
        })
        .map(|kv| (kv.key.as_str().to_string(), value_text(&kv.value)))
        .collect();
    let kind = match span.span_kind {
        opentelemetry::trace::SpanKind::Server => "server",
        opentelemetry::trace::SpanKind::Client => "client",
        _ => "internal",
    };
    let status = match &span.status {
        opentelemetry::trace::Status::Ok => "OK",
        opentelemetry::trace::Status::Error { .. } => "ERROR",
        opentelemetry::trace::Status::Unset => "UNSET",
    };
    SpanRecord {
        trace_id: span.span_context.trace_id().to_string(),
        span_id: span.span_context.span_id().to_string(),
        parent_id: (parent != opentelemetry::trace::SpanId::INVALID).then(|| parent.to_string()),
        name: span.name.to_string(),
        kind: kind.to_string(),
        start_us: micros(span.start_time),
        duration_us: span
            .end_time
            .duration_since(span.start_time)
            .unwrap_or(Duration::ZERO)
            .as_micros() as u64,
        status: status.to_string(),
        attributes,
    }
}

/// The span processor that feeds the store.
#[derive(Debug)]
pub struct StoreProcessor;

impl SpanProcessor for StoreProcessor {
    fn on_start(&self, _span: &mut opentelemetry_sdk::trace::Span, _cx: &opentelemetry::Context) {}

    fn on_end(&self, span: SpanData) {
        insert(record_of(&span));
    }

    fn force_flush(&self) -> OTelSdkResult {
        Ok(())
    }

    fn shutdown_with_timeout(&self, _timeout: Duration) -> OTelSdkResult {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn span(trace: &str, id: &str, step: Option<u8>) -> SpanRecord {
        let mut attributes = BTreeMap::new();
        if let Some(n) = step {
            attributes.insert("step".to_string(), n.to_string());
        }
        SpanRecord {
            trace_id: trace.into(),
            span_id: id.into(),
            parent_id: None,
            name: id.into(),
            kind: "internal".into(),
            start_us: 0,
            duration_us: 0,
            status: "UNSET".into(),
            attributes,
        }
    }

    #[test]
    fn plain_requests_never_push_flows_out_and_both_stay_bounded() {
        let tag = uuid::Uuid::new_v4().simple().to_string();
        let flow = format!("{tag}-flow");
        insert(span(&flow, "a", None));
        insert(span(&flow, "b", Some(5)));
        for i in 0..(MAX_OTHER_TRACES + 50) {
            insert(span(&format!("{tag}-other-{i}"), "x", None));
        }
        assert_eq!(trace(&flow).len(), 2, "the flow is kept");
        let mine: Vec<SpanRecord> = all()
            .into_iter()
            .filter(|s| s.trace_id.starts_with(&tag))
            .collect();
        assert!(mine.len() <= MAX_OTHER_TRACES + 2);
        assert!(
            trace(&format!("{tag}-other-0")).is_empty(),
            "the oldest plain trace is dropped"
        );
        let merged = merge(vec![
            span("t", "1", None),
            span("t", "1", None),
            span("t", "2", None),
        ]);
        assert_eq!(merged.len(), 1);
        assert_eq!(merged[0].len(), 2, "duplicates dropped");
    }
}
