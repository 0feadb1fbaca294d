//! `misim fault add|list|clear|hits`: fault injection rules (`misim.sim.v1.Faults` on ARM's gRPC
//! port, acting on every party of the `misim up` system). docs/faults-and-time.md.

use anyhow::bail;
use misim_proto::sim::{self as pb, faults_client::FaultsClient};
use serde_json::{json, Value};

use crate::cli::{AddArgs, FaultArgs, FaultCommand};

/// Parses `500ms`, `2s` or plain milliseconds.
fn parse_ms(s: &str) -> anyhow::Result<u64> {
    let s = s.trim();
    let n = |t: &str| t.parse::<u64>().ok();
    let ms = if let Some(v) = s.strip_suffix("ms") {
        n(v)
    } else if let Some(v) = s.strip_suffix('s') {
        n(v).and_then(|v| v.checked_mul(1000))
    } else {
        n(s)
    };
    ms.ok_or_else(|| anyhow::anyhow!("--latency {s:?} is not like 500ms or 2s"))
}

fn add_request(a: AddArgs) -> anyhow::Result<pb::AddFaultRequest> {
    let latency_ms = a.latency.as_deref().map(parse_ms).transpose()?.unwrap_or(0);
    let kind = if a.status.is_some() {
        pb::FaultKind::HttpStatus
    } else if a.grpc_code.is_some() {
        pb::FaultKind::GrpcStatus
    } else if a.close {
        pb::FaultKind::Close
    } else if a.reset {
        pb::FaultKind::Reset
    } else if a.malformed {
        pb::FaultKind::Malformed
    } else if latency_ms > 0 {
        pb::FaultKind::Latency
    } else {
        bail!("say what to inject: --status N, --grpc-code N, --close, --reset, --malformed or --latency D");
    };
    let duration_secs = a
        .duration
        .as_deref()
        .map(super::clock::parse_duration)
        .transpose()?
        .unwrap_or(0);
    Ok(pb::AddFaultRequest {
        r#match: Some(pb::FaultMatch {
            party: a.party,
            endpoint: a.endpoint,
            path: a.path,
            method: a.method,
            identity: a.identity,
            resource: a.resource,
            caller: a.caller,
        }),
        action: Some(pb::FaultAction {
            kind: kind as i32,
            http_status: u32::from(a.status.unwrap_or(0)),
            retry_after_secs: a.retry_after,
            body: a.body,
            grpc_code: a.grpc_code.unwrap_or(0),
            message: a.message,
            latency_ms,
        }),
        bounds: Some(pb::FaultBounds {
            count: a.count,
            duration_secs,
            probability: a.probability,
            seed: a.seed,
        }),
    })
}

fn kind_name(k: i32) -> &'static str {
    match pb::FaultKind::try_from(k) {
        Ok(pb::FaultKind::HttpStatus) => "http-status",
        Ok(pb::FaultKind::GrpcStatus) => "grpc-status",
        Ok(pb::FaultKind::Latency) => "latency",
        Ok(pb::FaultKind::Close) => "close",
        Ok(pb::FaultKind::Reset) => "reset",
        Ok(pb::FaultKind::Malformed) => "malformed",
        _ => "unspecified",
    }
}

/// A rule as JSON (empty fields left out).
pub fn rule_json(r: &pb::FaultRule) -> Value {
    let m = r.r#match.clone().unwrap_or_default();
    let a = r.action.clone().unwrap_or_default();
    let b = r.bounds.unwrap_or_default();
    let mut matcher = serde_json::Map::new();
    for (k, v) in [
        ("party", m.party),
        ("endpoint", m.endpoint),
        ("path", m.path),
        ("method", m.method),
        ("identity", m.identity),
        ("resource", m.resource),
        ("caller", m.caller),
    ] {
        if !v.is_empty() {
            matcher.insert(k.into(), Value::String(v));
        }
    }
    let mut action = serde_json::Map::new();
    action.insert("kind".into(), kind_name(a.kind).into());
    if a.http_status != 0 {
        action.insert("status".into(), a.http_status.into());
    }
    if a.retry_after_secs != 0 {
        action.insert("retryAfter".into(), a.retry_after_secs.into());
    }
    if a.grpc_code != 0 {
        action.insert("grpcCode".into(), a.grpc_code.into());
    }
    if a.latency_ms != 0 {
        action.insert("latencyMs".into(), a.latency_ms.into());
    }
    if !a.message.is_empty() {
        action.insert("message".into(), a.message.into());
    }
    json!({
        "id": r.id,
        "match": matcher,
        "action": action,
        "bounds": {"count": b.count, "durationSecs": b.duration_secs, "probability": b.probability, "seed": b.seed},
        "hits": r.hits,
        "considered": r.considered,
        "active": r.active,
    })
}

/// Runs `misim fault …`.
///
/// # Errors
/// When ARM is unreachable or refuses the rule.
pub async fn run(args: FaultArgs) -> anyhow::Result<()> {
    let mut c = FaultsClient::new(super::clock::channel(&args.conn).await?);
    let out = match args.command {
        FaultCommand::Add(a) => {
            let r = c
                .add_fault(add_request(*a)?)
                .await
                .map_err(super::status)?
                .into_inner();
            rule_json(&r)
        }
        FaultCommand::List => {
            let r = c
                .list_faults(pb::ListFaultsRequest {})
                .await
                .map_err(super::status)?
                .into_inner();
            Value::Array(r.rules.iter().map(rule_json).collect())
        }
        FaultCommand::Clear { id, hits } => {
            let r = c
                .clear_faults(pb::ClearFaultsRequest {
                    id: id.unwrap_or_default(),
                    clear_hits: hits,
                })
                .await
                .map_err(super::status)?
                .into_inner();
            json!({"removed": r.removed})
        }
        FaultCommand::Hits { id } => {
            let r = c
                .list_fault_hits(pb::ListFaultHitsRequest {
                    rule_id: id.unwrap_or_default(),
                })
                .await
                .map_err(super::status)?
                .into_inner();
            Value::Array(
                r.hits
                    .iter()
                    .map(|h| {
                        json!({
                            "rule": h.rule_id,
                            "time": misim_core::Clock::rfc3339(h.epoch_seconds),
                            "wallUnixMs": h.wall_unix_ms,
                            "party": h.party,
                            "method": h.method,
                            "path": h.path,
                            "caller": h.caller,
                            "fault": h.action,
                        })
                    })
                    .collect(),
            )
        }
    };
    super::print(&out);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_parses() {
        assert_eq!(parse_ms("500ms").unwrap(), 500);
        assert_eq!(parse_ms("2s").unwrap(), 2000);
        assert_eq!(parse_ms("75").unwrap(), 75);
        assert!(parse_ms("fast").is_err());
    }
}
