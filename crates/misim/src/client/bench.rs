//! `misim bench`: measure a running misim from the command line.
//!
//! - `misim bench token` is a small load generator (tokio + reqwest, keep-alive connections) against a
//!   VM's IMDS token endpoint, the request an Azure SDK's `ManagedIdentityCredential` sends
//!   (`GET /metadata/identity/oauth2/token?api-version=2018-02-01&resource=…` with `Metadata: true`,
//!   <https://learn.microsoft.com/en-us/entra/identity/managed-identities-azure-resources/how-to-use-vm-token#get-a-token-using-http>).
//!   It prints requests/s, latency percentiles and errors in the table format of `bench/run`.
//! - `misim bench populate` creates many VMs or user-assigned identities over one gRPC connection,
//!   timing each ARM call, and prints JSON; `bench/run` uses it to grow a system to 100, 1,000,
//!   10,000 VMs without paying a process start per call. See docs/performance.md.
//!
//! Every request goes to loopback only: the IMDS endpoint ARM reports is checked first.

use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use misim_proto::arm as pb;
use serde_json::{json, Value};

use super::{print, print_text, status, Arm};
use crate::cli::{BenchCommand, PopulateArgs, TokenBenchArgs};
use bounded::timed;

/// Runs `misim bench …`.
///
/// # Errors
/// When ARM or the VM's IMDS cannot be reached, or the first token request fails.
pub async fn bench(arm: &mut Arm, c: BenchCommand) -> anyhow::Result<()> {
    match c {
        BenchCommand::Token(a) => token(arm, a).await,
        BenchCommand::Populate(a) => populate(arm, a).await,
    }
}

/// Latency summary of one run, microseconds.
struct Summary {
    count: usize,
    p50: u64,
    p90: u64,
    p99: u64,
    max: u64,
    mean: f64,
}

fn summarize(mut lat: Vec<u64>) -> Summary {
    lat.sort_unstable();
    let pct = |p: f64| -> u64 {
        if lat.is_empty() {
            return 0;
        }
        let i = ((p / 100.0) * lat.len() as f64).ceil() as usize;
        lat[i.clamp(1, lat.len()) - 1]
    };
    let mean = if lat.is_empty() {
        0.0
    } else {
        lat.iter().sum::<u64>() as f64 / lat.len() as f64
    };
    Summary {
        count: lat.len(),
        p50: pct(50.0),
        p90: pct(90.0),
        p99: pct(99.0),
        max: lat.last().copied().unwrap_or(0),
        mean,
    }
}

/// What one connection saw.
#[derive(Default)]
struct Worker {
    latencies_us: Vec<u64>,
    non_2xx: u64,
    transport: u64,
    first_error: Option<String>,
}

