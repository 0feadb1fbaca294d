//! The scenario document: the Rust types are the schema (`docs/scenario.schema.json` is generated
//! from them with schemars, <https://docs.rs/schemars/1>).

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A scenario: steps run in order against one misim, each with expectations on its result.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// What the scenario shows (the JUnit test suite's name).
    pub name: String,
    /// Longer description.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// The clock the scenario needs: `manual` (clock steps move it) or `system`. With
    /// `--embedded`, a scenario that needs `manual` gets a system started with a manual clock.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clock: Option<ClockMode>,
    /// Variables for `${name}` in any string of a step (besides the built-in ones:
    /// subscription_id, tenant_id, arm_grpc, arm_rest, aad, aad_https, data_dir, and the values
    /// steps `save`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub vars: BTreeMap<String, String>,
    /// The steps, run in order; a failed step does not stop the scenario unless it sets
    /// `stop_on_failure`.
    pub steps: Vec<Step>,
}

/// The clock a scenario needs.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ClockMode {
    /// Moved only by clock steps.
    Manual,
    /// The wall clock.
    System,
}

/// One step: exactly one action key (`misim`, `token`, `http`, `clock`, `fault`, `propagation`,
/// `wait`, `events`) with optional `name`, `expect` and `save`.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
pub struct Step {
    /// Shown in the report (default: a summary of the action).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// What the step does.
    #[serde(flatten)]
    pub action: Action,
    /// What its result must be.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expect: Option<Expect>,
    /// Variables to set from the step's observed result: `{var: "body.access_token"}` (a dotted path
    /// into the observed JSON: status, body, claims, json, stdout, ...).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub save: BTreeMap<String, String>,
    /// Repeat the step (with its expectations) this many times.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repeat: Option<u32>,
    /// Stop the scenario when this step fails.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub stop_on_failure: bool,
}

/// The action of a step.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// A `misim` client verb, as on the command line (`"vm create -g rg1 -n vm1"` or a list of
    /// arguments): create/delete resources, assign/remove identities, role assignments, key vaults,
    /// web app and AKS pod tokens (`token get --webapp` / `--aks`). Observed: `exit_code`, `json`
    /// (stdout parsed), `stdout`, `stderr`.
    Misim(Args),
    /// A token request to a VM's (or scale-set instance's) IMDS, as code on the VM makes it.
    /// Observed: `status`, `body`, `claims` (of the access token), `aad_calls` (requests Azure AD's
    /// token endpoint served meanwhile), `cache_hit`, `elapsed_ms`, `retry_after`.
    Token(TokenStep),
    /// An HTTP call (ARM REST, the vault, Azure AD), typically with a token saved by an earlier step.
    /// Observed: `status`, `body`, `elapsed_ms`.
    Http(HttpStep),
    /// Moves the simulated clock (misim.sim.v1.Clock). Observed: `epoch_seconds`, `rfc3339`.
    Clock(ClockStep),
    /// Adds or clears fault rules (misim.sim.v1.Faults). Observed: the rule or the count removed.
    Fault(FaultStep),
    /// Sets Azure's propagation delays (misim.sim.v1.Propagation).
    Propagation(PropagationStep),
    /// Waits wall-clock time: `"500ms"`, `"2s"`.
    Wait(String),
    /// Counts recorded requests (misim.events.v1.Events). Observed: `count`, `events`.
    Events(EventsStep),
}

/// Command-line arguments: one string split like a shell (single and double quotes), or a list.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum Args {
    /// `"vm create -g rg1 -n vm1"`
    Line(String),
    /// `["vm", "create", "-g", "rg1", "-n", "vm1"]`
    List(Vec<String>),
}

