//! `misim events`: the requests the parties recorded (misim_core::events), from the `Events` gRPC
//! service on ARM's API and, when the admin certificate is at hand, on every party's control port
//! (parties run as separate processes), merged by event ID and sorted by time.

use std::collections::BTreeSet;

use anyhow::Context;
use misim_proto::events::{self as pb, events_client::EventsClient};
use tonic::transport::Channel;

use crate::cli::EventsArgs;
use crate::endpoints::Endpoints;

impl EventsArgs {
    fn filter(&self) -> pb::EventFilter {
        pb::EventFilter {
            party: self.party.clone().unwrap_or_default(),
            vm: self.vm.clone().unwrap_or_default(),
            operation: self.operation.clone().unwrap_or_default(),
            trace_id: self.trace_id.clone().unwrap_or_default(),
            after_seq: 0,
            limit: self.limit,
        }
    }
}

type Client = EventsClient<
    tonic::service::interceptor::InterceptedService<Channel, crate::client::BearerToken>,
>;

/// Clients of every Events service: ARM's API first, then the control ports of endpoints.json
/// (with DATA_DIR/ca/admin) when both exist.
pub async fn clients(
    arm: &str,
    arm_token: Option<&str>,
    data_dir: Option<&std::path::Path>,
) -> anyhow::Result<Vec<Client>> {
    let token = arm_token
        .map(|t| format!("Bearer {t}").parse())
        .transpose()
        .context("MISIM_ARM_TOKEN has characters not allowed in a header")?;
    let channel = tonic::transport::Endpoint::from_shared(arm.to_string())
        .with_context(|| format!("--arm {arm:?} is not a valid URL"))?
        .connect()
        .await
        .with_context(|| format!("cannot reach ARM at {arm}: is `misim up` running?"))?;
    let mut out = vec![EventsClient::with_interceptor(
        channel,
        crate::client::BearerToken(token),
    )];
    let Some(dir) = data_dir else {
        return Ok(out);
    };
    let (Ok(text), Ok(admin)) = (
        std::fs::read_to_string(dir.join(crate::endpoints::ENDPOINTS_FILE)),
        misim_core::control::ControlTls::load(
            &dir.join("ca").join(crate::endpoints::ADMIN_CERT_DIR),
        ),
    ) else {
        return Ok(out);
    };
    let Ok(e) = serde_json::from_str::<Endpoints>(&text) else {
        return Ok(out);
    };
    let mut urls = vec![e.aad_grpc.clone(), e.msrp_grpc.clone()];
    urls.extend(e.hosts.values().cloned());
    for url in urls {
        let Ok(endpoint) = admin.endpoint(&url) else {
            continue;
        };
        if let Ok(ch) = endpoint.connect().await {
            out.push(EventsClient::with_interceptor(
                ch,
                crate::client::BearerToken(None),
            ));
        }
    }
    Ok(out)
}

/// Every recorded event matching `filter` from `clients`, merged by ID, oldest first.
pub async fn collect(
    clients: &mut [Client],
    filter: &pb::EventFilter,
) -> anyhow::Result<Vec<pb::Event>> {
    let mut seen = BTreeSet::new();
    let mut all = Vec::new();
    for (i, c) in clients.iter_mut().enumerate() {
        let req = pb::ListEventsRequest {
            filter: Some(filter.clone()),
        };
        match c.list(req).await {
            Ok(r) => {
                for e in r.into_inner().events {
                    if seen.insert(e.id.clone()) {
                        all.push(e);
                    }
                }
            }
            // ARM's answer is required; a party's control port may be down or refuse.
            Err(s) if i == 0 => return Err(crate::client::status(s)),
            Err(s) => tracing::debug!(error = %s, "events from a control port"),
        }
    }
    all.sort_by_key(|e| (e.wall_time_ms, e.seq));
    if filter.limit > 0 && all.len() > filter.limit as usize {
        all.drain(..all.len() - filter.limit as usize);
    }
    Ok(all)
}

