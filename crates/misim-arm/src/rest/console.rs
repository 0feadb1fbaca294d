//! The web console at `/console` on ARM's REST listener: resources and their identities, role
//! assignments, each host with its VMs and their IMDS state, the live event stream (flow steps) and
//! the sequence diagram of any recent flow. Static files are embedded in the binary (no build
//! step, no CDN); the pages poll read-only JSON under `/console/api/` and refresh when something
//! changed. Under `misim up` every party shares ARM's process, so the console sees every party's
//! spans; with parties in separate processes it sees ARM's (use `misim trace show --collect` for
//! all). Also serves `/metrics` and `/debug/traces` ([`misim_core::telemetry::metrics::router`]).
//!
//! Access: read-only, and it reads past RBAC (every resource, identity and role assignment), so it
//! answers only callers on loopback; when ARM's API token is set ([`set_token`]), callers from
//! anywhere holding it (`Authorization: Bearer <token>` or `?token=<token>`), and loopback callers
//! only with it too. ARM's REST surface is public (VMs reach it in the compose stack), the console
//! is not: parties' metrics there are served on their `--metrics-listen` control addresses.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use axum::extract::{Query, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use misim_core::telemetry::{render, store};
use serde_json::{json, Value};

use crate::model::{SyncState, Vm};
use crate::service::Arm;

const INDEX_HTML: &str = include_str!("console/index.html");
const CONSOLE_JS: &str = include_str!("console/console.js");
const CONSOLE_CSS: &str = include_str!("console/console.css");

static TOKEN: RwLock<Option<String>> = RwLock::new(None);

/// Requires `token` for the console and its APIs (ARM's `--arm-api-token`); `None` leaves them
/// open (loopback). Process-wide: one ARM per process.
pub fn set_token(token: Option<String>) {
    *TOKEN.write().unwrap_or_else(|p| p.into_inner()) = token.filter(|t| !t.is_empty());
}

/// The console's routes, plus `/metrics` and `/debug/traces`; registers ARM's gauges (identities,
/// VMs, scale sets, hosts, role assignments) with the metrics registry.
pub fn router(arm: Arc<Arm>) -> Router {
    register_gauges(arm.clone());
    let pages = Router::new()
        .route("/console", get(index))
        .route("/console/", get(index))
        .route("/console/{page}", get(index))
        .route(
            "/console/static/console.js",
            get(|| async {
                (
                    [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
                    CONSOLE_JS,
                )
            }),
        )
        .route(
            "/console/static/console.css",
            get(|| async {
                (
                    [(header::CONTENT_TYPE, "text/css; charset=utf-8")],
                    CONSOLE_CSS,
                )
            }),
        )
        .route("/console/api/state", get(state))
        .route("/console/api/events", get(events))
        .route("/console/api/flows", get(flows))
        .route("/console/api/version", get(version))
        .route("/console/api/diagram.svg", get(diagram))
        // Readiness: 200 when ARM, MSRP and the hosts agree, 503 with the differences (crate::heal).
        .route("/readyz", get(crate::heal::readyz))
        .with_state(arm)
        .merge(misim_core::telemetry::metrics::router());
    pages.layer(axum::middleware::from_fn(guard))
}

/// Who may read the console: loopback callers when ARM has no API token, else holders of it.
#[derive(Debug, PartialEq, Eq)]
enum Access {
    Allowed,
    NotLoopback,
    NeedsToken,
}

fn access(
    peer: Option<std::net::IpAddr>,
    token: Option<&str>,
    bearer: Option<&str>,
    query: &str,
) -> Access {
    match token {
        None if peer.is_some_and(|ip| ip.is_loopback()) => Access::Allowed,
        None => Access::NotLoopback,
        Some(t) => {
            let in_query = query.split('&').find_map(|kv| kv.strip_prefix("token="));
            if bearer == Some(t) || in_query == Some(t) {
                Access::Allowed
            } else {
                Access::NeedsToken
            }
        }
    }
}

async fn guard(req: Request, next: Next) -> Response {
    let token = TOKEN.read().unwrap_or_else(|p| p.into_inner()).clone();
    let peer = req
        .extensions()
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0.ip());
    let bearer = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let query = req.uri().query().unwrap_or("");
    match access(peer, token.as_deref(), bearer, query) {
        Access::Allowed => next.run(req).await,
        Access::NotLoopback => (
            StatusCode::FORBIDDEN,
            Json(json!({"error": {"code": "Forbidden", "message": "the console, /metrics and /debug/traces on ARM's REST listener answer loopback callers only (or any caller with ARM's API token, --arm-api-token); scrape parties on their --metrics-listen address"}})),
        )
            .into_response(),
        Access::NeedsToken => (
            StatusCode::UNAUTHORIZED,
            Json(json!({"error": {"code": "AuthenticationFailed", "message": "the console requires ARM's API token: Authorization: Bearer <token> or ?token=<token>"}})),
        )
            .into_response(),
    }
}

