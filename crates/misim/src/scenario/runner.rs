//! Runs a scenario's steps against a running misim: `misim` verbs through the misim binary (the
//! CLI itself), IMDS and HTTP calls over loopback, the clock, faults and propagation through
//! `misim.sim.v1` on ARM's gRPC port, recorded requests through `misim.events.v1`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use base64::Engine;
use misim_proto::events as epb;
use misim_proto::sim as spb;
use serde::Serialize;
use serde_json::{json, Value};

use super::model::*;
use crate::endpoints::Endpoints;

/// Where the scenario runs.
#[derive(Clone, Debug)]
pub struct Target {
    /// The system's endpoints.
    pub endpoints: Endpoints,
    /// Its data directory (for `misim` verbs that read endpoints.json).
    pub data_dir: PathBuf,
    /// The misim binary for `misim` steps.
    pub misim_bin: PathBuf,
}

/// One step's result.
#[derive(Clone, Debug, Serialize)]
pub struct StepResult {
    /// 1-based.
    pub index: usize,
    /// Its name.
    pub name: String,
    /// Whether every expectation held.
    pub passed: bool,
    /// One line per failed expectation.
    pub failures: Vec<String>,
    /// Expected vs actual (`-` expected, `+` actual).
    pub diff: String,
    /// Wall time, milliseconds.
    pub elapsed_ms: f64,
    /// What the step observed.
    pub observed: Value,
}

/// A scenario's result.
#[derive(Clone, Debug, Serialize)]
pub struct ScenarioResult {
    /// The scenario's name.
    pub name: String,
    /// Its file.
    pub source: String,
    /// Whether every step passed.
    pub passed: bool,
    /// Each step.
    pub steps: Vec<StepResult>,
    /// Wall time, milliseconds.
    pub elapsed_ms: f64,
}

/// Seconds of `"90s"`, `"500ms"` (rounded up), `"45m"`, `"25h"`, `"50d"`.
///
/// # Errors
/// When it is not a number with one of those units.
pub fn duration_secs(s: &str) -> Result<f64, String> {
    let s = s.trim();
    let (num, mult) = if let Some(n) = s.strip_suffix("ms") {
        (n, 0.001)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = s.strip_suffix('m') {
        (n, 60.0)
    } else if let Some(n) = s.strip_suffix('h') {
        (n, 3600.0)
    } else if let Some(n) = s.strip_suffix('d') {
        (n, 86_400.0)
    } else {
        return Err(format!(
            "{s:?} is not a duration such as 500ms, 90s, 45m, 25h, 50d"
        ));
    };
    num.trim()
        .parse::<f64>()
        .ok()
        .filter(|n| *n >= 0.0)
        .map(|n| n * mult)
        .ok_or_else(|| format!("{s:?} is not a duration such as 500ms, 90s, 45m, 25h, 50d"))
}

/// Splits a command line like a shell: whitespace separates, single and double quotes group.
pub fn split_args(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quote = None;
    let mut any = false;
    for c in line.chars() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), c) => cur.push(c),
            (None, '\'' | '"') => {
                quote = Some(c);
                any = true;
            }
            (None, c) if c.is_whitespace() => {
                if any || !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                    any = false;
                }
            }
            (None, c) => cur.push(c),
        }
    }
    if any || !cur.is_empty() {
        out.push(cur);
    }
    out
}

fn substitute(v: &mut Value, vars: &BTreeMap<String, String>) {
    match v {
        Value::String(s) if s.contains("${") => {
            let mut out = String::new();
            let mut rest = s.as_str();
            while let Some(start) = rest.find("${") {
                out.push_str(&rest[..start]);
                match rest[start + 2..].find('}') {
                    Some(end) => {
                        let name = &rest[start + 2..start + 2 + end];
                        match vars.get(name) {
                            Some(val) => out.push_str(val),
                            None => out.push_str(&rest[start..start + 3 + end]),
                        }
                        rest = &rest[start + 3 + end..];
                    }
                    None => {
                        out.push_str(&rest[start..]);
                        rest = "";
                    }
                }
            }
            out.push_str(rest);
            *s = out;
        }
        Value::Array(a) => a.iter_mut().for_each(|x| substitute(x, vars)),
        Value::Object(o) => o.values_mut().for_each(|x| substitute(x, vars)),
        _ => {}
    }
}