async fn token(arm: &mut Arm, a: TokenBenchArgs) -> anyhow::Result<()> {
    if a.concurrency == 0 {
        bail!("--concurrency must be at least 1");
    }
    let req = pb::GetVmRequest {
        resource_group: a.resource_group.clone(),
        name: a.vm.clone(),
        ..Default::default()
    };
    let vm = arm.get_vm(req).await.map_err(status)?.into_inner();
    if vm.imds_endpoint.is_empty() {
        bail!(
            "VM {} has no IMDS endpoint yet (is its host running?)",
            vm.name
        );
    }
    let mut url = url::Url::parse(&format!(
        "{}/metadata/identity/oauth2/token",
        vm.imds_endpoint
    ))
    .with_context(|| format!("bad IMDS endpoint {:?}", vm.imds_endpoint))?;
    // Safety: local mode serves IMDS on loopback only; never load any other address.
    let loopback = url.host_str().is_some_and(|h| {
        h == "localhost"
            || h.trim_matches(['[', ']'])
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback())
    });
    if !loopback {
        bail!(
            "refusing to load non-loopback IMDS endpoint {}",
            vm.imds_endpoint
        );
    }
    {
        let mut q = url.query_pairs_mut();
        q.append_pair("api-version", "2018-02-01")
            .append_pair("resource", &a.resource);
        if let Some(c) = &a.client_id {
            q.append_pair("client_id", c);
        }
        if a.bypass_cache {
            q.append_pair("bypass_cache", "true");
        }
    }
    let http = reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(a.concurrency as usize)
        .tcp_nodelay(true)
        .build()?;
    // One request first: it fills the token cache and shows a clear error instead of a table of
    // failures (no identity, throttled, wrong client_id).
    let first = http
        .get(url.clone())
        .header("Metadata", "true")
        .send()
        .await
        .with_context(|| format!("IMDS at {} did not answer", vm.imds_endpoint))?;
    let code = first.status();
    if !code.is_success() {
        let body = first.text().await.unwrap_or_default();
        bail!("IMDS answered {code} to the first request: {body}");
    }
    let _ = first.bytes().await;

    let started = Instant::now();
    let deadline = started + a.duration;
    let mut tasks = Vec::with_capacity(a.concurrency as usize);
    if let Some(r) = a.rate {
        if !(r.is_finite() && r > 0.0) {
            bail!("--rate must be a positive number of requests per second");
        }
    }
    // With --rate, each connection sends every `interval`, the connections staggered evenly.
    let interval = a
        .rate
        .map(|r| Duration::from_secs_f64(f64::from(a.concurrency) / r));
    for n in 0..a.concurrency {
        let http = http.clone();
        let url = url.clone();
        tasks.push(tokio::spawn(async move {
            let mut w = Worker {
                latencies_us: Vec::with_capacity(4096),
                ..Default::default()
            };
            let mut next = interval.map(|i| started + i * n / a.concurrency);
            while Instant::now() < deadline {
                let t = match (&mut next, interval) {
                    (Some(at), Some(i)) => {
                        let scheduled = *at;
                        *at += i;
                        if scheduled >= deadline {
                            break;
                        }
                        tokio::time::sleep_until(scheduled.into()).await;
                        scheduled
                    }
                    _ => Instant::now(),
                };
                let r = http
                    .get(url.clone())
                    .header("Metadata", "true")
                    .send()
                    .await;
                match r {
                    Ok(resp) => {
                        let ok = resp.status().is_success();
                        let st = resp.status();
                        match resp.bytes().await {
                            Ok(_) if ok => {
                                w.latencies_us.push(t.elapsed().as_micros() as u64);
                            }
                            Ok(body) => {
                                w.non_2xx += 1;
                                w.first_error.get_or_insert_with(|| {
                                    format!("{st}: {}", String::from_utf8_lossy(&body))
                                });
                            }
                            Err(e) => {
                                w.transport += 1;
                                w.first_error.get_or_insert_with(|| e.to_string());
                            }
                        }
                    }
                    Err(e) => {
                        w.transport += 1;
                        w.first_error.get_or_insert_with(|| e.to_string());
                        // A refused connection fails at once: do not spin.
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                }
            }
            w
        }));
    }
    let mut latencies = Vec::new();
    let (mut non_2xx, mut transport, mut first_error) = (0u64, 0u64, None);
    for t in tasks {
        let w = t.await.context("a load task panicked")?;
        latencies.extend(w.latencies_us);
        non_2xx += w.non_2xx;
        transport += w.transport;
        if first_error.is_none() {
            first_error = w.first_error;
        }
    }
    // Paced connections stop at their last slot before the deadline: the run lasted `duration`.
    let mut elapsed = started.elapsed().as_secs_f64();
    if a.rate.is_some() {
        elapsed = elapsed.max(a.duration.as_secs_f64());
    }
    let s = summarize(latencies);
    let rps = s.count as f64 / elapsed;
    let ms = |us: u64| us as f64 / 1000.0;
    if a.json {
        print(&json!({
            "vm": vm.name,
            "resourceGroup": vm.resource_group,
            "imdsEndpoint": vm.imds_endpoint,
            "resource": a.resource,
            "bypassCache": a.bypass_cache,
            "concurrency": a.concurrency,
            "rate": a.rate,
            "durationSeconds": elapsed,
            "requests": s.count,
            "requestsPerSecond": rps,
            "latencyMs": {
                "mean": s.mean / 1000.0, "p50": ms(s.p50), "p90": ms(s.p90),
                "p99": ms(s.p99), "max": ms(s.max),
            },
            "errors": { "non2xx": non_2xx, "transport": transport, "first": first_error },
        }));
        return Ok(());
    }
    let cache = if a.bypass_cache {
        "bypass_cache=true"
    } else {
        "cached"
    };
    let pace = a
        .rate
        .map(|r| format!(", paced at {r:.0} req/s"))
        .unwrap_or_default();
    let mut out = format!(
        "misim bench token: VM {} ({}), IMDS {}, resource {}, {cache}, {} connections{pace}, {elapsed:.1} s\n\n",
        vm.name, vm.resource_group, vm.imds_endpoint, a.resource, a.concurrency
    );
    let rows: Vec<(&str, String)> = vec![
        ("requests (2xx)", s.count.to_string()),
        ("req/s", format!("{rps:.0}")),
        ("latency mean", format!("{:.3} ms", s.mean / 1000.0)),
        ("latency p50", format!("{:.3} ms", ms(s.p50))),
        ("latency p90", format!("{:.3} ms", ms(s.p90))),
        ("latency p99", format!("{:.3} ms", ms(s.p99))),
        ("latency max", format!("{:.3} ms", ms(s.max))),
        (
            "errors",
            format!(
                "{} (non-2xx {non_2xx}, transport {transport})",
                non_2xx + transport
            ),
        ),
    ];
    out.push_str(&table(&["metric", "value"], &rows));
    if let Some(e) = first_error {
        out.push_str(&format!("\nfirst error: {e}"));
        if e.starts_with("429") {
            out.push_str(
                "\nhint: IMDS throttles each VM as Azure does; start misim with `misim up --no-throttle`",
            );
        }
    }
    print_text(out.trim_end());
    Ok(())
}