async fn index() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        INDEX_HTML,
    )
}

fn sync_text(s: &SyncState) -> String {
    match s {
        SyncState::Pending => "Pending".into(),
        SyncState::Succeeded => "Succeeded".into(),
        SyncState::Failed(e) => format!("Failed: {e}"),
    }
}

fn vm_json(vm: &Vm) -> Value {
    json!({
        "id": vm.id.as_str(),
        "name": vm.id.name(),
        "resourceGroup": vm.id.resource_group_name().unwrap_or_default(),
        "host": vm.host,
        "privateIp": vm.private_ip,
        "imdsEndpoint": vm.imds_endpoint,
        "placed": vm.placed,
        "sync": sync_text(&vm.sync),
        "scaleSet": vm.scale_set.as_ref().map(|s| s.name().to_string()),
        "systemAssigned": vm.identity.system_identity.as_ref().map(|i| json!({"principalId": i.principal_id, "clientId": i.client_id, "tenantId": i.tenant_id})),
        "userAssigned": vm.identity.user_assigned.values().map(|u| json!({"id": u.id.as_str(), "name": u.id.name(), "principalId": u.principal_id, "clientId": u.client_id})).collect::<Vec<_>>(),
    })
}

fn role_name(guid: &str) -> String {
    crate::roles::find_role(guid)
        .map(|r| r.role_name.to_string())
        .unwrap_or_else(|| guid.to_string())
}

async fn state(State(arm): State<Arc<Arm>>) -> Response {
    let store = arm.store();
    let (vms, uamis, assignments) = match (
        store.vms.values(),
        store.uamis.values(),
        store.role_assignments.values(),
    ) {
        (Ok(v), Ok(u), Ok(r)) => (v, u, r),
        _ => {
            return (
                StatusCode::INTERNAL_SERVER_ERROR,
                Json(json!({"error": {"code": "InternalServerError", "message": "cannot read ARM's store"}})),
            )
                .into_response()
        }
    };
    let vms: Vec<Vm> = vms.into_iter().filter(|v| !v.deleting).collect();
    let mut hosts: BTreeMap<String, Vec<Value>> = arm
        .peers
        .host_names()
        .into_iter()
        .map(|h| (h, Vec::new()))
        .collect();
    for vm in &vms {
        hosts.entry(vm.host.clone()).or_default().push(vm_json(vm));
    }
    let subscriptions: Vec<Value> = arm
        .list_subscriptions()
        .unwrap_or_default()
        .into_iter()
        .map(|s| json!({"id": s.subscription_id, "tenantId": s.tenant_id, "name": s.display_name}))
        .collect();
    Json(json!({
        "subscriptions": subscriptions,
        "vms": vms.iter().map(vm_json).collect::<Vec<_>>(),
        "userAssignedIdentities": uamis.iter().filter(|u| !u.deleting).map(|u| json!({
            "id": u.id.as_str(),
            "name": u.id.name(),
            "resourceGroup": u.id.resource_group_name().unwrap_or_default(),
            "principalId": u.identity.as_ref().map(|i| i.principal_id.clone()),
            "clientId": u.identity.as_ref().map(|i| i.client_id.clone()),
            "sync": sync_text(&u.sync),
        })).collect::<Vec<_>>(),
        "roleAssignments": assignments.iter().map(|r| json!({
            "name": r.name,
            "scope": r.scope.as_str(),
            "role": role_name(&r.role_definition_guid),
            "principalId": r.principal_id,
            "principalType": r.principal_type,
        })).collect::<Vec<_>>(),
        "hosts": hosts.into_iter().map(|(name, vms)| json!({"name": name, "vms": vms})).collect::<Vec<_>>(),
        "version": store::version(),
    }))
    .into_response()
}

#[derive(serde::Deserialize)]
struct Limit {
    limit: Option<usize>,
}

