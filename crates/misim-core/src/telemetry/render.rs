//! Sequence diagrams of flows: one arrow per call between parties (a server span and the party
//! that made the call), labelled with the step number, the call, its result and latency. Rendered
//! as Mermaid (<https://mermaid.js.org/syntax/sequenceDiagram.html>), plain text or SVG.

use std::collections::HashMap;

use serde::Serialize;

use super::store::SpanRecord;
use super::STEP_LABELS;

/// One arrow of a diagram.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Arrow {
    /// Calling party (display name).
    pub from: String,
    /// Called party (display name).
    pub to: String,
    /// Step of the managed-identity flow (1–7), when the call belongs to one.
    pub step: Option<u8>,
    /// The call: `GET /path` or `/pkg.Service/Rpc`.
    pub call: String,
    /// HTTP status or gRPC status name.
    pub result: String,
    /// Server-side latency, milliseconds.
    pub latency_ms: f64,
    /// Start, microseconds since the Unix epoch.
    pub start_us: u64,
    /// Trace the call belongs to.
    pub trace_id: String,
}

/// A flow to draw: one or more traces' arrows in time order.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Diagram {
    /// Title (what the flow is).
    pub title: String,
    /// Trace IDs drawn.
    pub trace_ids: Vec<String>,
    /// The arrows.
    pub arrows: Vec<Arrow>,
}

/// Display name of a party attribute.
pub fn display_party(p: &str) -> String {
    match p {
        "arm" => "ARM".into(),
        "msrp" => "MSRP".into(),
        "aad" => "Azure AD".into(),
        "imds" => "IMDS".into(),
        other => other.to_string(),
    }
}

/// The arrows of one trace's spans.
pub fn arrows(spans: &[SpanRecord]) -> Vec<Arrow> {
    let by_id: HashMap<&str, &SpanRecord> = spans.iter().map(|s| (s.span_id.as_str(), s)).collect();
    let parent = |s: &SpanRecord| s.parent_id.as_deref().and_then(|p| by_id.get(p).copied());
    // The nearest server span at or above a span.
    let server_of = |s: &SpanRecord| {
        let mut cur = parent(s);
        while let Some(c) = cur {
            if c.kind == "server" {
                return Some(c.span_id.clone());
            }
            cur = parent(c);
        }
        None
    };
    let mut own_step: HashMap<String, u8> = HashMap::new();
    for s in spans.iter().filter(|s| s.kind != "server") {
        if let (Some(step), Some(server)) = (s.step(), server_of(s)) {
            let e = own_step.entry(server).or_insert(step);
            *e = (*e).min(step);
        }
    }
    let mut out = Vec::new();
    for s in spans.iter().filter(|s| s.kind == "server") {
        let to = display_party(s.attr("party").unwrap_or("?"));
        let mut from = None;
        let mut ancestor_step = None;
        let mut cur = parent(s);
        while let Some(c) = cur {
            if ancestor_step.is_none() {
                ancestor_step = c.step();
            }
            if from.is_none() {
                from = c.attr("party").map(display_party);
            }
            cur = parent(c);
        }
        let call = s.attr("call").unwrap_or(&s.name).to_string();
        let from = from.unwrap_or_else(|| {
            if to == "IMDS" || (to == "ARM" && !call.starts_with("/misim.")) {
                "workload".to_string()
            } else {
                "user".to_string()
            }
        });
        let step = own_step
            .get(&s.span_id)
            .copied()
            .or_else(|| known_step(&call))
            .or(ancestor_step);
        out.push(Arrow {
            from,
            to,
            step,
            call,
            result: s.attr("result").unwrap_or("?").to_string(),
            latency_ms: s.duration_us as f64 / 1000.0,
            start_us: s.start_us,
            trace_id: s.trace_id.clone(),
        });
    }
    out.sort_by_key(|a| a.start_us);
    out
}

fn known_step(call: &str) -> Option<u8> {
    if call.ends_with("/SetHostAccess")
        || call.ends_with("/ConfigureIdentities")
        || call.ends_with("/GetCredential")
    {
        Some(3)
    } else {
        None
    }
}

/// `2026-12-01 17:31:04.633 UTC` for microseconds since the Unix epoch.
pub fn utc(us: u64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(us) * 1000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02}.{:03} UTC",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.millisecond()
    )
}