/// An event as JSON (the `--json` shape; scenarios count these).
pub fn to_json(e: &pb::Event) -> serde_json::Value {
    serde_json::json!({
        "id": e.id,
        "seq": e.seq,
        "wall_time": rfc3339_ms(e.wall_time_ms),
        "sim_time": rfc3339_ms(e.sim_time * 1000),
        "party": e.party,
        "caller": e.caller,
        "vm": e.vm,
        "operation": e.operation,
        "params": e.params,
        "outcome": e.outcome,
        "latency_ms": e.latency_us as f64 / 1000.0,
        "trace_id": e.trace_id,
        "kind": e.kind,
    })
}

/// One line of text: simulated time, party, caller, operation, outcome, latency, VM, trace.
pub fn to_line(e: &pb::Event) -> String {
    let mut params: Vec<String> = e
        .params
        .iter()
        .filter(|(k, _)| k.as_str() != "api-version")
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    params.sort();
    let p = if params.is_empty() {
        String::new()
    } else {
        let joined = params.join(" ");
        let short: String = joined.chars().take(100).collect();
        format!(" [{short}]")
    };
    format!(
        "{sim} {party:<7} {op}{p} <- {caller} => {outcome} {lat:.1}ms{vm}{trace}",
        sim = rfc3339_ms(e.sim_time * 1000)
            .trim_end_matches(".000Z")
            .to_string()
            + "Z",
        party = e.party,
        op = e.operation,
        caller = e.caller,
        outcome = e.outcome,
        lat = e.latency_us as f64 / 1000.0,
        vm = if e.vm.is_empty() {
            String::new()
        } else {
            format!(" vm={}", e.vm)
        },
        trace = if e.trace_id.is_empty() {
            String::new()
        } else {
            format!(" trace={}", &e.trace_id[..e.trace_id.len().min(12)])
        },
    )
}

/// RFC 3339 UTC with milliseconds from Unix milliseconds (civil-from-days, proleptic Gregorian).
pub fn rfc3339_ms(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let milli = ms.rem_euclid(1000);
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{milli:03}Z",
        sod / 3600,
        (sod % 3600) / 60,
        sod % 60
    )
}

/// `misim events …`
///
/// # Errors
/// When ARM cannot be reached or refuses the call.
pub async fn run(a: EventsArgs) -> anyhow::Result<()> {
    let mut cs = clients(&a.conn.arm, a.conn.arm_token.as_deref(), Some(&a.data_dir)).await?;
    let filter = a.filter();
    let events = collect(&mut cs, &filter).await?;
    let mut seen: BTreeSet<String> = events.iter().map(|e| e.id.clone()).collect();
    if a.json && !a.follow {
        let arr: Vec<_> = events.iter().map(to_json).collect();
        crate::client::print(&serde_json::Value::Array(arr));
        return Ok(());
    }
    for e in &events {
        print_one(e, a.json);
    }
    if !a.follow {
        return Ok(());
    }
    let mut streams = Vec::new();
    for c in cs.iter_mut() {
        let req = pb::WatchEventsRequest {
            filter: Some(pb::EventFilter {
                limit: 0,
                ..filter.clone()
            }),
            from_start: false,
        };
        if let Ok(s) = c.watch(req).await {
            streams.push(s.into_inner());
        }
    }
    use futures_util::StreamExt;
    let mut merged = futures_util::stream::select_all(streams);
    let signal = crate::parties::shutdown_on_signal();
    loop {
        tokio::select! {
            _ = signal.cancelled() => return Ok(()),
            next = merged.next() => match next {
                Some(Ok(e)) => {
                    if seen.insert(e.id.clone()) {
                        print_one(&e, a.json);
                    }
                }
                Some(Err(s)) => return Err(crate::client::status(s)),
                None => return Ok(()),
            }
        }
    }
}

fn print_one(e: &pb::Event, json: bool) {
    if json {
        crate::client::print_text(&to_json(e).to_string());
    } else {
        crate::client::print_text(&to_line(e));
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn rfc3339_of_known_instants() {
        assert_eq!(super::rfc3339_ms(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            super::rfc3339_ms(1_764_610_200_123),
            "2025-12-01T17:30:00.123Z"
        );
    }
}