/// The last flow-step spans, newest first.
async fn events(Query(q): Query<Limit>) -> Json<Value> {
    let limit = q.limit.unwrap_or(100).min(1000);
    let mut steps: Vec<store::SpanRecord> = store::all()
        .into_iter()
        .filter(|s| s.step().is_some())
        .collect();
    steps.sort_by_key(|s| std::cmp::Reverse(s.start_us));
    steps.truncate(limit);
    Json(json!(steps
        .iter()
        .map(|s| json!({
            "time_us": s.start_us,
            "step": s.step(),
            "name": s.name,
            "party": s.attr("party"),
            "vm": s.attr("vm"),
            "identity": s.attr("identity"),
            "resource": s.attr("resource"),
            "principal": s.attr("principal"),
            "outcome": s.attr("outcome"),
            "traceId": s.trace_id,
        }))
        .collect::<Vec<_>>()))
}

/// Recent flows (traces with at least one step), newest first.
async fn flows(Query(q): Query<Limit>) -> Json<Value> {
    let limit = q.limit.unwrap_or(50).min(500);
    let traces = store::merge(store::all());
    let list: Vec<Value> = traces
        .iter()
        .rev()
        .filter(|t| !render::steps(t).is_empty())
        .take(limit)
        .map(|t| {
            json!({
                "traceId": t[0].trace_id,
                "start_us": t[0].start_us,
                "summary": render::summary(t),
                "steps": render::steps(t),
                "spans": t.len(),
            })
        })
        .collect();
    Json(json!(list))
}

async fn version() -> Json<Value> {
    Json(json!({"version": store::version()}))
}

#[derive(serde::Deserialize)]
struct DiagramQuery {
    trace: Option<String>,
}

/// `?trace=ID`: that trace; `?trace=last` (default): the story of the last token.
async fn diagram(Query(q): Query<DiagramQuery>) -> Response {
    let traces = store::merge(store::all());
    let d = match q.trace.as_deref() {
        None | Some("last") | Some("") => render::token_story(&traces, None),
        Some(id) => traces
            .iter()
            .find(|t| t.first().map(|s| s.trace_id.as_str()) == Some(id))
            .map(|t| render::trace_diagram(t)),
    };
    match d {
        Some(d) => (
            [(header::CONTENT_TYPE, "image/svg+xml")],
            render::svg(&d),
        )
            .into_response(),
        None => (
            StatusCode::NOT_FOUND,
            Json(json!({"error": {"code": "NotFound", "message": "no such flow in memory (the last 500 flows are kept)"}})),
        )
            .into_response(),
    }
}

/// Registers ARM's gauges. The source holds ARM weakly: a stopped ARM releases its store (and the
/// store's file lock) at once, and its source is dropped at the next scrape.
fn register_gauges(arm: Arc<Arm>) {
    let arm = Arc::downgrade(&arm);
    misim_core::telemetry::metrics::register_gauge("arm", move || {
        let arm = arm.upgrade()?;
        let store = arm.store();
        let vms = store.vms.values().unwrap_or_default();
        let live: Vec<&Vm> = vms.iter().filter(|v| !v.deleting).collect();
        let system = live
            .iter()
            .filter(|v| v.identity.system_identity.is_some())
            .count();
        let uamis = store.uamis.values().unwrap_or_default();
        let uamis = uamis.iter().filter(|u| !u.deleting).count();
        Some(vec![
            (
                "vms".into(),
                live.iter().filter(|v| v.scale_set.is_none()).count() as f64,
            ),
            (
                "scale_set_instances".into(),
                live.iter().filter(|v| v.scale_set.is_some()).count() as f64,
            ),
            ("identities".into(), (system + uamis) as f64),
            ("system_assigned_identities".into(), system as f64),
            ("user_assigned_identities".into(), uamis as f64),
            (
                "role_assignments".into(),
                store.role_assignments.len() as f64,
            ),
            ("hosts".into(), arm.peers.host_names().len() as f64),
        ])
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_console_answers_loopback_callers_or_holders_of_the_api_token() {
        let lo = Some("127.0.0.1".parse().unwrap());
        let vm = Some("172.31.0.30".parse().unwrap());
        assert_eq!(access(lo, None, None, ""), Access::Allowed);
        assert_eq!(access(vm, None, None, ""), Access::NotLoopback);
        assert_eq!(access(None, None, None, ""), Access::NotLoopback);
        assert_eq!(access(vm, Some("s3"), Some("s3"), ""), Access::Allowed);
        assert_eq!(
            access(vm, Some("s3"), None, "a=1&token=s3"),
            Access::Allowed
        );
        assert_eq!(access(lo, Some("s3"), None, ""), Access::NeedsToken);
        assert_eq!(
            access(lo, Some("s3"), Some("nope"), "token=x"),
            Access::NeedsToken
        );
    }
}