fn path_get<'a>(v: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.')
        .filter(|p| !p.is_empty())
        .try_fold(v, |cur, key| match cur {
            Value::Array(a) => key.parse::<usize>().ok().and_then(|i| a.get(i)),
            _ => cur.get(key),
        })
}

/// Whether `actual` contains `expected`: objects key by key, arrays element by element (each
/// expected element matching some actual one), `"*"` any value present, other values equal
/// (numbers compared as numbers).
pub fn subset(expected: &Value, actual: &Value) -> bool {
    match (expected, actual) {
        (Value::String(s), _) if s == "*" => !actual.is_null(),
        (Value::Object(e), Value::Object(a)) => e
            .iter()
            .all(|(k, ev)| a.get(k).is_some_and(|av| subset(ev, av))),
        (Value::Array(e), Value::Array(a)) => e.iter().all(|ev| a.iter().any(|av| subset(ev, av))),
        (Value::Number(e), Value::Number(a)) => e.as_f64() == a.as_f64(),
        (Value::String(e), Value::Number(a)) => e == &a.to_string(),
        _ => expected == actual,
    }
}

fn claims_of(token: &str) -> Value {
    token
        .split('.')
        .nth(1)
        .and_then(|p| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(p)
                .ok()
        })
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or(Value::Null)
}

fn check_loopback(url: &url::Url) -> anyhow::Result<()> {
    let host = url.host_str().unwrap_or_default();
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
    {
        Ok(())
    } else {
        bail!("refusing to call {url}: scenarios call loopback addresses only")
    }
}

/// Runs scenarios against one target.
pub struct Runner {
    target: Target,
    http: reqwest::Client,
    vars: BTreeMap<String, String>,
    start_seq: u64,
    last_seq: u64,
}

type EventsClient = epb::events_client::EventsClient<tonic::transport::Channel>;