/// Steps present in a trace's spans.
pub fn steps(spans: &[SpanRecord]) -> Vec<u8> {
    let mut v: Vec<u8> = spans.iter().filter_map(SpanRecord::step).collect();
    v.sort_unstable();
    v.dedup();
    v
}

fn attr_in<'a>(spans: &'a [SpanRecord], step: u8, key: &str) -> Option<&'a str> {
    spans
        .iter()
        .filter(|s| s.step() == Some(step))
        .find_map(|s| s.attr(key).filter(|v| !v.is_empty()))
}

/// The short name of a VM reference (a resource ID or a name), lower-case.
fn vm_name(v: &str) -> String {
    v.rsplit('/').next().unwrap_or(v).to_ascii_lowercase()
}

/// A one-line summary of a trace: its steps and VM.
pub fn summary(spans: &[SpanRecord]) -> String {
    let st = steps(spans);
    let what = if st.contains(&5) {
        "token request"
    } else if st.contains(&1) {
        "identity change"
    } else if st.contains(&4) {
        "role assignment"
    } else if st.contains(&7) {
        "protected call"
    } else if st.contains(&2) || st.contains(&3) {
        "identity reconcile"
    } else {
        "request"
    };
    let vm = st
        .iter()
        .find_map(|n| attr_in(spans, *n, "vm"))
        .map(vm_name)
        .map(|v| format!(", vm {v}"))
        .unwrap_or_default();
    let list = st.iter().map(u8::to_string).collect::<Vec<_>>().join(",");
    format!("{what}{vm} (steps {list})")
}

/// The diagram of one trace.
pub fn trace_diagram(spans: &[SpanRecord]) -> Diagram {
    Diagram {
        title: summary(spans),
        trace_ids: spans
            .first()
            .map(|s| vec![s.trace_id.clone()])
            .unwrap_or_default(),
        arrows: arrows(spans),
    }
}

/// Which traces make the story of one token: the last trace (of `vm` when given) in which Azure AD
/// issued a token to a VM (step 6), with the enable flow of that VM before it (steps 1–3), the
/// role assignments of its principal (step 4) and the protected calls made by that principal
/// afterwards (step 7). `traces` as [`super::store::merge`] returns them.
pub fn token_story(traces: &[Vec<SpanRecord>], vm: Option<&str>) -> Option<Diagram> {
    let vm = vm.map(vm_name);
    let matches_vm = |t: &[SpanRecord], step: u8| match &vm {
        Some(v) => attr_in(t, step, "vm").map(vm_name).as_deref() == Some(v.as_str()),
        None => true,
    };
    let token = traces
        .iter()
        .rev()
        .find(|t| steps(t).contains(&6) && steps(t).contains(&5) && matches_vm(t, 5))?;
    let start = token.first().map(|s| s.start_us).unwrap_or(0);
    let token_vm = attr_in(token, 5, "vm").map(vm_name);
    let principal = attr_in(token, 6, "principal").map(str::to_string);
    let mut chosen: Vec<&Vec<SpanRecord>> = Vec::new();
    if let Some(v) = &token_vm {
        if let Some(enable) = traces.iter().rev().find(|t| {
            t.first().map(|s| s.start_us).unwrap_or(0) < start
                && steps(t).contains(&1)
                && attr_in(t, 1, "vm").map(vm_name).as_deref() == Some(v.as_str())
        }) {
            chosen.push(enable);
        }
    }
    chosen.push(token);
    if let Some(p) = &principal {
        for t in traces {
            let st = steps(t);
            let mine = |n: u8| attr_in(t, n, "principal") == Some(p.as_str());
            let after = t.first().map(|s| s.start_us).unwrap_or(0) > start;
            if (st.contains(&4) && mine(4)) || (st.contains(&7) && mine(7) && after) {
                chosen.push(t);
            }
        }
    }
    chosen.sort_by_key(|t| t.first().map(|s| s.start_us).unwrap_or(0));
    chosen.dedup_by_key(|t| t.first().map(|s| s.trace_id.clone()));
    let mut arrows: Vec<Arrow> = chosen.iter().flat_map(|t| self::arrows(t)).collect();
    arrows.sort_by_key(|a| a.start_us);
    Some(Diagram {
        title: format!(
            "the flow of the last token{}: steps {}",
            token_vm.map(|v| format!(" (vm {v})")).unwrap_or_default(),
            {
                let mut all: Vec<u8> = chosen.iter().flat_map(|t| steps(t)).collect();
                all.sort_unstable();
                all.dedup();
                all.iter().map(u8::to_string).collect::<Vec<_>>().join(", ")
            }
        ),
        trace_ids: chosen
            .iter()
            .filter_map(|t| t.first().map(|s| s.trace_id.clone()))
            .collect(),
        arrows,
    })
}