/// A Markdown table (the format bench/run prints).
fn table(head: &[&str], rows: &[(&str, String)]) -> String {
    let w0 = rows
        .iter()
        .map(|r| r.0.len())
        .chain([head[0].len()])
        .max()
        .unwrap_or(0);
    let w1 = rows
        .iter()
        .map(|r| r.1.len())
        .chain([head[1].len()])
        .max()
        .unwrap_or(0);
    let mut s = format!("| {:w0$} | {:w1$} |\n", head[0], head[1]);
    s.push_str(&format!(
        "|{}|{}|\n",
        "-".repeat(w0 + 2),
        "-".repeat(w1 + 2)
    ));
    for (k, v) in rows {
        s.push_str(&format!("| {k:w0$} | {v:>w1$} |\n"));
    }
    s
}

/// Timings of a batch of calls, milliseconds, as JSON.
fn timing_json(lat_us: Vec<u64>, wall: Duration) -> Value {
    let s = summarize(lat_us);
    json!({
        "count": s.count,
        "wallSeconds": wall.as_secs_f64(),
        "meanMs": s.mean / 1000.0,
        "p50Ms": s.p50 as f64 / 1000.0,
        "p99Ms": s.p99 as f64 / 1000.0,
        "maxMs": s.max as f64 / 1000.0,
    })
}

/// A bounded-concurrency loop without extra dependencies: `concurrency` workers take indices from a
/// shared counter.
mod bounded {
    use std::future::Future;
    use std::time::{Duration, Instant};

    /// Runs `n` calls of `f(i)` for i in `start..start+n`, `concurrency` (at least 1) at a time,
    /// stopping at the first error. Returns the latencies (µs) of the calls that succeeded, their
    /// results, the error, and the wall time.
    pub(super) async fn timed<F, Fut, T>(
        start: u32,
        n: u32,
        concurrency: u32,
        f: F,
    ) -> (Vec<u64>, Vec<T>, Option<String>, Duration)
    where
        F: Fn(u32) -> Fut,
        Fut: Future<Output = Result<T, tonic::Status>>,
    {
        let t0 = Instant::now();
        let next = std::cell::Cell::new(start);
        let stop = std::cell::Cell::new(false);
        let end = start + n;
        let results = std::cell::RefCell::new((Vec::new(), Vec::new(), None::<String>));
        let worker = || async {
            loop {
                if stop.get() {
                    return;
                }
                let i = next.get();
                if i >= end {
                    return;
                }
                next.set(i + 1);
                let t = Instant::now();
                match f(i).await {
                    Ok(v) => {
                        let mut r = results.borrow_mut();
                        r.0.push(t.elapsed().as_micros() as u64);
                        r.1.push(v);
                    }
                    Err(s) => {
                        stop.set(true);
                        let mut r = results.borrow_mut();
                        if r.2.is_none() {
                            r.2 = Some(format!("call {i}: {}: {}", s.code(), s.message()));
                        }
                    }
                }
            }
        };
        let workers: Vec<_> = (0..concurrency.max(1)).map(|_| worker()).collect();
        join_all(workers).await;
        let (lat, vals, err) = results.into_inner();
        (lat, vals, err, t0.elapsed())
    }

    /// Polls every future to completion on the current task.
    async fn join_all<Fut: Future<Output = ()>>(futs: Vec<Fut>) {
        let mut futs: Vec<_> = futs.into_iter().map(Box::pin).map(Some).collect();
        std::future::poll_fn(|cx| {
            let mut pending = false;
            for slot in futs.iter_mut() {
                if let Some(f) = slot {
                    if f.as_mut().poll(cx).is_ready() {
                        *slot = None;
                    } else {
                        pending = true;
                    }
                }
            }
            if pending {
                std::task::Poll::Pending
            } else {
                std::task::Poll::Ready(())
            }
        })
        .await;
    }
}