impl Runner {
    /// A runner for `target`.
    ///
    /// # Errors
    /// When the HTTP client cannot be built.
    pub fn new(target: Target) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(60))
            .danger_accept_invalid_certs(false)
            .build()?;
        Ok(Runner {
            target,
            http,
            vars: BTreeMap::new(),
            start_seq: 0,
            last_seq: 0,
        })
    }

    async fn channel(&self) -> anyhow::Result<tonic::transport::Channel> {
        let url = &self.target.endpoints.arm_grpc;
        tonic::transport::Endpoint::from_shared(url.clone())?
            .connect()
            .await
            .with_context(|| format!("cannot reach ARM's gRPC API at {url}"))
    }

    async fn events(&self) -> anyhow::Result<EventsClient> {
        Ok(EventsClient::new(self.channel().await?))
    }

    async fn newest_seq(&self) -> u64 {
        let Ok(mut c) = self.events().await else {
            return 0;
        };
        let req = epb::ListEventsRequest {
            filter: Some(epb::EventFilter {
                limit: 1,
                ..Default::default()
            }),
        };
        c.list(req)
            .await
            .ok()
            .and_then(|r| r.into_inner().events.last().map(|e| e.seq))
            .unwrap_or(0)
    }

    async fn aad_token_calls(&self, after: u64) -> u64 {
        let Ok(mut c) = self.events().await else {
            return 0;
        };
        let req = epb::ListEventsRequest {
            filter: Some(epb::EventFilter {
                party: "aad".into(),
                operation: "/oauth2/".into(),
                after_seq: after,
                ..Default::default()
            }),
        };
        c.list(req)
            .await
            .map(|r| {
                r.into_inner()
                    .events
                    .iter()
                    .filter(|e| e.operation.starts_with("POST ") && e.operation.contains("/token"))
                    .count() as u64
            })
            .unwrap_or(0)
    }

    /// Runs `sc`, calling `on_step` after each step.
    pub async fn run(
        &mut self,
        source: &str,
        sc: &Scenario,
        mut on_step: impl FnMut(&StepResult),
    ) -> ScenarioResult {
        let started = Instant::now();
        let e = &self.target.endpoints;
        self.vars = BTreeMap::from([
            ("subscription_id".into(), e.subscription_id.clone()),
            ("tenant_id".into(), e.tenant_id.clone()),
            ("arm_grpc".into(), e.arm_grpc.clone()),
            ("arm_rest".into(), e.arm_rest.clone()),
            ("aad".into(), e.aad.clone()),
            ("aad_https".into(), e.aad_https.clone()),
            (
                "data_dir".into(),
                self.target.data_dir.display().to_string(),
            ),
        ]);
        self.vars.extend(sc.vars.clone());
        self.start_seq = self.newest_seq().await;
        self.last_seq = self.start_seq;
        let mut steps = Vec::new();
        for (i, step) in sc.steps.iter().enumerate() {
            for _ in 0..step.repeat.unwrap_or(1).max(1) {
                let r = self.run_step(i + 1, step).await;
                on_step(&r);
                let failed = !r.passed;
                steps.push(r);
                if failed && step.stop_on_failure {
                    break;
                }
            }
            if steps.last().is_some_and(|r| !r.passed) && step.stop_on_failure {
                break;
            }
        }
        ScenarioResult {
            name: sc.name.clone(),
            source: source.to_string(),
            passed: steps.iter().all(|s| s.passed),
            steps,
            elapsed_ms: started.elapsed().as_secs_f64() * 1000.0,
        }
    }

    async fn run_step(&mut self, index: usize, step: &Step) -> StepResult {
        // Variables apply to every string of the step.
        let mut raw = serde_json::to_value(step).unwrap_or(Value::Null);
        substitute(&mut raw, &self.vars);
        let step: Step = serde_json::from_value(raw).unwrap_or_else(|_| step.clone());
        let name = step.name.clone().unwrap_or_else(|| summary(&step.action));
        let before = self.newest_seq().await;
        let started = Instant::now();
        let observed = self.act(&step.action, before).await;
        let elapsed_ms = started.elapsed().as_secs_f64() * 1000.0;
        self.last_seq = self.newest_seq().await;
        let (mut observed, mut failures, mut diff) = match observed {
            Ok(o) => (o, Vec::new(), String::new()),
            Err(e) => (
                json!({"error": format!("{e:#}")}),
                vec![format!("the step could not run: {e:#}")],
                String::new(),
            ),
        };
        if let Value::Object(o) = &mut observed {
            o.insert("elapsed_ms".into(), json!(elapsed_ms.round()));
        }
        if failures.is_empty() {
            let expect = step.expect.clone().unwrap_or_default();
            check(&step.action, &expect, &observed, &mut failures, &mut diff);
        }
        for (var, path) in &step.save {
            match path_get(&observed, path) {
                Some(Value::String(s)) => {
                    self.vars.insert(var.clone(), s.clone());
                }
                Some(v) => {
                    self.vars.insert(var.clone(), v.to_string());
                }
                None => failures.push(format!("save {var}: the result has no {path}")),
            }
        }
        StepResult {
            index,
            name,
            passed: failures.is_empty(),
            failures,
            diff,
            elapsed_ms,
            observed,
        }
    }

    async fn act(&mut self, action: &Action, before: u64) -> anyhow::Result<Value> {
        match action {
            Action::Misim(args) => self.misim(args).await,
            Action::Token(t) => self.token(t, before).await,
            Action::Http(h) => self.http_call(h).await,
            Action::Clock(c) => self.clock(c).await,
            Action::Fault(f) => self.fault(f).await,
            Action::Propagation(p) => self.propagation(p).await,
            Action::Wait(d) => {
                let secs = duration_secs(d).map_err(anyhow::Error::msg)?;
                tokio::time::sleep(Duration::from_secs_f64(secs)).await;
                Ok(json!({"waited_ms": secs * 1000.0}))
            }
            Action::Events(e) => self.count_events(e).await,
        }
    }

    async fn misim(&self, args: &Args) -> anyhow::Result<Value> {
        let argv = match args {
            Args::Line(l) => split_args(l),
            Args::List(v) => v.clone(),
        };
        let out = tokio::process::Command::new(&self.target.misim_bin)
            .args(&argv)
            .env("MISIM_ARM", &self.target.endpoints.arm_grpc)
            .env("MISIM_DATA_DIR", &self.target.data_dir)
            .env_remove("MISIM_ARM_TOKEN")
            .stdin(std::process::Stdio::null())
            .output()
            .await
            .with_context(|| format!("cannot run {}", self.target.misim_bin.display()))?;
        let stdout = String::from_utf8_lossy(&out.stdout).to_string();
        let stderr = String::from_utf8_lossy(&out.stderr).to_string();
        let json: Value = serde_json::from_str(&stdout).unwrap_or(Value::Null);
        Ok(json!({
            "exit_code": out.status.code().unwrap_or(-1),
            "json": json,
            "stdout": stdout,
            "stderr": stderr.trim(),
        }))
    }

    async fn imds_endpoint(&self, t: &TokenStep) -> anyhow::Result<String> {
        let mut arm = crate::client::connect(&self.target.endpoints.arm_grpc, None).await?;
        use misim_proto::arm as pb;
        let vm = match &t.instance {
            Some(inst) => arm
                .list_vmss_instances(pb::ListVmssInstancesRequest {
                    resource_group: t.group.clone(),
                    name: t.vm.clone(),
                    ..Default::default()
                })
                .await
                .map_err(crate::client::status)?
                .into_inner()
                .instances
                .into_iter()
                .find(|i| &i.instance_id == inst)
                .with_context(|| format!("scale set {} has no instance {inst}", t.vm))?,
            None => arm
                .get_vm(pb::GetVmRequest {
                    resource_group: t.group.clone(),
                    name: t.vm.clone(),
                    ..Default::default()
                })
                .await
                .map_err(crate::client::status)?
                .into_inner(),
        };
        match t.via.as_deref().unwrap_or("imds") {
            "imds" if vm.imds_endpoint.is_empty() => bail!("VM {} has no IMDS endpoint yet", t.vm),
            "imds" => Ok(vm.imds_endpoint),
            "extension" if vm.extension_endpoint.is_empty() => {
                bail!(
                    "VM {} has no VM extension listener (misim vm extension set)",
                    t.vm
                )
            }
            "extension" => Ok(vm.extension_endpoint),
            other => bail!("token via {other:?}: use imds or extension"),
        }
    }

    async fn token(&self, t: &TokenStep, before: u64) -> anyhow::Result<Value> {
        let base = self.imds_endpoint(t).await?;
        let extension = t.via.as_deref() == Some("extension");
        let path = t.path.as_deref().unwrap_or(if extension {
            "/oauth2/token"
        } else {
            "/metadata/identity/oauth2/token"
        });
        let mut url = url::Url::parse(&format!("{base}{path}"))?;
        check_loopback(&url)?;
        let mut params: Vec<(String, String)> = Vec::new();
        if !extension || t.api_version.is_some() {
            params.push((
                "api-version".into(),
                t.api_version.clone().unwrap_or_else(|| "2018-02-01".into()),
            ));
        }
        params.extend([(
            "resource".into(),
            t.resource
                .clone()
                .unwrap_or_else(|| "https://management.azure.com/".into()),
        )]);
        for (k, v) in [
            ("client_id", &t.client_id),
            ("object_id", &t.object_id),
            ("msi_res_id", &t.msi_res_id),
        ] {
            if let Some(v) = v {
                params.push((k.into(), v.clone()));
            }
        }
        params.extend(t.params.clone());
        params.retain(|(k, _)| !t.omit.contains(k));
        if !params.is_empty() {
            url.query_pairs_mut().extend_pairs(params.iter());
        }
        let method = reqwest::Method::from_bytes(t.method.as_deref().unwrap_or("GET").as_bytes())?;
        let mut req = self.http.request(method, url);
        if t.metadata.unwrap_or(true) {
            req = req.header("Metadata", "true");
        }
        for (k, v) in &t.headers {
            req = req.header(k, v);
        }
        let resp = req.send().await.context("IMDS did not answer")?;
        let status = resp.status().as_u16();
        let retry_after = resp.headers().get("retry-after").is_some();
        let text = resp.text().await.unwrap_or_default();
        let body: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        let claims = body["access_token"]
            .as_str()
            .map(claims_of)
            .unwrap_or(Value::Null);
        let aad_calls = self.aad_token_calls(before).await;
        Ok(json!({
            "status": status,
            "body": body,
            "claims": claims,
            "aad_calls": aad_calls,
            "cache_hit": status == 200 && aad_calls == 0,
            "retry_after": retry_after,
        }))
    }

    async fn http_call(&self, h: &HttpStep) -> anyhow::Result<Value> {
        let url = url::Url::parse(&h.url).with_context(|| format!("bad url {:?}", h.url))?;
        check_loopback(&url)?;
        let method = reqwest::Method::from_bytes(h.method.as_deref().unwrap_or("GET").as_bytes())?;
        let mut req = self.http.request(method, url);
        if let Some(t) = &h.token {
            req = req.bearer_auth(t);
        }
        for (k, v) in &h.headers {
            req = req.header(k, v);
        }
        if let Some(j) = &h.json {
            req = req.json(j);
        } else if !h.form.is_empty() {
            req = req.form(&h.form);
        }
        let resp = req.send().await.context("no answer")?;
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap_or_default();
        let body: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Ok(json!({"status": status, "body": body}))
    }

    async fn clock(&self, c: &ClockStep) -> anyhow::Result<Value> {
        let mut client = spb::clock_client::ClockClient::new(self.channel().await?);
        let state = match (&c.advance, c.set) {
            (Some(d), _) => {
                let secs = duration_secs(d).map_err(anyhow::Error::msg)?.ceil() as i64;
                client.advance(spb::AdvanceRequest { seconds: secs }).await
            }
            (None, Some(t)) => {
                client
                    .set_time(spb::SetTimeRequest { epoch_seconds: t })
                    .await
            }
            (None, None) => client.get_time(spb::GetTimeRequest {}).await,
        }
        .map_err(|s| anyhow::anyhow!("Clock: {:?}: {}", s.code(), s.message()))?
        .into_inner();
        Ok(
            json!({"epoch_seconds": state.epoch_seconds, "rfc3339": state.rfc3339, "manual": state.manual}),
        )
    }

    async fn fault(&self, f: &FaultStep) -> anyhow::Result<Value> {
        let mut client = spb::faults_client::FaultsClient::new(self.channel().await?);
        let mut out = json!({});
        if f.clear {
            let r = client
                .clear_faults(spb::ClearFaultsRequest::default())
                .await
                .map_err(|s| anyhow::anyhow!("Faults: {:?}: {}", s.code(), s.message()))?;
            out["removed"] = json!(r.into_inner().removed);
        }
        if let Some(r) = &f.add {
            let kind = match r.kind.as_str() {
                "http_status" | "http" => spb::FaultKind::HttpStatus,
                "grpc_status" | "grpc" => spb::FaultKind::GrpcStatus,
                "latency" => spb::FaultKind::Latency,
                "close" => spb::FaultKind::Close,
                "reset" => spb::FaultKind::Reset,
                "malformed" => spb::FaultKind::Malformed,
                other => bail!(
                    "fault kind {other:?}: use http_status, grpc_status, latency, close, reset or malformed"
                ),
            };
            let duration_secs = match &r.duration {
                Some(d) => duration_secs(d).map_err(anyhow::Error::msg)? as i64,
                None => 0,
            };
            let rule = client
                .add_fault(spb::AddFaultRequest {
                    r#match: Some(spb::FaultMatch {
                        party: r.party.clone(),
                        endpoint: r.endpoint.clone(),
                        path: r.path.clone(),
                        method: r.method.clone(),
                        identity: r.identity.clone(),
                        resource: r.resource.clone(),
                        caller: String::new(),
                    }),
                    action: Some(spb::FaultAction {
                        kind: kind as i32,
                        http_status: r.status,
                        retry_after_secs: r.retry_after,
                        body: r.body.clone(),
                        grpc_code: r.grpc_code,
                        message: r.message.clone(),
                        latency_ms: r.latency_ms,
                    }),
                    bounds: Some(spb::FaultBounds {
                        count: r.count,
                        duration_secs,
                        probability: r.probability,
                        seed: r.seed,
                    }),
                })
                .await
                .map_err(|s| anyhow::anyhow!("Faults: {:?}: {}", s.code(), s.message()))?
                .into_inner();
            out["rule_id"] = json!(rule.id);
        }
        Ok(out)
    }

    async fn propagation(&self, p: &PropagationStep) -> anyhow::Result<Value> {
        let mut client = spb::propagation_client::PropagationClient::new(self.channel().await?);
        let cur = client
            .get_propagation(spb::GetPropagationRequest {})
            .await
            .map_err(|s| anyhow::anyhow!("Propagation: {:?}: {}", s.code(), s.message()))?
            .into_inner();
        let secs = |d: &Option<String>, cur: i64| -> anyhow::Result<i64> {
            match d {
                Some(d) => Ok(duration_secs(d).map_err(anyhow::Error::msg)? as i64),
                None => Ok(cur),
            }
        };
        let set = spb::PropagationDelays {
            role_assignment_secs: secs(&p.role_assignment, cur.role_assignment_secs)?,
            identity_secs: secs(&p.identity, cur.identity_secs)?,
        };
        let r = client
            .set_propagation(set)
            .await
            .map_err(|s| anyhow::anyhow!("Propagation: {:?}: {}", s.code(), s.message()))?
            .into_inner();
        Ok(
            json!({"role_assignment_secs": r.role_assignment_secs, "identity_secs": r.identity_secs}),
        )
    }

    async fn count_events(&self, e: &EventsStep) -> anyhow::Result<Value> {
        let after = match e.since.as_deref().unwrap_or("scenario") {
            "scenario" => self.start_seq,
            "step" => self.last_seq,
            "all" => 0,
            other => bail!("events since {other:?}: use scenario, step or all"),
        };
        let mut c = self.events().await?;
        let list = c
            .list(epb::ListEventsRequest {
                filter: Some(epb::EventFilter {
                    party: e.party.clone().unwrap_or_default(),
                    vm: e.vm.clone().unwrap_or_default(),
                    operation: e.operation.clone().unwrap_or_default(),
                    after_seq: after,
                    ..Default::default()
                }),
            })
            .await
            .map_err(crate::client::status)?
            .into_inner()
            .events;
        let list: Vec<_> = list
            .into_iter()
            .filter(|ev| {
                e.outcome
                    .as_ref()
                    .is_none_or(|o| ev.outcome.contains(o.as_str()))
            })
            .collect();
        let lines: Vec<String> = list.iter().map(crate::client::events::to_line).collect();
        Ok(json!({"count": list.len(), "events": lines}))
    }
}