/// A call with its GUIDs named (`/{tenantId}/oauth2/token`, `/subscriptions/{subscriptionId}/…`),
/// so that arrows stay short; resource names are kept.
pub fn short_call(call: &str) -> String {
    let (method, path) = match call.split_once(' ') {
        Some((m, p)) => (Some(m), p),
        None => (None, call),
    };
    let mut prev = "";
    let segs: Vec<String> = path
        .split('/')
        .enumerate()
        .map(|(i, seg)| {
            let guid = seg.len() == 36 && seg.chars().filter(|c| *c == '-').count() == 4;
            let out = match (guid, prev.to_ascii_lowercase().as_str()) {
                (true, "subscriptions") => "{subscriptionId}".to_string(),
                (true, _) if i == 1 => "{tenantId}".to_string(),
                (true, _) => "{id}".to_string(),
                _ => seg.to_string(),
            };
            prev = seg;
            out
        })
        .collect();
    match method {
        Some(m) => format!("{m} {}", segs.join("/")),
        None => segs.join("/"),
    }
}

fn label(a: &Arrow) -> String {
    let step = a.step.map(|s| format!("{s}. ")).unwrap_or_default();
    let what = a
        .step
        .and_then(|s| STEP_LABELS.get(s as usize))
        .map(|l| format!("{l}: "))
        .unwrap_or_default();
    format!(
        "{step}{what}{} → {} ({:.1} ms)",
        short_call(&a.call),
        a.result,
        a.latency_ms
    )
}

fn participants(d: &Diagram) -> Vec<String> {
    let order = ["user", "workload", "ARM", "MSRP", "IMDS", "Azure AD"];
    let mut all: Vec<String> = Vec::new();
    for a in &d.arrows {
        for p in [&a.from, &a.to] {
            if !all.contains(p) {
                all.push(p.clone());
            }
        }
    }
    all.sort_by_key(|p| {
        (
            order.iter().position(|o| o == p).unwrap_or(order.len()),
            p.clone(),
        )
    });
    all
}

fn mermaid_id(p: &str) -> String {
    p.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect()
}

/// Mermaid `sequenceDiagram` text.
pub fn mermaid(d: &Diagram) -> String {
    let mut out = String::from("sequenceDiagram\n");
    out.push_str(&format!(
        "    title {}\n",
        d.title.replace(['\n', ';'], " ")
    ));
    for p in participants(d) {
        out.push_str(&format!("    participant {} as {}\n", mermaid_id(&p), p));
    }
    let mut last_trace = String::new();
    for a in &d.arrows {
        if d.trace_ids.len() > 1 && a.trace_id != last_trace {
            let short: String = a.trace_id.chars().take(8).collect();
            out.push_str(&format!(
                "    Note over {}: trace {short}\n",
                mermaid_id(&a.from)
            ));
            last_trace = a.trace_id.clone();
        }
        let arrow = if a.result == "OK" || a.result.starts_with('2') {
            "->>"
        } else {
            "-x"
        };
        out.push_str(&format!(
            "    {}{arrow}{}: {}\n",
            mermaid_id(&a.from),
            mermaid_id(&a.to),
            label(a).replace(['#', ';'], " ")
        ));
    }
    out
}

