//! `misim doctor`: asks ARM whether ARM, MSRP, Azure AD and every host agree (the
//! `misim.sim.v1.Health/Consistency` gRPC call on ARM's gRPC port, `misim_arm::heal`) and prints
//! every difference and whether the reconciler is repairing it; `--wait` polls until the system has
//! settled, for scripts. [`wait_consistent`] is also what `misim up --wait-consistent` runs.

use std::time::{Duration, Instant};

use crate::cli::DoctorArgs;
use anyhow::{bail, Context};
use misim_proto::sim::{health_client::HealthClient, ConsistencyReport, ConsistencyRequest};
use serde_json::{json, Value};

fn arm_grpc(a: &DoctorArgs) -> anyhow::Result<String> {
    if let Some(u) = &a.arm {
        return Ok(u.trim_end_matches('/').to_string());
    }
    let file = a.data_dir.join(crate::endpoints::ENDPOINTS_FILE);
    let text = std::fs::read_to_string(&file)
        .with_context(|| format!("cannot read {} (is misim up running?)", file.display()))?;
    let v: Value = serde_json::from_str(&text)?;
    v["arm_grpc"]
        .as_str()
        .map(|s| s.trim_end_matches('/').to_string())
        .context("endpoints.json names no arm_grpc")
}

/// One `Health/Consistency` call to ARM at `arm_grpc` (a loopback URL).
///
/// # Errors
/// A non-loopback URL, ARM unreachable, or ARM's error.
pub async fn consistency(arm_grpc: &str, token: Option<&str>) -> anyhow::Result<ConsistencyReport> {
    let url = reqwest::Url::parse(arm_grpc)
        .with_context(|| format!("{arm_grpc:?} is not a URL such as http://127.0.0.1:7700"))?;
    let loopback = match url.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    };
    if !loopback {
        bail!("refusing to call non-loopback ARM endpoint {arm_grpc}");
    }
    let conn = crate::cli::ArmConn {
        arm: arm_grpc.to_string(),
        arm_token: token.map(str::to_string),
    };
    let mut client = HealthClient::new(crate::client::clock::channel(&conn).await?);
    Ok(client
        .consistency(ConsistencyRequest {})
        .await
        .map_err(crate::client::status)?
        .into_inner())
}

/// A report as JSON: `{"consistent", "converging", "differences": [{party, kind, resource, detail,
/// converging}]}` (the shape of `GET /readyz` plus `converging`).
pub fn report_json(r: &ConsistencyReport) -> Value {
    json!({
        "consistent": r.consistent,
        "converging": r.converging,
        "differences": r.differences.iter().map(|d| json!({
            "party": d.party,
            "kind": d.kind,
            "resource": d.resource,
            "detail": d.detail,
            "converging": d.converging,
        })).collect::<Vec<_>>(),
    })
}

/// One progress line: how many differences, of which parties and kinds, and whether converging.
pub fn progress_line(r: &ConsistencyReport, waited: Duration) -> String {
    let mut kinds = std::collections::BTreeMap::<String, usize>::new();
    for d in &r.differences {
        *kinds.entry(format!("{} {}", d.party, d.kind)).or_default() += 1;
    }
    let what: Vec<String> = kinds.iter().map(|(k, n)| format!("{n} {k}")).collect();
    format!(
        "waiting for consistency ({:.0} s): {} difference(s), {}: {}",
        waited.as_secs_f64(),
        r.differences.len(),
        if r.converging {
            "converging"
        } else {
            "NOT converging on its own"
        },
        what.join(", ")
    )
}

/// Polls `Health/Consistency` until the report has no differences or `timeout` has passed; calls
/// `progress` with each report that differs from the one before. Returns the last report (consistent
/// or not).
///
/// # Errors
/// When ARM cannot be reached or answers with an error.
pub async fn wait_consistent(
    arm_grpc: &str,
    token: Option<&str>,
    timeout: Duration,
    mut progress: impl FnMut(&ConsistencyReport, Duration),
) -> anyhow::Result<ConsistencyReport> {
    let started = Instant::now();
    let mut last: Option<ConsistencyReport> = None;
    loop {
        let r = consistency(arm_grpc, token).await?;
        if r.consistent || started.elapsed() >= timeout {
            return Ok(r);
        }
        if last.as_ref() != Some(&r) {
            progress(&r, started.elapsed());
        }
        last = Some(r);
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Runs `misim doctor`: prints ARM's consistency report as JSON; fails while differences remain.
///
/// # Errors
/// ARM unreachable, or differences left (after `--wait` seconds).
pub async fn run(a: DoctorArgs) -> anyhow::Result<()> {
    let url = arm_grpc(&a)?;
    let token = a.arm_token.as_deref();
    let r = wait_consistent(&url, token, Duration::from_secs(a.wait), |r, waited| {
        eprintln!("{}", progress_line(r, waited));
    })
    .await?;
    crate::client::print(&report_json(&r));
    if r.consistent {
        return Ok(());
    }
    bail!(
        "{} difference(s) between ARM and its peers (see above); {}",
        r.differences.len(),
        if r.converging {
            "the reconciler is repairing them: run again, or wait with --wait SECONDS"
        } else {
            "some need someone to act (converging: false)"
        }
    )
}
