//! `misim trace …`: flows as sequence diagrams, from the spans each party keeps in memory
//! (`GET /debug/traces`, next to `/metrics`), merged by trace ID.

use crate::cli::{Format, TraceArgs, TraceCommand, TraceSources};
use anyhow::{bail, Context};
use misim_core::telemetry::render;
use misim_core::telemetry::store::{self, SpanRecord};

fn source_urls(s: &TraceSources) -> Vec<String> {
    if !s.collect.is_empty() {
        return s
            .collect
            .iter()
            .map(|u| u.trim_end_matches('/').to_string())
            .collect();
    }
    let file = s.data_dir.join(crate::endpoints::ENDPOINTS_FILE);
    let from_file = std::fs::read_to_string(&file)
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .and_then(|v| {
            v.get("arm_rest")
                .and_then(|u| u.as_str())
                .map(str::to_string)
        });
    vec![from_file
        .unwrap_or_else(|| crate::endpoints::default_url(crate::endpoints::ARM_REST_OFFSET))]
}

async fn collect(s: &TraceSources) -> anyhow::Result<Vec<Vec<SpanRecord>>> {
    let http = reqwest::Client::builder().no_proxy().build()?;
    let mut all = Vec::new();
    for base in source_urls(s) {
        let url = format!("{base}/debug/traces");
        let mut req = http.get(&url);
        if let Some(t) = &s.arm_token {
            req = req.bearer_auth(t);
        }
        let resp = req.send().await.with_context(|| {
            format!("cannot read spans from {url}: is misim running? (--data-dir or --collect)")
        })?;
        if !resp.status().is_success() {
            bail!("{url} answered {}", resp.status());
        }
        let spans: Vec<SpanRecord> = resp
            .json()
            .await
            .with_context(|| format!("{url} did not answer a span list"))?;
        all.extend(spans);
    }
    Ok(store::merge(all))
}

/// Runs `misim trace …`.
///
/// # Errors
/// When no party answers or no flow matches.
pub async fn run(args: TraceArgs) -> anyhow::Result<()> {
    match args.command {
        TraceCommand::List { sources } => {
            for t in collect(&sources).await? {
                if render::steps(&t).is_empty() {
                    continue;
                }
                println!(
                    "{}  {}  {}",
                    t[0].trace_id,
                    render::utc(t[0].start_us),
                    render::summary(&t)
                );
            }
            Ok(())
        }
        TraceCommand::Show {
            last: _,
            vm,
            trace_id,
            format,
            sources,
        } => {
            let traces = collect(&sources).await?;
            let diagram = match (&trace_id, &vm) {
                (Some(id), _) => {
                    let id = id.to_ascii_lowercase();
                    let found: Vec<&Vec<SpanRecord>> = traces
                        .iter()
                        .filter(|t| t[0].trace_id.starts_with(&id))
                        .collect();
                    match found.as_slice() {
                        [one] => render::trace_diagram(one),
                        [] => bail!(
                            "no trace {id} in memory (each party keeps its last {} flows and {} other traces)",
                            store::MAX_TRACES,
                            store::MAX_OTHER_TRACES
                        ),
                        _ => bail!("{} traces start with {id}: give more digits", found.len()),
                    }
                }
                (None, vm) => match render::token_story(&traces, vm.as_deref()) {
                    Some(d) => d,
                    None => {
                        let last = traces.iter().rev().find(|t| {
                            !render::steps(t).is_empty()
                                && vm.as_deref().is_none_or(|v| {
                                    t.iter().any(|s| {
                                        s.attr("vm").is_some_and(|x| {
                                            x.rsplit('/').next().unwrap_or(x).eq_ignore_ascii_case(
                                                v.rsplit('/').next().unwrap_or(v),
                                            )
                                        })
                                    })
                                })
                        });
                        match last {
                            Some(t) => render::trace_diagram(t),
                            None => bail!(
                                "no flow in memory yet{}: enable an identity and request a token first",
                                vm.as_deref().map(|v| format!(" for vm {v}")).unwrap_or_default()
                            ),
                        }
                    }
                },
            };
            let out = match format {
                Format::Mermaid => render::mermaid(&diagram),
                Format::Text => render::text(&diagram),
                Format::Svg => render::svg(&diagram),
            };
            print!("{out}");
            Ok(())
        }
    }
}