async fn populate(arm: &mut Arm, a: PopulateArgs) -> anyhow::Result<()> {
    let rg = a.resource_group.clone();
    if arm
        .get_resource_group(pb::GetResourceGroupRequest {
            name: rg.clone(),
            ..Default::default()
        })
        .await
        .is_err()
    {
        arm.create_resource_group(pb::CreateResourceGroupRequest {
            name: rg.clone(),
            location: "westeurope".into(),
            ..Default::default()
        })
        .await
        .map_err(status)?;
    }
    let mut out = serde_json::Map::new();
    let mut failed = false;
    if a.vms > 0 {
        let prefix = a.prefix.clone().unwrap_or_else(|| "bvm".into());
        let host = a.host.clone().unwrap_or_default();
        let (lat, vms, err, wall) = timed(a.start, a.vms, a.concurrency, |i| {
            let mut arm = arm.clone();
            let req = pb::CreateVmRequest {
                resource_group: rg.clone(),
                name: format!("{prefix}-{i}"),
                host: host.clone(),
                ..Default::default()
            };
            async move { arm.create_vm(req).await.map(|r| r.into_inner().name) }
        })
        .await;
        let mut t = timing_json(lat, wall);
        t["error"] = json!(err);
        failed |= err.is_some();
        out.insert("vmCreate".into(), t);
        if a.show_samples > 0 && !vms.is_empty() {
            let names = vms.clone();
            let (lat, _, err, wall) = timed(0, a.show_samples, 1, |i| {
                let mut arm = arm.clone();
                let req = pb::GetVmRequest {
                    resource_group: rg.clone(),
                    name: names[(i as usize * 7919) % names.len()].clone(),
                    ..Default::default()
                };
                async move { arm.get_vm(req).await.map(|_| ()) }
            })
            .await;
            let mut t = timing_json(lat, wall);
            t["error"] = json!(err);
            out.insert("vmShow".into(), t);
        }
    }
    if a.identities > 0 {
        let prefix = a.prefix.clone().unwrap_or_else(|| "bid".into());
        let (lat, ids, err, wall) = timed(a.start, a.identities, a.concurrency, |i| {
            let mut arm = arm.clone();
            let req = pb::CreateUserAssignedIdentityRequest {
                resource_group: rg.clone(),
                name: format!("{prefix}-{i}"),
                ..Default::default()
            };
            async move {
                arm.create_user_assigned_identity(req)
                    .await
                    .map(|r| r.into_inner())
            }
        })
        .await;
        let mut t = timing_json(lat, wall);
        t["error"] = json!(err);
        failed |= err.is_some();
        t["lastClientId"] = json!(ids.last().map(|i| i.client_id.clone()));
        t["firstClientId"] = json!(ids.first().map(|i| i.client_id.clone()));
        out.insert("identityCreate".into(), t);
        if let (Some(vm), false) = (&a.assign_to, ids.is_empty()) {
            let chunks: Vec<Vec<String>> = ids
                .chunks(a.batch.max(1) as usize)
                .map(|c| c.iter().map(|i| i.id.clone()).collect())
                .collect();
            let (lat, _, err, wall) = timed(0, chunks.len() as u32, 1, |i| {
                let mut arm = arm.clone();
                let req = pb::AssignVmIdentityRequest {
                    resource_group: rg.clone(),
                    name: vm.clone(),
                    user_assigned_identities: chunks[i as usize].clone(),
                    ..Default::default()
                };
                async move { arm.assign_vm_identity(req).await.map(|_| ()) }
            })
            .await;
            let mut t = timing_json(lat, wall);
            t["error"] = json!(err);
            failed |= err.is_some();
            out.insert("identityAssign".into(), t);
        }
    }
    print(&Value::Object(out));
    if failed {
        bail!("some calls failed (see \"error\" above)");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::parse_bench_duration as parse_duration;

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("10s").unwrap(), Duration::from_secs(10));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("3").unwrap(), Duration::from_secs(3));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("fast").is_err());
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let s = summarize((1..=100).collect());
        assert_eq!((s.p50, s.p90, s.p99, s.max), (50, 90, 99, 100));
        assert_eq!(summarize(Vec::new()).count, 0);
    }
}
