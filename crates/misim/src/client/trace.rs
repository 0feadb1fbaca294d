//! `misim trace …`: flows as sequence diagrams, from the spans each party keeps in memory
//! (`GET /debug/traces`, next to `/metrics`), merged by trace ID.

use anyhow::{bail, Context};
use misim_core::telemetry::render;
use misim_core::telemetry::store::{self, SpanRecord};

/// `misim trace …`
#[derive(clap::Args, Debug)]
pub struct TraceArgs {
    /// The subcommand.
    #[command(subcommand)]
    pub command: TraceCommand,
}

/// Where the spans are read from.
#[derive(clap::Args, Debug, Clone)]
pub struct TraceSources {
    /// Data directory of `misim up`: spans are read from ARM's REST listener (arm_rest in
    /// DATA_DIR/endpoints.json), which under `misim up` holds every party's spans.
    #[arg(long, env = "MISIM_DATA_DIR", default_value = crate::endpoints::DEFAULT_DATA_DIR)]
    pub data_dir: std::path::PathBuf,
    /// Base URL of a party's /debug/traces (ARM's REST listener, or a party's --metrics-listen);
    /// repeat to merge parties run as separate processes. Replaces the
    /// endpoints.json default.
    #[arg(long = "collect", env = "MISIM_TRACE_SOURCES", value_delimiter = ',')]
    pub collect: Vec<String>,
    /// Bearer token when ARM was started with --arm-api-token.
    #[arg(long, env = "MISIM_ARM_TOKEN", hide_env_values = true)]
    pub arm_token: Option<String>,
}

/// Diagram formats.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// Mermaid sequenceDiagram (GitHub and docs render it).
    Mermaid,
    /// Plain text for terminals.
    Text,
    /// A standalone SVG image.
    Svg,
}

/// `misim trace` subcommands.
#[derive(clap::Subcommand, Debug)]
pub enum TraceCommand {
    /// Draw one flow as a sequence diagram: by default the last token a VM got from Azure AD, with
    /// the enable flow of its identity before it (steps 1-3), its role assignments (4) and the
    /// calls made with it (7).
    ///
    /// Example: misim trace show --last --format mermaid
    #[command(verbatim_doc_comment)]
    Show {
        /// The last token's flow (the default).
        #[arg(long, conflicts_with_all = ["vm", "trace_id"])]
        last: bool,
        /// The last token's flow of this VM (name or resource ID).
        #[arg(long, conflicts_with = "trace_id")]
        vm: Option<String>,
        /// Exactly this trace (32 hex digits, or a unique prefix).
        #[arg(long)]
        trace_id: Option<String>,
        /// Output format.
        #[arg(long, value_enum, default_value = "text")]
        format: Format,
        /// Where to read spans.
        #[command(flatten)]
        sources: TraceSources,
    },
    /// List the flows kept in memory, newest last: trace ID, start (UTC), summary.
    List {
        /// Where to read spans.
        #[command(flatten)]
        sources: TraceSources,
    },
}

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