/// A token request to IMDS (`GET /metadata/identity/oauth2/token`,
/// <https://learn.microsoft.com/entra/identity/managed-identities-azure-resources/how-to-use-vm-token#get-a-token-using-http>).
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TokenStep {
    /// Resource group of the VM or scale set.
    pub group: String,
    /// The VM (or scale set, with `instance`).
    pub vm: String,
    /// Scale-set instance ID: `vm` names the scale set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance: Option<String>,
    /// `resource` (default `https://management.azure.com/`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource: Option<String>,
    /// `client_id` of a user-assigned identity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    /// `object_id` of an identity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object_id: Option<String>,
    /// `msi_res_id` of a user-assigned identity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub msi_res_id: Option<String>,
    /// `api-version` (default `2018-02-01`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_version: Option<String>,
    /// Further query parameters (`bypass_cache: "true"`, ...).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub params: BTreeMap<String, String>,
    /// Query parameters to leave out (`resource`, `api-version`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub omit: Vec<String>,
    /// Send `Metadata: true` (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<bool>,
    /// Further headers (`X-Forwarded-For`, ...).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// HTTP method (default GET).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    /// Ask the legacy VM extension (`extension`: its `/oauth2/token` without `api-version`) instead
    /// of IMDS (`imds`, the default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub via: Option<String>,
    /// Path (default `/metadata/identity/oauth2/token`; with `via: extension`, `/oauth2/token`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
}

/// An HTTP call to a loopback URL.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HttpStep {
    /// Full URL, e.g. `${arm_rest}/subscriptions/${subscription_id}/resourcegroups?api-version=2021-04-01`
    /// or a vault's `${vault}secrets/s1?api-version=7.4`. Loopback only.
    pub url: String,
    /// Method (default GET).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    /// Bearer token (`authorization: Bearer …`), e.g. `${token}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// Further headers.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// JSON body.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub json: Option<serde_json::Value>,
    /// Form body (`application/x-www-form-urlencoded`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub form: BTreeMap<String, String>,
}

/// Moves the simulated clock.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ClockStep {
    /// Forward by a duration: `"90s"`, `"45m"`, `"25h"`, `"50d"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub advance: Option<String>,
    /// To an absolute time (Unix seconds; not backwards).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub set: Option<i64>,
}

/// Adds a fault rule, or clears rules.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FaultStep {
    /// Remove every rule (with `add`: first).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub clear: bool,
    /// The rule to add.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub add: Option<FaultRule>,
}

/// A fault rule (misim.sim.v1 FaultMatch, FaultAction, FaultBounds).
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FaultRule {
    /// Party receiving the request: arm, aad, msrp, host-1, `vm:NAME`.
    #[serde(default)]
    pub party: String,
    /// Endpoint shorthand: imds, aad-token, arm-rest, grpc.
    #[serde(default)]
    pub endpoint: String,
    /// Path prefix.
    #[serde(default)]
    pub path: String,
    /// HTTP method.
    #[serde(default)]
    pub method: String,
    /// Substring of the identity asked for.
    #[serde(default)]
    pub identity: String,
    /// Substring of the resource asked for.
    #[serde(default)]
    pub resource: String,
    /// http_status, grpc_status, latency, close, reset or malformed.
    pub kind: String,
    /// HTTP status (http_status).
    #[serde(default)]
    pub status: u32,
    /// Retry-After seconds.
    #[serde(default)]
    pub retry_after: u32,
    /// Body replacing Azure's.
    #[serde(default)]
    pub body: String,
    /// gRPC code number (grpc_status).
    #[serde(default)]
    pub grpc_code: i32,
    /// gRPC message or error description.
    #[serde(default)]
    pub message: String,
    /// Delay in milliseconds (latency; before the fault with other kinds).
    #[serde(default)]
    pub latency_ms: u64,
    /// At most this many injections.
    #[serde(default)]
    pub count: u32,
    /// For this long on the simulated clock (`"10m"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<String>,
    /// Probability per matching request (0 or 1: always).
    #[serde(default)]
    pub probability: f64,
    /// Seed of the rule's generator.
    #[serde(default)]
    pub seed: u64,
}

/// Propagation delays (`"30s"`).
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PropagationStep {
    /// Until a role assignment takes effect.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role_assignment: Option<String>,
    /// Until an identity assigned to a VM is served by IMDS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<String>,
}

/// Which recorded requests to count.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EventsStep {
    /// Party (aad, arm, msrp, imds, host-1, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub party: Option<String>,
    /// VM name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vm: Option<String>,
    /// Substring of the operation (`/oauth2/`, `GetCredential`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operation: Option<String>,
    /// Substring of the outcome (`200`, `NOT_FOUND`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<String>,
    /// From when: `scenario` (default: since the scenario started), `step` (the previous step) or
    /// `all`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<String>,
}