fn summary(a: &Action) -> String {
    match a {
        Action::Misim(Args::Line(l)) => format!("misim {l}"),
        Action::Misim(Args::List(v)) => format!("misim {}", v.join(" ")),
        Action::Token(t) => format!(
            "token as {}{} for {}",
            t.vm,
            t.instance
                .as_ref()
                .map(|i| format!("/{i}"))
                .unwrap_or_default(),
            t.resource
                .as_deref()
                .unwrap_or("https://management.azure.com/")
        ),
        Action::Http(h) => format!("{} {}", h.method.as_deref().unwrap_or("GET"), h.url),
        Action::Clock(c) => match (&c.advance, c.set) {
            (Some(d), _) => format!("clock advance {d}"),
            (_, Some(t)) => format!("clock set {t}"),
            _ => "clock".into(),
        },
        Action::Fault(f) => match &f.add {
            Some(r) => format!("fault {} {} {}", r.kind, r.party, r.endpoint),
            None => "fault clear".into(),
        },
        Action::Propagation(_) => "propagation delays".into(),
        Action::Wait(d) => format!("wait {d}"),
        Action::Events(e) => format!(
            "events party={} operation={}",
            e.party.as_deref().unwrap_or("*"),
            e.operation.as_deref().unwrap_or("*")
        ),
    }
}