/// Plain text for terminals: one line per arrow.
pub fn text(d: &Diagram) -> String {
    let mut out = format!("{}\ntraces: {}\n", d.title, d.trace_ids.join(", "));
    let w = participants(d)
        .iter()
        .map(|p| p.chars().count())
        .max()
        .unwrap_or(4);
    for a in &d.arrows {
        out.push_str(&format!(
            "  {:<w$} ──▶ {:<w$}  {}\n",
            a.from,
            a.to,
            label(a),
            w = w
        ));
    }
    out
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A self-contained SVG sequence diagram.
pub fn svg(d: &Diagram) -> String {
    let parts = participants(d);
    let col = 190.0;
    let margin = 90.0;
    let row = 34.0;
    let top = 70.0;
    let x = |p: &str| margin + col * parts.iter().position(|q| q == p).unwrap_or(0) as f64;
    // Labels start at the arrow's left end: the image is as wide as the longest one needs.
    let label_end = d
        .arrows
        .iter()
        .map(|a| x(&a.from).min(x(&a.to)) + 8.0 + 6.6 * label(a).chars().count() as f64)
        .fold(0.0_f64, f64::max);
    let width = (margin * 2.0 + col * (parts.len().max(1) as f64 - 1.0)).max(label_end + 20.0);
    let height = top + 30.0 + row * d.arrows.len() as f64 + 30.0;
    let mut out = format!(
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="sans-serif" font-size="12"><title>{t}</title><rect width="100%" height="100%" fill="#ffffff"/><defs><marker id="ah" markerWidth="10" markerHeight="8" refX="9" refY="4" orient="auto"><path d="M0,0 L10,4 L0,8 z" fill="#333"/></marker></defs><text x="10" y="20" font-size="14" font-weight="bold">{t}</text>"##,
        w = width.max(420.0),
        h = height,
        t = xml_escape(&d.title)
    );
    for p in &parts {
        let px = x(p);
        out.push_str(&format!(
            r##"<rect x="{}" y="32" width="150" height="26" rx="4" fill="#e8f0fe" stroke="#3367d6"/><text x="{px}" y="50" text-anchor="middle" class="participant">{}</text><line x1="{px}" y1="58" x2="{px}" y2="{}" stroke="#999" stroke-dasharray="4 3"/>"##,
            px - 75.0,
            xml_escape(p),
            height - 10.0
        ));
    }
    for (i, a) in d.arrows.iter().enumerate() {
        let y = top + 20.0 + row * i as f64;
        let (x1, x2) = (x(&a.from), x(&a.to));
        let ok = a.result == "OK" || a.result.starts_with('2');
        let colour = if ok { "#333" } else { "#c5221f" };
        let start = x1.min(x2) + 8.0;
        out.push_str(&format!(
            r##"<line x1="{x1}" y1="{y}" x2="{x2}" y2="{y}" stroke="{colour}" stroke-width="1.5" marker-end="url(#ah)"/><text x="{start}" y="{}" fill="{colour}" class="arrow-label">{}</text>"##,
            y - 5.0,
            xml_escape(&label(a))
        ));
    }
    out.push_str("</svg>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn span(
        id: &str,
        parent: Option<&str>,
        kind: &str,
        attrs: &[(&str, &str)],
        start: u64,
    ) -> SpanRecord {
        SpanRecord {
            trace_id: "t1".into(),
            span_id: id.into(),
            parent_id: parent.map(str::to_string),
            name: id.into(),
            kind: kind.into(),
            start_us: start,
            duration_us: 1500,
            status: "OK".into(),
            attributes: attrs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<BTreeMap<_, _>>(),
        }
    }

    #[test]
    fn a_token_trace_draws_workload_imds_and_azure_ad() {
        let spans = vec![
            span(
                "a",
                None,
                "server",
                &[
                    ("party", "imds"),
                    ("call", "GET /metadata/identity/oauth2/token"),
                    ("result", "200"),
                ],
                1,
            ),
            span(
                "b",
                Some("a"),
                "internal",
                &[("party", "imds"), ("step", "5"), ("vm", "vm1")],
                2,
            ),
            span(
                "c",
                Some("a"),
                "internal",
                &[("party", "imds"), ("step", "6")],
                3,
            ),
            span(
                "d",
                Some("c"),
                "server",
                &[
                    ("party", "aad"),
                    ("call", "POST /{id}/oauth2/token"),
                    ("result", "200"),
                ],
                4,
            ),
            span(
                "e",
                Some("d"),
                "internal",
                &[("party", "aad"), ("step", "6")],
                5,
            ),
        ];
        let d = trace_diagram(&spans);
        assert_eq!(d.arrows.len(), 2);
        assert_eq!(
            (
                d.arrows[0].from.as_str(),
                d.arrows[0].to.as_str(),
                d.arrows[0].step
            ),
            ("workload", "IMDS", Some(5))
        );
        assert_eq!(
            (
                d.arrows[1].from.as_str(),
                d.arrows[1].to.as_str(),
                d.arrows[1].step
            ),
            ("IMDS", "Azure AD", Some(6))
        );
        let m = mermaid(&d);
        assert!(m.contains("workload->>IMDS: 5. token request: GET /metadata/identity/oauth2/token → 200 (1.5 ms)"), "{m}");
        assert!(svg(&d).contains("<svg"));
        assert!(text(&d).contains("IMDS"));
    }
}