/// Expectations on a step's observed result; every one set must hold.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Expect {
    /// `misim` steps: the exit code (default: 0 unless `error` or `stderr` is expected).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// HTTP status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// The body's `error` (OAuth error code; ARM's `error.code`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Text the body's `error_description` (ARM: `error.message`) contains.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_description: Option<String>,
    /// Subset of the access token's claims.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claims: Option<serde_json::Value>,
    /// Subset of the JSON body (`misim` steps: of stdout's JSON).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub json: Option<serde_json::Value>,
    /// Text stdout (or the body) contains.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contains: Option<String>,
    /// Text stderr contains (`misim` steps).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stderr: Option<String>,
    /// Token steps: served from IMDS's cache (no request to Azure AD's token endpoint).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_hit: Option<bool>,
    /// Requests Azure AD's token endpoint served during the step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aad_calls: Option<Count>,
    /// Events steps: how many matched.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<Count>,
    /// Bounds on the step's wall time, milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub elapsed_ms: Option<Count>,
    /// A `Retry-After` header is present.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after: Option<bool>,
}

/// A number or bounds.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum Count {
    /// Exactly.
    Exactly(u64),
    /// Within (inclusive).
    Range {
        /// At least.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        min: Option<u64>,
        /// At most.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        max: Option<u64>,
    },
}

impl Count {
    /// Whether `n` satisfies it.
    pub fn holds(&self, n: u64) -> bool {
        match self {
            Count::Exactly(x) => n == *x,
            Count::Range { min, max } => min.is_none_or(|m| n >= m) && max.is_none_or(|m| n <= m),
        }
    }
}

impl std::fmt::Display for Count {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Count::Exactly(x) => write!(f, "{x}"),
            Count::Range { min, max } => match (min, max) {
                (Some(a), Some(b)) => write!(f, "{a}..={b}"),
                (Some(a), None) => write!(f, ">= {a}"),
                (None, Some(b)) => write!(f, "<= {b}"),
                (None, None) => write!(f, "any"),
            },
        }
    }
}

/// The JSON Schema of a scenario document (published as docs/scenario.schema.json).
pub fn schema_json() -> String {
    let schema = schemars::schema_for!(Scenario);
    serde_json::to_string_pretty(&schema).unwrap_or_default() + "\n"
}

/// Parses a YAML (or JSON: YAML's subset) scenario; errors name the line and column.
///
/// # Errors
/// `FILE:LINE:COLUMN: message` when the document does not match the schema.
pub fn parse(source: &str, text: &str) -> Result<Scenario, String> {
    let sc: Scenario = serde_yaml::from_str(text).map_err(|e| match e.location() {
        Some(l) => format!("{source}:{}:{}: {e}", l.line(), l.column()),
        None => format!("{source}: {e}"),
    })?;
    for (i, step) in sc.steps.iter().enumerate() {
        if let Err(e) = check_step(step) {
            let line = step_line(text, i)
                .map(|l| format!(":{l}"))
                .unwrap_or_default();
            return Err(format!("{source}{line}: step {}: {e}", i + 1));
        }
    }
    Ok(sc)
}

fn check_step(step: &Step) -> Result<(), String> {
    match &step.action {
        Action::Clock(c) if c.advance.is_none() == c.set.is_none() => {
            Err("clock: give exactly one of advance or set".into())
        }
        Action::Clock(ClockStep {
            advance: Some(d), ..
        })
        | Action::Wait(d) => super::runner::duration_secs(d).map(|_| ()),
        Action::Fault(f) if !f.clear && f.add.is_none() => {
            Err("fault: give add (a rule) or clear: true".into())
        }
        Action::Misim(Args::Line(l)) if super::runner::split_args(l).is_empty() => {
            Err("misim: no arguments".into())
        }
        _ => Ok(()),
    }
}

/// The line of step `index` (the `- ` items under `steps:`), 1-based.
fn step_line(text: &str, index: usize) -> Option<usize> {
    let mut in_steps = false;
    let mut indent = None;
    let mut n = 0;
    for (no, line) in text.lines().enumerate() {
        let trimmed = line.trim_start();
        if !in_steps {
            in_steps = line.starts_with("steps:");
            continue;
        }
        if let Some(rest) = trimmed.strip_prefix("- ") {
            let ind = line.len() - trimmed.len();
            let _ = rest;
            if indent.is_none() {
                indent = Some(ind);
            }
            if Some(ind) == indent {
                if n == index {
                    return Some(no + 1);
                }
                n += 1;
            }
        }
    }
    None
}