fn show(v: &Value) -> String {
    match v {
        Value::String(s) => format!("{s:?}"),
        other => serde_json::to_string(other).unwrap_or_default(),
    }
}

fn mismatch(
    failures: &mut Vec<String>,
    diff: &mut String,
    what: &str,
    expected: &Value,
    actual: &Value,
) {
    failures.push(format!(
        "{what}: expected {}, got {}",
        show(expected),
        show(actual)
    ));
    let e = serde_json::to_string_pretty(expected).unwrap_or_default();
    let a = serde_json::to_string_pretty(actual).unwrap_or_default();
    diff.push_str(&format!("@@ {what}\n"));
    for l in e.lines() {
        diff.push_str(&format!("- {l}\n"));
    }
    for l in a.lines() {
        diff.push_str(&format!("+ {l}\n"));
    }
}

/// Checks `expect` against `observed`, adding a line per failure and the diff.
fn check(
    action: &Action,
    expect: &Expect,
    o: &Value,
    failures: &mut Vec<String>,
    diff: &mut String,
) {
    let is_misim = matches!(action, Action::Misim(_));
    if is_misim {
        let want =
            expect
                .exit_code
                .unwrap_or(if expect.stderr.is_some() || expect.error.is_some() {
                    1
                } else {
                    0
                });
        if o["exit_code"] != json!(want) {
            mismatch(failures, diff, "exit_code", &json!(want), &o["exit_code"]);
            if !o["stderr"].as_str().unwrap_or_default().is_empty() {
                diff.push_str(&format!(
                    "  stderr: {}\n",
                    o["stderr"].as_str().unwrap_or_default()
                ));
            }
        }
    }
    if let Some(s) = expect.status {
        if o["status"] != json!(s) {
            mismatch(failures, diff, "status", &json!(s), &o["status"]);
            if !o["body"].is_null() {
                let body: String = o["body"].to_string().chars().take(400).collect();
                diff.push_str(&format!("  body: {body}\n"));
            }
        }
    }
    let body = if is_misim { &o["json"] } else { &o["body"] };
    if let Some(err) = &expect.error {
        let actual = if is_misim {
            o["stderr"].clone()
        } else if body["error"].is_object() {
            body["error"]["code"].clone()
        } else {
            body["error"].clone()
        };
        let ok = if is_misim {
            actual.as_str().is_some_and(|s| s.contains(err.as_str()))
        } else {
            actual == json!(err)
        };
        if !ok {
            mismatch(failures, diff, "error", &json!(err), &actual);
        }
    }
    if let Some(d) = &expect.error_description {
        let actual = if body["error"].is_object() {
            body["error"]["message"].clone()
        } else {
            body["error_description"].clone()
        };
        if !actual.as_str().is_some_and(|s| s.contains(d.as_str())) {
            mismatch(
                failures,
                diff,
                "error_description contains",
                &json!(d),
                &actual,
            );
        }
    }
    if let Some(c) = &expect.claims {
        if !subset(c, &o["claims"]) {
            mismatch(failures, diff, "claims", c, &o["claims"]);
        }
    }
    if let Some(j) = &expect.json {
        if !subset(j, body) {
            mismatch(failures, diff, "json", j, body);
        }
    }
    if let Some(text) = &expect.contains {
        let hay = if is_misim {
            o["stdout"].as_str().unwrap_or_default().to_string()
        } else {
            body.to_string()
        };
        if !hay.contains(text.as_str()) {
            mismatch(failures, diff, "output contains", &json!(text), &json!(hay));
        }
    }
    if let Some(text) = &expect.stderr {
        if !o["stderr"]
            .as_str()
            .is_some_and(|s| s.contains(text.as_str()))
        {
            mismatch(
                failures,
                diff,
                "stderr contains",
                &json!(text),
                &o["stderr"],
            );
        }
    }
    if let Some(h) = expect.cache_hit {
        if o["cache_hit"] != json!(h) {
            mismatch(failures, diff, "cache_hit", &json!(h), &o["cache_hit"]);
        }
    }
    if let Some(h) = expect.retry_after {
        if o["retry_after"] != json!(h) {
            mismatch(failures, diff, "retry_after", &json!(h), &o["retry_after"]);
        }
    }
    for (what, bound, key) in [
        ("aad_calls", &expect.aad_calls, "aad_calls"),
        ("count", &expect.count, "count"),
        ("elapsed_ms", &expect.elapsed_ms, "elapsed_ms"),
    ] {
        if let Some(b) = bound {
            let n = o[key].as_f64().unwrap_or(-1.0);
            if n < 0.0 || !b.holds(n as u64) {
                mismatch(failures, diff, what, &json!(b.to_string()), &o[key]);
                if key == "count" {
                    diff.push_str(&format!("  events: {}\n", o["events"]));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn args_split_like_a_shell() {
        assert_eq!(
            split_args(r#"vm create -g rg1 -n "my vm" --tags 'a=b c' """#),
            vec!["vm", "create", "-g", "rg1", "-n", "my vm", "--tags", "a=b c", ""]
        );
    }

    #[test]
    fn durations() {
        assert_eq!(duration_secs("50d"), Ok(4_320_000.0));
        assert_eq!(duration_secs("500ms"), Ok(0.5));
        assert!(duration_secs("5 weeks").is_err());
    }

    #[test]
    fn subset_matching() {
        let actual = json!({"a": 1, "b": {"c": "x", "d": [1, 2]}, "e": "y"});
        assert!(subset(&json!({"b": {"c": "x"}}), &actual));
        assert!(subset(&json!({"b": {"d": [2]}, "e": "*"}), &actual));
        assert!(!subset(&json!({"b": {"c": "z"}}), &actual));
        assert!(!subset(&json!({"f": "*"}), &actual));
    }

    #[test]
    fn variables_are_substituted() {
        let mut v = json!({"url": "${arm_rest}/subscriptions/${subscription_id}?x=${unknown}"});
        let vars = BTreeMap::from([
            ("arm_rest".to_string(), "http://127.0.0.1:1".to_string()),
            ("subscription_id".to_string(), "s".to_string()),
        ]);
        substitute(&mut v, &vars);
        assert_eq!(v["url"], "http://127.0.0.1:1/subscriptions/s?x=${unknown}");
    }
}
